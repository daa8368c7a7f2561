package cluster

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/vxovl/vxovl/internal/memnet"
	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// heldEndpoints counts the endpoint records (live or tombstones) of one
// network that c holds from other nodes.
func heldEndpoints(c *Cluster, vni uint32) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for owner, o := range c.t.owners {
		for k := range o.recs {
			if owner != c.self && k.kind == kindEndpoint && endpointVNI(k.key) == vni {
				n++
			}
		}
	}
	return n
}

// The interest rules across three real nodes: a and b have network 7, c
// has none of it.
func TestInterest(t *testing.T) {
	a := startNode(t, "a", nodeOpts{nets: []uint32{7}}, nil)
	b := startNode(t, "b", nodeOpts{nets: []uint32{7}, peers: []string{addr(a)}}, nil)
	c := startNode(t, "c", nodeOpts{nets: []uint32{9}, peers: []string{addr(a)}}, nil)
	poll.True(t, 5*time.Second, "a, b and c see each other's networks", func() bool {
		return len(a.Networks()) == 3 && len(b.Networks()) == 3 && len(c.Networks()) == 3
	})
	if _, err := a.PublishEndpoint(testEP(7, "ea", 2)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PublishEndpoint(testEP(7, "eb", 3)); err != nil {
		t.Fatal(err)
	}
	poll.True(t, 5*time.Second, "a and b see each other's endpoint", func() bool {
		return hasEP(a, 7, "b", "eb") && hasEP(b, 7, "a", "ea")
	})

	t.Run("a node without the network neither receives nor stores its endpoints", func(t *testing.T) {
		if n := heldEndpoints(c, 7); n != 0 {
			t.Errorf("c holds %d endpoints of network 7", n)
		}
		if s := c.Stats(); s.RecordsUninterested != 0 {
			t.Errorf("c was sent %d endpoints of network 7 (it drops them, but they should not come)", s.RecordsUninterested)
		}
		// Each endpoint went to the one other node of network 7.
		if s := a.Stats(); s.PushesSent-s.PushesRetried > 2+1 {
			t.Errorf("a sent %d records (network 7 + its endpoint to 2 nodes, at most 3 wanted)", s.PushesSent)
		}
		// Push/pull, which every node takes part in, carries no endpoint.
		st, err := decodeState((*delegate)(a).LocalState(false)[1:])
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range st.Owners {
			for _, w := range o.Recs {
				if w.Kind == kindEndpoint {
					t.Errorf("a's push/pull state holds endpoint %s of %s", w.Key, o.Owner)
				}
			}
		}
	})

	t.Run("creating the network brings its endpoints at once", func(t *testing.T) {
		haveNets(t, c, 7)
		d := poll.True(t, 3*time.Second, "c learns a's and b's endpoints", func() bool {
			return hasEP(c, 7, "a", "ea") && hasEP(c, 7, "b", "eb")
		})
		t.Logf("c had both endpoints %v after publishing network 7", d)
		if !c.CaughtUp() {
			t.Error("c has every endpoint but does not say it caught up")
		}
		if _, err := a.PublishEndpoint(testEP(7, "ea2", 4)); err != nil {
			t.Fatal(err)
		}
		poll.True(t, 3*time.Second, "c learns a's next endpoint", func() bool { return hasEP(c, 7, "a", "ea2") })
	})

	t.Run("giving the network up drops its endpoints", func(t *testing.T) {
		if err := c.WithdrawNetwork(7); err != nil {
			t.Fatal(err)
		}
		if n := heldEndpoints(c, 7); n != 0 || len(c.Endpoints(7)) != 0 {
			t.Fatalf("c still holds %d endpoints of network 7 it gave up", n)
		}
		poll.True(t, 3*time.Second, "a sees c give network 7 up", func() bool {
			for _, n := range a.Networks() {
				if n.Node == "c" && n.VNI == 7 {
					return false
				}
			}
			return true
		})
		before := c.Stats().RecordsReceived
		if _, err := a.PublishEndpoint(testEP(7, "ea3", 5)); err != nil {
			t.Fatal(err)
		}
		poll.True(t, 3*time.Second, "b learns a's endpoint", func() bool { return hasEP(b, 7, "a", "ea3") })
		if got := c.Stats().RecordsReceived; got != before || heldEndpoints(c, 7) != 0 {
			t.Errorf("c received %d records after giving network 7 up, holds %d endpoints of it", got-before, heldEndpoints(c, 7))
		}
	})

	t.Run("definitions and IPAM records still reach nodes that share no network", func(t *testing.T) {
		err := c.PublishNetwork(Network{VNI: 7, Subnet: "10.200.0.0/24", MTU: 1450})
		if !errors.Is(err, ErrConflict) {
			t.Errorf("c redefines network 7 differently: err = %v, want ErrConflict", err)
		}
		if err := a.PutRecord("blk", "10.1.0.0/26", []byte("a")); err != nil {
			t.Fatal(err)
		}
		poll.True(t, 3*time.Second, "c learns a's IPAM record", func() bool {
			recs := c.Records("blk")
			return len(recs) == 1 && recs[0].Owner == "a"
		})
	})
}

// The table's rules of interest, without the network.
func TestTableInterest(t *testing.T) {
	c := newTestCluster("self")
	haveNets(t, c, 7)
	c.t.setAlive("a", true, nil)
	tb := testTable{c.t, c.eps, c.nets}
	if r := tb.put("a", epItem(t, "a", 8, "e8", "10.0.1.2", 1, 10), srcRelay, nil); r != resUninterested {
		t.Fatalf("an endpoint of a network we do not have: %v, want resUninterested", r)
	}
	tb.put("a", epItem(t, "a", 7, "e7", "10.0.0.2", 2, 10), srcRelay, nil)
	// A state covering only network 9 expires nothing of network 7.
	tb.applyState("a", 100, cover{nets: map[uint32]struct{}{9: {}}}, map[string][]item{}, nil)
	wantEPs(t, tb, 7, "a/e7@10.0.0.2")
	// One covering network 7 does, and sets a's floor there only.
	tb.applyState("a", 100, cover{nets: map[uint32]struct{}{7: {}}}, map[string][]item{}, nil)
	wantEPs(t, tb, 7)
	if o := tb.owners["a"]; o.floors[7] != 100 || o.floors[0] != 0 {
		t.Fatalf("floors %v, want 100 for network 7 only", o.floors)
	}
	// Giving network 7 up forgets its records and its floors, so that
	// taking it up again starts clean.
	tb.put("a", epItem(t, "a", 7, "e7b", "10.0.0.3", 3, 110), srcRelay, nil)
	var ch changes
	tb.dropNetwork(7, &ch)
	wantEPs(t, tb, 7)
	if _, ok := tb.owners["a"].floors[7]; ok || len(ch[kindEndpoint]) != 1 {
		t.Fatalf("after dropping network 7: floors %v, changes %v", tb.owners["a"].floors, ch)
	}
	checkByNet(t, tb.table)
	tb.put("a", epItem(t, "a", 7, "e7c", "10.0.0.4", 4, 120), srcRelay, nil)
	tb.put("a", epDel(7, "e7c", 121), srcRelay, nil)
	tb.now = func() time.Time { return time.Now().Add(2 * tb.ttl) }
	tb.gc(nil)
	checkByNet(t, tb.table)
	tb.put("a", epItem(t, "a", 7, "e7d", "10.0.0.5", 5, 130), srcRelay, nil)
	checkByNet(t, tb.table)
	tb.setAlive("a", false, nil)
	checkByNet(t, tb.table)
}

// checkByNet checks that the table's network index lists exactly the
// network-scoped records it holds.
func checkByNet(t *testing.T, tb *table) {
	t.Helper()
	want := map[uint32]int{}
	for name, o := range tb.owners {
		for k := range o.recs {
			if vni := tb.networkOf(k); vni != 0 {
				want[vni]++
				if _, ok := tb.byNet[vni][name][k]; !ok {
					t.Fatalf("%s's %v is not in the network index", name, k)
				}
			}
		}
	}
	for vni, owners := range tb.byNet {
		n := 0
		for _, keys := range owners {
			n += len(keys)
		}
		if n != want[vni] || n == 0 {
			t.Fatalf("network index holds %d records of VNI %d, the table %d", n, vni, want[vni])
		}
	}
}

// A record a node missed for good (its send and every repeat lost) comes
// back with the network sync, between the nodes of the network.
func TestNetworkSyncRepairsAMissedRecord(t *testing.T) {
	o := nodeOpts{nets: []uint32{7}, sync: 200 * time.Millisecond}
	a := startNode(t, "a", o, nil)
	o.peers = []string{addr(a)}
	b := startNode(t, "b", o, nil)
	c := startNode(t, "c", o, nil)
	if _, err := a.PublishEndpoint(testEP(7, "ea", 2)); err != nil {
		t.Fatal(err)
	}
	poll.True(t, 5*time.Second, "b and c learn a's endpoint", func() bool {
		return hasEP(b, 7, "a", "ea") && hasEP(c, 7, "a", "ea")
	})
	// Once every node has synced, the exchanges of the start are over: what
	// repairs b after this is a sync.
	poll.True(t, 5*time.Second, "every node syncs once", func() bool {
		return a.Stats().NetworkSyncs > 0 && b.Stats().NetworkSyncs > 0 && c.Stats().NetworkSyncs > 0
	})
	b.mu.Lock()
	b.t.remove("a", recKey{kindEndpoint, endpointKey(7, "ea")}, nil)
	b.mu.Unlock()
	syncs := a.Stats().NetworkSyncs + b.Stats().NetworkSyncs
	d := poll.True(t, 5*time.Second, "b has a's endpoint again", func() bool { return hasEP(b, 7, "a", "ea") })
	if got := a.Stats().NetworkSyncs + b.Stats().NetworkSyncs; got == syncs {
		t.Errorf("b got the endpoint back without a network sync")
	}
	t.Logf("repaired after %v", d)
}

// A record whose send is lost is sent again until acked, long before any
// network sync: loss costs a repeat, not a sync interval.
func TestLostSendIsRepeated(t *testing.T) {
	mn := memnet.New(memnet.Config{Latency: time.Millisecond})
	t.Cleanup(mn.Close)
	start := func(i int, peers ...string) *Cluster {
		ip, addr := simAddr(i)
		tr, err := mn.Transport(addr)
		if err != nil {
			t.Fatal(err)
		}
		c, err := New(Config{
			NodeName: fmt.Sprintf("m%d", i), BindAddr: ip.String(), BindPort: simPort, AdvertiseAddr: ip,
			Peers: peers, Logger: discardLogger(), NetworkSyncInterval: time.Hour,
			Tune: func(mc *memberlist.Config) { mc.Transport = tr },
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Shutdown() })
		haveNets(t, c, 7)
		return c
	}
	_, aAddr := simAddr(0)
	a := start(0)
	b := start(1, aAddr)
	poll.True(t, 5*time.Second, "a and b have each other's network", func() bool {
		return len(a.Networks()) == 2 && len(b.Networks()) == 2
	})
	mn.SetLoss(1)
	sent := a.Stats().PushesSent
	if _, err := a.PublishEndpoint(testEP(7, "ea", 2)); err != nil {
		t.Fatal(err)
	}
	poll.True(t, time.Second, "a sent its endpoint into the loss", func() bool { return a.Stats().PushesSent > sent })
	mn.SetLoss(0)
	d := poll.True(t, 5*time.Second, "b gets the endpoint", func() bool { return hasEP(b, 7, "m0", "ea") })
	if s := a.Stats(); s.PushesRetried == 0 {
		t.Errorf("b got the endpoint without a repeat: %+v", s)
	}
	t.Logf("b had the endpoint %v after the loss ended (repeats %d)", d, a.Stats().PushesRetried)
}
