package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxovl/vxovl/internal/store"
	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// tlog forwards warnings and errors to the test log.
type tlog struct {
	t    *testing.T
	node string
}

func (h tlog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h tlog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	h.t.Logf("[%s] %s %s%s", h.node, r.Level, r.Message, b.String())
	return nil
}
func (h tlog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h tlog) WithGroup(string) slog.Handler      { return h }

type testNode struct {
	name string
	fake *fakeNode
	d    *Driver
	st   *store.Store
	path string
}

func openStore(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func startNode(t *testing.T, n *fakeNet, name, path string, cfg Config) *testNode {
	t.Helper()
	st := openStore(t, path)
	t.Cleanup(func() { st.Close() })
	fn := n.node(name)
	t.Cleanup(fn.stop) // before the store closes: no callback may touch it after
	cfg.NodeName = name
	cfg.Logger = slog.New(tlog{t, name})
	d, err := New(cfg, fn, st)
	if err != nil {
		t.Fatal(err)
	}
	return &testNode{name: name, fake: fn, d: d, st: st, path: path}
}

func cluster3(t *testing.T, cfg Config) (*fakeNet, []*testNode) {
	n := newFakeNet(t)
	var nodes []*testNode
	for _, name := range []string{"h1", "h2", "h3"} {
		nodes = append(nodes, startNode(t, n, name, filepath.Join(t.TempDir(), "state.db"), cfg))
	}
	return n, nodes
}

func mustPool(t *testing.T, d *Driver, subnet, rng string, opts map[string]string) string {
	t.Helper()
	r, err := d.RequestPool(&ipam.RequestPoolRequest{AddressSpace: "vxovl", Pool: subnet, SubPool: rng, Options: opts})
	if err != nil {
		t.Fatalf("RequestPool(%s, %s): %v", subnet, rng, err)
	}
	if r.Pool != subnet {
		t.Fatalf("RequestPool returned pool %q, want %q", r.Pool, subnet)
	}
	return r.PoolID
}

func gatewayOf(t *testing.T, d *Driver, id, want string) string {
	t.Helper()
	r, err := d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Address: want, Options: map[string]string{optAddressType: addressTypeGateway}})
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	return r.Address
}

func alloc(d *Driver, id, addr string) (string, error) {
	r, err := d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Address: addr})
	if err != nil {
		return "", err
	}
	return r.Address, nil
}

func mustAlloc(t *testing.T, d *Driver, id, addr string) string {
	t.Helper()
	a, err := alloc(d, id, addr)
	if err != nil {
		t.Fatalf("RequestAddress(%q) on %s: %v", addr, d.self, err)
	}
	return a
}

// createNetwork does on d what `docker network create --ipam-driver vxovl`
// does: request the pool, its gateway (gw, or the default one when "") and
// its aux addresses, then tell the IPAM that the network driver is asked
// to create the network. It returns the pool ID.
func createNetwork(t *testing.T, d *Driver, subnet, rng string, opts map[string]string, gw string, aux ...string) string {
	t.Helper()
	id := mustPool(t, d, subnet, rng, opts)
	data := &network.IPAMData{AddressSpace: addressSpaceName, Pool: subnet, Gateway: gatewayOf(t, d, id, gw), AuxAddresses: map[string]any{}}
	for i, a := range aux {
		r, err := d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Address: a})
		if err != nil {
			t.Fatalf("%s: --aux-address %s: %v", d.self, a, err)
		}
		data.AuxAddresses[fmt.Sprintf("aux%d", i)] = r.Address
	}
	if err := d.NetworkCreating(&network.CreateNetworkRequest{NetworkID: "net-" + id, IPv4Data: []*network.IPAMData{data}}); err != nil {
		t.Fatalf("%s: NetworkCreating: %v", d.self, err)
	}
	return id
}

// networkOnAll creates the network on every node, as `docker network
// create` on every host does, and returns its pool ID (the same on all).
func networkOnAll(t *testing.T, nodes []*testNode, subnet, rng string, opts map[string]string, aux ...string) string {
	t.Helper()
	var id string
	for _, nd := range nodes {
		got := createNetwork(t, nd.d, subnet, rng, opts, "", aux...)
		if id != "" && got != id {
			t.Fatalf("pool IDs differ between hosts: %q vs %q", id, got)
		}
		id = got
	}
	return id
}

func addrOf(t *testing.T, cidr string) netip.Addr {
	t.Helper()
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		t.Fatalf("address %q is not in CIDR form: %v", cidr, err)
	}
	return p.Addr()
}

func setGrace(d *Driver, g time.Duration) {
	d.mu.Lock()
	d.cfg.ReleaseGrace = g
	d.mu.Unlock()
}

func ownedBlocks(d *Driver) []netip.Prefix {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []netip.Prefix
	for p, c := range d.owned {
		if c.isBlock() {
			out = append(out, p)
		}
	}
	return out
}

