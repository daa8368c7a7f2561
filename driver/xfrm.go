package driver

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/internal/ipsec"
)

// port is the VXLAN UDP port of an overlay: encrypted ones have their own,
// which the IPsec policies select.
func (d *Driver) port(encrypted bool) int {
	if encrypted {
		return d.cfg.EncryptedPort
	}
	return d.cfg.VXLANPort
}

// canEncrypt says why this host cannot create an encrypted network, if it
// cannot: no cluster secret, or a kernel without ESP or AES-GCM.
func (d *Driver) canEncrypt() error {
	if len(d.cfg.IPsecSecret) == 0 {
		return fmt.Errorf("-o encrypted=true needs a cluster secret: set GOSSIP_KEY (the same on every host) with `docker plugin set vxovl GOSSIP_KEY=$(head -c32 /dev/urandom | base64)` while the plugin is disabled")
	}
	if err := d.dp.CheckESP(); err != nil {
		return fmt.Errorf("-o encrypted=true: %w", err)
	}
	return nil
}

// xfrmPeers returns the hosts this one exchanges encrypted traffic with:
// the owners of the remote endpoints of its encrypted networks, at the
// VTEP of each one's newest endpoint. A host that leaves or dies loses its
// endpoints, and with them its SAs here.
func xfrmPeers(self string, eps []cluster.Endpoint) []ipsec.Node {
	newest := map[string]cluster.Endpoint{}
	for _, ep := range eps {
		if ep.Node == "" || ep.Node == self || ep.VTEP.To4() == nil {
			continue
		}
		if cur, ok := newest[ep.Node]; !ok || ep.Version > cur.Version {
			newest[ep.Node] = ep
		}
	}
	out := make([]ipsec.Node, 0, len(newest))
	for name, ep := range newest {
		out = append(out, ipsec.Node{Name: name, IP: ep.VTEP.To4()})
	}
	slices.SortFunc(out, func(a, b ipsec.Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// xfrmGenerations returns the generation to send with at now and the ones
// to accept: it and its neighbours, so that a peer whose clock is up to a
// period off, or which rotated a moment earlier, is understood, and the
// receive SAs of a generation are in place a whole period before anyone
// sends with it.
func xfrmGenerations(now time.Time, period time.Duration) (send uint64, receive []uint64) {
	g := ipsec.Generation(now.Unix(), int64(period/time.Second))
	receive = []uint64{g, g + 1}
	if g > 0 {
		receive = append([]uint64{g - 1}, receive...)
	}
	return g, receive
}

// syncXfrm brings the kernel's IPsec to what the encrypted networks need
// now. It runs on the loop's goroutine (or in Start before the loop), so
// two never overlap; it holds d.mu only to list the networks.
func (d *Driver) syncXfrm(reason string) {
	d.mu.Lock()
	var vnis []uint32
	for _, o := range d.networks {
		if o.Encrypted {
			vnis = append(vnis, o.VNI)
		}
	}
	d.mu.Unlock()
	if len(vnis) == 0 && d.xfrmIdle {
		return
	}
	var ports []int
	var sas []ipsec.SA
	if len(vnis) > 0 {
		var eps []cluster.Endpoint
		for _, vni := range vnis {
			eps = append(eps, d.gossip.Endpoints(vni)...)
		}
		send, recv := xfrmGenerations(time.Now(), d.cfg.KeyRotation)
		var err error
		sas, err = ipsec.SAs(d.cfg.IPsecSecret, ipsec.Want{
			Self:  ipsec.Node{Name: d.cfg.NodeName, IP: d.cfg.VTEP},
			Peers: xfrmPeers(d.cfg.NodeName, eps), Send: send, Receive: recv,
		})
		if err != nil {
			d.log.Error("computing the IPsec SAs of the encrypted networks; will retry", "reason", reason, "err", err)
			return
		}
		ports = []int{d.cfg.EncryptedPort}
	}
	res, err := d.dp.EnsureXfrm(ports, sas, !d.xfrmKeep)
	if err != nil {
		if len(vnis) == 0 {
			// Nothing wanted: a kernel without XFRM has nothing to clean.
			d.log.Debug("checking for leftover IPsec state", "err", err)
			d.xfrmIdle = true
			return
		}
		d.log.Error("programming IPsec for the encrypted networks; will retry", "reason", reason, "err", err)
		return
	}
	d.xfrmIdle = len(vnis) == 0 && !d.xfrmKeep
	if res.Changed() {
		d.log.Info("IPsec programmed", "reason", reason, "networks", len(vnis), "sas", len(sas),
			"states_added", res.StatesAdded, "states_removed", res.StatesRemoved,
			"policies_added", res.PoliciesAdded, "policies_removed", res.PoliciesRemoved)
	}
}
