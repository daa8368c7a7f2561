package driver

import (
	"context"
	"fmt"
	"time"

	"github.com/vxovl/vxovl/internal/store"
)

// Start loads the persisted state, rebuilds or re-adopts every overlay,
// re-announces this node's networks and endpoints to the cluster, and runs
// the reconcile loop until ctx ends. It returns once the state is restored;
// serve the API only after it returned without error.
func (d *Driver) Start(ctx context.Context, g Gossip) error {
	d.mu.Lock()
	d.gossip = g
	err := d.restoreLocked()
	d.mu.Unlock()
	if err != nil {
		return err
	}
	d.loop.Go(func() { d.run(ctx) })
	return nil
}

// Wait returns once the loop Start began has ended (after its context was
// cancelled), so that the store can be closed under nobody's feet.
func (d *Driver) Wait() { d.loop.Wait() }

func (d *Driver) restoreLocked() error {
	nets, err := store.ListJSON[networkRecord](d.store, bucketNetworks)
	if err != nil {
		return err
	}
	eps, err := store.ListJSON[endpointRecord](d.store, bucketEndpoints)
	if err != nil {
		return err
	}
	for _, rec := range nets {
		o, err := rec.overlay()
		if err != nil {
			return fmt.Errorf("%w: %v", store.ErrUnreadable, err)
		}
		var saved []peerRecord
		if _, err := d.store.Get(bucketPeers, vniKey(o.VNI), &saved); err != nil {
			return err
		}
		o.saved = recordsToPeers(saved)
		o.restored = o.saved
		d.networks[o.ID] = o
		d.byVNI[o.VNI] = o
	}
	for _, rec := range eps {
		o, ok := d.networks[rec.NetworkID]
		if !ok {
			d.log.Warn("dropping stored endpoint of an unknown network", "endpoint", short(rec.ID), "network", short(rec.NetworkID))
			d.undo("forget endpoint", d.store.Delete(bucketEndpoints, rec.ID))
			continue
		}
		ep, err := rec.endpoint()
		if err != nil {
			return fmt.Errorf("%w: %v", store.ErrUnreadable, err)
		}
		o.endpoints[ep.ID] = ep
	}

	pinned := d.pinnedVNIs()
	d.removeLeftoverNamespaces(pinned)
	d.dropEndpointsOfGoneContainers(pinned)

	for _, o := range d.networks {
		if err := d.gossip.PublishNetwork(o.clusterNetwork()); err != nil {
			// The network exists and has containers; refusing to start would
			// cut them off. Say so loudly and carry on.
			d.log.Error("restored network disagrees with the cluster", "vni", o.VNI, "err", err)
		}
		if err := d.dp.EnsureNetwork(d.spec(o)); err != nil {
			d.stats.SyncErrors++
			d.log.Error("restoring overlay; will retry", "vni", o.VNI, "err", err)
		}
		for _, ep := range o.endpoints {
			pub, err := d.gossip.PublishEndpoint(ep.clusterEndpoint(o.VNI))
			if err != nil {
				d.log.Error("re-announcing endpoint", "endpoint", short(ep.ID), "err", err)
				continue
			}
			d.keepClaimStamp(ep, pub.Created)
		}
		d.syncLocked(o, "restore")
	}
	d.log.Info("state restored", "networks", len(d.networks), "endpoints", len(eps), "store", d.store.Path())
	return nil
}

// keepClaimStamp stores the stamp the cluster gave ep's claim on its address
// when it is new (the endpoint's first publish, or one stored before stamps
// existed). Failing to store it costs only the claim's age after a restart.
func (d *Driver) keepClaimStamp(ep *endpoint, created uint64) {
	if ep.Created == created {
		return
	}
	rec := ep.endpointRecord
	rec.Created = created
	if err := d.store.Put(bucketEndpoints, ep.ID, rec); err != nil {
		d.log.Warn("saving the endpoint's claim stamp; after a restart its claim on the address will count as new",
			"endpoint", short(ep.ID), "err", err)
		return
	}
	ep.endpointRecord = rec
}

