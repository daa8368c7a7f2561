package cluster

import (
	"bytes"
	"net"
	"sort"
	"time"
)

// table holds every owned, versioned record known to this node and the
// merge rules that decide which ones win. It is pure data (no network, no
// locking, clock injectable) so the ordering rules can be tested directly.
//
// Rules:
//   - Only the owner changes its records; copies of our own records coming
//     back from the network are ignored.
//   - Per (owner, kind, key) the higher version wins; an equal version is a
//     duplicate. Tombstones are records too, so a late add cannot undo a
//     newer delete.
//   - Records of owners that are not alive in our view are ignored, and an
//     owner's death drops all its records at once.
//   - A full state from its owner is authoritative: that owner's records we
//     hold with a version below the snapshot clock and absent from it are
//     removed. The clock becomes the owner's floor: relayed records below it
//     that we do not hold are stale and ignored. Collected tombstones raise
//     the floor the same way, so nothing resurrects after GC.
type table struct {
	self string
	ttl  time.Duration
	now  func() time.Time

	owners map[string]*ownerState
	alive  map[string]bool

	eps  map[uint32]map[epRef]*Endpoint // live endpoints by VNI
	byIP map[vniIP]map[epRef]struct{}   // live endpoints by (VNI, IP), for conflict detection
	nets map[uint32]map[string]*Network // live networks by VNI, then owner

	st tableStats

	onIPConflict  func(newer, older Endpoint)
	onNetConflict func(ours, theirs Network)
}

type tableStats struct {
	applied, stale, deadOwner, snapshots, expired, tombstonesGCed, ipConflicts, netConflicts, ownersDropped uint64
}

type recKey struct{ kind, key string }

type entry struct {
	version uint64
	deleted bool
	value   []byte
	since   time.Time // when it became a tombstone
	ep      *Endpoint // decoded, for live endpoint records
	nw      *Network  // decoded, for live network records
	vni     uint32    // for endpoint records, live or deleted
}

type ownerState struct {
	recs  map[recKey]*entry
	floor uint64
}

type epRef struct{ owner, id string }

type vniIP struct {
	vni uint32
	ip  [4]byte
}

// item is a validated record ready to merge.
type item struct {
	w   wireRecord
	ep  *Endpoint
	nw  *Network
	vni uint32
}

// changes collects what a merge touched, for coalesced notification.
type changes struct {
	vnis  map[uint32]struct{}
	kinds map[string]struct{}
}

func (c *changes) add(kind string, vni uint32) {
	if c == nil {
		return
	}
	if c.kinds == nil {
		c.kinds = map[string]struct{}{}
	}
	c.kinds[kind] = struct{}{}
	if kind == kindEndpoint {
		if c.vnis == nil {
			c.vnis = map[uint32]struct{}{}
		}
		c.vnis[vni] = struct{}{}
	}
}

type source int

const (
	srcLocal source = iota // this node publishing its own record
	srcOwner               // in a full state from the record's owner
	srcRelay               // anything else: broadcasts, gossip, third-party state
)

type result int

const (
	resApplied result = iota
	resStale
	resDeadOwner
)

func newTable(self string, ttl time.Duration) *table {
	t := &table{
		self:   self,
		ttl:    ttl,
		now:    time.Now,
		owners: map[string]*ownerState{},
		alive:  map[string]bool{self: true},
		eps:    map[uint32]map[epRef]*Endpoint{},
		byIP:   map[vniIP]map[epRef]struct{}{},
		nets:   map[uint32]map[string]*Network{},
	}
	return t
}

func (t *table) owner(name string) *ownerState {
	o := t.owners[name]
	if o == nil {
		o = &ownerState{recs: map[recKey]*entry{}}
		t.owners[name] = o
	}
	return o
}

// setAlive records a membership change. A node that is no longer alive
// loses all its records at once.
func (t *table) setAlive(name string, alive bool, ch *changes) {
	if name == t.self {
		return
	}
	if alive {
		t.alive[name] = true
		return
	}
	delete(t.alive, name)
	o := t.owners[name]
	if o == nil {
		return
	}
	for k, e := range o.recs {
		t.unindex(name, k, e)
		ch.add(k.kind, e.vni)
	}
	delete(t.owners, name)
	t.st.ownersDropped++
}

