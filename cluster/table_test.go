package cluster

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/dnsname"
)

func epItem(t *testing.T, owner string, vni uint32, id, ip string, mac byte, v uint64) item {
	t.Helper()
	ep := Endpoint{VNI: vni, ID: id, IP: net.ParseIP(ip).To4(), MAC: net.HardwareAddr{2, 0, 0, 0, 0, mac},
		Node: owner, VTEP: net.IPv4(127, 0, 0, 1).To4(), Version: v, Created: v}
	w := wireRecord{Kind: kindEndpoint, Key: endpointKey(vni, id), Version: v, Value: encodeEndpointValue(ep)}
	it, err := prepare(newTestCluster("self").kinds, owner, w)
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	return it
}

func epDel(vni uint32, id string, v uint64) item {
	return item{w: wireRecord{Kind: kindEndpoint, Key: endpointKey(vni, id), Version: v, Deleted: true}}
}

// testTable is the table of a cluster named "self" that sees the given
// nodes alive, with the built-in kinds' indexes.
type testTable struct {
	*table
	eps  *endpointIndex
	nets *networkIndex
}

// The table tests are about merging, not interest (interest_test.go): the
// table holds every network's records.
func newTestTable(alive ...string) testTable {
	c := newTestCluster("self")
	c.t.interested = func(uint32) bool { return true }
	for _, a := range alive {
		c.t.setAlive(a, true, nil)
	}
	return testTable{c.t, c.eps, c.nets}
}

// fullCover is what a node's full state covered before records were scoped
// to networks: everything, here the records of no network and of VNI 7.
var fullCover = cover{cluster: true, nets: map[uint32]struct{}{7: {}}}

func ids(eps []Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.Node+"/"+e.ID+"@"+e.IP.String())
	}
	return out
}

func wantEPs(t *testing.T, tb testTable, vni uint32, want ...string) {
	t.Helper()
	got := ids(tb.eps.endpoints(vni))
	if len(got) != len(want) {
		t.Fatalf("endpoints(%d) = %v, want %v", vni, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("endpoints(%d) = %v, want %v", vni, got, want)
		}
	}
}

func TestTableReorderAndDuplicates(t *testing.T) {
	add := func(tb testTable) { tb.put("a", epItem(t, "a", 7, "e1", "10.0.0.2", 1, 10), srcRelay, nil) }
	del := func(tb testTable) { tb.put("a", epDel(7, "e1", 11), srcRelay, nil) }
	for _, order := range [][]func(testTable){{add, del}, {del, add}, {add, del, add, del}, {del, del, add, add}} {
		tb := newTestTable("a")
		for _, f := range order {
			f(tb)
		}
		wantEPs(t, tb, 7)
	}
	tb := newTestTable("a")
	add(tb)
	add(tb)
	wantEPs(t, tb, 7, "a/e1@10.0.0.2")
	if tb.st.stale != 1 {
		t.Fatalf("stale = %d, want 1 (duplicate)", tb.st.stale)
	}
	// An older version of a live record never overrides a newer one.
	tb.put("a", epItem(t, "a", 7, "e1", "10.0.0.9", 1, 12), srcRelay, nil)
	tb.put("a", epItem(t, "a", 7, "e1", "10.0.0.3", 1, 11), srcRelay, nil)
	wantEPs(t, tb, 7, "a/e1@10.0.0.9")
}

