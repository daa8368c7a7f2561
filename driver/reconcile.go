package driver

import (
	"context"
	"fmt"
	"time"

	"github.com/vxovl/vxovl/internal/dataplane"
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
	nets := d.snapshotLocked(d.networks)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	// Nothing else runs yet: neither the loop nor the API.
	restored := false
	for _, n := range nets {
		restored = restored || len(n.o.restored) > 0
	}
	// Until the cluster view is back, keep the SAs the kernel still has:
	// traffic to peers not yet heard of goes on (re-adoption).
	d.xfrmKeep = restored
	d.syncNetworks(nets, "restore", false)
	d.loop.Go(func() { d.run(ctx, restored) })
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
		d.managed.Store(o.ID, struct{}{})
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
	d.restoreEndpoints(pinned)

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
// on-demand reconciles are all handled here, one at a time. restored says
// whether remote entries remembered from before a restart are programmed.
func (d *Driver) run(ctx context.Context, restored bool) {
	tick := time.NewTicker(d.cfg.ReconcileInterval)
	defer tick.Stop()
	var graceEnd <-chan time.Time
	var graceCheck <-chan time.Time
	if restored {
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
			d.stopAllNames()
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

// endGrace drops the remote entries remembered from before the restart.
func (d *Driver) endGrace(reason string) {
	d.log.Info("dropping the remote entries remembered from before the restart", "reason", reason)
	d.xfrmKeep = false
	d.mu.Lock()
	nets := d.snapshotLocked(d.networks)
	d.mu.Unlock()
	var t tally
	for _, n := range nets {
		n.o.syncMu.Lock()
		if n.o.restored != nil {
			n.o.restored = nil
			d.syncNetworkLocked(n, reason, false, &t)
		}
		n.o.syncMu.Unlock()
	}
	d.count(&t)
	d.syncXfrm(reason)
}

// syncDirty syncs the networks whose cluster view or local endpoints changed.
func (d *Driver) syncDirty() {
	d.dirtyMu.Lock()
	vnis := d.dirty
	d.dirty = map[uint32]struct{}{}
	d.dirtyMu.Unlock()
	d.mu.Lock()
	dirty := map[string]*overlay{}
	for vni := range vnis {
		if o, ok := d.byVNI[vni]; ok {
			dirty[o.ID] = o
		}
	}
	nets := d.snapshotLocked(dirty)
	d.mu.Unlock()
	d.syncNetworks(nets, "cluster change", false)
}

// restoreEndpoints deals with the joined endpoints of the namespaces that
// survived the restart (after a reboot no endpoint has its veth and Docker
// itself deletes the old ones). One whose container went away while vxovl
// was not running is forgotten: Docker's Leave and DeleteEndpoint for it
// found no plugin, and nothing will call them again. One whose container
// runs gets its bridge port set up again as Join sets it up (its MAC pinned
// to the port, no flooding to it), so that ports made by an older vxovl
// get what this one does.
func (d *Driver) restoreEndpoints(pinned []uint32) {
	for _, vni := range pinned {
		o, ok := d.byVNI[vni]
		if !ok {
			continue
		}
		for _, ep := range o.endpoints {
			if !ep.Joined {
				continue
			}
			detached, err := d.detachedLocked(o, ep)
			if err != nil {
				d.log.Warn("keeping an endpoint whose container could not be checked", "endpoint", short(ep.ID), "err", err)
				continue
			}
			if !detached {
				if _, err := d.dp.EnsureEndpoint(o.endpointSpec(ep)); err != nil {
					d.log.Warn("setting up the bridge port of a running container again; it keeps working, reached by flooding",
						"endpoint", short(ep.ID), "err", err)
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
// previous step failed). Docker's overlay has no such loop. It holds d.mu
// only for what must not race an API call; each network's kernel work
// holds only that network's syncMu, so API calls do not wait for the pass.
func (d *Driver) reconcileAll(reason string) {
	if obs := d.cfg.Observer; obs != nil {
		defer func(start time.Time) { obs.ObserveReconcile(time.Since(start)) }(time.Now())
	}
	pinned := d.pinnedVNIs()
	d.mu.Lock()
	d.stats.Reconciles++
	d.stats.LastReconcile = time.Now()
	// The retried clean-ups (left by failed deletes) and the removal of
	// leftover namespaces look up which VNIs have a network and act on it:
	// no CreateNetwork may come in between.
	for what, cleanup := range d.unfinished {
		if err := cleanup(); err != nil {
			d.log.Warn("clean-up still failing; will retry", "of", what, "err", err)
			continue
		}
		delete(d.unfinished, what)
		d.log.Info("finished a clean-up that had failed", "of", what)
	}
	d.removeLeftoverNamespaces(pinned)
	nets := d.snapshotLocked(d.networks)
	d.mu.Unlock()
	d.syncNetworks(nets, reason, true)
}

// netSnapshot is a network with what its sync needs of the state d.mu
// guards. Taken for all networks at once, so that a pass takes d.mu once: an
// endpoint created after it marks the network dirty for the next sync.
type netSnapshot struct {
	o     *overlay
	local []localEndpoint
	name  string // the network's Docker name, for its name server
	noDNS bool
}

func (d *Driver) snapshotLocked(nets map[string]*overlay) []netSnapshot {
	out := make([]netSnapshot, 0, len(nets))
	for _, o := range nets {
		out = append(out, netSnapshot{o: o, local: o.localEndpoints(), name: o.Name, noDNS: o.NoDNS})
	}
	return out
}

// syncNetworks syncs each network in turn, holding only its syncMu, and
// counts the results at the end.
func (d *Driver) syncNetworks(nets []netSnapshot, reason string, repair bool) {
	var t tally
	for _, n := range nets {
		n.o.syncMu.Lock()
		d.syncNetworkLocked(n, reason, repair, &t)
		n.o.syncMu.Unlock()
	}
	d.count(&t)
	d.syncXfrm(reason)
}

// syncNetworkLocked brings one network's kernel state to what is desired:
// its neighbor and FDB tables to what the cluster knows (planPeers), and
// with repair (the reconcile pass) first its overlay's devices and the
// tables it last programmed. The caller holds n.o.syncMu and not d.mu: the
// snapshot has what is needed of d.mu's state, and t collects the counts.
// A network deleted since the snapshot is left alone, so that nothing of
// it comes back.
//
// The repair puts back what was last programmed and counts what that
// changed as drift: between two syncs only someone else changes those
// tables. What the cluster changed since then is applied after that like
// any other change, and is not drift.
func (d *Driver) syncNetworkLocked(n netSnapshot, reason string, repair bool, t *tally) {
	o := n.o
	if o.deleted {
		return
	}
	if obs := d.cfg.Observer; obs != nil {
		defer func(start time.Time) { obs.ObserveSync(time.Since(start)) }(time.Now())
	}

	if repair {
		spec := d.spec(o)
		if err := d.dp.Health(spec); err != nil {
			t.drift++
			d.log.Warn("overlay damaged; rebuilding", "vni", o.VNI, "problem", err, "reason", reason)
			// A rebuilt namespace needs new sockets: the server's die with the old one.
			d.stopNames(o)
			if err := d.dp.EnsureNetwork(spec); err != nil {
				t.syncErrors++
				d.log.Error("rebuilding overlay; will retry", "vni", o.VNI, "err", err)
				return
			}
		}
		if o.programmed != nil {
			res, err := d.dp.SyncPeers(o.VNI, o.programmed.peers, o.programmed.flood)
			if err != nil {
				d.syncFailed(o, t, err)
				return
			}
			if n := changes(res); n > 0 {
				t.drift += uint64(n)
				d.log.Warn("repaired neighbor/FDB drift", syncAttrs(o.VNI, reason, res)...)
			}
		}
	}

	remote := d.gossip.Endpoints(o.VNI)
	plan := planPeers(peerInput{
		Local: n.local, Remote: remote,
		Restored: o.restored, Flood: o.Flood, Reported: o.conflicts,
	})
	d.reportConflicts(o.VNI, plan, t)
	o.conflicts = plan.Conflicts
	want := &peerTable{peers: plan.Peers, flood: plan.Flood, conflicts: len(plan.Conflicts)}
	if !repair || !o.programmed.equal(want) {
		res, err := d.dp.SyncPeers(o.VNI, want.peers, want.flood)
		if err != nil {
			d.syncFailed(o, t, err)
			return
		}
		o.programmed = want
		if changes(res) > 0 {
			d.log.Debug("programmed peers", syncAttrs(o.VNI, reason, res)...)
		}
	}
	o.shown.Store(want)
	d.serveNames(n, remote, want.peers, t)
	// Remember what is programmed so a restart can keep it while the cluster
	// catches up. Only written when it changed.
	if !samePeers(o.saved, want.peers) {
		if err := d.store.Put(bucketPeers, vniKey(o.VNI), peersToRecords(want.peers)); err != nil {
			d.log.Warn("saving programmed peers", "vni", o.VNI, "err", err)
			return
		}
		o.saved = want.peers
	}
}

// tally is what syncs add to the driver's counters.
type tally struct{ drift, syncErrors, ipConflicts, macConflicts uint64 }

func (d *Driver) count(t *tally) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stats.DriftRepairs += t.drift
	d.stats.SyncErrors += t.syncErrors
	d.stats.IPConflicts += t.ipConflicts
	d.stats.MACConflicts += t.macConflicts
}

// reportConflicts counts and logs the conflicts a plan found or saw resolved.
func (d *Driver) reportConflicts(vni uint32, plan peerPlan, t *tally) {
	for _, c := range plan.New {
		if c.IP {
			t.ipConflicts++
		} else {
			t.macConflicts++
		}
		d.log.Error("conflict: not programming a remote endpoint", "vni", vni, "problem", c.Problem,
			"ip", c.Endpoint.IP, "mac", c.Endpoint.MAC.String(), "remote_node", c.Endpoint.Node, "remote_endpoint", short(c.Endpoint.ID))
	}
	for _, key := range plan.Resolved {
		d.log.Info("conflict resolved", "vni", vni, "remote_endpoint", key)
	}
}

// syncFailed counts and logs a failed SyncPeers. What the kernel holds is
// unknown after it, so the next pass does not count its repair as drift.
func (d *Driver) syncFailed(o *overlay, t *tally, err error) {
	o.programmed = nil
	t.syncErrors++
	d.log.Error("programming neighbor/FDB entries; will retry", "vni", o.VNI, "err", err)
}

func changes(r dataplane.SyncResult) int {
	return r.NeighAdded + r.NeighRemoved + r.FDBAdded + r.FDBRemoved
}

func syncAttrs(vni uint32, reason string, r dataplane.SyncResult) []any {
	return []any{"vni", vni, "reason", reason, "neigh_added", r.NeighAdded, "neigh_removed", r.NeighRemoved,
		"fdb_added", r.FDBAdded, "fdb_removed", r.FDBRemoved}
}