func TestSingleNode(t *testing.T) {
	n := newFakeNet(t)
	nd := startNode(t, n, "h1", filepath.Join(t.TempDir(), "state.db"), Config{})
	id := mustPool(t, nd.d, "10.50.0.0/24", "", nil)
	if gw := gatewayOf(t, nd.d, id, ""); gw != "10.50.0.1/24" {
		t.Fatalf("gateway %s, want 10.50.0.1/24", gw)
	}
	seen := map[string]bool{}
	for range 40 {
		a := mustAlloc(t, nd.d, id, "")
		if seen[a] || a == "10.50.0.1/24" || a == "10.50.0.0/24" || a == "10.50.0.255/24" {
			t.Fatalf("bad or duplicate address %s", a)
		}
		seen[a] = true
	}
	if got := len(ownedBlocks(nd.d)); got != 3 {
		t.Fatalf("40 addresses in /28 blocks should take 3 blocks, node holds %d", got)
	}
	caps, _ := nd.d.GetCapabilities()
	if caps.RequiresMACAddress {
		t.Fatal("the driver asks Docker for endpoint MACs: Docker then gives every endpoint a random MAC, " +
			"not the stable one the network driver derives")
	}
}

func TestPoolIDDeterministic(t *testing.T) {
	_, nodes := cluster3(t, Config{})
	for _, tc := range []struct{ subnet, rng, bs, want string }{
		{"10.50.0.0/24", "", "", "vxovl:10.50.0.0/24"},
		{"10.50.0.0/24", "10.50.0.128/25", "", "vxovl:10.50.0.0/24;range=10.50.0.128/25"},
		{"10.60.0.0/16", "", "6", "vxovl:10.60.0.0/16;block=6"},
	} {
		opts := map[string]string{}
		if tc.bs != "" {
			opts[optBlockSize] = tc.bs
		}
		for _, nd := range nodes {
			if got := mustPool(t, nd.d, tc.subnet, tc.rng, opts); got != tc.want {
				t.Errorf("%s: pool ID %q, want %q", nd.name, got, tc.want)
			}
		}
	}
}

func TestBadInput(t *testing.T) {
	n := newFakeNet(t)
	nd := startNode(t, n, "h1", filepath.Join(t.TempDir(), "state.db"), Config{})
	d := nd.d
	for _, tc := range []struct {
		name string
		req  ipam.RequestPoolRequest
		want string
	}{
		{"no subnet", ipam.RequestPoolRequest{}, "--subnet"},
		{"bad subnet", ipam.RequestPoolRequest{Pool: "10.50.0.0/33"}, "not a CIDR"},
		{"garbage", ipam.RequestPoolRequest{Pool: "hello"}, "not a CIDR"},
		{"ipv6 flag", ipam.RequestPoolRequest{Pool: "fd00::/64", V6: true}, "IPv4 only"},
		{"ipv6 subnet", ipam.RequestPoolRequest{Pool: "fd00::/64"}, "not IPv4"},
		{"tiny", ipam.RequestPoolRequest{Pool: "10.50.0.0/31"}, "too small"},
		{"range outside", ipam.RequestPoolRequest{Pool: "10.50.0.0/24", SubPool: "10.51.0.0/25"}, "not inside"},
		{"range larger", ipam.RequestPoolRequest{Pool: "10.50.0.0/24", SubPool: "10.50.0.0/23"}, "not inside"},
		{"block size", ipam.RequestPoolRequest{Pool: "10.50.0.0/24", Options: map[string]string{optBlockSize: "9"}}, "block-size"},
		{"block size text", ipam.RequestPoolRequest{Pool: "10.50.0.0/24", Options: map[string]string{optBlockSize: "x"}}, "block-size"},
	} {
		if _, err := d.RequestPool(&tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	if _, err := d.RequestPool(nil); err == nil {
		t.Error("nil RequestPool accepted")
	}
	id := createNetwork(t, d, "10.50.0.0/24", "", nil, "")
	for _, tc := range []struct {
		name       string
		pool, addr string
		want       string
	}{
		{"unknown pool", "vxovl:10.99.0.0/24", "", "unknown vxovl pool"},
		{"outside", id, "10.51.0.5", "not a host address"},
		{"network address", id, "10.50.0.0", "not a host address"},
		{"broadcast", id, "10.50.0.255", "not a host address"},
		{"ipv6 address", id, "fd00::5", "not IPv4"},
		{"garbage address", id, "ten", "not an IP"},
		{"gateway", id, "10.50.0.1", "gateway"},
	} {
		if _, err := alloc(d, tc.pool, tc.addr); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	if err := d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: id, Address: "10.50.0.77"}); err == nil || !strings.Contains(err.Error(), "not allocated") {
		t.Errorf("release of unknown address: %v", err)
	}
	if err := d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: "nope", Address: "10.50.0.77"}); err == nil || !strings.Contains(err.Error(), "unknown vxovl pool") {
		t.Errorf("release in unknown pool: %v", err)
	}
	if err := d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: id, Address: "10.50.0.1"}); err != nil {
		t.Errorf("releasing the gateway must succeed (Docker does it on network removal): %v", err)
	}
	if err := d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: "nope"}); err == nil {
		t.Error("ReleasePool of an unknown pool succeeded")
	}
	a := mustAlloc(t, d, id, "10.50.0.9")
	if _, err := alloc(d, id, "10.50.0.9"); err == nil || !strings.Contains(err.Error(), "in use on this host") {
		t.Errorf("double explicit: %v", err)
	}
	if err := d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: id, Address: a}); err != nil {
		t.Fatal(err)
	}
	if err := d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: id, Address: a}); err == nil {
		t.Error("double release succeeded")
	}
	// Malformed claim messages and records are dropped, never fatal.
	d.onMessage("x", []byte("{"))
	d.onMessage("x", []byte(`{"op":"req","id":1,"p":"10.50.0.0/33"}`))
	d.onMessage("x", []byte(`{"op":"req","id":1,"p":"10.50.0.5/24"}`))
	for _, tc := range []struct{ kind, key, val string }{
		{KindBlock, "10.50.0.0/28", "{"},
		{KindBlock, "10.50.0.1/28", `{"s":"10.50.0.0/24"}`},
		{KindBlock, "10.50.0.0/28", `{"s":"10.60.0.0/24"}`},
		{KindPin, "10.50.0.0/28", `{"s":"10.50.0.0/24"}`},
		{"other", "10.50.0.0/28", `{"s":"10.50.0.0/24"}`},
	} {
		if _, err := decodeRecord(tc.kind, tc.key, []byte(tc.val)); err == nil {
			t.Errorf("record %s %s %s accepted", tc.kind, tc.key, tc.val)
		}
	}
}

