package status

import (
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/driver"
	"github.com/vxovl/vxovl/ipam"
)

var (
	t0        = time.Date(2025, 3, 4, 12, 0, 30, 0, time.UTC)
	reconcile = time.Date(2025, 3, 4, 12, 0, 25, 0, time.UTC)
)

func host(encrypted bool, peers ...string) Host {
	return Host{
		Node: "h1", VTEP: "10.98.0.1", Version: "v0.1.0",
		Settings: Settings{
			VXLANPort: 4789, GossipPort: 7947, DefaultMTU: 1450,
			DeadTimeout: Duration(10 * time.Second), ReconcileInterval: Duration(10 * time.Second),
			Peers: peers, MetricsAddr: "127.0.0.1:9747", GossipEncrypted: encrypted,
		},
	}
}

// snapshot is three hosts and two networks as h1 sees them.
func snapshot() Snapshot {
	return Snapshot{
		Time: t0,
		Host: host(true, "10.98.0.2", "10.98.0.3"),
		Networks: []driver.NetworkStatus{
			{
				ID: "f00dfeedf00dfeedf00d", Name: "web", VNI: 300, Subnet: "10.220.0.0/24", Gateway: "10.220.0.1", MTU: 1450, DNS: true,
				Local:     []driver.EndpointStatus{{ID: "e1", IP: "10.220.0.10", MAC: "02:42:0a:dc:00:0a", Names: []string{"nginx"}}},
				Neighbors: 0, FDB: 0,
			},
			{
				ID: "abcdefabcdefabcdef", Name: "app", VNI: 4242, Subnet: "10.210.0.0/24", Gateway: "10.210.0.1", MTU: 1400, Flood: true, DNS: true,
				Local: []driver.EndpointStatus{
					{ID: "l2", IP: "10.210.0.9", MAC: "02:42:0a:d2:00:09"},
					{ID: "l1", IP: "10.210.0.2", MAC: "02:42:0a:d2:00:02", Names: []string{"db", "db.app"}},
				},
				Remote: []driver.EndpointStatus{
					{ID: "r1", Node: "h2", VTEP: "10.98.0.2", IP: "10.210.0.3", MAC: "02:42:0a:d2:00:03", Names: []string{"api"}},
					{ID: "r2", Node: "h3", VTEP: "10.98.0.3", IP: "10.210.0.10", MAC: "02:42:0a:d2:00:0a"},
				},
				Neighbors: 2, FDB: 2, FloodEntries: 2, Conflicts: 1,
			},
		},
		Driver: driver.Stats{
			DriftRepairs: 1, IPConflicts: 2, MACConflicts: 3, SyncErrors: 4, Reconciles: 5, LastReconcile: reconcile,
			Networks: 2, LocalEndpoints: 3, UnfinishedCleanups: 0,
		},
		Members: []cluster.Member{
			{Name: "h3", Addr: net.IPv4(10, 98, 0, 3), Port: 7947},
			{Name: "h1", Addr: net.IPv4(10, 98, 0, 1), Port: 7947},
			{Name: "h2", Addr: net.IPv4(10, 98, 0, 2), Port: 7947},
		},
		Cluster: cluster.Stats{DecryptFailures: 6, RecordsMalformed: 7, MessagesMalformed: 8, NetworkConflicts: 9},
		IPAM:    ipam.Stats{Conflicts: 10},
	}
}

