// Package status is what an operator sees of one vxovl host: its settings,
// the cluster members, each network with its endpoints and what vxovl
// programmed, and the health counters. Build makes the model from snapshots
// of the driver, the cluster and the IPAM (a pure function); the renderers
// turn it into the HTML page, JSON (/status.json, /vxovl/status) and the
// text of `vxovl status`, which reads the JSON back.
package status

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/driver"
	"github.com/vxovl/vxovl/ipam"
)

// Status is one host's status. Its JSON form is the contract of
// /status.json and /vxovl/status: fields are added, never renamed.
type Status struct {
	Generated time.Time `json:"generated"`
	// Warnings are the problems an operator must see first, loudest
	// first: the page and the text print them above everything else.
	Warnings []string  `json:"warnings"`
	Host     Host      `json:"host"`
	Members  []Member  `json:"members"`
	Networks []Network `json:"networks"`
	Health   Health    `json:"health"`
}

// Host is this host and the settings that shape its overlays. It holds no
// secret: GOSSIP_KEY appears only as whether gossip is encrypted.
type Host struct {
	Node     string   `json:"node"`
	VTEP     string   `json:"vtep"`
	Version  string   `json:"version"`
	Settings Settings `json:"settings"`
}

// Settings are the plugin settings in effect (defaults and autodetected
// values resolved).
type Settings struct {
	VXLANPort         int      `json:"vxlan_port"`
	GossipPort        int      `json:"gossip_port"`
	DefaultMTU        int      `json:"default_mtu"`
	DeadTimeout       Duration `json:"dead_timeout"`
	ReconcileInterval Duration `json:"reconcile_interval"`
	Peers             []string `json:"peers"`
	// MetricsAddr is where /metrics and the status page are served; ""
	// when METRICS_ADDR turns them off.
	MetricsAddr     string `json:"metrics_addr"`
	GossipEncrypted bool   `json:"gossip_encrypted"`
}

// Duration is a time.Duration that reads and writes as Go's text ("10s").
type Duration time.Duration

func (d Duration) String() string { return time.Duration(d).String() }

func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// Member is one host of the cluster. Every member listed is alive in this
// host's view: memberlist reports a host only once it is reachable and
// drops it when it is declared dead, and keeps suspicion to itself.
type Member struct {
	Name  string `json:"name"`
	Addr  string `json:"addr"` // its underlay address: VTEP and gossip
	Port  int    `json:"port"` // its gossip port
	State string `json:"state"`
	Self  bool   `json:"self"`
	// Endpoints counts its endpoints on this host's networks.
	Endpoints int `json:"endpoints"`
}

// MemberAlive is the one state a listed member has.
const MemberAlive = "alive"

// Network is one vxovl network on this host.
type Network struct {
	ID      string `json:"id"`
	Name    string `json:"name"` // "" until dockerd told it
	VNI     uint32 `json:"vni"`
	Subnet  string `json:"subnet"`
	Gateway string `json:"gateway"`
	MTU     int    `json:"mtu"`
	Flood   bool   `json:"flood"`
	DNS     bool   `json:"dns"`
	// LocalEndpoints and RemoteEndpoints count Endpoints by location.
	LocalEndpoints  int `json:"local_endpoints"`
	RemoteEndpoints int `json:"remote_endpoints"`
	// Neighbors, FDB and FloodEntries are the entries the last successful
	// sync programmed; Conflicts the remote endpoints it left out.
	Neighbors    int `json:"neighbors"`
	FDB          int `json:"fdb"`
	FloodEntries int `json:"flood_entries"`
	Conflicts    int `json:"conflicts"`
	// Endpoints are all of them, local and remote, sorted by IP.
	Endpoints []Endpoint `json:"endpoints"`
}

// Label is how the network is named on the page: Docker's name, else its
// short ID.
func (n Network) Label() string {
	if n.Name != "" {
		return n.Name
	}
	return shortID(n.ID)
}