func TestGatewayIdenticalAcrossNodes(t *testing.T) {
	_, nodes := cluster3(t, Config{})
	for _, nd := range nodes {
		id := mustPool(t, nd.d, "10.50.0.0/24", "", nil)
		if gw := gatewayOf(t, nd.d, id, ""); gw != "10.50.0.1/24" {
			t.Fatalf("%s: gateway %s", nd.name, gw)
		}
		id2 := mustPool(t, nd.d, "10.60.0.0/16", "10.60.8.0/22", nil)
		if gw := gatewayOf(t, nd.d, id2, "10.60.8.254"); gw != "10.60.8.254/16" {
			t.Fatalf("%s: explicit gateway %s", nd.name, gw)
		}
	}
	// Nobody hands out a gateway, even the explicit one inside the range.
	for _, nd := range nodes {
		for range 30 {
			a := mustAlloc(t, nd.d, "vxovl:10.60.0.0/16;range=10.60.8.0/22", "")
			if a == "10.60.8.254/16" {
				t.Fatal("gateway handed out")
			}
			if !netip.MustParsePrefix("10.60.8.0/22").Contains(addrOf(t, a)) {
				t.Fatalf("%s outside --ip-range", a)
			}
		}
	}
}

// TestConcurrentClaimsOfOneBlock runs the bare protocol: three nodes claim
// the same block at once, many times; never more than one may win.
func TestConcurrentClaimsOfOneBlock(t *testing.T) {
	subnet := netip.MustParsePrefix("10.50.0.0/24")
	wins := 0
	for round := range 40 {
		n, nodes := cluster3(t, Config{ClaimTimeout: time.Second})
		n.maxDelay = time.Duration(round%4) * time.Millisecond
		block := netip.MustParsePrefix("10.50.0.32/28")
		var mu sync.Mutex
		var winners []string
		var wg sync.WaitGroup
		for _, nd := range nodes {
			wg.Go(func() {
				if err := nd.d.claim(subnet, block, false); err == nil {
					mu.Lock()
					winners = append(winners, nd.name)
					mu.Unlock()
				} else if !errors.Is(err, errClaimConflict) && !errors.Is(err, errClaimRefused) && !errors.Is(err, errClaimYielded) {
					t.Errorf("round %d: %s: unexpected claim error: %v", round, nd.name, err)
				}
			})
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("round %d: %d nodes won the same block, want exactly one: %v", round, len(winners), winners)
		}
		wins += len(winners)
		// A claim after the race never succeeds against the winner.
		if len(winners) == 1 {
			for _, nd := range nodes {
				if nd.name != winners[0] {
					if err := nd.d.claim(subnet, block, false); err == nil {
						t.Fatalf("round %d: %s claimed %s after %s won it", round, nd.name, block, winners[0])
					}
				}
			}
		}
	}
	t.Logf("40 rounds of 3 concurrent claims: exactly one winner in %d", wins)
}

func TestConcurrentAllocations(t *testing.T) {
	_, nodes := cluster3(t, Config{})
	id := networkOnAll(t, nodes, "10.50.0.0/24", "", nil)
	var mu sync.Mutex
	got := map[string]string{}
	var wg sync.WaitGroup
	for _, nd := range nodes {
		for range 20 {
			wg.Go(func() {
				a, err := alloc(nd.d, id, "")
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("%s: %v", nd.name, err)
					return
				}
				if other, dup := got[a]; dup {
					t.Errorf("%s handed out %s, already given by %s", nd.name, a, other)
				}
				got[a] = nd.name
			})
		}
	}
	wg.Wait()
	if len(got) != 60 {
		t.Fatalf("%d distinct addresses, want 60", len(got))
	}
	// Every node allocated only inside its own blocks, and no block has two owners.
	owner := map[netip.Prefix]string{}
	for _, nd := range nodes {
		for _, b := range ownedBlocks(nd.d) {
			for ob, on := range owner {
				if ob.Overlaps(b) {
					t.Fatalf("block %s of %s overlaps %s of %s", b, nd.name, ob, on)
				}
			}
			owner[b] = nd.name
		}
	}
	for a, name := range got {
		ok := false
		for b, on := range owner {
			if on == name && b.Contains(addrOf(t, a)) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("%s of %s is outside its blocks", a, name)
		}
	}
	var won, lost, conflicts uint64
	for _, nd := range nodes {
		s := nd.d.Stats()
		won, lost, conflicts = won+s.ClaimsWon, lost+s.ClaimsLost, conflicts+s.Conflicts
	}
	t.Logf("3x20 concurrent allocations: 60 distinct, %d blocks, claims won %d, lost %d", len(owner), won, lost)
	if conflicts != 0 {
		t.Fatalf("%d conflicts in a connected cluster", conflicts)
	}
}

