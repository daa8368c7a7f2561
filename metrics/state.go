package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/driver"
	"github.com/vxovl/vxovl/ipam"
)

// Driver is what the state collector reads of the network driver.
type Driver interface {
	Networks() []driver.NetworkStatus
	Stats() driver.Stats
}

// Cluster is what the state collector reads of the gossip cluster.
type Cluster interface {
	Members() []cluster.Member
	Stats() cluster.Stats
	Traffic() cluster.Traffic
}

// IPAM is what the state collector reads of the IPAM driver.
type IPAM interface {
	Pools() []ipam.PoolStatus
}

// Sources are what the state collector reads at every scrape. Each method
// returns a copy, taken without holding a lock past its return, so that a
// scrape never makes an API call or a sync wait while it is rendered.
type Sources struct {
	Driver  Driver
	Cluster Cluster
	IPAM    IPAM
	// GossipEncrypted says whether gossip is encrypted and authenticated
	// (GOSSIP_KEY is set).
	GossipEncrypted bool
}

var (
	descGossipEncrypted = prometheus.NewDesc("vxovl_gossip_encrypted",
		"1 if gossip is encrypted and authenticated (GOSSIP_KEY set); 0 if anyone who reaches the gossip port can inject endpoints.", nil, nil)
	descMembers = prometheus.NewDesc("vxovl_cluster_members",
		"Live members of the gossip cluster as this host sees them, itself included.", nil, nil)
	descGossipMessages = prometheus.NewDesc("vxovl_gossip_messages_total",
		"Gossip UDP packets and TCP connections, by direction (in: received or accepted; out: sent or opened), memberlist's failure detection included.", []string{"direction"}, nil)
	descGossipBytes = prometheus.NewDesc("vxovl_gossip_bytes_total",
		"Bytes of gossip packets and connections as on the wire (encrypted when GOSSIP_KEY is set), by direction.", []string{"direction"}, nil)
	descDecryptFailures = prometheus.NewDesc("vxovl_gossip_decrypt_failures_total",
		"Gossip packets and streams dropped because they were not encrypted with this host's key (GOSSIP_KEY differs between hosts, or a stranger).", nil, nil)
	descMalformed = prometheus.NewDesc("vxovl_gossip_malformed_records_total",
		"Gossip records that failed validation, and messages that could not be decoded, dropped.", nil, nil)
	descPushes = prometheus.NewDesc("vxovl_gossip_record_sends_total",
		"This host's records sent straight to the hosts that need them, by result: sent (first sends), retried (repeated because no ack came in time: loss), abandoned (never acked; the per-network sync repairs them).", []string{"result"}, nil)
	descEndpoints = prometheus.NewDesc("vxovl_endpoints",
		"Endpoints of a network, by location: local (this host's containers) or remote (other hosts', as the cluster knows them, programmed or not).", []string{"vni", "location"}, nil)
	descNeighbors = prometheus.NewDesc("vxovl_neighbor_entries",
		"Static neighbor (ARP) entries the last sync of a network programmed.", []string{"vni"}, nil)
	descFDB = prometheus.NewDesc("vxovl_fdb_entries",
		"Unicast FDB entries the last sync of a network programmed.", []string{"vni"}, nil)
	descFlood = prometheus.NewDesc("vxovl_flood_entries",
		"Flood (all-zeros FDB) entries the last sync of a network programmed.", []string{"vni"}, nil)
	descDrift = prometheus.NewDesc("vxovl_drift_repairs_total",
		"Overlay devices, neighbor and FDB entries the reconciler found changed since vxovl programmed them, and repaired.", nil, nil)
	descIPConflicts = prometheus.NewDesc("vxovl_ip_conflicts_total",
		"Remote endpoints not programmed because they claim a local endpoint's IP.", nil, nil)
	descMACConflicts = prometheus.NewDesc("vxovl_mac_conflicts_total",
		"Remote endpoints not programmed because their MAC is local or behind another host.", nil, nil)
	descSyncErrors = prometheus.NewDesc("vxovl_sync_errors_total",
		"Syncs whose kernel step failed (retried by the reconcile loop).", nil, nil)
	descUnfinished = prometheus.NewDesc("vxovl_unfinished_cleanups",
		"Deletes whose kernel or store step failed and that the reconcile loop keeps retrying.", nil, nil)
	descIPAMBlocks = prometheus.NewDesc("vxovl_ipam_blocks",
		"Address blocks this host owns, by pool (the pool's subnet).", []string{"pool"}, nil)
	descIPAMAddresses = prometheus.NewDesc("vxovl_ipam_addresses_allocated",
		"Addresses this host handed out (endpoints, --ip, --aux-address), by pool (the pool's subnet).", []string{"pool"}, nil)
)

// stateCollector turns copies of the plugin's state into metrics.
type stateCollector struct{ src Sources }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descGossipEncrypted, descMembers, descGossipMessages, descGossipBytes, descDecryptFailures, descMalformed,
		descPushes, descEndpoints, descNeighbors, descFDB, descFlood,
		descDrift, descIPConflicts, descMACConflicts, descSyncErrors, descUnfinished,
		descIPAMBlocks, descIPAMAddresses,
	} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	// Copies first; the metrics are made from them with no lock held.
	nets := c.src.Driver.Networks()
	ds := c.src.Driver.Stats()
	members := c.src.Cluster.Members()
	cs := c.src.Cluster.Stats()
	tr := c.src.Cluster.Traffic()
	pools := c.src.IPAM.Pools()

	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	encrypted := 0.0
	if c.src.GossipEncrypted {
		encrypted = 1
	}
	gauge(descGossipEncrypted, encrypted)
	gauge(descMembers, float64(len(members)))
	counter(descGossipMessages, tr.MessagesIn, "in")
	counter(descGossipMessages, tr.MessagesOut, "out")
	counter(descGossipBytes, tr.BytesIn, "in")
	counter(descGossipBytes, tr.BytesOut, "out")
	counter(descDecryptFailures, cs.DecryptFailures)
	counter(descMalformed, cs.RecordsMalformed+cs.MessagesMalformed)
	counter(descPushes, cs.PushesSent, "sent")
	counter(descPushes, cs.PushesRetried, "retried")
	counter(descPushes, cs.PushesAbandoned, "abandoned")

	for _, n := range nets {
		vni := strconv.FormatUint(uint64(n.VNI), 10)
		gauge(descEndpoints, float64(len(n.Local)), vni, "local")
		gauge(descEndpoints, float64(len(n.Remote)), vni, "remote")
		gauge(descNeighbors, float64(n.Neighbors), vni)
		gauge(descFDB, float64(n.FDB), vni)
		gauge(descFlood, float64(n.FloodEntries), vni)
	}

	counter(descDrift, ds.DriftRepairs)
	counter(descIPConflicts, ds.IPConflicts)
	counter(descMACConflicts, ds.MACConflicts)
	counter(descSyncErrors, ds.SyncErrors)
	gauge(descUnfinished, float64(ds.UnfinishedCleanups))

	for _, p := range pools {
		pool := p.Subnet.String()
		gauge(descIPAMBlocks, float64(p.Blocks), pool)
		gauge(descIPAMAddresses, float64(p.Addresses), pool)
	}
}