func (t *table) isAlive(name string) bool { return t.alive[name] }

// put merges one record.
func (t *table) put(owner string, it item, src source, ch *changes) result {
	if src != srcLocal && (owner == t.self || !t.alive[owner]) {
		t.st.deadOwner++
		return resDeadOwner
	}
	o := t.owner(owner)
	k := recKey{it.w.Kind, it.w.Key}
	e := o.recs[k]
	switch {
	case e != nil && it.w.Version <= e.version:
		t.st.stale++
		return resStale
	case e == nil && src == srcRelay && it.w.Version < o.floor:
		t.st.stale++
		return resStale
	}
	if e != nil {
		t.unindex(owner, k, e)
	} else {
		e = &entry{}
		o.recs[k] = e
	}
	*e = entry{version: it.w.Version, deleted: it.w.Deleted, value: it.w.Value, vni: it.vni}
	if e.deleted {
		e.since = t.now()
		e.value = nil
	} else {
		e.ep, e.nw = it.ep, it.nw
		t.index(owner, e)
	}
	t.st.applied++
	ch.add(k.kind, e.vni)
	return resApplied
}

func (t *table) index(owner string, e *entry) {
	if ep := e.ep; ep != nil {
		ref := epRef{owner, ep.ID}
		m := t.eps[ep.VNI]
		if m == nil {
			m = map[epRef]*Endpoint{}
			t.eps[ep.VNI] = m
		}
		m[ref] = ep
		ik := vniIP{ep.VNI, [4]byte(ep.IP.To4())}
		others := t.byIP[ik]
		if others == nil {
			others = map[epRef]struct{}{}
			t.byIP[ik] = others
		}
		for r := range others {
			t.st.ipConflicts++
			if t.onIPConflict != nil {
				other := t.eps[ep.VNI][r]
				if other.NewerThan(ep) {
					t.onIPConflict(*other, *ep)
				} else {
					t.onIPConflict(*ep, *other)
				}
			}
			break
		}
		others[ref] = struct{}{}
	}
	if nw := e.nw; nw != nil {
		m := t.nets[nw.VNI]
		if m == nil {
			m = map[string]*Network{}
			t.nets[nw.VNI] = m
		}
		m[owner] = nw
		t.checkNetConflict(owner, nw)
	}
}

func (t *table) checkNetConflict(owner string, nw *Network) {
	if owner == t.self {
		for o, other := range t.nets[nw.VNI] {
			if o != t.self && !sameNetwork(*nw, *other) {
				t.st.netConflicts++
				if t.onNetConflict != nil {
					t.onNetConflict(*nw, *other)
				}
			}
		}
		return
	}
	if ours := t.nets[nw.VNI][t.self]; ours != nil && !sameNetwork(*ours, *nw) {
		t.st.netConflicts++
		if t.onNetConflict != nil {
			t.onNetConflict(*ours, *nw)
		}
	}
}

func sameNetwork(a, b Network) bool { return a.Subnet == b.Subnet && a.MTU == b.MTU }

func (t *table) unindex(owner string, k recKey, e *entry) {
	if ep := e.ep; ep != nil {
		ref := epRef{owner, ep.ID}
		if m := t.eps[ep.VNI]; m != nil {
			delete(m, ref)
			if len(m) == 0 {
				delete(t.eps, ep.VNI)
			}
		}
		ik := vniIP{ep.VNI, [4]byte(ep.IP.To4())}
		if m := t.byIP[ik]; m != nil {
			delete(m, ref)
			if len(m) == 0 {
				delete(t.byIP, ik)
			}
		}
	}
	if nw := e.nw; nw != nil {
		if m := t.nets[nw.VNI]; m != nil {
			delete(m, owner)
			if len(m) == 0 {
				delete(t.nets, nw.VNI)
			}
		}
	}
}

