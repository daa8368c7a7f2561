package driver

import (
	"fmt"
	"net"
	"slices"

	"github.com/vxovl/vxovl/internal/dataplane"
	"github.com/vxovl/vxovl/internal/vxlan"
)

// Store buckets owned by the driver.
const (
	bucketNetworks  = "networks"  // Docker network ID -> networkRecord
	bucketEndpoints = "endpoints" // Docker endpoint ID -> endpointRecord
	bucketPeers     = "peers"     // VNI -> []peerRecord last programmed, for restarts
)

// networkRecord is a network as persisted; comparable so that a repeated
// CreateNetwork can be recognised.
type networkRecord struct {
	ID       string
	VNI      uint32
	Subnet   string
	Gateway  string `json:",omitempty"`
	MTU      int
	Flood    bool `json:",omitempty"`
	Internal bool `json:",omitempty"`
	// NoDNS turns the network's name server off (-o dns=false).
	NoDNS bool `json:",omitempty"`
	// Encrypted carries the network's VXLAN over IPsec (-o encrypted=true).
	Encrypted bool `json:",omitempty"`
	// Name is the network's Docker name, learned from the Engine API (a
	// driver is told only the ID): the zone of its names (name.<network>).
	Name string `json:",omitempty"`
}

// definition is what a repeated CreateNetwork must agree on: all but what
// vxovl learned about the network since.
func (r networkRecord) definition() networkRecord {
	r.Name = ""
	return r
}

type endpointRecord struct {
	ID        string
	NetworkID string
	Address   string // CIDR
	MAC       string
	Joined    bool `json:",omitempty"`
	// Created is the cluster's stamp of the endpoint's claim on Address
	// (cluster.Endpoint.Created), republished as it is after a restart so
	// that the claim keeps its age against other hosts' claims on the
	// address. Zero until the first publish.
	Created uint64 `json:",omitempty"`
	// Names are the container's DNS names on the network, learned from the
	// Engine API and announced with the endpoint.
	Names []string `json:",omitempty"`
}

type peerRecord struct {
	IP, MAC, VTEP string
}

func vniKey(vni uint32) string { return fmt.Sprintf("%08d", vni) }

func (r networkRecord) overlay() (*overlay, error) {
	_, subnet, err := net.ParseCIDR(r.Subnet)
	if err != nil {
		return nil, fmt.Errorf("network %s: bad subnet %q: %w", short(r.ID), r.Subnet, err)
	}
	o := &overlay{networkRecord: r, subnet: subnet, endpoints: map[string]*endpoint{}}
	if r.Gateway != "" {
		ip, gw, err := net.ParseCIDR(r.Gateway)
		if err != nil {
			return nil, fmt.Errorf("network %s: bad gateway %q: %w", short(r.ID), r.Gateway, err)
		}
		gw.IP = ip.To4()
		o.gateway = gw
	}
	if err := vxlan.CheckVNI(r.VNI); err != nil {
		return nil, fmt.Errorf("network %s: %w", short(r.ID), err)
	}
	return o, nil
}

func (r endpointRecord) endpoint() (*endpoint, error) {
	ip, _, err := net.ParseCIDR(r.Address)
	if err != nil || ip.To4() == nil {
		return nil, fmt.Errorf("endpoint %s: bad address %q", short(r.ID), r.Address)
	}
	mac, err := vxlan.ParseMAC(r.MAC)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", short(r.ID), err)
	}
	return &endpoint{endpointRecord: r, ip: ip.To4(), mac: mac}, nil
}

func peersToRecords(peers []dataplane.Peer) []peerRecord {
	out := make([]peerRecord, 0, len(peers))
	for _, p := range peers {
		out = append(out, peerRecord{IP: p.IP.String(), MAC: p.MAC.String(), VTEP: p.VTEP.String()})
	}
	return out
}

func recordsToPeers(recs []peerRecord) []dataplane.Peer {
	out := make([]dataplane.Peer, 0, len(recs))
	for _, r := range recs {
		ip, vtep := net.ParseIP(r.IP).To4(), net.ParseIP(r.VTEP).To4()
		mac, err := vxlan.ParseMAC(r.MAC)
		if ip == nil || vtep == nil || err != nil {
			continue // a damaged hint is only a hint; the cluster will refill it
		}
		out = append(out, dataplane.Peer{IP: ip, MAC: mac, VTEP: vtep})
	}
	return out
}

func samePeers(a, b []dataplane.Peer) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].IP.Equal(b[i].IP) || a[i].MAC.String() != b[i].MAC.String() || !a[i].VTEP.Equal(b[i].VTEP) {
			return false
		}
	}
	return true
}

// peerTable is one network's static tables as given to SyncPeers.
type peerTable struct {
	peers []dataplane.Peer
	flood []net.IP
	// conflicts counts the remote endpoints the plan left out, for the status.
	conflicts int
}

// equal reports whether t and u are the same tables; a nil table is unknown
// and equal to none.
func (t *peerTable) equal(u *peerTable) bool {
	return t != nil && u != nil && samePeers(t.peers, u.peers) && slices.EqualFunc(t.flood, u.flood, net.IP.Equal)
}
