package driver

import (
	"net"
	"sort"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/internal/dataplane"
)

// peerInput is what one network's static tables are made from.
type peerInput struct {
	// Local are this host's endpoints on the network.
	Local []localEndpoint
	// Remote are the other hosts' endpoints, as the cluster knows them.
	Remote []cluster.Endpoint
	// Restored are the entries remembered from before a restart, kept
	// during the restore grace period where the cluster says nothing else.
	Restored []dataplane.Peer
	// Flood asks for the flood list (head-end replication to every VTEP).
	Flood bool
	// Reported are the conflicts of the previous plan (key -> problem), so
	// that each is reported once.
	Reported map[string]string
}

// localEndpoint is what the peer policy needs of a local endpoint.
type localEndpoint struct {
	ID    string
	IP    net.IP
	MAC   net.HardwareAddr
	Names []string // for the name server
}

// peerPlan is what one network's static tables should hold.
type peerPlan struct {
	Peers []dataplane.Peer // sorted by IP
	Flood []net.IP         // the peers' VTEPs, sorted and unique; nil without flooding
	// Conflicts are all the remote endpoints left out (key -> problem), to
	// pass back as Reported next time.
	Conflicts map[string]string
	New       []conflict // conflicts not reported before (or with another problem), in Remote's newest-first order
	Resolved  []string   // keys of reported conflicts that are gone, sorted
}

// conflict is a remote endpoint left out of the tables.
type conflict struct {
	Endpoint cluster.Endpoint
	Problem  string
	// IP is set when it claims a local endpoint's address; otherwise its MAC clashes.
	IP bool
}

// conflictKey names a remote endpoint across plans.
func conflictKey(ep *cluster.Endpoint) string { return ep.Node + "/" + ep.ID }

// planPeers decides a network's static tables: every remote endpoint the
// cluster knows, minus any that clashes (never silently programmed:
// reported once), plus, during the restore grace period, what was
// programmed before the restart where the cluster says nothing else. A
// remote endpoint clashes when it claims a local endpoint's address or MAC,
// or a MAC that a newer remote endpoint behind another VTEP has (the
// kernel's FDB can send a MAC to one VTEP only; two containers started with
// the same --mac-address on two hosts must not stall the whole network's
// table). Of two remote claims on one address the newer wins (the cluster
// already keeps only one per address and counts the clash).
func planPeers(in peerInput) peerPlan {
	localIP, localMAC := map[string]string{}, map[string]string{}
	for _, ep := range in.Local {
		localIP[ep.IP.String()] = ep.ID
		localMAC[ep.MAC.String()] = ep.ID
	}
	remotes := append([]cluster.Endpoint(nil), in.Remote...)
	sort.SliceStable(remotes, func(i, j int) bool { return remotes[i].NewerThan(&remotes[j]) })
	byIP := map[string]dataplane.Peer{}
	macAt := map[string]net.IP{} // MAC -> the VTEP it is programmed behind
	plan := peerPlan{Conflicts: map[string]string{}}
	for _, rep := range remotes {
		ip, mac := rep.IP.String(), rep.MAC.String()
		if _, taken := byIP[ip]; taken {
			continue
		}
		c := conflict{Endpoint: rep}
		switch {
		case localIP[ip] != "":
			c.Problem, c.IP = "claims the address of local endpoint "+short(localIP[ip]), true
		case localMAC[mac] != "":
			c.Problem = "has the MAC of local endpoint " + short(localMAC[mac])
		case macAt[mac] != nil && !macAt[mac].Equal(rep.VTEP):
			c.Problem = "has the MAC of a newer endpoint behind VTEP " + macAt[mac].String()
		}
		if c.Problem != "" {
			key := conflictKey(&rep)
			plan.Conflicts[key] = c.Problem
			if in.Reported[key] != c.Problem {
				plan.New = append(plan.New, c)
			}
			continue
		}
		macAt[mac] = rep.VTEP
		byIP[ip] = dataplane.Peer{IP: rep.IP, MAC: rep.MAC, VTEP: rep.VTEP}
	}
	for _, p := range in.Restored {
		ip, mac := p.IP.String(), p.MAC.String()
		if _, known := byIP[ip]; known || localIP[ip] != "" || localMAC[mac] != "" ||
			(macAt[mac] != nil && !macAt[mac].Equal(p.VTEP)) {
			continue // the cluster's view wins over what was remembered
		}
		macAt[mac] = p.VTEP
		byIP[ip] = p
	}
	for key := range in.Reported {
		if _, still := plan.Conflicts[key]; !still {
			plan.Resolved = append(plan.Resolved, key)
		}
	}
	sort.Strings(plan.Resolved)
	vteps := map[string]net.IP{}
	for _, p := range byIP {
		plan.Peers = append(plan.Peers, p)
		vteps[p.VTEP.String()] = p.VTEP
	}
	sort.Slice(plan.Peers, func(i, j int) bool { return ipLess(plan.Peers[i].IP, plan.Peers[j].IP) })
	if in.Flood {
		for _, v := range vteps {
			plan.Flood = append(plan.Flood, v)
		}
		sort.Slice(plan.Flood, func(i, j int) bool { return ipLess(plan.Flood[i], plan.Flood[j]) })
	}
	return plan
}
