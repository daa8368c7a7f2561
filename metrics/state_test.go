package metrics

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/driver"
	"github.com/vxovl/vxovl/ipam"
)

type fakeDriver struct {
	nets  []driver.NetworkStatus
	stats driver.Stats
}

func (f *fakeDriver) Networks() []driver.NetworkStatus { return f.nets }
func (f *fakeDriver) Stats() driver.Stats              { return f.stats }

type fakeCluster struct {
	members []cluster.Member
	stats   cluster.Stats
	traffic cluster.Traffic
}

func (f *fakeCluster) Members() []cluster.Member { return f.members }
func (f *fakeCluster) Stats() cluster.Stats      { return f.stats }
func (f *fakeCluster) Traffic() cluster.Traffic  { return f.traffic }

type fakeIPAM struct{ pools []ipam.PoolStatus }

func (f *fakeIPAM) Pools() []ipam.PoolStatus { return f.pools }

// knownState is two networks (one with a local and two remote endpoints,
// one empty), three members, two pools and every counter set to a value of
// its own, so that a metric reading the wrong field shows.
func knownState() Sources {
	web := driver.EndpointStatus{ID: "ep-local-0123456789", IP: "10.220.0.2", MAC: "02:42:0a:dc:00:02", Names: []string{"web", "web-1"}}
	remote := []driver.EndpointStatus{
		{ID: "ep-remote-aaaaaaaa", Node: "h2", VTEP: "10.98.0.2", IP: "10.220.0.3", MAC: "02:42:0a:dc:00:03", Names: []string{"db"}},
		{ID: "ep-remote-bbbbbbbb", Node: "h3", VTEP: "10.98.0.3", IP: "10.220.0.4", MAC: "02:42:0a:dc:00:04", Names: []string{"cache"}},
	}
	return Sources{
		Driver: &fakeDriver{
			nets: []driver.NetworkStatus{
				{ID: "net-app", Name: "app", VNI: 4097, Subnet: "10.220.0.0/24", Gateway: "10.220.0.1",
					Local: []driver.EndpointStatus{web}, Remote: remote, Neighbors: 2, FDB: 2, FloodEntries: 3, Conflicts: 1},
				{ID: "net-empty", Name: "empty", VNI: 42, Subnet: "10.221.0.0/24"},
			},
			stats: driver.Stats{DriftRepairs: 5, IPConflicts: 6, MACConflicts: 7, SyncErrors: 8, Reconciles: 99, UnfinishedCleanups: 9},
		},
		Cluster: &fakeCluster{
			members: []cluster.Member{{Name: "h1", Addr: net.IPv4(10, 98, 0, 1)}, {Name: "h2"}, {Name: "h3"}},
			stats: cluster.Stats{DecryptFailures: 11, RecordsMalformed: 12, MessagesMalformed: 13, RecordsReceived: 1000,
				PushesSent: 14, PushesRetried: 15, PushesAbandoned: 16},
			traffic: cluster.Traffic{MessagesIn: 21, MessagesOut: 22, BytesIn: 2300, BytesOut: 2400},
		},
		IPAM: &fakeIPAM{pools: []ipam.PoolStatus{
			{Subnet: netip.MustParsePrefix("10.220.0.0/24"), Blocks: 2, Addresses: 17},
			{Subnet: netip.MustParsePrefix("10.221.0.0/24")},
		}},
		GossipEncrypted: true,
	}
}

