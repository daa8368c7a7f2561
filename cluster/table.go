package cluster

import (
	"slices"
	"sort"
	"time"
)

// table holds every owned, versioned record known to this node and the
// merge rules that decide which ones win. It knows nothing of what records
// mean: their kinds' indexes (endpoints by VNI and IP, networks by VNI)
// follow every live record in and out. It does no I/O and no locking, and
// its clock is injectable, so the ordering rules can be tested directly.
//
// Rules:
//   - Only the owner changes its records; copies of our own records coming
//     back from the network are not merged (Cluster.ownCopiesLocked reads
//     them for what they say about our clock).
//   - Per (owner, kind, key) the higher version wins; an equal version is a
//     duplicate. Tombstones are records too, so a late add cannot undo a
//     newer delete.
//   - Records of owners that are not alive in our view are ignored, and an
//     owner's death drops all its records at once.
//   - Records of a network-scoped kind (endpoints) are held only while this
//     node has their network (interested says so); those of other networks
//     are ignored, and giving up a network drops its records (dropNetwork).
//   - A full state from its owner is authoritative for what it covers (see
//     cover): that owner's records there we hold with a version below the
//     snapshot clock and absent from it are removed. The clock becomes the
//     owner's floor there: relayed records below it that we do not hold are
//     stale and ignored. Collected tombstones raise the floor the same way,
//     so nothing resurrects after GC.
type table struct {
	self       string
	ttl        time.Duration
	now        func() time.Time
	kinds      *registry
	interested func(vni uint32) bool

	owners map[string]*ownerState
	alive  map[string]bool
	// byNet indexes the records of network-scoped kinds by network and
	// owner, so that a network's state does not walk every record held.
	byNet map[uint32]map[string]map[recKey]struct{}

	st tableStats
}

type tableStats struct {
	applied, stale, deadOwner, uninterested, snapshots, expired, tombstonesGCed, ownersDropped uint64
}

type recKey struct{ kind, key string }

type entry struct {
	version uint64
	deleted bool
	value   []byte
	val     any       // the kind's decoded form of a live record, for its index
	since   time.Time // when it became a tombstone
}

type ownerState struct {
	recs map[recKey]*entry
	// floors by network; 0 holds the floor of the records of no network.
	floors map[uint32]uint64
}

// cover is what a full state holds all of: the records of no network
// (cluster), and those of each network in nets. It is authoritative there
// only, so a state that carries one network's records expires nothing else.
type cover struct {
	cluster bool
	nets    map[uint32]struct{}
}

func (c cover) has(vni uint32) bool {
	if vni == 0 {
		return c.cluster
	}
	_, ok := c.nets[vni]
	return ok
}

// item is a checked record ready to merge.
type item struct {
	w   wireRecord
	val any // decoded by the record's kind (see prepare)
}

// changes collects what a merge touched, by kind and scope, for coalesced
// notification.
type changes map[string]map[string]struct{}

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
	resUninterested
)

// newTable returns an empty table; interested says whether this node has a
// network, and so holds the records scoped to it.
func newTable(self string, ttl time.Duration, kinds *registry, interested func(vni uint32) bool) *table {
	return &table{
		self:       self,
		ttl:        ttl,
		now:        time.Now,
		kinds:      kinds,
		interested: interested,
		owners:     map[string]*ownerState{},
		alive:      map[string]bool{self: true},
		byNet:      map[uint32]map[string]map[recKey]struct{}{},
	}
}

func (t *table) owner(name string) *ownerState {
	o := t.owners[name]
	if o == nil {
		o = &ownerState{recs: map[recKey]*entry{}, floors: map[uint32]uint64{}}
		t.owners[name] = o
	}
	return o
}

// networkOf returns the network a record is scoped to, 0 for none.
func (t *table) networkOf(k recKey) uint32 { return t.kinds.get(k.kind).networkOf(k.key) }

