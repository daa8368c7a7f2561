package ipam

import (
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/cluster/clustertest"
	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// TestRealClusterConcurrentAllocations runs the driver over three real
// gossip nodes on 127.0.0.1: claims travel as memberlist TCP messages.
func TestRealClusterConcurrentAllocations(t *testing.T) {
	ports := []int{clustertest.FreePort(t), clustertest.FreePort(t), clustertest.FreePort(t)}
	var peers []string
	for _, p := range ports {
		peers = append(peers, net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	}
	var drivers []*Driver
	var cls []*cluster.Cluster
	for i, p := range ports {
		name := "r" + strconv.Itoa(i+1)
		c, err := cluster.New(cluster.Config{
			NodeName: name, BindAddr: "127.0.0.1", BindPort: p, AdvertiseAddr: net.IPv4(127, 0, 0, 1),
			Peers: peers, DeadTimeout: 2 * time.Second, RejoinInterval: time.Second,
			Logger: slog.New(slog.DiscardHandler),
			Tune:   func(mc *memberlist.Config) { mc.TCPTimeout = time.Second },
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		cls = append(cls, c)
		st := openStore(t, filepath.Join(t.TempDir(), "state.db"))
		t.Cleanup(func() { c.Shutdown(); st.Close() })
		d, err := New(Config{NodeName: name, Logger: slog.New(tlog{t, name})}, c, st)
		if err != nil {
			t.Fatal(err)
		}
		drivers = append(drivers, d)
	}
	poll.True(t, 5*time.Second, "all three nodes see each other", func() bool {
		for _, c := range cls {
			if len(c.Members()) != 3 {
				return false
			}
		}
		return true
	})
	var id string
	for _, d := range drivers {
		id = mustPool(t, d, "10.50.0.0/24", "", nil)
		gatewayOf(t, d, id, "")
	}
	var mu sync.Mutex
	got := map[string]string{}
	var wg sync.WaitGroup
	for _, d := range drivers {
		for range 20 {
			wg.Go(func() {
				a, err := alloc(d, id, "")
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("%s: %v", d.self, err)
					return
				}
				if o, dup := got[a]; dup {
					t.Errorf("%s and %s both got %s", d.self, o, a)
				}
				got[a] = d.self
			})
		}
	}
	wg.Wait()
	if len(got) != 60 {
		t.Fatalf("%d distinct addresses, want 60", len(got))
	}
	// Every node learns every other node's blocks through gossip.
	poll.True(t, 5*time.Second, "blocks gossiped", func() bool {
		for _, d := range drivers {
			d.mu.Lock()
			n := len(d.known)
			d.mu.Unlock()
			mine := 0
			for _, o := range drivers {
				if o != d {
					mine += len(ownedBlocks(o))
				}
			}
			if n != mine {
				return false
			}
		}
		return true
	})
	var won, lost, conflicts uint64
	for _, d := range drivers {
		s := d.Stats()
		won, lost, conflicts = won+s.ClaimsWon, lost+s.ClaimsLost, conflicts+s.Conflicts
	}
	t.Logf("real gossip, 3x20 concurrent: 60 distinct; claims won %d, lost %d, conflicts %d", won, lost, conflicts)
	if conflicts != 0 {
		t.Fatalf("%d conflicts", conflicts)
	}
}