func TestStateCollectorReadsKnownState(t *testing.T) {
	const want = `
# HELP vxovl_gossip_encrypted 1 if gossip is encrypted and authenticated (GOSSIP_KEY set); 0 if anyone who reaches the gossip port can inject endpoints.
# TYPE vxovl_gossip_encrypted gauge
vxovl_gossip_encrypted 1
# HELP vxovl_cluster_members Live members of the gossip cluster as this host sees them, itself included.
# TYPE vxovl_cluster_members gauge
vxovl_cluster_members 3
# HELP vxovl_gossip_messages_total Gossip UDP packets and TCP connections, by direction (in: received or accepted; out: sent or opened), memberlist's failure detection included.
# TYPE vxovl_gossip_messages_total counter
vxovl_gossip_messages_total{direction="in"} 21
vxovl_gossip_messages_total{direction="out"} 22
# HELP vxovl_gossip_bytes_total Bytes of gossip packets and connections as on the wire (encrypted when GOSSIP_KEY is set), by direction.
# TYPE vxovl_gossip_bytes_total counter
vxovl_gossip_bytes_total{direction="in"} 2300
vxovl_gossip_bytes_total{direction="out"} 2400
# HELP vxovl_gossip_decrypt_failures_total Gossip packets and streams dropped because they were not encrypted with this host's key (GOSSIP_KEY differs between hosts, or a stranger).
# TYPE vxovl_gossip_decrypt_failures_total counter
vxovl_gossip_decrypt_failures_total 11
# HELP vxovl_gossip_malformed_records_total Gossip records that failed validation, and messages that could not be decoded, dropped.
# TYPE vxovl_gossip_malformed_records_total counter
vxovl_gossip_malformed_records_total 25
# HELP vxovl_gossip_record_sends_total This host's records sent straight to the hosts that need them, by result: sent (first sends), retried (repeated because no ack came in time: loss), abandoned (never acked; the per-network sync repairs them).
# TYPE vxovl_gossip_record_sends_total counter
vxovl_gossip_record_sends_total{result="abandoned"} 16
vxovl_gossip_record_sends_total{result="retried"} 15
vxovl_gossip_record_sends_total{result="sent"} 14
# HELP vxovl_endpoints Endpoints of a network, by location: local (this host's containers) or remote (other hosts', as the cluster knows them, programmed or not).
# TYPE vxovl_endpoints gauge
vxovl_endpoints{location="local",vni="4097"} 1
vxovl_endpoints{location="remote",vni="4097"} 2
vxovl_endpoints{location="local",vni="42"} 0
vxovl_endpoints{location="remote",vni="42"} 0
# HELP vxovl_neighbor_entries Static neighbor (ARP) entries the last sync of a network programmed.
# TYPE vxovl_neighbor_entries gauge
vxovl_neighbor_entries{vni="4097"} 2
vxovl_neighbor_entries{vni="42"} 0
# HELP vxovl_fdb_entries Unicast FDB entries the last sync of a network programmed.
# TYPE vxovl_fdb_entries gauge
vxovl_fdb_entries{vni="4097"} 2
vxovl_fdb_entries{vni="42"} 0
# HELP vxovl_flood_entries Flood (all-zeros FDB) entries the last sync of a network programmed.
# TYPE vxovl_flood_entries gauge
vxovl_flood_entries{vni="4097"} 3
vxovl_flood_entries{vni="42"} 0
# HELP vxovl_drift_repairs_total Overlay devices, neighbor and FDB entries the reconciler found changed since vxovl programmed them, and repaired.
# TYPE vxovl_drift_repairs_total counter
vxovl_drift_repairs_total 5
# HELP vxovl_ip_conflicts_total Remote endpoints not programmed because they claim a local endpoint's IP.
# TYPE vxovl_ip_conflicts_total counter
vxovl_ip_conflicts_total 6
# HELP vxovl_mac_conflicts_total Remote endpoints not programmed because their MAC is local or behind another host.
# TYPE vxovl_mac_conflicts_total counter
vxovl_mac_conflicts_total 7
# HELP vxovl_sync_errors_total Syncs whose kernel step failed (retried by the reconcile loop).
# TYPE vxovl_sync_errors_total counter
vxovl_sync_errors_total 8
# HELP vxovl_unfinished_cleanups Deletes whose kernel or store step failed and that the reconcile loop keeps retrying.
# TYPE vxovl_unfinished_cleanups gauge
vxovl_unfinished_cleanups 9
# HELP vxovl_ipam_blocks Address blocks this host owns, by pool (the pool's subnet).
# TYPE vxovl_ipam_blocks gauge
vxovl_ipam_blocks{pool="10.220.0.0/24"} 2
vxovl_ipam_blocks{pool="10.221.0.0/24"} 0
# HELP vxovl_ipam_addresses_allocated Addresses this host handed out (endpoints, --ip, --aux-address), by pool (the pool's subnet).
# TYPE vxovl_ipam_addresses_allocated gauge
vxovl_ipam_addresses_allocated{pool="10.220.0.0/24"} 17
vxovl_ipam_addresses_allocated{pool="10.221.0.0/24"} 0
`
	// CollectAndCompare registers the collector in a pedantic registry,
	// which also checks that every metric Collect sends was described.
	if err := testutil.CollectAndCompare(&stateCollector{src: knownState()}, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}

	// GOSSIP_KEY unset shows as 0.
	src := knownState()
	src.GossipEncrypted = false
	const plain = `
# HELP vxovl_gossip_encrypted 1 if gossip is encrypted and authenticated (GOSSIP_KEY set); 0 if anyone who reaches the gossip port can inject endpoints.
# TYPE vxovl_gossip_encrypted gauge
vxovl_gossip_encrypted 0
`
	if err := testutil.CollectAndCompare(&stateCollector{src: src}, strings.NewReader(plain), "vxovl_gossip_encrypted"); err != nil {
		t.Fatal(err)
	}
}

// allowedLabels are the only label names vxovl's own metrics may carry:
// each has a bounded set of values whatever the number of containers.
var allowedLabels = map[string]bool{
	"vni": true, "location": true, "method": true, "result": true, "direction": true, "pool": true,
	// vxovl_build_info's, constant for the process.
	"version": true, "goversion": true,
}

// No metric is labelled per endpoint or container: no vxovl metric has a
// label outside allowedLabels, and no label value of any metric (Go and
// process ones included) names an endpoint, container, address or MAC.
func TestNoPerEndpointLabels(t *testing.T) {
	m := New("test")
	src := knownState()
	if err := m.Watch(src); err != nil {
		t.Fatal(err)
	}
	m.ObserveAPI("NetworkDriver.Join", true, 1)
	m.ObserveSync(1)
	m.ObserveReconcile(1)
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var forbidden []string
	for _, n := range src.Driver.Networks() {
		for _, ep := range append(n.Local, n.Remote...) {
			forbidden = append(forbidden, ep.ID, ep.IP, ep.MAC, ep.Node, ep.VTEP)
			forbidden = append(forbidden, ep.Names...)
		}
	}
	seen := 0
	for _, f := range families {
		own := strings.HasPrefix(f.GetName(), "vxovl_")
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				seen++
				if own && !allowedLabels[l.GetName()] {
					t.Errorf("%s has label %s=%q: not one of the bounded labels", f.GetName(), l.GetName(), l.GetValue())
				}
				for _, bad := range forbidden {
					if bad != "" && strings.Contains(l.GetValue(), bad) {
						t.Errorf("%s has label %s=%q, which names endpoint state (%q)", f.GetName(), l.GetName(), l.GetValue(), bad)
					}
				}
			}
		}
	}
	if seen == 0 {
		t.Fatal("no labels gathered: the test checks nothing")
	}
}