func TestExplicitAndAux(t *testing.T) {
	n, nodes := cluster3(t, Config{ClaimTimeout: time.Second})
	h1, h2 := nodes[0].d, nodes[1].d
	// The same --aux-address is reserved on every host.
	id := networkOnAll(t, nodes, "10.50.0.0/24", "", nil, "10.50.0.250")
	// A pin in a free block.
	if a := mustAlloc(t, h1, id, "10.50.0.200"); a != "10.50.0.200/24" {
		t.Fatalf("explicit address came back as %s", a)
	}
	poll.True(t, 5*time.Second, "h2 learns h1's pin", func() bool {
		h2.mu.Lock()
		defer h2.mu.Unlock()
		return h2.known[knownKey{"h1", netip.MustParsePrefix("10.50.0.200/32")}] != nil
	})
	if _, err := alloc(h2, id, "10.50.0.200"); err == nil || !strings.Contains(err.Error(), "pinned by node h1") {
		t.Fatalf("second host got the same --ip: %v", err)
	}
	// Even before h2 has h1's record, the claim round refuses it: hide records.
	if _, err := alloc(h2, id, "10.50.0.250"); err == nil {
		t.Fatal("--ip equal to an aux address accepted")
	}
	// An explicit address inside another node's block is refused clearly.
	a1 := mustAlloc(t, h1, id, "")
	blk := blockOf(addrOf(t, a1), 4)
	inside := fromU32(first(blk) + 5).String()
	poll.True(t, 5*time.Second, "h2 learns h1's block", func() bool {
		h2.mu.Lock()
		defer h2.mu.Unlock()
		return h2.known[knownKey{"h1", blk}] != nil
	})
	if _, err := alloc(h2, id, inside); err == nil || !strings.Contains(err.Error(), "held by node h1") {
		t.Fatalf("--ip inside h1's block %s: %v", blk, err)
	}
	// But h1 may use it: it is its own block.
	if a := mustAlloc(t, h1, id, inside); addrOf(t, a).String() != inside {
		t.Fatalf("own-block explicit address came back as %s", a)
	}
	// Dynamic allocation never returns gateways, pins or aux addresses.
	for _, nd := range nodes {
		for range 60 {
			a := addrOf(t, mustAlloc(t, nd.d, id, "")).String()
			switch a {
			case "10.50.0.1", "10.50.0.200", "10.50.0.250", inside:
				t.Fatalf("%s handed out reserved %s", nd.name, a)
			}
		}
	}
	// Releasing the pin withdraws it; then another host may pin it.
	if err := h1.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: id, Address: "10.50.0.200/24"}); err != nil {
		t.Fatal(err)
	}
	setGrace(h2, time.Millisecond)
	poll.True(t, 5*time.Second, "h2 forgets the released pin", func() bool {
		n.notifyAll()
		h2.mu.Lock()
		defer h2.mu.Unlock()
		return h2.known[knownKey{"h1", netip.MustParsePrefix("10.50.0.200/32")}] == nil
	})
	// 10.50.0.200 may now sit inside some host's block after 180 dynamic
	// allocations; only assert the pin is gone from h1.
	if nodes[0].fake.Records(KindPin) != nil {
		for _, r := range nodes[0].fake.Records(KindPin) {
			if r.Owner == "h1" && r.Key == "10.50.0.200/32" {
				t.Fatal("released pin still published")
			}
		}
	}
}