// The classic stale-entry bug: IP freed on A, reused on B. Every arrival
// order must end with only B's entry.
func TestTableIPReuseAcrossNodes(t *testing.T) {
	aAdd := func(tb testTable) { tb.put("a", epItem(t, "a", 7, "ea", "10.0.0.5", 1, 100), srcRelay, nil) }
	aDel := func(tb testTable) { tb.put("a", epDel(7, "ea", 200), srcRelay, nil) }
	bAdd := func(tb testTable) { tb.put("b", epItem(t, "b", 7, "eb", "10.0.0.5", 2, 300), srcRelay, nil) }
	perms := [][]func(testTable){
		{aAdd, aDel, bAdd}, {aAdd, bAdd, aDel}, {bAdd, aAdd, aDel},
		{bAdd, aDel, aAdd}, {aDel, aAdd, bAdd}, {aDel, bAdd, aAdd},
	}
	for i, p := range perms {
		tb := newTestTable("a", "b")
		for _, f := range p {
			f(tb)
		}
		got := tb.eps.endpoints(7)
		if len(got) != 1 || got[0].Node != "b" {
			t.Fatalf("order %d: endpoints = %v, want only b's", i, ids(got))
		}
	}
	// Without A's withdrawal (lost), B still wins by version; conflict counted.
	tb := newTestTable("a", "b")
	aAdd(tb)
	bAdd(tb)
	wantEPs(t, tb, 7, "b/eb@10.0.0.5")
	if tb.eps.conflicts != 1 {
		t.Fatalf("ipConflicts = %d, want 1", tb.eps.conflicts)
	}
	// A local newer claim hides the stale remote one; our own never shows.
	tb.put("self", epItem(t, "self", 7, "es", "10.0.0.5", 3, 400), srcLocal, nil)
	wantEPs(t, tb, 7)
}

func TestTableDeathAndRejoin(t *testing.T) {
	tb := newTestTable("a")
	var ch changes
	tb.put("a", epItem(t, "a", 7, "e1", "10.0.0.2", 1, 10), srcRelay, &ch)
	tb.put("a", epItem(t, "a", 8, "e2", "10.0.1.2", 2, 11), srcRelay, &ch)
	ch = changes{}
	tb.setAlive("a", false, &ch)
	wantEPs(t, tb, 7)
	wantEPs(t, tb, 8)
	if len(ch[kindEndpoint]) != 2 {
		t.Fatalf("death notified VNIs %v, want 7 and 8", ch[kindEndpoint])
	}
	// A third party relaying a's old record must not resurrect it.
	if r := tb.put("a", epItem(t, "a", 7, "e1", "10.0.0.2", 1, 10), srcRelay, nil); r != resDeadOwner {
		t.Fatalf("relay of dead owner's record: result %v, want resDeadOwner", r)
	}
	wantEPs(t, tb, 7)
	// Rejoin: its own state brings the records back.
	tb.setAlive("a", true, nil)
	tb.applyState("a", 50, fullCover, map[string][]item{"a": {epItem(t, "a", 7, "e1", "10.0.0.2", 1, 10)}}, nil)
	wantEPs(t, tb, 7, "a/e1@10.0.0.2")
	// Copies of our own records from others are ignored.
	if r := tb.put("self", epItem(t, "self", 7, "x", "10.0.0.3", 1, 99), srcRelay, nil); r != resDeadOwner {
		t.Fatalf("foreign copy of own record: %v", r)
	}
}

