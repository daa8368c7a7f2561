package driver

import (
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/dnsserver"
	"github.com/vxovl/vxovl/internal/dataplane"
	"github.com/vxovl/vxovl/internal/dnsname"
)

// DNSPort is where each overlay's name server listens, on the gateway
// address: Docker's embedded DNS forwards to a container's --dns servers on
// port 53 and cannot be told another.
const DNSPort = 53

// SetNames records the DNS names of a local endpoint's container and the
// name of its network, as the Engine API reports them (Docker never tells a
// network driver a container's name), and announces the names with the
// endpoint so that every host's name server answers them. An update for a
// network or endpoint vxovl does not know is ignored: it may come just
// after Docker deleted it. Repeating an update changes nothing.
func (d *Driver) SetNames(networkID, networkName, endpointID string, names []string) {
	names, err := dnsname.Normalize(names)
	if err != nil {
		d.log.Warn("ignoring the names of an endpoint", "endpoint", short(endpointID), "err", err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	o, ok := d.networks[networkID]
	if !ok {
		return
	}
	changed := false
	if networkName != "" && networkName != o.Name {
		rec := o.networkRecord
		rec.Name = networkName
		if err := d.store.Put(bucketNetworks, o.ID, rec); err != nil {
			d.log.Warn("saving the network's name", "network", short(o.ID), "err", err)
		} else {
			o.networkRecord = rec
			changed = true
		}
	}
	if ep, ok := o.endpoints[endpointID]; ok && !slices.Equal(ep.Names, names) {
		rec := ep.endpointRecord
		rec.Names = names
		if err := d.store.Put(bucketEndpoints, ep.ID, rec); err != nil {
			d.log.Warn("saving the endpoint's names; will retry on the next update", "endpoint", short(ep.ID), "err", err)
			return
		}
		ep.endpointRecord = rec
		if _, err := d.gossip.PublishEndpoint(ep.clusterEndpoint(o.VNI)); err != nil {
			d.log.Warn("announcing the endpoint's names", "endpoint", short(ep.ID), "err", err)
		}
		d.log.Info("endpoint names", "network", short(o.ID), "endpoint", short(ep.ID), "names", strings.Join(names, ","))
		changed = true
	}
	if changed {
		d.markDirty(o.VNI)
	}
}

// Manages reports whether networkID is one of vxovl's networks on this
// host. It never waits for an API call: the Engine API watcher asks it
// while reading dockerd's event stream, which dockerd drops if it stalls.
func (d *Driver) Manages(networkID string) bool {
	_, ok := d.managed.Load(networkID)
	return ok
}

// nameRecords is what a network's name server answers: the names of this
// host's endpoints, and of the remote endpoints that are programmed (a
// remote endpoint left out of the tables for a conflict is not reachable,
// so its names are not served either).
func nameRecords(local []localEndpoint, remote []cluster.Endpoint, peers []dataplane.Peer) []dnsserver.Record {
	programmed := make(map[netip.Addr]string, len(peers))
	for _, p := range peers {
		programmed[addrOf(p.IP)] = p.MAC.String()
	}
	var out []dnsserver.Record
	for _, ep := range local {
		if len(ep.Names) > 0 {
			out = append(out, dnsserver.Record{Names: ep.Names, IP: addrOf(ep.IP)})
		}
	}
	for _, ep := range remote {
		ip := addrOf(ep.IP)
		if len(ep.Names) > 0 && programmed[ip] == ep.MAC.String() {
			out = append(out, dnsserver.Record{Names: ep.Names, IP: ip})
		}
	}
	return out
}

// zone is the DNS zone a network's names are also served under
// (name.<network>): its Docker name, when that is a usable DNS name.
func zone(networkName string) string {
	z := strings.ToLower(networkName)
	if dnsname.Check(z) != nil {
		return ""
	}
	return z
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip.To4())
	return a
}

func prefixOf(n *net.IPNet) netip.Prefix {
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(addrOf(n.IP), ones)
}

// serveNames makes the network's name server answer with the table the
// sync just decided: it starts the server on the gateway address inside
// the overlay namespace when none runs, and stops it for a network with
// DNS turned off. The caller holds o.syncMu.
func (d *Driver) serveNames(n netSnapshot, remote []cluster.Endpoint, peers []dataplane.Peer, t *tally) {
	o := n.o
	if n.noDNS || o.gateway == nil {
		d.stopNames(o)
		return
	}
	table, err := dnsserver.NewTable(zone(n.name), prefixOf(o.subnet), nameRecords(n.local, remote, peers))
	if err != nil {
		// Every name was checked on its way in: this is a bug, not input.
		t.syncErrors++
		d.log.Error("building the network's name table", "vni", o.VNI, "err", err)
		return
	}
	if o.names != nil {
		o.names.SetTable(table)
		return
	}
	gw := addrOf(o.gateway.IP)
	pc, ln, err := d.dp.ListenDNS(o.VNI, gw, d.cfg.DNSPort)
	if err != nil {
		t.syncErrors++
		d.log.Error("starting the network's name server; will retry", "vni", o.VNI, "addr", gw, "err", err)
		return
	}
	srv, err := dnsserver.Serve(d.cfg.DNS, table, pc, ln)
	if err != nil {
		pc.Close()
		ln.Close()
		t.syncErrors++
		d.log.Error("starting the network's name server; will retry", "vni", o.VNI, "err", err)
		return
	}
	o.names = srv
	d.log.Info("name server started", "vni", o.VNI, "addr", netip.AddrPortFrom(gw, uint16(d.cfg.DNSPort)).String())
}

// stopNames stops the network's name server, if one runs. The caller holds
// o.syncMu.
func (d *Driver) stopNames(o *overlay) {
	if o.names == nil {
		return
	}
	if err := o.names.Close(); err != nil {
		d.log.Warn("stopping the network's name server", "vni", o.VNI, "err", err)
	}
	o.names = nil
}

// stopAllNames stops every name server when the driver stops.
func (d *Driver) stopAllNames() {
	d.mu.Lock()
	nets := make([]*overlay, 0, len(d.networks))
	for _, o := range d.networks {
		nets = append(nets, o)
	}
	d.mu.Unlock()
	for _, o := range nets {
		o.syncMu.Lock()
		d.stopNames(o)
		o.syncMu.Unlock()
	}
}
