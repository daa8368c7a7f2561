package driver

import (
	"slices"
	"testing"

	"github.com/vxovl/vxovl/internal/store"
	"github.com/vxovl/vxovl/internal/store/storetest"
)

// TestStateOfThePreviousRelease: the networks and endpoints the release
// before versioned state wrote (no Created, Names, Name or NoDNS; see
// internal/store/testdata/state-v0-generator) are restored as they were,
// re-announced, and their claims stamped on that first publish; the peers
// last programmed are programmed again until the cluster says otherwise.
func TestStateOfThePreviousRelease(t *testing.T) {
	h := startHarness(t, storetest.StateV0(t), newFakeDataplane(), Config{})

	nets := h.drv.Networks()
	if len(nets) != 2 {
		t.Fatalf("%d networks restored, want 2: %+v", len(nets), nets)
	}
	slices.SortFunc(nets, func(a, b NetworkStatus) int { return int(a.VNI) - int(b.VNI) })
	n1, n2 := nets[0], nets[1]
	if n1.ID != netID || n1.VNI != 42 || n1.Subnet != "10.10.0.0/24" || n1.Gateway != "10.10.0.1" || n1.MTU != 1450 || !n1.Flood || !n1.DNS || n1.Neighbors != 1 {
		t.Errorf("network 1 = %+v", n1)
	}
	if n2.ID != netID2 || n2.VNI != 43 || n2.Subnet != "10.20.0.0/24" || n2.MTU != 1400 || n2.Flood || len(n2.Local) != 0 {
		t.Errorf("network 2 = %+v", n2)
	}
	var local []string
	for _, ep := range n1.Local {
		local = append(local, ep.ID[:2]+" "+ep.IP+" "+ep.MAC)
	}
	if want := []string{"e1 10.10.0.2 02:df:fd:a6:e3:d0", "e2 10.10.0.5 02:de:8b:4b:c7:14"}; !slices.Equal(local, want) {
		t.Errorf("local endpoints %v, want %v", local, want)
	}
	h.drv.mu.Lock()
	internal := h.drv.networks[netID2].Internal
	h.drv.mu.Unlock()
	if !internal {
		t.Error("network 2 restored as not internal")
	}

	h.g.mu.Lock()
	published := map[string]uint64{}
	for id, ep := range h.g.local {
		published[id] = ep.Created
	}
	h.g.mu.Unlock()
	eps, err := store.ListJSON[endpointRecord](h.st, bucketEndpoints)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{epID, epID2} {
		if published[id] == 0 || eps[id].Created != published[id] {
			t.Errorf("endpoint %s: published with claim stamp %d, stored %d; want the stamp of its first publish stored",
				id[:2], published[id], eps[id].Created)
		}
	}
	if !eps[epID].Joined || eps[epID2].Joined {
		t.Errorf("Joined: e1 %v e2 %v, want true false", eps[epID].Joined, eps[epID2].Joined)
	}
}