// A restarted node lost an endpoint that others still hold: its full state
// removes it, and a late relay of the old record cannot bring it back.
func TestTableAuthoritativeSnapshot(t *testing.T) {
	tb := newTestTable("a", "c")
	tb.put("a", epItem(t, "a", 7, "old", "10.0.0.2", 1, 10), srcRelay, nil)
	tb.put("a", epItem(t, "a", 7, "keep", "10.0.0.3", 2, 11), srcRelay, nil)
	tb.put("a", epItem(t, "a", 7, "new", "10.0.0.4", 3, 60), srcRelay, nil) // broadcast newer than the snapshot
	tb.applyState("a", 50, fullCover, map[string][]item{
		"a": {epItem(t, "a", 7, "keep", "10.0.0.3", 2, 11)},
		"c": {epItem(t, "c", 7, "cc", "10.0.0.9", 4, 5)}, // third party in the same state: merged, not authoritative
	}, nil)
	wantEPs(t, tb, 7, "a/keep@10.0.0.3", "a/new@10.0.0.4", "c/cc@10.0.0.9")
	if tb.st.expired != 1 {
		t.Fatalf("expired = %d, want 1", tb.st.expired)
	}
	if r := tb.put("a", epItem(t, "a", 7, "old", "10.0.0.2", 1, 10), srcRelay, nil); r != resStale {
		t.Fatalf("late relay below floor: %v, want resStale", r)
	}
	wantEPs(t, tb, 7, "a/keep@10.0.0.3", "a/new@10.0.0.4", "c/cc@10.0.0.9")
	// A state sent by c does not expire a's records.
	tb.applyState("c", 1000, fullCover, map[string][]item{"c": {epItem(t, "c", 7, "cc", "10.0.0.9", 4, 5)}}, nil)
	wantEPs(t, tb, 7, "a/keep@10.0.0.3", "a/new@10.0.0.4", "c/cc@10.0.0.9")
	// An empty state from a clears everything of a's below its clock.
	tb.applyState("a", 100, fullCover, map[string][]item{}, nil)
	wantEPs(t, tb, 7, "c/cc@10.0.0.9")
}

func TestTableTombstoneGC(t *testing.T) {
	tb := newTestTable("a")
	now := time.Unix(1000, 0)
	tb.now = func() time.Time { return now }
	tb.put("a", epItem(t, "a", 7, "e1", "10.0.0.2", 1, 10), srcRelay, nil)
	tb.put("a", epDel(7, "e1", 20), srcRelay, nil)
	tb.gc(nil)
	if _, dead := tb.count(); dead != 1 {
		t.Fatalf("tombstone collected before TTL")
	}
	now = now.Add(2 * time.Minute)
	tb.gc(nil)
	if live, dead := tb.count(); live != 0 || dead != 0 || tb.st.tombstonesGCed != 1 {
		t.Fatalf("after TTL: live=%d dead=%d gced=%d", live, dead, tb.st.tombstonesGCed)
	}
	// After GC the late add still cannot resurrect.
	tb.put("a", epItem(t, "a", 7, "e1", "10.0.0.2", 1, 10), srcRelay, nil)
	wantEPs(t, tb, 7)
	// But a genuinely newer record is accepted.
	tb.put("a", epItem(t, "a", 7, "e1", "10.0.0.2", 1, 30), srcRelay, nil)
	wantEPs(t, tb, 7, "a/e1@10.0.0.2")
}

func TestTableNetworkConflict(t *testing.T) {
	tb := newTestTable("a")
	mk := func(owner, subnet string, mtu int, v uint64) item {
		n := Network{VNI: 5, Subnet: subnet, MTU: mtu, Node: owner}
		return item{w: wireRecord{Kind: kindNetwork, Key: networkKey(5), Version: v, Value: encodeNetworkValue(n)}, val: &n}
	}
	tb.put("self", mk("self", "10.1.0.0/24", 1450, 1), srcLocal, nil)
	tb.put("a", mk("a", "10.1.0.0/24", 1450, 2), srcRelay, nil)
	if tb.nets.conflicts != 0 {
		t.Fatal("equal definitions flagged as conflict")
	}
	tb.put("a", mk("a", "10.2.0.0/24", 1450, 3), srcRelay, nil)
	if tb.nets.conflicts != 1 {
		t.Fatalf("netConflicts = %d, want 1", tb.nets.conflicts)
	}
	if n := tb.nets.remote(5); len(n) != 1 || n[0].Subnet != "10.2.0.0/24" {
		t.Fatalf("remoteNetworks = %v", n)
	}
}

