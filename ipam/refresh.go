package ipam

import (
	"net/netip"
	"sort"
	"time"
)

// Refresh folds the cluster's current claim records into what this node
// knows, forgets released and orphaned claims, and reports conflicts. It
// runs on every record change; the plugin may also call it periodically.
func (d *Driver) Refresh() {
	alive := map[string]bool{}
	for _, m := range d.cl.Members() {
		alive[m.Name] = true
	}
	now := time.Now()
	seen := map[knownKey]bool{}
	var fresh []remoteClaim
	for _, kind := range []string{KindBlock, KindPin} {
		for _, r := range d.cl.Records(kind) {
			if r.Owner == d.self {
				continue
			}
			rc, err := decodeRecord(kind, r.Key, r.Value)
			if err != nil {
				continue // the validator already dropped and counted it
			}
			rc.Owner, rc.lastSeen = r.Owner, now
			fresh = append(fresh, rc)
		}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	// Remembered claims are written in one transaction: a node learning a
	// large cluster's claims must not hold d.mu through one fsync per claim
	// while claim requests wait for it.
	save := map[string]any{}
	var forget []string
	for _, rc := range fresh {
		k := knownKey{rc.Owner, rc.Prefix}
		seen[k] = true
		old := d.known[k]
		d.known[k] = &rc
		if old == nil || old.ClaimedAt != rc.ClaimedAt || old.Pin != rc.Pin || old.Aux != rc.Aux {
			save[k.String()] = &rc
		}
	}
	var next time.Time // when the earliest remembered claim expires
	for k, r := range d.known {
		if seen[k] {
			continue
		}
		expires := r.lastSeen.Add(d.cfg.OrphanTimeout)
		if alive[k.owner] {
			expires = r.lastSeen.Add(d.cfg.ReleaseGrace) // released, or learned from an ACK and never published
		}
		if !now.After(expires) {
			if next.IsZero() || expires.Before(next) {
				next = expires
			}
			continue
		}
		if !alive[k.owner] {
			d.log.Warn("forgetting the address claim of a node unreachable for longer than the orphan timeout",
				"node", k.owner, "prefix", k.prefix, "timeout", d.cfg.OrphanTimeout)
		}
		delete(d.known, k)
		forget = append(forget, k.String())
	}
	if len(save) > 0 || len(forget) > 0 {
		if err := d.st.Write(bucketKnown, save, forget); err != nil {
			d.log.Error("remembering remote address claims failed; after a restart this node may not respect them while their owners are unreachable",
				"claims", len(save), "forgotten", len(forget), "err", err)
		}
	}
	d.scheduleRefreshLocked(next)
	d.detectConflictsLocked()
}

// scheduleRefreshLocked makes sure Refresh runs again once the earliest
// remembered claim expires: record changes alone do not wake it, so in a
// quiet cluster a released block would otherwise stay reserved forever.
func (d *Driver) scheduleRefreshLocked(at time.Time) {
	if d.closed || at.IsZero() || (d.refreshTimer != nil && !d.refreshAt.IsZero() && !at.Before(d.refreshAt)) {
		return
	}
	if d.refreshTimer != nil {
		d.refreshTimer.Stop()
	}
	d.refreshAt = at
	d.refreshTimer = time.AfterFunc(time.Until(at)+10*time.Millisecond, func() {
		d.mu.Lock()
		d.refreshAt = time.Time{}
		d.mu.Unlock()
		d.Refresh()
	})
}

// Close stops the refresh timer and makes later refreshes no-ops, so that
// nothing of theirs touches the store after the plugin closes it. Call it
// before closing the store.
func (d *Driver) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.refreshTimer != nil {
		d.refreshTimer.Stop()
	}
}

func (d *Driver) sortedKnownLocked() []*remoteClaim {
	out := make([]*remoteClaim, 0, len(d.known))
	for _, r := range d.known {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Owner != out[j].Owner {
			return out[i].Owner < out[j].Owner
		}
		return first(out[i].Prefix) < first(out[j].Prefix)
	})
	return out
}

// laterThan orders claims by (claim time, node): the later one yields.
func laterThan(at int64, node string, otherAt int64, other string) bool {
	if at != otherAt {
		return at > otherAt
	}
	return node > other
}

// detectConflictsLocked finds claims of this node that overlap another
// node's, which the claim rule only allows across a partition. Each pair
// is logged at error level and counted once; the later block stops being
// used for new addresses.
func (d *Driver) detectConflictsLocked() {
	report := func(key, msg string, args ...any) {
		if d.reported[key] {
			return
		}
		d.reported[key] = true
		d.conflicts.Add(1)
		d.log.Error(msg, args...)
	}
	known := d.sortedKnownLocked()
	for _, c := range d.owned {
		switch {
		case c.isBlock():
			lost := false
			for _, r := range known {
				if !r.isBlock() || !r.Prefix.Overlaps(c.Prefix) {
					continue
				}
				iLose := laterThan(c.ClaimedAt, d.self, r.ClaimedAt, r.Owner)
				lost = lost || iLose
				report("block|"+c.Prefix.String()+"|"+r.Owner+"|"+r.Prefix.String(),
					"ADDRESS CONFLICT: another node holds an overlapping address block (claimed on both sides of a partition); "+
						"the later claim stops allocating from it, existing containers keep their addresses and may be unreachable",
					"block", c.Prefix, "node", r.Owner, "their_block", r.Prefix, "this_node_yields", iLose)
			}
			if lost != c.Conflicted {
				next := *c
				next.Conflicted = lost
				if err := d.st.Put(bucketOwned, c.Prefix.String(), next); err != nil {
					d.log.Error("saving a block's conflict state failed", "block", c.Prefix, "err", err)
				}
				*c = next
				if !lost {
					d.log.Info("address block conflict resolved; allocating from it again", "block", c.Prefix)
				}
			}
		case c.Pin:
			for _, r := range known {
				clashes := (r.Pin && r.Prefix == c.Prefix) ||
					(r.isBlock() && r.Prefix.Contains(c.Prefix.Addr()) && r.ClaimedAt < c.ClaimedAt)
				if clashes {
					report("pin|"+c.Prefix.String()+"|"+r.Owner+"|"+r.Prefix.String(),
						"ADDRESS CONFLICT: an address pinned here with --ip is also held by another node (claimed across a partition); "+
							"remove one of the containers", "addr", c.Prefix.Addr(), "node", r.Owner, "their_claim", r.Prefix)
				}
			}
		}
	}
	// A remote pin on an address we handed out from our own block.
	for _, r := range known {
		if !r.Pin {
			continue
		}
		if al := d.allocs[r.Prefix.Addr()]; al != nil && (al.Kind == allocDynamic || al.Kind == allocExplicit) {
			report("alloc|"+r.Prefix.String()+"|"+r.Owner,
				"ADDRESS CONFLICT: another node pinned an address this node has given to a container (claimed across a partition); "+
					"remove one of the containers", "addr", r.Prefix.Addr(), "node", r.Owner)
		}
	}
	subnets := map[netip.Prefix]bool{}
	for _, c := range d.owned {
		if c.isBlock() && c.Conflicted {
			subnets[c.Subnet] = true
		}
	}
	for s := range subnets {
		d.releaseEmptyBlocksLocked(s)
	}
}
