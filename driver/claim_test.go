package driver

import (
	"path/filepath"
	"testing"
)

// The stamp the cluster gives a new endpoint's claim on its address is
// stored with the endpoint and republished as it is after a restart, so that
// restarting vxovl cannot turn this host's claim into the newer one and win
// a duplicate-address conflict it had lost.
func TestRestartRepublishesClaimStamp(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	dp := newFakeDataplane()
	h := startHarness(t, path, dp, Config{})
	h.createNetwork(map[string]interface{}{"vni": "42"})
	h.createEndpoint(epID, "10.10.0.2/24")
	h.g.mu.Lock()
	first := h.g.local[epID]
	h.g.mu.Unlock()
	var rec endpointRecord
	if ok, err := h.st.Get(bucketEndpoints, epID, &rec); err != nil || !ok || rec.Created != first.Created || first.Created == 0 {
		t.Fatalf("stored claim stamp %d (found %v, err %v), published %d", rec.Created, ok, err, first.Created)
	}
	h.stop()

	h2 := startHarness(t, path, dp, Config{})
	h2.g.mu.Lock()
	again := h2.g.local[epID]
	h2.g.mu.Unlock()
	if again.Created != first.Created {
		t.Fatalf("republished after a restart with claim stamp %d, want the first publish's %d", again.Created, first.Created)
	}
}
