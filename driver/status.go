package driver

import (
	"bytes"
	"slices"
	"strings"

	"github.com/vxovl/vxovl/cluster"
)

// NetworkStatus is one network as an operator sees it (status page,
// metrics): its definition, its endpoints here and on other hosts, and what
// vxovl last put in its kernel tables.
type NetworkStatus struct {
	ID      string
	Name    string // Docker's name, once the Engine API told it
	VNI     uint32
	Subnet  string
	Gateway string
	MTU     int
	Flood   bool
	DNS     bool // the network's name server is on
	Local   []EndpointStatus
	Remote  []EndpointStatus // as the cluster knows them, programmed or not
	// Neighbors, FDB and FloodEntries count the entries the last
	// successful sync programmed (static neighbors, unicast FDB entries,
	// all-zeros flood entries); all zero before the first.
	Neighbors, FDB, FloodEntries int
	// Conflicts counts the remote endpoints left out of the tables.
	Conflicts int
}

// EndpointStatus is one endpoint of a network.
type EndpointStatus struct {
	ID    string
	Node  string // owner host; "" for this host's
	VTEP  string // owner's underlay address; "" for this host's
	IP    string
	MAC   string
	Names []string
}

// Networks reports every network, sorted by name then VNI. It holds the
// driver's lock only to copy the local state, never across the cluster's
// or the kernel's: a status page or a scrape never makes an API call wait.
func (d *Driver) Networks() []NetworkStatus {
	type snap struct {
		st NetworkStatus
		o  *overlay
	}
	d.mu.Lock()
	snaps := make([]snap, 0, len(d.networks))
	for _, o := range d.networks {
		st := NetworkStatus{
			ID: o.ID, Name: o.Name, VNI: o.VNI, Subnet: o.Subnet, MTU: o.MTU, Flood: o.Flood,
			DNS: !o.NoDNS && o.gateway != nil, Local: make([]EndpointStatus, 0, len(o.endpoints)),
		}
		if o.gateway != nil {
			st.Gateway = o.gateway.IP.String()
		}
		local := make([]*endpoint, 0, len(o.endpoints))
		for _, ep := range o.endpoints {
			local = append(local, ep)
		}
		slices.SortFunc(local, func(a, b *endpoint) int { return bytes.Compare(a.ip.To16(), b.ip.To16()) })
		for _, ep := range local {
			st.Local = append(st.Local, EndpointStatus{ID: ep.ID, IP: ep.ip.String(), MAC: ep.MAC, Names: ep.Names})
		}
		snaps = append(snaps, snap{st: st, o: o})
	}
	gossip := d.gossip
	d.mu.Unlock()

	out := make([]NetworkStatus, 0, len(snaps))
	for _, s := range snaps {
		st := s.st
		if gossip != nil {
			remote := gossip.Endpoints(st.VNI)
			slices.SortFunc(remote, func(a, b cluster.Endpoint) int { return bytes.Compare(a.IP.To16(), b.IP.To16()) })
			st.Remote = make([]EndpointStatus, 0, len(remote))
			for _, ep := range remote {
				st.Remote = append(st.Remote, remoteStatus(ep))
			}
		}
		if t := s.o.shown.Load(); t != nil {
			st.Neighbors, st.FDB, st.FloodEntries, st.Conflicts = len(t.peers), len(t.peers), len(t.flood), t.conflicts
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b NetworkStatus) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return int(a.VNI) - int(b.VNI)
	})
	return out
}

func remoteStatus(ep cluster.Endpoint) EndpointStatus {
	return EndpointStatus{ID: ep.ID, Node: ep.Node, VTEP: ep.VTEP.String(), IP: ep.IP.String(), MAC: ep.MAC.String(), Names: ep.Names}
}
