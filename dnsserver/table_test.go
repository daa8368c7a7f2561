package dnsserver

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var testSubnet = netip.MustParsePrefix("10.10.0.0/24")

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, addr(s))
	}
	return out
}

// testRecords: web and worker share the alias api; db has a dotted alias.
func testRecords() []Record {
	return []Record{
		{Names: []string{"app_web_1", "api", "web"}, IP: addr("10.10.0.2")},
		{Names: []string{"api", "worker"}, IP: addr("10.10.0.3")},
		{Names: []string{"db", "db.internal"}, IP: addr("10.10.0.4")},
	}
}

func mustTable(t testing.TB, zone string, recs []Record) *Table {
	t.Helper()
	tab, err := NewTable(zone, testSubnet, recs)
	if err != nil {
		t.Fatalf("NewTable: %v", err)
	}
	return tab
}

func TestTableLookup(t *testing.T) {
	tab := mustTable(t, "App.", testRecords()) // the zone is compared case-insensitively
	for _, c := range []struct {
		name string
		want []netip.Addr
	}{
		{"web", addrs("10.10.0.2")},
		{"web.", addrs("10.10.0.2")},
		{"WEB", addrs("10.10.0.2")},
		{"web.app", addrs("10.10.0.2")},
		{"Web.APP.", addrs("10.10.0.2")},
		{"app_web_1.app", addrs("10.10.0.2")},
		{"api", addrs("10.10.0.2", "10.10.0.3")}, // an alias held by two containers
		{"api.app", addrs("10.10.0.2", "10.10.0.3")},
		{"db.internal", addrs("10.10.0.4")},
		{"db.internal.app", addrs("10.10.0.4")},
		{"nope", nil},
		{"nope.app", nil},
		{"web.other", nil},
		{"tasks.api", addrs("10.10.0.2", "10.10.0.3")}, // every holder, as swarm's tasks.<service>
		{"tasks.api.app", addrs("10.10.0.2", "10.10.0.3")},
		{"TASKS.web.", addrs("10.10.0.2")},
		{"tasks.nope", nil},
		{"tasks.", nil},
		{"tasks.tasks.api", nil},
		{"app", nil},
		{"", nil},
		{".app", nil},
	} {
		if got := tab.Lookup(c.name); !slices.Equal(got, c.want) {
			t.Errorf("Lookup(%q) = %v, want %v", c.name, got, c.want)
		}
	}
	for _, c := range []struct {
		ip   string
		want []string
	}{
		{"10.10.0.2", []string{"api", "app_web_1", "web"}},
		{"10.10.0.3", []string{"api", "worker"}},
		{"::ffff:10.10.0.3", []string{"api", "worker"}},
		{"10.10.0.9", nil},
	} {
		if got := tab.Reverse(addr(c.ip)); !slices.Equal(got, c.want) {
			t.Errorf("Reverse(%s) = %v, want %v", c.ip, got, c.want)
		}
	}

	// The answers are copies: the table cannot be changed through them.
	a := tab.Lookup("api")
	a[0] = addr("10.10.0.99")
	n := tab.Reverse(addr("10.10.0.2"))
	n[0] = "changed"
	if got := tab.Lookup("api"); got[0] != addr("10.10.0.2") {
		t.Errorf("Lookup result aliases the table: %v", got)
	}
	if got := tab.Reverse(addr("10.10.0.2")); got[0] != "api" {
		t.Errorf("Reverse result aliases the table: %v", got)
	}
}

func TestTableAddRemove(t *testing.T) {
	recs := testRecords()
	before := mustTable(t, "app", recs[:2])
	if got := before.Lookup("db"); got != nil {
		t.Fatalf("db before it was added = %v", got)
	}
	added := mustTable(t, "app", recs)
	if got := added.Lookup("db.app"); !slices.Equal(got, addrs("10.10.0.4")) {
		t.Errorf("db after it was added = %v", got)
	}
	// Removing worker (a new table without it) takes its names and its
	// share of the alias, and leaves the other tables alone.
	removed := mustTable(t, "app", []Record{recs[0], recs[2]})
	if got := removed.Lookup("worker"); got != nil {
		t.Errorf("worker after removal = %v", got)
	}
	if got := removed.Lookup("api"); !slices.Equal(got, addrs("10.10.0.2")) {
		t.Errorf("api after worker's removal = %v, want only web's address", got)
	}
	if got := removed.Reverse(addr("10.10.0.3")); got != nil {
		t.Errorf("reverse of worker's address after removal = %v", got)
	}
	if got := added.Lookup("api"); len(got) != 2 {
		t.Errorf("building a new table changed an old one: api = %v", got)
	}
	// The caller's records are not changed either (the table sorts its own copies).
	if !reflect.DeepEqual(recs, testRecords()) {
		t.Errorf("NewTable changed its input: %v", recs)
	}
}

