package ipam

import (
	"errors"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/vxovl/vxovl/internal/store/storetest"
)

// TestStateOfThePreviousRelease: the pools, blocks and addresses the release
// before (one pool shared by the networks of a definition, allocations with
// MACs) wrote are this host's after the upgrade: the shared pool lives until
// both its networks released it, what was handed out is not handed out
// again, and a new network of the same definition gets a pool of its own.
func TestStateOfThePreviousRelease(t *testing.T) {
	n := newFakeNet(t)
	d := startNode(t, n, "oldhost-a1b2c3", storetest.StateV0(t), Config{}).d
	got := d.Pools()
	if len(got) != 2 || got[0].Subnet.String() != "10.10.0.0/24" || got[0].Blocks != 1 || got[0].Addresses != 4 ||
		got[1].Subnet.String() != "10.20.0.0/24" || got[1].Blocks != 1 || got[1].Addresses != 1 {
		t.Fatalf("Pools() = %+v, want 10.10.0.0/24 with 1 block and 4 addresses, 10.20.0.0/24 with 1 and 1", got)
	}
	const shared = "vxovl:10.10.0.0/24"
	for _, a := range []string{"10.10.0.2", "10.10.0.200", "10.10.0.208", "10.10.0.250"} {
		if _, err := alloc(d, shared, a); err == nil || !strings.Contains(err.Error(), "already in use") {
			t.Errorf("address %s of the old state handed out again: %v", a, err)
		}
	}
	if got := mustAlloc(t, d, shared, ""); got != "10.10.0.209/24" {
		t.Fatalf("dynamic address %s, want 10.10.0.209/24, the next of the block the old state owns", got)
	}
	if got := mustAlloc(t, d, "vxovl:10.20.0.0/24;range=10.20.0.128/25;block=3", ""); got != "10.20.0.233/24" {
		t.Fatalf("dynamic address %s, want 10.20.0.233/24, the next of the block the old state owns", got)
	}
	if id := mustPool(t, d, "10.10.0.0/24", "", nil); id != shared+"#2" {
		t.Fatalf("a new network of the old pool's definition got pool %q, want %q", id, shared+"#2")
	}
	for i := 0; i < 2; i++ {
		if err := d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: shared}); err != nil {
			t.Fatalf("release %d of the pool two networks shared: %v", i+1, err)
		}
	}
	if err := d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: shared}); err == nil || errors.Is(err, ErrExhausted) {
		t.Fatalf("third release of the shared pool: %v, want unknown pool", err)
	}
}