// Endpoint is one container's interface on a network.
type Endpoint struct {
	ID       string   `json:"id"`
	Location string   `json:"location"` // LocationLocal or LocationRemote
	Host     string   `json:"host"`     // owner's node name
	VTEP     string   `json:"vtep"`     // owner's underlay address
	IP       string   `json:"ip"`
	MAC      string   `json:"mac"`
	Names    []string `json:"names"` // container name and aliases, where known
}

// Endpoint locations, as the metrics label them too.
const (
	LocationLocal  = "local"
	LocationRemote = "remote"
)

// Health gathers the counters that tell something is wrong. Counters are
// cumulative since the plugin started.
type Health struct {
	DriftRepairs       uint64 `json:"drift_repairs"`
	IPConflicts        uint64 `json:"ip_conflicts"`
	MACConflicts       uint64 `json:"mac_conflicts"`
	SyncErrors         uint64 `json:"sync_errors"`
	UnfinishedCleanups int    `json:"unfinished_cleanups"`
	Reconciles         uint64 `json:"reconciles"`
	// LastReconcile is zero before the first pass.
	LastReconcile time.Time `json:"last_reconcile"`
	// NetworkConflicts are remote network definitions (subnet, MTU) that
	// disagree with this host's for the same VNI.
	NetworkConflicts        uint64 `json:"network_conflicts"`
	GossipDecryptFailures   uint64 `json:"gossip_decrypt_failures"`
	GossipMalformedRecords  uint64 `json:"gossip_malformed_records"`
	GossipMalformedMessages uint64 `json:"gossip_malformed_messages"`
	// IPAMConflicts are address blocks claimed by this host and another.
	IPAMConflicts uint64 `json:"ipam_conflicts"`
}

// Snapshot is what Build reads: copies taken from the running plugin.
type Snapshot struct {
	Time     time.Time
	Host     Host
	Networks []driver.NetworkStatus
	Driver   driver.Stats
	Members  []cluster.Member
	Cluster  cluster.Stats
	IPAM     ipam.Stats
}

// Build makes the status from a snapshot. It keeps the snapshot's slices
// out of the result, so the caller's copies stay its own.
func Build(s Snapshot) Status {
	st := Status{
		Generated: s.Time.Round(0), // the monotonic reading means nothing to a reader
		Host:      s.Host,
		Members:   make([]Member, 0, len(s.Members)),
		Networks:  make([]Network, 0, len(s.Networks)),
		Health: Health{
			DriftRepairs:            s.Driver.DriftRepairs,
			IPConflicts:             s.Driver.IPConflicts,
			MACConflicts:            s.Driver.MACConflicts,
			SyncErrors:              s.Driver.SyncErrors,
			UnfinishedCleanups:      s.Driver.UnfinishedCleanups,
			Reconciles:              s.Driver.Reconciles,
			LastReconcile:           s.Driver.LastReconcile,
			NetworkConflicts:        s.Cluster.NetworkConflicts,
			GossipDecryptFailures:   s.Cluster.DecryptFailures,
			GossipMalformedRecords:  s.Cluster.RecordsMalformed,
			GossipMalformedMessages: s.Cluster.MessagesMalformed,
			IPAMConflicts:           s.IPAM.Conflicts,
		},
	}
	// Lists are [] rather than null in the JSON, for scripts' sake.
	st.Host.Settings.Peers = nonNil(slices.Clone(s.Host.Settings.Peers))

	owned := map[string]int{}
	for _, n := range s.Networks {
		nw := Network{
			ID: n.ID, Name: n.Name, VNI: n.VNI, Subnet: n.Subnet, Gateway: n.Gateway, MTU: n.MTU,
			Flood: n.Flood, DNS: n.DNS, LocalEndpoints: len(n.Local), RemoteEndpoints: len(n.Remote),
			Neighbors: n.Neighbors, FDB: n.FDB, FloodEntries: n.FloodEntries, Conflicts: n.Conflicts,
			Endpoints: make([]Endpoint, 0, len(n.Local)+len(n.Remote)),
		}
		for _, ep := range n.Local {
			nw.Endpoints = append(nw.Endpoints, endpoint(ep, LocationLocal, s.Host.Node, s.Host.VTEP))
		}
		for _, ep := range n.Remote {
			nw.Endpoints = append(nw.Endpoints, endpoint(ep, LocationRemote, ep.Node, ep.VTEP))
			owned[ep.Node]++
		}
		owned[s.Host.Node] += len(n.Local)
		sortByIP(nw.Endpoints)
		st.Networks = append(st.Networks, nw)
	}
	slices.SortStableFunc(st.Networks, func(a, b Network) int {
		if c := strings.Compare(a.Label(), b.Label()); c != 0 {
			return c
		}
		return int(a.VNI) - int(b.VNI)
	})

	for _, m := range s.Members {
		st.Members = append(st.Members, Member{
			Name: m.Name, Addr: ipString(m.Addr), Port: m.Port, State: MemberAlive,
			Self: m.Name == s.Host.Node, Endpoints: owned[m.Name],
		})
	}
	slices.SortFunc(st.Members, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })

	st.Warnings = nonNil(warnings(st))
	return st
}

