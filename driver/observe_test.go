package driver

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

type recordingObserver struct {
	mu                sync.Mutex
	syncs, reconciles []time.Duration
}

func (r *recordingObserver) ObserveSync(d time.Duration) {
	r.mu.Lock()
	r.syncs = append(r.syncs, d)
	r.mu.Unlock()
}

func (r *recordingObserver) ObserveReconcile(d time.Duration) {
	r.mu.Lock()
	r.reconciles = append(r.reconciles, d)
	r.mu.Unlock()
}

// A reconcile pass is observed once, and within it each network's sync.
func TestObserverTimesSyncsAndPasses(t *testing.T) {
	obs := &recordingObserver{}
	h := startHarness(t, filepath.Join(t.TempDir(), "state.db"), newFakeDataplane(), Config{Observer: obs})
	h.createNetwork(map[string]interface{}{"vni": "100", "dns": "false"})
	if err := h.createNetworkID(netID2, map[string]interface{}{"vni": "101", "dns": "false"}); err != nil {
		t.Fatal(err)
	}
	syncs := func() int { obs.mu.Lock(); defer obs.mu.Unlock(); return len(obs.syncs) }
	// Each new network is synced once by the loop.
	poll.True(t, 5*time.Second, "the new networks' syncs", func() bool { return syncs() == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.drv.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.reconciles) != 1 || len(obs.syncs) != 4 {
		t.Fatalf("after one pass over 2 networks: %d passes, %d syncs, want 1 and 2+2", len(obs.reconciles), len(obs.syncs))
	}
	if obs.reconciles[0] <= 0 {
		t.Fatalf("pass took %v", obs.reconciles[0])
	}
}
