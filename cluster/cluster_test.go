package cluster

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/vxovl/vxovl/cluster/clustertest"
	"github.com/vxovl/vxovl/internal/testutil/poll"
)

type nodeOpts struct {
	key   []byte
	dead  time.Duration
	port  int
	fast  bool // short gossip/push-pull intervals for many nodes in one process
	peers []string
	minV  uint64        // Config.MinVersion: the version floor a restarted node persisted
	nets  []uint32      // networks the node has (PublishNetwork at start), so it holds their endpoints
	sync  time.Duration // Config.NetworkSyncInterval
}

// testNets are the networks of the tests that are not about interest.
var testNets = []uint32{3, 5, 7, 9, 42}

type recorder struct {
	mu   sync.Mutex
	vnis map[uint32]int
}

func (r *recorder) EndpointsChanged(vni uint32) {
	r.mu.Lock()
	if r.vnis == nil {
		r.vnis = map[uint32]int{}
	}
	r.vnis[vni]++
	r.mu.Unlock()
}

func (r *recorder) count(vni uint32) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.vnis[vni]
}

func startNode(t testing.TB, name string, o nodeOpts, h Handler) *Cluster {
	t.Helper()
	if o.port == 0 {
		o.port = clustertest.FreePort(t)
	}
	if o.dead == 0 {
		o.dead = 2 * time.Second
	}
	cfg := Config{
		NodeName:            name,
		BindAddr:            "127.0.0.1",
		BindPort:            o.port,
		AdvertiseAddr:       net.IPv4(127, 0, 0, 1),
		Peers:               o.peers,
		SecretKey:           o.key,
		DeadTimeout:         o.dead,
		MinVersion:          o.minV,
		NetworkSyncInterval: o.sync,
		RejoinInterval:      time.Second,
		Logger:              discardLogger(),
		Tune: func(mc *memberlist.Config) {
			mc.TCPTimeout = time.Second
			if o.fast {
				mc.GossipInterval = 100 * time.Millisecond
			}
		},
	}
	c, err := New(cfg, h)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { c.Shutdown() })
	haveNets(t, c, o.nets...)
	return c
}

func addr(c *Cluster) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.cfg.BindPort))
}

func testEP(vni uint32, id string, ip byte) Endpoint {
	return Endpoint{VNI: vni, ID: id, IP: net.IPv4(10, 9, 0, ip), MAC: net.HardwareAddr{2, 0x42, 0, 0, 0, ip}}
}

func hasEP(c *Cluster, vni uint32, node, id string) bool {
	for _, e := range c.Endpoints(vni) {
		if e.Node == node && e.ID == id {
			return true
		}
	}
	return false
}

func startCluster(t testing.TB, n int, o nodeOpts) []*Cluster {
	t.Helper()
	nodes := make([]*Cluster, n)
	nodes[0] = startNode(t, "n0", o, nil)
	for i := 1; i < n; i++ {
		oi := o
		oi.peers = []string{addr(nodes[0])}
		nodes[i] = startNode(t, fmt.Sprintf("n%d", i), oi, nil)
	}
	poll.True(t, 10*time.Second, "full membership", func() bool {
		for _, c := range nodes {
			if c.alive.Load() != int32(n) {
				return false
			}
		}
		return true
	})
	return nodes
}