// UnauthenticatedWarning is the warning shown while GOSSIP_KEY is unset.
const UnauthenticatedWarning = "GOSSIP_KEY is unset: the control plane is UNAUTHENTICATED. " +
	"Anyone who reaches the gossip port can inject endpoints and redirect this overlay's traffic. " +
	"Set the same GOSSIP_KEY on every host (head -c32 /dev/urandom | base64)."

// warnings is the policy of what deserves to be shouted, loudest first.
func warnings(st Status) []string {
	var w []string
	set := st.Host.Settings
	if !set.GossipEncrypted {
		w = append(w, UnauthenticatedWarning)
	}
	others := 0
	for _, m := range st.Members {
		if !m.Self {
			others++
		}
	}
	if others == 0 && len(set.Peers) > 0 {
		w = append(w, fmt.Sprintf("No other host is in the cluster although PEERS lists %s: check that gossip port %d (TCP and UDP) is open between the hosts and that they share GOSSIP_KEY.",
			strings.Join(set.Peers, ", "), set.GossipPort))
	}
	if n := st.Health.UnfinishedCleanups; n > 0 {
		w = append(w, fmt.Sprintf("%d clean-up(s) of removed networks or endpoints failed and are being retried: see the plugin log.", n))
	}
	return w
}

func endpoint(ep driver.EndpointStatus, location, host, vtep string) Endpoint {
	return Endpoint{
		ID: ep.ID, Location: location, Host: host, VTEP: vtep,
		IP: ep.IP, MAC: ep.MAC, Names: nonNil(slices.Clone(ep.Names)),
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// sortByIP orders endpoints by address, numerically; text that is no
// address sorts after them, as text. Each address is parsed once: a
// network may have thousands.
func sortByIP(eps []Endpoint) {
	type keyed struct {
		addr netip.Addr // invalid for text that is no address
		ep   Endpoint
	}
	ks := make([]keyed, len(eps))
	for i, ep := range eps {
		addr, _ := netip.ParseAddr(ep.IP)
		ks[i] = keyed{addr: addr.Unmap(), ep: ep}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int {
		switch av, bv := a.addr.IsValid(), b.addr.IsValid(); {
		case av && bv:
			return a.addr.Compare(b.addr)
		case av:
			return -1
		case bv:
			return 1
		}
		return strings.Compare(a.ep.IP, b.ep.IP)
	})
	for i, k := range ks {
		eps[i] = k.ep
	}
}

func ipString(ip net.IP) string {
	if ip == nil {
		return ""
	}
	return ip.String()
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