// TestConcurrentPins: three hosts pin the same --ip at once: at most one
// succeeds.
func TestConcurrentPins(t *testing.T) {
	for round := range 20 {
		_, nodes := cluster3(t, Config{ClaimTimeout: time.Second})
		id := networkOnAll(t, nodes, "10.50.0.0/24", "", nil)
		var mu sync.Mutex
		ok := 0
		var wg sync.WaitGroup
		for _, nd := range nodes {
			wg.Go(func() {
				if _, err := alloc(nd.d, id, "10.50.0.100"); err == nil {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if ok > 1 {
			t.Fatalf("round %d: %d hosts pinned 10.50.0.100", round, ok)
		}
	}
}

func TestReleaseReturnsBlocks(t *testing.T) {
	n, nodes := cluster3(t, Config{})
	h1 := nodes[0].d
	id := networkOnAll(t, nodes, "10.50.0.0/24", "", nil)
	var addrs []string
	for range 40 {
		addrs = append(addrs, mustAlloc(t, h1, id, ""))
	}
	if got := len(ownedBlocks(h1)); got != 3 {
		t.Fatalf("holds %d blocks, want 3", got)
	}
	for _, a := range addrs {
		if err := h1.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: id, Address: a}); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(ownedBlocks(h1)); got != 1 {
		t.Fatalf("after releasing everything the node holds %d blocks, want 1 (kept against churn)", got)
	}
	if s := h1.Stats(); s.BlocksReleased != 2 {
		t.Fatalf("BlocksReleased %d, want 2", s.BlocksReleased)
	}
	count := func() int {
		c := 0
		for _, r := range nodes[1].fake.Records(KindBlock) {
			if r.Owner == "h1" {
				c++
			}
		}
		return c
	}
	if got := count(); got != 1 {
		t.Fatalf("h1 still publishes %d blocks, want 1", got)
	}
	// Released blocks become claimable by others (after the release grace).
	setGrace(nodes[1].d, time.Millisecond)
	n.notifyAll()
	poll.True(t, 5*time.Second, "h2 forgets released blocks", func() bool {
		n.notifyAll()
		h2 := nodes[1].d
		h2.mu.Lock()
		defer h2.mu.Unlock()
		c := 0
		for k := range h2.known {
			if k.owner == "h1" {
				c++
			}
		}
		return c == 1
	})
	if err := h1.ReleasePool(&ipam.ReleasePoolRequest{PoolID: id}); err != nil {
		t.Fatal(err)
	}
	if got := len(ownedBlocks(h1)); got != 0 {
		t.Fatalf("after ReleasePool the node holds %d blocks", got)
	}
	if got := count(); got != 0 {
		t.Fatalf("after ReleasePool h1 publishes %d blocks", got)
	}
	if _, err := alloc(h1, id, ""); err == nil {
		t.Fatal("allocation from a released pool succeeded")
	}
}

// TestSameSubnetTwoGateways: two networks on one host with the same
// --subnet and different gateways each keep their own gateway, and neither
// is handed out, also after the other network is removed.
func TestSameSubnetTwoGateways(t *testing.T) {
	n := newFakeNet(t)
	d := startNode(t, n, "h1", filepath.Join(t.TempDir(), "state.db"), Config{}).d
	a := mustPool(t, d, "10.50.0.0/28", "", nil)
	if gw := gatewayOf(t, d, a, ""); gw != "10.50.0.1/28" {
		t.Fatalf("first network's gateway %s, want 10.50.0.1/28", gw)
	}
	b := mustPool(t, d, "10.50.0.0/28", "", nil)
	if gw := gatewayOf(t, d, b, "10.50.0.14"); gw != "10.50.0.14/28" {
		t.Fatalf("second network's gateway %s, want 10.50.0.14/28", gw)
	}
	drain := func(id string) []string {
		var got []string
		for {
			r, err := alloc(d, id, "")
			if errors.Is(err, ErrExhausted) {
				return got
			}
			if err != nil {
				t.Fatalf("pool %s: %v", id, err)
			}
			got = append(got, r)
		}
	}
	got := append(drain(a), drain(b)...)
	for _, r := range got {
		if r == "10.50.0.1/28" || r == "10.50.0.14/28" {
			t.Fatalf("gateway %s handed out to a container: %v", r, got)
		}
	}
	if len(got) != 12 {
		t.Fatalf("%d addresses handed out, want the 12 that are not gateways: %v", len(got), got)
	}
	// Removing the second network frees its gateway, never the first's.
	for _, r := range got {
		if err := d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: a, Address: r}); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: b, Address: "10.50.0.14"}); err != nil {
		t.Fatal(err)
	}
	if err := d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: b}); err != nil {
		t.Fatal(err)
	}
	got = drain(a)
	if len(got) != 13 || slices.Contains(got, "10.50.0.1/28") {
		t.Fatalf("after removing the second network: %v, want 13 addresses without the first's gateway 10.50.0.1", got)
	}
}

// TestPoolPerNetwork: every network gets its own pool; a pool an older
// vxovl shared between two networks lasts until both released it.
func TestPoolPerNetwork(t *testing.T) {
	n := newFakeNet(t)
	path := filepath.Join(t.TempDir(), "state.db")
	st := openStore(t, path)
	subnet := netip.MustParsePrefix("10.60.0.0/24")
	shared := pool{ID: "vxovl:10.60.0.0/24", Subnet: subnet, Range: subnet, BlockBits: 4, Refs: 2}
	if err := st.Put(bucketPools, shared.ID, shared); err != nil {
		t.Fatal(err)
	}
	st.Close()
	d := startNode(t, n, "h1", path, Config{}).d

	a := mustPool(t, d, "10.50.0.0/24", "", nil)
	b := mustPool(t, d, "10.50.0.0/24", "", nil)
	c := mustPool(t, d, "10.50.0.0/24", "", nil)
	if a != "vxovl:10.50.0.0/24" || b != a+"#2" || c != a+"#3" {
		t.Fatalf("pool IDs %q %q %q, want the definition, then #2 and #3", a, b, c)
	}
	if err := d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: b}); err != nil {
		t.Fatal(err)
	}
	if err := d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: b}); err == nil {
		t.Fatal("second ReleasePool of a network's pool succeeded")
	}
	mustAlloc(t, d, a, "") // the other networks keep theirs
	mustAlloc(t, d, c, "")
	if got := mustPool(t, d, "10.50.0.0/24", "", nil); got != b {
		t.Fatalf("a new network got pool %q, want the free %q", got, b)
	}

	if err := d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: shared.ID}); err != nil {
		t.Fatal(err)
	}
	mustAlloc(t, d, shared.ID, "") // still used by the second network
	if err := d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: shared.ID}); err != nil {
		t.Fatal(err)
	}
	if err := d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: shared.ID}); err == nil {
		t.Fatal("third ReleasePool of a pool shared by two networks succeeded")
	}
}