func TestBuild(t *testing.T) {
	got := Build(snapshot())
	want := Status{
		Generated: t0,
		Warnings:  []string{},
		Host:      host(true, "10.98.0.2", "10.98.0.3"),
		Members: []Member{
			{Name: "h1", Addr: "10.98.0.1", Port: 7947, State: "alive", Self: true, Endpoints: 3},
			{Name: "h2", Addr: "10.98.0.2", Port: 7947, State: "alive", Endpoints: 1},
			{Name: "h3", Addr: "10.98.0.3", Port: 7947, State: "alive", Endpoints: 1},
		},
		Networks: []Network{
			{
				ID: "abcdefabcdefabcdef", Name: "app", VNI: 4242, Subnet: "10.210.0.0/24", Gateway: "10.210.0.1", MTU: 1400, Flood: true, DNS: true,
				LocalEndpoints: 2, RemoteEndpoints: 2, Neighbors: 2, FDB: 2, FloodEntries: 2, Conflicts: 1,
				Endpoints: []Endpoint{ // by IP, numerically: .10 after .9
					{ID: "l1", Location: "local", Host: "h1", VTEP: "10.98.0.1", IP: "10.210.0.2", MAC: "02:42:0a:d2:00:02", Names: []string{"db", "db.app"}},
					{ID: "r1", Location: "remote", Host: "h2", VTEP: "10.98.0.2", IP: "10.210.0.3", MAC: "02:42:0a:d2:00:03", Names: []string{"api"}},
					{ID: "l2", Location: "local", Host: "h1", VTEP: "10.98.0.1", IP: "10.210.0.9", MAC: "02:42:0a:d2:00:09", Names: []string{}},
					{ID: "r2", Location: "remote", Host: "h3", VTEP: "10.98.0.3", IP: "10.210.0.10", MAC: "02:42:0a:d2:00:0a", Names: []string{}},
				},
			},
			{
				ID: "f00dfeedf00dfeedf00d", Name: "web", VNI: 300, Subnet: "10.220.0.0/24", Gateway: "10.220.0.1", MTU: 1450, DNS: true,
				LocalEndpoints: 1,
				Endpoints: []Endpoint{
					{ID: "e1", Location: "local", Host: "h1", VTEP: "10.98.0.1", IP: "10.220.0.10", MAC: "02:42:0a:dc:00:0a", Names: []string{"nginx"}},
				},
			},
		},
		Health: Health{
			DriftRepairs: 1, IPConflicts: 2, MACConflicts: 3, SyncErrors: 4, Reconciles: 5, LastReconcile: reconcile,
			GossipDecryptFailures: 6, GossipMalformedRecords: 7, GossipMalformedMessages: 8, NetworkConflicts: 9, IPAMConflicts: 10,
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Build:\n got %+v\nwant %+v", got, want)
	}
}

func TestBuildKeepsInputsApart(t *testing.T) {
	snap := snapshot()
	st := Build(snap)
	snap.Host.Settings.Peers[0] = "changed"
	snap.Networks[1].Local[1].Names[0] = "changed"
	if st.Host.Settings.Peers[0] != "10.98.0.2" || st.Networks[0].Endpoints[0].Names[0] != "db" {
		t.Fatalf("the status shares slices with the snapshot: %v %v", st.Host.Settings.Peers, st.Networks[0].Endpoints[0].Names)
	}
}

func TestBuildEmpty(t *testing.T) {
	st := Build(Snapshot{Time: t0, Host: host(true)})
	if st.Warnings == nil || st.Members == nil || st.Networks == nil || st.Host.Settings.Peers == nil {
		t.Fatalf("lists must be empty, not nil (null in the JSON): %+v", st)
	}
}

func TestBuildOrdersNetworks(t *testing.T) {
	snap := Snapshot{Host: host(true), Networks: []driver.NetworkStatus{
		{ID: "ffffffffffffffffff", VNI: 9},                         // no name yet: its short ID
		{ID: "2", Name: "b", VNI: 2}, {ID: "1", Name: "b", VNI: 1}, // same name on two VNIs
		{ID: "3", Name: "a", VNI: 3},
		{ID: "0000000000000000", VNI: 8},
	}}
	var got []string
	for _, n := range Build(snap).Networks {
		got = append(got, n.Label()+"/"+n.ID)
	}
	want := []string{"000000000000/0000000000000000", "a/3", "b/1", "b/2", "ffffffffffff/ffffffffffffffffff"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("order: got %v, want %v", got, want)
	}
}

func TestWarnings(t *testing.T) {
	members := func(names ...string) []cluster.Member {
		var out []cluster.Member
		for _, n := range names {
			out = append(out, cluster.Member{Name: n, Addr: net.IPv4(10, 98, 0, 1), Port: 7947})
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		encrypted bool
		peers     []string
		members   []cluster.Member
		cleanups  int
		want      []string // a distinctive part of each warning, in order
	}{
		{name: "all well", encrypted: true, peers: []string{"10.98.0.2"}, members: members("h1", "h2")},
		{name: "alone and no peers set: a first host waiting for others", encrypted: true, members: members("h1")},
		{name: "key unset", encrypted: false, members: members("h1", "h2"), want: []string{"UNAUTHENTICATED"}},
		{name: "alone although peers set", encrypted: true, peers: []string{"10.98.0.2", "10.98.0.3"}, members: members("h1"),
			want: []string{"No other host is in the cluster although PEERS lists 10.98.0.2, 10.98.0.3: check that gossip port 7947"}},
		{name: "gossip not running", encrypted: true, peers: []string{"10.98.0.2"}, want: []string{"No other host"}},
		{name: "unfinished clean-ups", encrypted: true, members: members("h1", "h2"), cleanups: 2, want: []string{"2 clean-up(s)"}},
		{name: "everything, loudest first", encrypted: false, peers: []string{"x"}, members: members("h1"), cleanups: 1,
			want: []string{"UNAUTHENTICATED", "No other host", "1 clean-up(s)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := Build(Snapshot{
				Time: t0, Host: host(tc.encrypted, tc.peers...), Members: tc.members,
				Driver: driver.Stats{UnfinishedCleanups: tc.cleanups},
			})
			if len(st.Warnings) != len(tc.want) {
				t.Fatalf("warnings %q, want %d like %q", st.Warnings, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(st.Warnings[i], w) {
					t.Errorf("warning %d is %q, want it to say %q", i, st.Warnings[i], w)
				}
			}
		})
	}
}

func TestDurationText(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte("1m30s")); err != nil || time.Duration(d) != 90*time.Second {
		t.Fatalf("UnmarshalText: %v %v", d, err)
	}
	if b, _ := d.MarshalText(); string(b) != "1m30s" {
		t.Fatalf("MarshalText: %s", b)
	}
	if err := d.UnmarshalText([]byte("ten seconds")); err == nil {
		t.Fatal("a bad duration was accepted")
	}
}