func TestTableOrderDoesNotMatter(t *testing.T) {
	recs := append(testRecords(),
		Record{Names: []string{"worker", "extra"}, IP: addr("10.10.0.3")}, // same address twice
		Record{Names: []string{"api"}, IP: addr("10.10.0.2")},             // same name and address twice
		Record{IP: addr("10.10.0.7")},                                     // no names
	)
	want := mustTable(t, "app", recs)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		shuffled := make([]Record, len(recs))
		for i, r := range recs {
			shuffled[i] = Record{Names: slices.Clone(r.Names), IP: r.IP}
			rng.Shuffle(len(shuffled[i].Names), func(a, b int) {
				shuffled[i].Names[a], shuffled[i].Names[b] = shuffled[i].Names[b], shuffled[i].Names[a]
			})
		}
		rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		got := mustTable(t, "app", shuffled)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("records in another order give another table:\n%+v\nwant\n%+v", got, want)
		}
	}
	if got := want.Lookup("api"); !slices.Equal(got, addrs("10.10.0.2", "10.10.0.3")) {
		t.Errorf("api = %v: a duplicate record must count once", got)
	}
	if got := want.Reverse(addr("10.10.0.3")); !slices.Equal(got, []string{"api", "extra", "worker"}) {
		t.Errorf("names of 10.10.0.3 = %v", got)
	}
}

func TestTableWithoutZone(t *testing.T) {
	tab := mustTable(t, "", testRecords())
	if got := tab.Lookup("web"); !slices.Equal(got, addrs("10.10.0.2")) {
		t.Errorf("web = %v", got)
	}
	if got := tab.Lookup("web.app"); got != nil {
		t.Errorf("web.app without a zone = %v", got)
	}
	if tab.inZone("x.app") || tab.inZone("x") {
		t.Error("a table without a zone claims names")
	}
	var none *Table
	if none.Lookup("web") != nil || none.Reverse(addr("10.10.0.2")) != nil {
		t.Error("the nil table knows names")
	}
}

func TestTableBadInput(t *testing.T) {
	ok := Record{Names: []string{"web"}, IP: addr("10.10.0.2")}
	for _, c := range []struct {
		what   string
		zone   string
		subnet netip.Prefix
		recs   []Record
		errHas string
	}{
		{"zone with a space", "my net", testSubnet, nil, "zone"},
		{"zone too long", strings.Repeat("a", 64), testSubnet, nil, "zone"},
		{"no subnet", "app", netip.Prefix{}, nil, "not an IPv4 prefix"},
		{"IPv6 subnet", "app", netip.MustParsePrefix("fd00::/64"), nil, "not an IPv4 prefix"},
		{"address outside the subnet", "app", testSubnet, []Record{ok, {Names: []string{"x"}, IP: addr("10.11.0.2")}}, "not an IPv4 address in subnet"},
		{"IPv6 address", "app", testSubnet, []Record{{Names: []string{"x"}, IP: addr("fd00::2")}}, "not an IPv4 address"},
		{"no address", "app", testSubnet, []Record{{Names: []string{"x"}}}, "not an IPv4 address"},
		{"upper-case name", "app", testSubnet, []Record{{Names: []string{"Web"}, IP: addr("10.10.0.2")}}, "lower-case"},
		{"empty name", "app", testSubnet, []Record{{Names: []string{""}, IP: addr("10.10.0.2")}}, "must be 1-253"},
		{"trailing dot", "app", testSubnet, []Record{{Names: []string{"web."}, IP: addr("10.10.0.2")}}, "label"},
	} {
		tab, err := NewTable(c.zone, c.subnet, c.recs)
		if err == nil || !strings.Contains(err.Error(), c.errHas) {
			t.Errorf("%s: NewTable = %v, %v; want an error containing %q", c.what, tab, err, c.errHas)
		}
	}
	// An unmasked subnet is the network it names.
	tab, err := NewTable("app", netip.MustParsePrefix("10.10.0.1/24"), []Record{ok})
	if err != nil || tab.subnet != testSubnet {
		t.Errorf("NewTable with gateway/len subnet = %v, %v", tab, err)
	}
}