func TestRestartKeepsAllocations(t *testing.T) {
	n := newFakeNet(t)
	path := filepath.Join(t.TempDir(), "state.db")
	h1 := startNode(t, n, "h1", path, Config{})
	h2 := startNode(t, n, "h2", filepath.Join(t.TempDir(), "state.db"), Config{})
	id := networkOnAll(t, []*testNode{h1, h2}, "10.50.0.0/24", "", nil)
	var before []string
	for range 5 {
		before = append(before, mustAlloc(t, h1.d, id, ""))
	}
	mustAlloc(t, h1.d, id, "10.50.0.222")
	blocks := ownedBlocks(h1.d)

	// Restart h1: its records vanish from the cluster meanwhile.
	h1.st.Close()
	n.mu.Lock()
	delete(n.records, "h1")
	n.mu.Unlock()
	st := openStore(t, path)
	t.Cleanup(func() { st.Close() })
	fn := n.node("h1")
	t.Cleanup(fn.stop)
	d, err := New(Config{NodeName: "h1", Logger: slog.New(tlog{t, "h1"})}, fn, st)
	if err != nil {
		t.Fatal(err)
	}
	if got := ownedBlocks(d); len(got) != len(blocks) || got[0] != blocks[0] {
		t.Fatalf("blocks after restart %v, before %v", got, blocks)
	}
	for _, a := range append(before, "10.50.0.222/24") {
		if _, err := alloc(d, id, a); err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("%s was forgotten across the restart: %v", a, err)
		}
	}
	if a := mustAlloc(t, d, id, ""); addrOf(t, a) == addrOf(t, before[len(before)-1]) {
		t.Fatal("restarted node handed out an address it already had")
	}
	poll.True(t, 5*time.Second, "h1 republished its claims", func() bool {
		c := 0
		for _, r := range h2.fake.Records(KindBlock) {
			if r.Owner == "h1" {
				c++
			}
		}
		return c == len(blocks)
	})
	if err := d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: id, Address: before[0]}); err != nil {
		t.Fatalf("releasing an address allocated before the restart: %v", err)
	}
}

// TestPartition: blocks held before a partition stay with their owner; each
// side allocates from what it holds and claims what it sees as free, fails
// clearly when nothing is left, and the heal reveals the double claims.
func TestPartition(t *testing.T) {
	n, nodes := cluster3(t, Config{ClaimTimeout: 300 * time.Millisecond, AllocateTimeout: 2 * time.Second})
	h1, h2, h3 := nodes[0].d, nodes[1].d, nodes[2].d
	// /27 with blocks of 4: 8 blocks.
	id := networkOnAll(t, nodes, "10.50.0.0/27", "", map[string]string{optBlockSize: "2"})
	a1 := addrOf(t, mustAlloc(t, h1, id, ""))
	a2 := addrOf(t, mustAlloc(t, h2, id, ""))
	b1, b2 := blockOf(a1, 2), blockOf(a2, 2)
	poll.True(t, 5*time.Second, "everyone knows both blocks", func() bool {
		for _, d := range []*Driver{h1, h2, h3} {
			d.mu.Lock()
			ok := (d.self == "h1" || d.known[knownKey{"h1", b1}] != nil) && (d.self == "h2" || d.known[knownKey{"h2", b2}] != nil)
			d.mu.Unlock()
			if !ok {
				return false
			}
		}
		return true
	})

	n.split(true, []string{"h1"}, []string{"h2", "h3"})
	exhaust := func(d *Driver) []netip.Addr {
		var got []netip.Addr
		for {
			a, err := alloc(d, id, "")
			if err != nil {
				if !errors.Is(err, ErrExhausted) {
					t.Fatalf("%s: want ErrExhausted, got %v", d.self, err)
				}
				t.Logf("%s ran out as expected: %v", d.self, err)
				return got
			}
			got = append(got, addrOf(t, a))
		}
	}
	var side1, side2 []netip.Addr
	var wg sync.WaitGroup
	wg.Go(func() { side1 = exhaust(h1) })
	wg.Go(func() { side2 = exhaust(h2) })
	wg.Wait()
	if len(side1) == 0 || len(side2) == 0 {
		t.Fatalf("a side could not allocate at all during the partition: %d, %d", len(side1), len(side2))
	}
	for _, a := range side2 {
		if b1.Contains(a) {
			t.Fatalf("h2 allocated %s from %s, which h1 held before the partition", a, b1)
		}
	}
	for _, a := range side1 {
		if b2.Contains(a) {
			t.Fatalf("h1 allocated %s from %s, which h2 held before the partition", a, b2)
		}
	}
	if c := h1.Stats().Conflicts + h2.Stats().Conflicts; c != 0 {
		t.Fatalf("%d conflicts reported before the heal", c)
	}

	n.heal()
	poll.True(t, 5*time.Second, "both sides report the double claims", func() bool {
		return h1.Stats().Conflicts > 0 && h2.Stats().Conflicts > 0
	})
	// For every doubly claimed block exactly one side yields.
	h1.mu.Lock()
	h2.mu.Lock()
	for p, c1 := range h1.owned {
		if c2 := h2.owned[p]; c2 != nil && c1.isBlock() {
			if c1.Conflicted == c2.Conflicted {
				t.Errorf("block %s: conflicted on h1=%v h2=%v, want exactly one", p, c1.Conflicted, c2.Conflicted)
			}
		}
	}
	h2.mu.Unlock()
	h1.mu.Unlock()
	t.Logf("partition: h1 side %d addresses, h2 side %d; conflicts h1=%d h2=%d",
		len(side1), len(side2), h1.Stats().Conflicts, h2.Stats().Conflicts)
}