// stored and dropped keep byNet in step with the owners' records.
func (t *table) stored(owner string, k recKey) {
	vni := t.networkOf(k)
	if vni == 0 {
		return
	}
	m := t.byNet[vni]
	if m == nil {
		m = map[string]map[recKey]struct{}{}
		t.byNet[vni] = m
	}
	keys := m[owner]
	if keys == nil {
		keys = map[recKey]struct{}{}
		m[owner] = keys
	}
	keys[k] = struct{}{}
}

func (t *table) dropped(owner string, k recKey) {
	vni := t.networkOf(k)
	if vni == 0 {
		return
	}
	keys := t.byNet[vni][owner]
	delete(keys, k)
	if len(keys) == 0 {
		delete(t.byNet[vni], owner)
		if len(t.byNet[vni]) == 0 {
			delete(t.byNet, vni)
		}
	}
}

// raiseFloor raises an owner's floor in one network (0: none) to v.
func (o *ownerState) raiseFloor(vni uint32, v uint64) {
	if v > o.floors[vni] {
		o.floors[vni] = v
	}
}

// touched notes a change of one record in ch.
func (t *table) touched(ch *changes, k recKey) {
	if ch == nil {
		return
	}
	if *ch == nil {
		*ch = changes{}
	}
	scopes := (*ch)[k.kind]
	if scopes == nil {
		scopes = map[string]struct{}{}
		(*ch)[k.kind] = scopes
	}
	scopes[t.kinds.get(k.kind).scopeOf(k.key)] = struct{}{}
}

func (t *table) index(owner string, k recKey, e *entry) {
	if e.deleted || e.val == nil {
		return
	}
	if kd := t.kinds.get(k.kind); kd != nil && kd.index != nil {
		kd.index.add(owner, e.val)
	}
}

func (t *table) unindex(owner string, k recKey, e *entry) {
	if e.deleted || e.val == nil {
		return
	}
	if kd := t.kinds.get(k.kind); kd != nil && kd.index != nil {
		kd.index.remove(owner, e.val)
	}
}

// remove drops one record outright (not a tombstone).
func (t *table) remove(owner string, k recKey, ch *changes) {
	o := t.owners[owner]
	if o == nil || o.recs[k] == nil {
		return
	}
	t.unindex(owner, k, o.recs[k])
	delete(o.recs, k)
	t.dropped(owner, k)
	t.touched(ch, k)
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
	for k := range o.recs {
		t.remove(name, k, ch)
	}
	delete(t.owners, name)
	t.st.ownersDropped++
}

func (t *table) isAlive(name string) bool { return t.alive[name] }

// ownEntry returns this node's record k, or nil.
func (t *table) ownEntry(k recKey) *entry {
	if o := t.owners[t.self]; o != nil {
		return o.recs[k]
	}
	return nil
}

// put merges one record.
func (t *table) put(owner string, it item, src source, ch *changes) result {
	if src != srcLocal && (owner == t.self || !t.alive[owner]) {
		t.st.deadOwner++
		return resDeadOwner
	}
	k := recKey{it.w.Kind, it.w.Key}
	vni := t.networkOf(k)
	if src != srcLocal && vni != 0 && !t.interested(vni) {
		t.st.uninterested++
		return resUninterested
	}
	o := t.owner(owner)
	e := o.recs[k]
	switch {
	case e != nil && it.w.Version <= e.version:
		t.st.stale++
		return resStale
	case e == nil && src == srcRelay && it.w.Version < o.floors[vni]:
		t.st.stale++
		return resStale
	}
	if e != nil {
		t.unindex(owner, k, e)
	} else {
		e = &entry{}
		o.recs[k] = e
		t.stored(owner, k)
	}
	*e = entry{version: it.w.Version, deleted: it.w.Deleted, value: it.w.Value, val: it.val}
	if e.deleted {
		e.since = t.now()
		e.value, e.val = nil, nil
	}
	t.index(owner, k, e)
	t.st.applied++
	t.touched(ch, k)
	return resApplied
}