// applyState merges a full state. The sender's own group is authoritative.
func (t *table) applyState(sender string, clock uint64, groups map[string][]item, ch *changes) {
	for owner, items := range groups {
		if owner != sender {
			for _, it := range items {
				t.put(owner, it, srcRelay, ch)
			}
			continue
		}
		if owner == t.self || !t.alive[owner] {
			t.st.deadOwner += uint64(len(items))
			continue
		}
		present := make(map[recKey]struct{}, len(items))
		for _, it := range items {
			t.put(owner, it, srcOwner, ch)
			present[recKey{it.w.Kind, it.w.Key}] = struct{}{}
		}
		o := t.owner(owner)
		for k, e := range o.recs {
			if _, ok := present[k]; ok || e.version >= clock {
				continue
			}
			t.unindex(owner, k, e)
			delete(o.recs, k)
			t.st.expired++
			ch.add(k.kind, e.vni)
		}
		o.floor = max(o.floor, clock)
		t.st.snapshots++
	}
	if _, ok := groups[sender]; !ok && sender != t.self && t.alive[sender] {
		// An owner with nothing at all still tells us its clock.
		t.applyState(sender, clock, map[string][]item{sender: nil}, ch)
	}
}

// gc drops tombstones older than the TTL, raising the owner's floor so the
// deleted version stays dead.
func (t *table) gc(ch *changes) {
	cut := t.now().Add(-t.ttl)
	for _, o := range t.owners {
		for k, e := range o.recs {
			if e.deleted && e.since.Before(cut) {
				delete(o.recs, k)
				o.floor = max(o.floor, e.version)
				t.st.tombstonesGCed++
				ch.add(k.kind, e.vni)
			}
		}
	}
}

// endpoints returns the remote winners per IP in one VNI.
func (t *table) endpoints(vni uint32) []Endpoint {
	best := map[[4]byte]*Endpoint{}
	for _, ep := range t.eps[vni] {
		ip := [4]byte(ep.IP.To4())
		if cur := best[ip]; cur == nil || ep.NewerThan(cur) {
			best[ip] = ep
		}
	}
	out := make([]Endpoint, 0, len(best))
	for _, ep := range best {
		if ep.Node != t.self {
			out = append(out, copyEndpoint(*ep))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if c := bytes.Compare(out[i].IP, out[j].IP); c != 0 {
			return c < 0
		}
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func copyEndpoint(ep Endpoint) Endpoint {
	ep.IP = append(net.IP(nil), ep.IP...)
	ep.MAC = append(net.HardwareAddr(nil), ep.MAC...)
	ep.VTEP = append(net.IP(nil), ep.VTEP...)
	return ep
}

func (t *table) records(kind string) []Record {
	var out []Record
	for name, o := range t.owners {
		for k, e := range o.recs {
			if k.kind == kind && !e.deleted {
				out = append(out, Record{Kind: kind, Owner: name, Key: k.key, Version: e.version, Value: append([]byte(nil), e.value...)})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Owner != out[j].Owner {
			return out[i].Owner < out[j].Owner
		}
		return out[i].Key < out[j].Key
	})
	return out
}

func (t *table) networks() []Network {
	var out []Network
	for _, m := range t.nets {
		for _, n := range m {
			out = append(out, *n)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].VNI != out[j].VNI {
			return out[i].VNI < out[j].VNI
		}
		return out[i].Node < out[j].Node
	})
	return out
}

// remoteNetworks returns live remote definitions of one VNI.
func (t *table) remoteNetworks(vni uint32) []Network {
	var out []Network
	for owner, n := range t.nets[vni] {
		if owner != t.self {
			out = append(out, *n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// snapshot returns a full state: every alive owner's records (tombstones
// included), or only our own when ownOnly is set.
func (t *table) snapshot(clock uint64, flags byte, ownOnly bool) stateMsg {
	m := stateMsg{Sender: t.self, Clock: clock, Flags: flags}
	for name, o := range t.owners {
		if ownOnly && name != t.self {
			continue
		}
		if name != t.self && !t.alive[name] {
			continue
		}
		g := ownerRecords{Owner: name, Recs: make([]wireRecord, 0, len(o.recs))}
		for k, e := range o.recs {
			g.Recs = append(g.Recs, wireRecord{Kind: k.kind, Key: k.key, Version: e.version, Deleted: e.deleted, Value: e.value})
		}
		m.Owners = append(m.Owners, g)
	}
	return m
}

func (t *table) get(owner, kind, key string) *entry {
	if o := t.owners[owner]; o != nil {
		return o.recs[recKey{kind, key}]
	}
	return nil
}

func (t *table) count() (live, tombstones int) {
	for _, o := range t.owners {
		for _, e := range o.recs {
			if e.deleted {
				tombstones++
			} else {
				live++
			}
		}
	}
	return
}