type fakeDriver struct {
	nets  []driver.NetworkStatus
	stats driver.Stats
}

func (f fakeDriver) Networks() []driver.NetworkStatus { return f.nets }
func (f fakeDriver) Stats() driver.Stats              { return f.stats }

type fakeCluster struct {
	members []cluster.Member
	stats   cluster.Stats
}

func (f fakeCluster) Members() []cluster.Member { return f.members }
func (f fakeCluster) Stats() cluster.Stats      { return f.stats }

type fakeIPAM ipam.Stats

func (f fakeIPAM) Stats() ipam.Stats { return ipam.Stats(f) }

func TestSourceReadsEveryPart(t *testing.T) {
	snap := snapshot()
	src := Source{
		Host:    snap.Host,
		Driver:  fakeDriver{nets: snap.Networks, stats: snap.Driver},
		Cluster: fakeCluster{members: snap.Members, stats: snap.Cluster},
		IPAM:    fakeIPAM(snap.IPAM),
		Now:     func() time.Time { return t0 },
	}
	if got, want := src.Status(), Build(snap); !reflect.DeepEqual(got, want) {
		t.Fatalf("Source.Status:\n got %+v\nwant %+v", got, want)
	}
}

func TestSortByIP(t *testing.T) {
	var eps []Endpoint
	for _, ip := range []string{"10.0.0.10", "", "x", "10.0.0.9", "fd00::2", "::ffff:10.0.0.8", "fd00::10", "a"} {
		eps = append(eps, Endpoint{IP: ip})
	}
	sortByIP(eps)
	var got []string
	for _, ep := range eps {
		got = append(got, ep.IP)
	}
	want := []string{"::ffff:10.0.0.8", "10.0.0.9", "10.0.0.10", "fd00::2", "fd00::10", "", "a", "x"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("sortByIP: got %q, want %q", got, want)
	}
}