// TestUnreachableMember: a member still listed but silent (suspect) makes
// claims time out; the host keeps allocating from its blocks, then fails
// with a clear error.
func TestUnreachableMember(t *testing.T) {
	n, nodes := cluster3(t, Config{ClaimTimeout: 200 * time.Millisecond, AllocateTimeout: 500 * time.Millisecond})
	h1 := nodes[0].d
	id := networkOnAll(t, nodes, "10.50.0.0/24", "", nil)
	blk := blockOf(addrOf(t, mustAlloc(t, h1, id, "")), 4)
	h1.mu.Lock()
	free := 0
	for v := first(blk); v <= last(blk); v++ {
		if a := fromU32(v); hostAddr(netip.MustParsePrefix("10.50.0.0/24"), a) && a != netip.MustParseAddr("10.50.0.1") && h1.allocs[a] == nil {
			free++
		}
	}
	h1.mu.Unlock()
	n.split(false, []string{"h1", "h2"}, []string{"h3"})
	for range free {
		if a := addrOf(t, mustAlloc(t, h1, id, "")); !blk.Contains(a) {
			t.Fatalf("%s is outside the held block %s", a, blk)
		}
	}
	_, err := alloc(h1, id, "")
	if err == nil || !errors.Is(err, ErrExhausted) || !errors.Is(err, errClaimTimeout) || !strings.Contains(err.Error(), "h3") {
		t.Fatalf("want a clear exhaustion error naming the silent node h3, got %v", err)
	}
	t.Logf("error: %v", err)
	n.heal()
	mustAlloc(t, h1, id, "")
}

// A released block is forgotten by the other nodes once the release grace
// has passed, even when no further record changes wake them: in a quiet
// cluster it must not stay reserved forever.
func TestReleasedBlockForgottenInQuietCluster(t *testing.T) {
	_, nodes := cluster3(t, Config{ReleaseGrace: 200 * time.Millisecond})
	h1, h2 := nodes[0].d, nodes[1].d
	id := networkOnAll(t, nodes, "10.50.0.0/24", "", map[string]string{optBlockSize: "2"})
	var addrs []string
	for range 6 { // blocks of 4 (3 usable in the first): at least two blocks
		addrs = append(addrs, mustAlloc(t, h1, id, ""))
	}
	remote := func() int {
		h2.mu.Lock()
		defer h2.mu.Unlock()
		c := 0
		for k, r := range h2.known {
			if k.owner == "h1" && r.isBlock() {
				c++
			}
		}
		return c
	}
	held := len(ownedBlocks(h1))
	poll.True(t, 5*time.Second, "h2 learns h1's blocks", func() bool { return remote() == held })
	for _, a := range addrs {
		if err := h1.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: id, Address: a}); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(ownedBlocks(h1)); got != 1 {
		t.Fatalf("h1 holds %d blocks after releasing everything, want 1", got)
	}
	// No notifyAll here: only h2's own timer may make it forget.
	poll.True(t, 5*time.Second, "h2 forgets h1's released blocks", func() bool { return remote() == 1 })
}

// TestCloseStopsRefresh: after Close no refresh learns (and writes) claims,
// so nothing touches the store the plugin closes next.
func TestCloseStopsRefresh(t *testing.T) {
	_, nodes := cluster3(t, Config{})
	id := networkOnAll(t, nodes, "10.51.0.0/24", "", nil)
	nodes[0].d.Close()
	mustAlloc(t, nodes[1].d, id, "")
	nodes[0].d.Refresh()
	nodes[0].d.mu.Lock()
	known, timer := len(nodes[0].d.known), nodes[0].d.refreshTimer != nil && !nodes[0].d.refreshAt.IsZero()
	nodes[0].d.mu.Unlock()
	if known != 0 || timer {
		t.Fatalf("after Close: %d claims learned, refresh scheduled %v; want 0, false", known, timer)
	}
	if got, _ := store.ListJSON[remoteClaim](nodes[0].st, bucketKnown); len(got) != 0 {
		t.Fatalf("after Close the store learned %v", got)
	}
	// The open nodes still learn it.
	poll.True(t, 5*time.Second, "h3 learns h2's block", func() bool {
		nodes[2].d.mu.Lock()
		defer nodes[2].d.mu.Unlock()
		return len(nodes[2].d.known) > 0
	})
}