// applyState merges a full state covering cv. The sender's own group is
// authoritative there.
func (t *table) applyState(sender string, clock uint64, cv cover, groups map[string][]item, ch *changes) {
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
			if _, ok := present[k]; ok || e.version >= clock || !cv.has(t.networkOf(k)) {
				continue
			}
			t.remove(owner, k, ch)
			t.st.expired++
		}
		if cv.cluster {
			o.raiseFloor(0, clock)
		}
		for vni := range cv.nets {
			if t.interested(vni) {
				o.raiseFloor(vni, clock)
			}
		}
		t.st.snapshots++
	}
	if _, ok := groups[sender]; !ok && sender != t.self && t.alive[sender] {
		// An owner with nothing at all still tells us its clock.
		t.applyState(sender, clock, cv, map[string][]item{sender: nil}, ch)
	}
}

// dropNetwork forgets the remote records of a network this node no longer
// has, and the floors that guarded them: if the node takes the network up
// again, the owners' states bring it back up to date.
func (t *table) dropNetwork(vni uint32, ch *changes) {
	for name, keys := range t.byNet[vni] {
		if name == t.self {
			continue
		}
		for k := range keys {
			t.remove(name, k, ch)
		}
	}
	for _, o := range t.owners {
		delete(o.floors, vni)
	}
}

// gc drops tombstones older than the TTL, raising the owner's floor so the
// deleted version stays dead.
func (t *table) gc(ch *changes) {
	cut := t.now().Add(-t.ttl)
	for name, o := range t.owners {
		for k, e := range o.recs {
			if e.deleted && e.since.Before(cut) {
				delete(o.recs, k)
				t.dropped(name, k)
				o.raiseFloor(t.networkOf(k), e.version)
				t.st.tombstonesGCed++
				t.touched(ch, k)
			}
		}
	}
}

// revalidate drops the held remote records of one kind that check rejects,
// and returns how many it dropped.
func (t *table) revalidate(kind string, check func(owner string, w wireRecord) error, ch *changes) int {
	n := 0
	for name, o := range t.owners {
		if name == t.self {
			continue
		}
		for k, e := range o.recs {
			if k.kind == kind && !e.deleted && check(name, wireRecord{Kind: kind, Key: k.key, Version: e.version, Value: e.value}) != nil {
				t.remove(name, k, ch)
				n++
			}
		}
	}
	return n
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

// snapshot returns a full state covering cv: every alive owner's records
// there (tombstones included), or only our own when ownOnly is set.
func (t *table) snapshot(clock uint64, flags byte, cv cover, ownOnly bool) stateMsg {
	m := stateMsg{Sender: t.self, Clock: clock, Flags: flags}
	if !cv.cluster {
		m.Flags |= stateNoCluster
	}
	for vni := range cv.nets {
		m.Networks = append(m.Networks, vni)
	}
	slices.Sort(m.Networks)
	groups := map[string]*ownerRecords{}
	add := func(name string, k recKey, e *entry) {
		g := groups[name]
		if g == nil {
			g = &ownerRecords{Owner: name}
			groups[name] = g
		}
		g.Recs = append(g.Recs, wireRecord{Kind: k.kind, Key: k.key, Version: e.version, Deleted: e.deleted, Value: e.value})
	}
	wanted := func(name string) bool { return (!ownOnly || name == t.self) && (name == t.self || t.alive[name]) }
	if cv.cluster {
		owners := t.owners
		if ownOnly {
			// Most states are a node's own: do not walk every owner for them.
			owners = map[string]*ownerState{t.self: t.owners[t.self]}
		}
		for name, o := range owners {
			if o == nil || !wanted(name) {
				continue
			}
			for k, e := range o.recs {
				if t.networkOf(k) == 0 {
					add(name, k, e)
				}
			}
		}
	}
	for vni := range cv.nets {
		for name, keys := range t.byNet[vni] {
			if !wanted(name) {
				continue
			}
			o := t.owners[name]
			for k := range keys {
				add(name, k, o.recs[k])
			}
		}
	}
	if groups[t.self] == nil {
		groups[t.self] = &ownerRecords{Owner: t.self}
	}
	for _, g := range groups {
		m.Owners = append(m.Owners, *g)
	}
	return m
}