// EndpointsChanged implements cluster.Handler: it marks vni for a sync by the
// reconcile loop and never blocks the cluster.
func (d *Driver) EndpointsChanged(vni uint32) { d.markDirty(vni) }

func (d *Driver) markDirty(vni uint32) {
	d.dirtyMu.Lock()
	d.dirty[vni] = struct{}{}
	d.dirtyMu.Unlock()
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Reconcile runs a full reconcile pass now and waits for it (or ctx).
func (d *Driver) Reconcile(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case d.onDemand <- done:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run is the driver's one event loop: cluster changes, periodic and
// on-demand reconciles are all handled here, one at a time.
func (d *Driver) run(ctx context.Context) {
	tick := time.NewTicker(d.cfg.ReconcileInterval)
	defer tick.Stop()
	var graceEnd <-chan time.Time
	var graceCheck <-chan time.Time
	if d.hasRestored() {
		t := time.NewTimer(d.cfg.RestoreGrace)
		defer t.Stop()
		graceEnd = t.C
		// The grace ends early once the cluster has every live peer's full
		// state: from then on its view is complete and the remembered peers
		// are only a source of stale entries.
		if _, ok := d.gossip.(caughtUp); ok {
			c := time.NewTicker(250 * time.Millisecond)
			defer c.Stop()
			graceCheck = c.C
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
			d.syncDirty()
		case <-graceCheck:
			if d.gossip.(caughtUp).CaughtUp() {
				d.endGrace("cluster caught up")
				graceEnd, graceCheck = nil, nil
			}
		case <-graceEnd:
			d.endGrace("restore grace ended")
			graceEnd, graceCheck = nil, nil
		case <-tick.C:
			d.reconcileAll("periodic")
		case done := <-d.onDemand:
			d.reconcileAll("on demand")
			close(done)
		}
	}
}

// caughtUp is implemented by a cluster that can tell when its view of every
// live peer is complete.
type caughtUp interface{ CaughtUp() bool }

func (d *Driver) hasRestored() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, o := range d.networks {
		if len(o.restored) > 0 {
			return true
		}
	}
	return false
}

func (d *Driver) endGrace(reason string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.log.Info("dropping the remote entries remembered from before the restart", "reason", reason)
	for _, o := range d.networks {
		if o.restored != nil {
			o.restored = nil
			d.syncLocked(o, reason)
		}
	}
}

func (d *Driver) syncDirty() {
	d.dirtyMu.Lock()
	vnis := d.dirty
	d.dirty = map[uint32]struct{}{}
	d.dirtyMu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	for vni := range vnis {
		if o, ok := d.byVNI[vni]; ok {
			d.syncLocked(o, "cluster change")
		}
	}
}

// dropEndpointsOfGoneContainers forgets the joined endpoints whose
// container went away while vxovl was not running: Docker's Leave and
// DeleteEndpoint for them found no plugin, and nothing will call them
// again. Only in namespaces that survived; after a reboot no endpoint has
// its veth and Docker itself deletes the old ones.
func (d *Driver) dropEndpointsOfGoneContainers(pinned []uint32) {
	for _, vni := range pinned {
		o, ok := d.byVNI[vni]
		if !ok {
			continue
		}
		for _, ep := range o.endpoints {
			if !ep.Joined {
				continue
			}
			if detached, err := d.detachedLocked(o, ep); err != nil || !detached {
				if err != nil {
					d.log.Warn("keeping an endpoint whose container could not be checked", "endpoint", short(ep.ID), "err", err)
				}
				continue
			}
			d.log.Warn("forgetting an endpoint whose container went away while vxovl was down",
				"network", short(o.ID), "endpoint", short(ep.ID), "ip", ep.ip)
			if err := d.deleteEndpointLocked(o, ep.ID); err != nil {
				d.log.Warn("forgetting the endpoint; the reconciler will retry", "endpoint", short(ep.ID), "err", err)
			}
		}
	}
}

// pinnedVNIs lists the VNIs whose overlay namespace is pinned; none (and a
// log line) when they cannot be listed, so that nothing is removed blindly.
func (d *Driver) pinnedVNIs() []uint32 {
	pinned, err := d.dp.Networks()
	if err != nil {
		d.log.Warn("listing pinned overlay namespaces; will retry", "err", err)
		return nil
	}
	return pinned
}

// removeLeftoverNamespaces removes pinned namespaces of VNIs no network
// has: leftovers of a crash between the kernel step and the store step, or
// of a delete or rollback whose kernel step failed.
func (d *Driver) removeLeftoverNamespaces(pinned []uint32) {
	for _, vni := range pinned {
		if _, ok := d.byVNI[vni]; !ok {
			d.log.Warn("removing leftover overlay namespace with no network", "vni", vni)
			d.undo("delete leftover network", d.dp.DeleteNetwork(vni))
		}
	}
}

// reconcileAll checks every overlay's kernel objects and tables and repairs
// what drifted (someone deleted the VXLAN device or an entry by hand, a
// previous step failed). Docker's overlay has no such loop.
func (d *Driver) reconcileAll(reason string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stats.Reconciles++
	d.stats.LastReconcile = time.Now()
	for what, cleanup := range d.unfinished {
		if err := cleanup(); err != nil {
			d.log.Warn("clean-up still failing; will retry", "of", what, "err", err)
			continue
		}
		delete(d.unfinished, what)
		d.log.Info("finished a clean-up that had failed", "of", what)
	}
	d.removeLeftoverNamespaces(d.pinnedVNIs())
	for _, o := range d.networks {
		if err := d.dp.Health(d.spec(o)); err != nil {
			d.stats.DriftRepairs++
			d.log.Warn("overlay damaged; rebuilding", "vni", o.VNI, "problem", err, "reason", reason)
			if err := d.dp.EnsureNetwork(d.spec(o)); err != nil {
				d.stats.SyncErrors++
				d.log.Error("rebuilding overlay; will retry", "vni", o.VNI, "err", err)
				continue
			}
		}
		d.syncLocked(o, reason)
	}
}

// syncLocked makes o's neighbor and FDB tables match the desired peers. Outside
// of event-driven syncs, any change means the kernel had drifted.
func (d *Driver) syncLocked(o *overlay, reason string) {
	peers, flood := d.desiredPeers(o)
	res, err := d.dp.SyncPeers(o.VNI, peers, flood)
	if err != nil {
		d.stats.SyncErrors++
		d.log.Error("programming neighbor/FDB entries; will retry", "vni", o.VNI, "err", err)
		return
	}
	changed := res.NeighAdded + res.NeighRemoved + res.FDBAdded + res.FDBRemoved
	if changed > 0 {
		level := "debug"
		if reason == "periodic" || reason == "on demand" {
			d.stats.DriftRepairs += uint64(changed)
			level = "warn"
		}
		attrs := []any{"vni", o.VNI, "reason", reason, "neigh_added", res.NeighAdded, "neigh_removed", res.NeighRemoved,
			"fdb_added", res.FDBAdded, "fdb_removed", res.FDBRemoved}
		if level == "warn" {
			d.log.Warn("repaired neighbor/FDB drift", attrs...)
		} else {
			d.log.Debug("programmed peers", attrs...)
		}
	}
	// Remember what is programmed so a restart can keep it while the cluster
	// catches up. Only written when it changed.
	if !samePeers(o.saved, peers) {
		if err := d.store.Put(bucketPeers, vniKey(o.VNI), peersToRecords(peers)); err != nil {
			d.log.Warn("saving programmed peers", "vni", o.VNI, "err", err)
			return
		}
		o.saved = peers
	}
}