func TestPrepareRejectsMalformed(t *testing.T) {
	kinds := newTestCluster("self").kinds
	good := Endpoint{VNI: 7, ID: "e", IP: net.IPv4(10, 0, 0, 2), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, VTEP: net.IPv4(127, 0, 0, 1), Created: 1}
	val := func(ep Endpoint) []byte { return encodeEndpointValue(ep) }
	named := func(names ...string) []byte { e := good; e.Names = names; return val(e) }
	bad := []wireRecord{
		{Kind: kindEndpoint, Key: "0/e", Version: 1, Value: val(good)},
		{Kind: kindEndpoint, Key: "16777216/e", Version: 1, Value: val(good)},
		{Kind: kindEndpoint, Key: "7/e", Version: 0, Value: val(good)},
		{Kind: kindEndpoint, Key: "7/e", Version: 1, Value: val(good)[:13]},
		{Kind: kindEndpoint, Key: "07/e", Version: 1, Value: val(good)},
		{Kind: kindEndpoint, Key: "7/", Version: 1, Value: val(good)},
		{Kind: kindEndpoint, Key: "7/e", Version: 1, Value: func() []byte { e := good; e.MAC = net.HardwareAddr{1, 0, 0, 0, 0, 1}; return val(e) }()},
		{Kind: kindEndpoint, Key: "7/e", Version: 1, Value: func() []byte { e := good; e.VTEP = net.IPv4zero; return val(e) }()},
		{Kind: kindEndpoint, Key: "7/e", Version: 1, Value: func() []byte { e := good; e.IP = net.IPv4(224, 0, 0, 1); return val(e) }()},
		{Kind: kindEndpoint, Key: "7/e", Version: 1, Deleted: true, Value: []byte{1}},
		{Kind: kindNetwork, Key: "7", Version: 1, Value: append([]byte{10}, "10.0.0.0/24"...)}, // MTU 10
		{Kind: kindNetwork, Key: "7", Version: 1, Value: append([]byte{0xaa, 0x0b}, "10.0.0.1/24"...)},
		{Kind: "", Key: "k", Version: 1},
		{Kind: kindEndpoint, Key: "7/e", Version: 5, Value: func() []byte { e := good; e.Created = 6; return val(e) }()}, // created after its publish
		{Kind: kindEndpoint, Key: "7/e", Version: 5, Value: func() []byte { e := good; e.Created = 0; return val(e) }()},
		{Kind: kindEndpoint, Key: "7/e", Version: 5, Value: append(val(good), 0)}, // trailing byte
		// Names must be valid, normalised and within bounds.
		{Kind: kindEndpoint, Key: "7/e", Version: 5, Value: named("Web")},
		{Kind: kindEndpoint, Key: "7/e", Version: 5, Value: named("web", "db")},
		{Kind: kindEndpoint, Key: "7/e", Version: 5, Value: named("db", "db")},
		{Kind: kindEndpoint, Key: "7/e", Version: 5, Value: named("a b")},
		{Kind: kindEndpoint, Key: "7/e", Version: 5, Value: named("-db")},
		{Kind: kindEndpoint, Key: "7/e", Version: 5, Value: named("", "db")},
		{Kind: kindEndpoint, Key: "7/e", Version: 5, Value: named("db.")},
		{Kind: kindEndpoint, Key: "7/e", Version: 5, Value: named(strings.Repeat("a.", 127))}, // 254 characters
		{Kind: kindEndpoint, Key: "7/e", Version: 5, Value: named(manyNames(dnsname.MaxNames+1, 3)...)},
		{Kind: kindEndpoint, Key: "7/e", Version: 5, Value: named(manyNames(dnsname.MaxNames, MaxNamesLen/dnsname.MaxNames+1)...)},
		{Kind: kindEndpoint, Key: "7/e", Version: 5, Value: func() []byte { v := named("db", "web"); return v[:len(v)-1] }()},
	}
	for i, w := range bad {
		if _, err := prepare(kinds, "a", w); err == nil {
			t.Errorf("case %d (%+v): accepted", i, w)
		}
	}
	if _, err := prepare(kinds, "a", wireRecord{Kind: kindEndpoint, Key: "7/e", Version: 1, Value: val(good)}); err != nil {
		t.Fatalf("good endpoint rejected: %v", err)
	}
	for _, names := range [][]string{{"db", "web"}, manyNames(dnsname.MaxNames, MaxNamesLen/dnsname.MaxNames), {strings.Repeat("a.", 126) + "a"}} {
		if _, err := prepare(kinds, "a", wireRecord{Kind: kindEndpoint, Key: "7/e", Version: 1, Value: named(names...)}); err != nil {
			t.Fatalf("good names %q rejected: %v", names, err)
		}
	}
	if _, err := prepare(kinds, "bad name", wireRecord{Kind: "x", Key: "k", Version: 1}); err == nil {
		t.Fatal("owner with space accepted")
	}
}