func TestClassify(t *testing.T) {
	gw := map[string]string{optAddressType: addressTypeGateway}
	for _, tc := range []struct {
		name     string
		req      ipam.RequestAddressRequest
		creating bool
		want     requestKind
	}{
		{"default gateway", ipam.RequestAddressRequest{Options: gw}, true, reqGateway},
		{"--gateway", ipam.RequestAddressRequest{Address: "10.50.0.254", Options: gw}, true, reqGateway},
		{"--aux-address while the network is created", ipam.RequestAddressRequest{Address: "10.50.0.9"}, true, reqAux},
		{"--ip of an endpoint", ipam.RequestAddressRequest{Address: "10.50.0.9"}, false, reqExplicit},
		{"--ip with options (newer Docker)", ipam.RequestAddressRequest{Address: "10.50.0.9", Options: map[string]string{"com.docker.network.endpoint.name": "c"}}, false, reqExplicit},
		{"endpoint", ipam.RequestAddressRequest{}, false, reqDynamic},
		{"endpoint, blank address", ipam.RequestAddressRequest{Address: " "}, false, reqDynamic},
		{"endpoint of a network made by another driver", ipam.RequestAddressRequest{}, true, reqDynamic},
	} {
		if got := classify(&tc.req, tc.creating); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestNetworkPool(t *testing.T) {
	a := netip.MustParseAddr
	gw1, gw2 := a("10.50.0.1"), a("10.50.0.254")
	two := []poolCandidate{
		{id: "vxovl:10.50.0.0/24", gateway: gw1, aux: []netip.Addr{a("10.50.0.9"), a("10.50.0.8")}},
		{id: "vxovl:10.50.0.0/24#2", gateway: gw2},
	}
	for _, tc := range []struct {
		name   string
		cands  []poolCandidate
		gw     netip.Addr
		aux    []netip.Addr
		want   string
		wantOK bool
	}{
		{"none being created", nil, gw1, nil, "", false},
		{"the only one", two[1:], gw1, nil, "vxovl:10.50.0.0/24#2", true},
		{"by gateway", two, gw2, nil, "vxovl:10.50.0.0/24#2", true},
		{"by gateway and aux, in any order", two, gw1, []netip.Addr{a("10.50.0.8"), a("10.50.0.9")}, "vxovl:10.50.0.0/24", true},
		{"aux differ: first by ID", two, gw1, []netip.Addr{a("10.50.0.8")}, "vxovl:10.50.0.0/24", true},
		{"no match: first by ID", []poolCandidate{two[1], two[0]}, a("10.50.0.2"), nil, "vxovl:10.50.0.0/24", true},
	} {
		got, ok := networkPool(slices.Clone(tc.cands), tc.gw, tc.aux)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("%s: %q %v, want %q %v", tc.name, got, ok, tc.want, tc.wantOK)
		}
	}
}

// TestAuxAndPinWithoutMAC follows Docker 20.10's calls, which carry no
// option that tells a network's --aux-address from an endpoint's --ip: an
// address requested before the network driver is asked to create the
// network is reserved on every host, one requested after is pinned
// cluster-wide.
func TestAuxAndPinWithoutMAC(t *testing.T) {
	_, nodes := cluster3(t, Config{ClaimTimeout: time.Second})
	h1, h2, h3 := nodes[0].d, nodes[1].d, nodes[2].d
	// Every host reserves the network's aux address for itself.
	id := networkOnAll(t, nodes[:2], "10.50.0.0/24", "", nil, "10.50.0.250")
	for _, d := range []*Driver{h1, h2} {
		d.mu.Lock()
		c := d.owned[netip.MustParsePrefix("10.50.0.250/32")]
		d.mu.Unlock()
		if c == nil || !c.Aux {
			t.Fatalf("%s: aux address reserved as %+v, want an aux claim", d.self, c)
		}
	}
	// After the network exists, the same kind of request is an --ip.
	if a := mustAlloc(t, h1, id, "10.50.0.200"); a != "10.50.0.200/24" {
		t.Fatalf("--ip came back as %s", a)
	}
	h1.mu.Lock()
	c := h1.owned[netip.MustParsePrefix("10.50.0.200/32")]
	h1.mu.Unlock()
	if c == nil || !c.Pin {
		t.Fatalf("--ip reserved as %+v, want a pin", c)
	}
	if _, err := alloc(h2, id, "10.50.0.200"); err == nil {
		t.Fatal("a second host got the same --ip")
	}
	if _, err := alloc(h1, id, "10.50.0.250"); err == nil || !strings.Contains(err.Error(), "in use on this host") {
		t.Fatalf("--ip equal to the aux address: %v", err)
	}
	// Network driver other than vxovl's: the first address requested
	// without a name proves the network exists.
	id3 := mustPool(t, h3, "10.50.0.0/24", "", nil)
	gatewayOf(t, h3, id3, "")
	mustAlloc(t, h3, id3, "")
	if _, err := alloc(h3, id3, "10.50.0.200"); err == nil {
		t.Fatal("h3 took h1's --ip as an aux address")
	}
	// Two networks of one subnet created at once: the CreateNetwork of one
	// ends the creation of its own pool only.
	x := mustPool(t, h3, "10.70.0.0/24", "", nil)
	gatewayOf(t, h3, x, "")
	y := mustPool(t, h3, "10.70.0.0/24", "", nil)
	gwY := gatewayOf(t, h3, y, "10.70.0.254")
	if err := h3.NetworkCreating(&network.CreateNetworkRequest{NetworkID: "y", IPv4Data: []*network.IPAMData{
		{AddressSpace: addressSpaceName, Pool: "10.70.0.0/24", Gateway: gwY}}}); err != nil {
		t.Fatal(err)
	}
	h3.mu.Lock()
	xCreating, yCreating := h3.pools[x].Creating, h3.pools[y].Creating
	h3.mu.Unlock()
	if !xCreating || yCreating {
		t.Fatalf("after y's CreateNetwork: x creating %v, y creating %v; want true, false", xCreating, yCreating)
	}
	// A network of another IPAM with the same subnet ends nothing.
	if err := h3.NetworkCreating(&network.CreateNetworkRequest{NetworkID: "z", IPv4Data: []*network.IPAMData{
		{AddressSpace: "LocalDefault", Pool: "10.70.0.0/24", Gateway: "10.70.0.1/24"}}}); err != nil {
		t.Fatal(err)
	}
	h3.mu.Lock()
	xCreating = h3.pools[x].Creating
	h3.mu.Unlock()
	if !xCreating {
		t.Fatal("another IPAM's network ended the creation of a vxovl pool")
	}
}