func TestPublishWithdrawPropagate(t *testing.T) {
	rec := &recorder{}
	a := startNode(t, "a", nodeOpts{nets: testNets}, nil)
	b := startNode(t, "b", nodeOpts{nets: testNets, peers: []string{addr(a)}}, rec)
	c := startNode(t, "c", nodeOpts{nets: testNets, peers: []string{addr(a)}}, nil)
	poll.True(t, 5*time.Second, "3 members", func() bool { return a.alive.Load() == 3 && b.alive.Load() == 3 && c.alive.Load() == 3 })

	ep := testEP(42, "ep-a", 2)
	ep.Names = []string{"web", "web.app"}
	pub, err := a.PublishEndpoint(ep)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Cluster{b, c} {
		poll.True(t, 3*time.Second, n.self+" sees ep-a", func() bool { return hasEP(n, 42, "a", "ep-a") })
	}
	got := b.Endpoints(42)[0]
	if !got.IP.Equal(ep.IP) || got.MAC.String() != ep.MAC.String() || !got.VTEP.Equal(net.IPv4(127, 0, 0, 1)) || got.Version == 0 ||
		!slices.Equal(got.Names, ep.Names) {
		t.Fatalf("b sees %+v", got)
	}
	// Names change by republishing.
	ep.Names, ep.Created = []string{"web"}, pub.Created
	if _, err := a.PublishEndpoint(ep); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Cluster{b, c} {
		poll.True(t, 3*time.Second, n.self+" sees ep-a's new names", func() bool {
			eps := n.Endpoints(42)
			return len(eps) == 1 && slices.Equal(eps[0].Names, []string{"web"}) && eps[0].Created == pub.Created
		})
	}
	if len(a.Endpoints(42)) != 0 {
		t.Fatal("Endpoints must not return the node's own endpoints")
	}
	poll.True(t, 2*time.Second, "handler notified for VNI 42", func() bool { return rec.count(42) > 0 })

	// IP reuse: a frees the IP, b reuses it; everyone ends with b's only.
	if err := a.WithdrawEndpoint(42, "ep-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PublishEndpoint(testEP(42, "ep-b", 2)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Cluster{a, c} {
		poll.True(t, 3*time.Second, n.self+" has only b's claim", func() bool {
			eps := n.Endpoints(42)
			return len(eps) == 1 && eps[0].Node == "b"
		})
	}
	if hasEP(b, 42, "a", "ep-a") {
		t.Fatal("b still holds a's withdrawn endpoint")
	}

	// Generic records and direct messages.
	got2 := make(chan string, 1)
	if err := c.RegisterKind("blk", KindOptions{Message: func(from string, p []byte) { got2 <- from + ":" + string(p) }}); err != nil {
		t.Fatal(err)
	}
	if err := a.PutRecord("blk", "10.9.1.0/26", []byte("x")); err != nil {
		t.Fatal(err)
	}
	poll.True(t, 3*time.Second, "c sees a's block", func() bool { return len(c.Records("blk")) == 1 })
	if err := a.SendTo("c", "blk", []byte("claim")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got2:
		if m != "a:claim" {
			t.Fatalf("direct message %q", m)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("direct message not delivered")
	}
	if err := a.DeleteRecord("blk", "10.9.1.0/26"); err != nil {
		t.Fatal(err)
	}
	poll.True(t, 3*time.Second, "c drops a's block", func() bool { return len(c.Records("blk")) == 0 })
}

func TestKilledNodeRemovedAndRestored(t *testing.T) {
	const dead = 2 * time.Second
	nodes := startCluster(t, 4, nodeOpts{dead: dead, nets: testNets})
	victim := nodes[3]
	port := victim.cfg.BindPort
	for i := range 3 {
		if _, err := victim.PublishEndpoint(testEP(9, fmt.Sprintf("v%d", i), byte(10+i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes[:3] {
		poll.True(t, 3*time.Second, "victim's endpoints", func() bool { return len(n.Endpoints(9)) == 3 })
	}
	victim.Shutdown() // a crash: peers must detect it
	start := time.Now()
	for _, n := range nodes[:3] {
		poll.True(t, dead+time.Second-time.Since(start), n.self+" drops the dead node's endpoints", func() bool { return len(n.Endpoints(9)) == 0 })
	}
	t.Logf("dead node's endpoints removed everywhere after %v (DeadTimeout %v)", time.Since(start), dead)

	// Restart with the same name and port, having lost one endpoint.
	back := startNode(t, "n3", nodeOpts{dead: dead, nets: testNets, port: port, peers: []string{addr(nodes[0])}}, nil)
	for i := range 2 {
		if _, err := back.PublishEndpoint(testEP(9, fmt.Sprintf("v%d", i), byte(10+i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes[:3] {
		poll.True(t, 5*time.Second, n.self+" sees the restarted node's 2 endpoints", func() bool {
			return len(n.Endpoints(9)) == 2 && hasEP(n, 9, "n3", "v0") && hasEP(n, 9, "n3", "v1")
		})
	}
}

// A node that restarts faster than failure detection (others never saw it
// die) and lost an endpoint: its own full state removes the stale copy.
// DeadTimeout is far above the waits, and the test checks that no peer
// declared the node dead, which would drop all its records and pass the
// test for the wrong reason.
func TestFastRestartExpiresStaleRecords(t *testing.T) {
	o := nodeOpts{dead: 30 * time.Second, nets: testNets}
	nodes := startCluster(t, 3, o)
	v := nodes[2]
	for i, id := range []string{"gone", "kept"} {
		if _, err := v.PublishEndpoint(testEP(9, id, byte(20+i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes[:2] {
		poll.True(t, 3*time.Second, n.self+" sees both endpoints", func() bool { return hasEP(n, 9, "n2", "gone") && hasEP(n, 9, "n2", "kept") })
	}
	v.Shutdown()
	o.port, o.peers = v.cfg.BindPort, []string{addr(nodes[0])}
	back := startNode(t, "n2", o, nil)
	if _, err := back.PublishEndpoint(testEP(9, "kept", 21)); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[:2] {
		poll.True(t, 5*time.Second, n.self+" drops the stale endpoint and keeps the other", func() bool {
			return !hasEP(n, 9, "n2", "gone") && hasEP(n, 9, "n2", "kept")
		})
		if s := n.Stats(); s.OwnersDropped != 0 || s.RecordsExpired == 0 {
			t.Fatalf("%s: owners dropped %d, records expired %d; want 0 and at least 1 (the restarted node's full state removes the stale endpoint, not a death)",
				n.self, s.OwnersDropped, s.RecordsExpired)
		}
	}
}

// winnerAt returns "node/id" of the endpoint c programs for ip in vni, or ""
// when it programs none (c's own claim wins, or there is none).
func winnerAt(c *Cluster, vni uint32, ip net.IP) string {
	for _, e := range c.Endpoints(vni) {
		if e.IP.Equal(ip) {
			return e.Node + "/" + e.ID
		}
	}
	return ""
}

// ownVersionAt returns the version of owner's record key as c holds it.
func ownVersionAt(c *Cluster, owner, kind, key string) uint64 {
	for _, r := range c.Records(kind) {
		if r.Owner == owner && r.Key == key {
			return r.Version
		}
	}
	return 0
}

// Two nodes claim one IP and the newer claim wins everywhere. Restarting
// the older claimant, which republishes its endpoint from its persisted
// state, must not make its claim the newer one: it still loses everywhere,
// whether the others saw it die or not.
func TestRestartKeepsClaimOrder(t *testing.T) {
	for _, tc := range []struct {
		name     string
		dead     time.Duration
		seenDead bool // wait until the others dropped the node before restarting it
	}{
		{"fast restart", 30 * time.Second, false},
		{"after peers saw it die", 2 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := nodeOpts{dead: tc.dead, nets: testNets}
			nodes := startCluster(t, 3, o)
			older, newer, observer := nodes[0], nodes[1], nodes[2]
			ep := testEP(5, "old", 7)
			pub, err := older.PublishEndpoint(ep)
			if err != nil {
				t.Fatal(err)
			}
			if pub.Created == 0 || pub.Created != pub.Version || pub.Node != "n0" {
				t.Fatalf("a new endpoint is published as %+v; want Created = Version, Node n0", pub)
			}
			if _, err := newer.PublishEndpoint(testEP(5, "new", 7)); err != nil {
				t.Fatal(err)
			}
			wantNewerWins := func(what string, older *Cluster) {
				t.Helper()
				poll.True(t, 5*time.Second, what, func() bool {
					return winnerAt(observer, 5, ep.IP) == "n1/new" && winnerAt(newer, 5, ep.IP) == "" && winnerAt(older, 5, ep.IP) == "n1/new"
				})
			}
			wantNewerWins("the newer claim wins everywhere", older)

			// Restart the older claimant with what it persisted: its version
			// floor and the endpoint with its claim stamp.
			key := endpointKey(5, "old")
			before := ownVersionAt(observer, "n0", kindEndpoint, key)
			floor := older.Version()
			older.Shutdown()
			if tc.seenDead {
				poll.True(t, 2*tc.dead, "the others drop the dead node's endpoint", func() bool {
					return ownVersionAt(observer, "n0", kindEndpoint, key) == 0 && ownVersionAt(newer, "n0", kindEndpoint, key) == 0
				})
			}
			o.port, o.peers, o.minV = older.cfg.BindPort, []string{addr(newer)}, floor
			back := startNode(t, "n0", o, nil)
			ep.Created = pub.Created
			again, err := back.PublishEndpoint(ep)
			if err != nil {
				t.Fatal(err)
			}
			if again.Created != pub.Created || again.Version <= pub.Version {
				t.Fatalf("republished as %+v after %+v; want the same Created at a higher Version", again, pub)
			}
			poll.True(t, 5*time.Second, "the others have the republished endpoint", func() bool {
				return ownVersionAt(observer, "n0", kindEndpoint, key) > before && ownVersionAt(newer, "n0", kindEndpoint, key) > before
			})
			wantNewerWins("the newer claim still wins everywhere after the older claimant restarted", back)
		})
	}
}

func TestEncryption(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	a := startNode(t, "a", nodeOpts{key: key, nets: testNets}, nil)
	b := startNode(t, "b", nodeOpts{key: key, nets: testNets, peers: []string{addr(a)}}, nil)
	poll.True(t, 5*time.Second, "a and b joined", func() bool { return a.alive.Load() == 2 && b.alive.Load() == 2 })
	if _, err := a.PublishEndpoint(testEP(3, "ea", 2)); err != nil {
		t.Fatal(err)
	}
	poll.True(t, 3*time.Second, "b learns a's endpoint", func() bool { return hasEP(b, 3, "a", "ea") })

	bad := startNode(t, "mallory", nodeOpts{key: []byte("XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"), nets: testNets, peers: []string{addr(a), addr(b)}}, nil)
	plain := startNode(t, "plain", nodeOpts{nets: testNets, peers: []string{addr(a)}}, nil)
	for _, n := range []*Cluster{bad, plain} {
		if _, err := n.PublishEndpoint(testEP(3, "evil-"+n.self, 66)); err != nil {
			t.Fatal(err)
		}
	}
	poll.True(t, 5*time.Second, "decrypt failures counted on the keyed nodes", func() bool {
		return a.Stats().DecryptFailures > 0 && b.Stats().DecryptFailures > 0
	})
	// Give the intruders a few join attempts (RejoinInterval 1s), then check.
	poll.True(t, 5*time.Second, "several rejected join attempts", func() bool { return a.Stats().DecryptFailures >= 3 })
	if len(bad.Endpoints(3)) != 0 || len(plain.Endpoints(3)) != 0 || bad.alive.Load() != 1 || plain.alive.Load() != 1 {
		t.Fatalf("wrong-key node learned something: eps=%v members=%d", bad.Endpoints(3), bad.alive.Load())
	}
	if hasEP(a, 3, "mallory", "evil-mallory") || hasEP(b, 3, "plain", "evil-plain") || a.alive.Load() != 2 {
		t.Fatal("keyed nodes accepted an intruder")
	}
	t.Logf("decrypt failures: a=%d b=%d mallory=%d", a.Stats().DecryptFailures, b.Stats().DecryptFailures, bad.Stats().DecryptFailures)
}

func TestNetworkConflict(t *testing.T) {
	a := startNode(t, "a", nodeOpts{}, nil)
	b := startNode(t, "b", nodeOpts{peers: []string{addr(a)}}, nil)
	poll.True(t, 5*time.Second, "joined", func() bool { return b.alive.Load() == 2 })
	if err := a.PublishNetwork(Network{VNI: 100, Subnet: "10.50.0.0/24", MTU: 1450}); err != nil {
		t.Fatal(err)
	}
	poll.True(t, 3*time.Second, "b sees a's network", func() bool { return len(b.Networks()) == 1 })
	if err := b.PublishNetwork(Network{VNI: 100, Subnet: "10.50.0.7/24", MTU: 1450}); err != nil {
		t.Fatalf("same subnet (non-canonical spelling) must not conflict: %v", err)
	}
	err := b.PublishNetwork(Network{VNI: 100, Subnet: "10.51.0.0/24", MTU: 1450})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("different subnet: err = %v, want ErrConflict", err)
	}
	if err := b.PublishNetwork(Network{VNI: 100, Subnet: "10.50.0.0/24", MTU: 1400}); !errors.Is(err, ErrConflict) {
		t.Fatalf("different MTU: err = %v, want ErrConflict", err)
	}
	enc := b.PublishNetwork(Network{VNI: 100, Subnet: "10.50.0.0/24", MTU: 1450, Encrypted: true})
	if !errors.Is(enc, ErrConflict) || !strings.Contains(enc.Error(), "encrypted=true") {
		t.Fatalf("encrypted where a has it clear: err = %v, want ErrConflict naming encrypted=true", enc)
	}
	t.Logf("conflict error: %v", err)
	// After a withdraws, b may redefine it.
	if err := a.WithdrawNetwork(100); err != nil {
		t.Fatal(err)
	}
	poll.True(t, 3*time.Second, "b sees the withdrawal", func() bool {
		for _, n := range b.Networks() {
			if n.Node == "a" {
				return false
			}
		}
		return true
	})
	if err := b.PublishNetwork(Network{VNI: 100, Subnet: "10.51.0.0/24", MTU: 1450}); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []Config{
		{AdvertiseAddr: net.IPv4(127, 0, 0, 1)},
		{NodeName: "a"},
		{NodeName: "a", AdvertiseAddr: net.ParseIP("::1")},
		{NodeName: "a", AdvertiseAddr: net.IPv4(127, 0, 0, 1), SecretKey: []byte("short")},
		{NodeName: "a b", AdvertiseAddr: net.IPv4(127, 0, 0, 1)},
		{NodeName: "a", AdvertiseAddr: net.IPv4(127, 0, 0, 1), DeadTimeout: time.Millisecond},
	} {
		if _, err := New(cfg, nil); err == nil {
			t.Fatalf("config %+v accepted", cfg)
		}
	}
	d := DefaultConfig()
	if d.BindPort != 7947 || d.DeadTimeout != 10*time.Second || d.TombstoneTTL != 10*time.Minute {
		t.Fatalf("defaults %+v", d)
	}
	if pi := probeInterval(d.DeadTimeout); pi != d.DeadTimeout/14 {
		t.Fatalf("probe interval for 10s = %v", pi)
	}
}

func TestCaughtUpOnceEveryPeerSentItsState(t *testing.T) {
	a := startNode(t, "a", nodeOpts{}, nil)
	if a.CaughtUp() {
		t.Fatal("a lone node cannot be caught up: it has heard from nobody")
	}
	b := startNode(t, "b", nodeOpts{peers: []string{addr(a)}}, nil)
	c := startNode(t, "c", nodeOpts{peers: []string{addr(a)}}, nil)
	for _, n := range []*Cluster{a, b, c} {
		poll.True(t, 10*time.Second, n.self+" caught up with both others", n.CaughtUp)
	}
}

// TestPeerByNameIsNotRejoined: PEERS may name hosts; once the named host is
// a member it must count as joined, not be joined again every
// RejoinInterval.
func TestPeerByNameIsNotRejoined(t *testing.T) {
	a := startNode(t, "a", nodeOpts{}, &recorder{})
	b := startNode(t, "b", nodeOpts{peers: []string{net.JoinHostPort("localhost", strconv.Itoa(a.cfg.BindPort))}}, &recorder{})
	poll.True(t, 10*time.Second, "b joined a by name", func() bool { return len(b.Members()) == 2 })
	if missing := b.missingPeers(); len(missing) != 0 {
		t.Fatalf("peers still counted as missing after joining: %v", missing)
	}
}