// Copies of our own records come back in every push/pull. An older or equal
// copy changes nothing. A newer one (issued before a restart that lost the
// version floor, with the wall clock behind) moves the clock past it and
// gets our current record republished above it; a copy of a record we no
// longer hold only moves the clock, so our next full state expires it.
func TestOwnCopies(t *testing.T) {
	c := newTestCluster("self")
	c.t.setAlive("a", true, nil)
	ep := testEP(7, "e", 2)
	pub, err := c.PublishEndpoint(ep)
	if err != nil {
		t.Fatal(err)
	}
	stale := pub
	stale.MAC = net.HardwareAddr{2, 0, 0, 0, 0, 0x99}
	valueAt := func(id string, ip byte, created uint64) []byte {
		e := testEP(7, id, ip)
		e.VTEP, e.Created = net.IPv4(127, 0, 0, 1), created
		return encodeEndpointValue(e)
	}
	copyAt := func(key string, v uint64, value []byte) {
		st := encodeState(stateMsg{Sender: "a", Clock: v, Owners: []ownerRecords{{Owner: "self", Recs: []wireRecord{
			{Kind: kindEndpoint, Key: key, Version: v, Value: value}}}}})
		(*delegate)(c).NotifyMsg(st)
	}
	held := func() Endpoint {
		e := c.t.ownEntry(recKey{kindEndpoint, endpointKey(7, "e")})
		return *e.val.(*Endpoint)
	}

	copyAt(endpointKey(7, "e"), pub.Version, encodeEndpointValue(stale))
	if got := held(); got.Version != pub.Version || got.MAC.String() != ep.MAC.String() {
		t.Fatalf("an equal copy changed our record: %+v", got)
	}

	future := pub.Version + uint64(time.Hour)
	stale.Version = future
	copyAt(endpointKey(7, "e"), future, encodeEndpointValue(stale))
	got := held()
	if got.Version <= future || got.MAC.String() != ep.MAC.String() || got.Created != pub.Created {
		t.Fatalf("after a newer copy of our record we hold %+v; want ours, above version %d, same Created", got, future)
	}
	if c.Version() != got.Version {
		t.Fatalf("clock %d, want the republished version %d", c.Version(), got.Version)
	}

	gone := future + uint64(time.Hour)
	copyAt(endpointKey(7, "gone"), gone, valueAt("gone", 3, gone))
	if c.Version() < gone || c.t.ownEntry(recKey{kindEndpoint, endpointKey(7, "gone")}) != nil {
		t.Fatalf("a copy of a record we do not hold: clock %d (want >= %d), stored %v", c.Version(), gone,
			c.t.ownEntry(recKey{kindEndpoint, endpointKey(7, "gone")}) != nil)
	}
	if snap := c.t.snapshot(c.nextVersion(), 0, fullCover, true); snap.Clock <= gone {
		t.Fatalf("our next full state has clock %d, not above the copy's %d: it would not expire it", snap.Clock, gone)
	}

	// A corrupt stamp far ahead of the wall clock does not move the clock.
	before := c.Version()
	copyAt(endpointKey(7, "x"), 1<<63, valueAt("x", 4, 1<<63))
	if c.Version() != before {
		t.Fatalf("a copy stamped far in the future moved the clock to %d", c.Version())
	}
}

// Endpoint values sent before Created existed (14 bytes) still decode, as a
// claim as old as its record.
func TestEndpointValueCompat(t *testing.T) {
	ep := testEP(7, "e", 2)
	ep.VTEP = net.IPv4(10, 1, 0, 1)
	old := encodeEndpointValue(ep)[:epFixedLen]
	got, err := decodeEndpoint("a", wireRecord{Kind: kindEndpoint, Key: endpointKey(7, "e"), Version: 42, Value: old})
	if err != nil || got.Created != 42 || got.Version != 42 || !got.IP.Equal(ep.IP) || !got.VTEP.Equal(ep.VTEP) {
		t.Fatalf("14-byte value decoded as %+v, %v", got, err)
	}
	ep.Created = 40
	got, err = decodeEndpoint("a", wireRecord{Kind: kindEndpoint, Key: endpointKey(7, "e"), Version: 42, Value: encodeEndpointValue(ep)})
	if err != nil || got.Created != 40 {
		t.Fatalf("decoded %+v, %v; want Created 40", got, err)
	}
}

// manyNames returns n sorted, distinct names of length size (at least 2).
func manyNames(n, size int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%02d", i)+strings.Repeat("n", size-2))
	}
	return out
}

// Names are part of the endpoint record: they change only with a newer
// version, so a late or reordered copy never brings a removed name back.
func TestNamesFollowVersions(t *testing.T) {
	named := func(v uint64, names ...string) item {
		it := epItem(t, "a", 7, "e", "10.0.0.2", 1, v)
		ep := *it.val.(*Endpoint)
		ep.Names = names
		it.w.Value = encodeEndpointValue(ep)
		it, err := prepare(newTestCluster("self").kinds, "a", it.w)
		if err != nil {
			t.Fatal(err)
		}
		return it
	}
	names := func(tb testTable) []string {
		eps := tb.eps.endpoints(7)
		if len(eps) != 1 {
			return nil
		}
		return eps[0].Names
	}
	tb := newTestTable("a")
	tb.put("a", named(10, "db", "web"), srcRelay, nil)
	tb.put("a", named(12, "db"), srcRelay, nil)
	tb.put("a", named(11, "db", "old", "web"), srcRelay, nil) // late
	if got := names(tb); !slices.Equal(got, []string{"db"}) {
		t.Fatalf("names after a late copy: %v, want [db]", got)
	}
	tb.put("a", epDel(7, "e", 13), srcRelay, nil)
	tb.put("a", named(12, "db"), srcRelay, nil)
	if got := tb.eps.endpoints(7); len(got) != 0 {
		t.Fatalf("a late copy resurrected the withdrawn endpoint: %v", ids(got))
	}
}

// PublishEndpoint normalises names and refuses bad ones without publishing.
func TestPublishEndpointNames(t *testing.T) {
	c := newTestCluster("self")
	ep := testEP(7, "e", 2)
	ep.Names = []string{"Web.", "db", "db", " "}
	pub, err := c.PublishEndpoint(ep)
	if err != nil || !slices.Equal(pub.Names, []string{"db", "web"}) {
		t.Fatalf("published names %q, %v; want [db web]", pub.Names, err)
	}
	for _, bad := range [][]string{{"a b"}, {"-x"}, manyNames(dnsname.MaxNames+1, 3), manyNames(dnsname.MaxNames, MaxNamesLen/dnsname.MaxNames+1)} {
		ep.Names = bad
		if _, err := c.PublishEndpoint(ep); err == nil {
			t.Fatalf("names %q accepted", bad)
		}
	}
	if recs := c.Records(kindEndpoint); len(recs) != 1 || recs[0].Version != pub.Version {
		t.Fatalf("a refused publish changed the record: %+v", recs)
	}
}
