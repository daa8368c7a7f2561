package driver

import (
	"net"
	"reflect"
	"testing"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/internal/dataplane"
)

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	mac, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

func TestPlanPeers(t *testing.T) {
	rem := func(node, id, ip, mac, vtep string, version uint64) cluster.Endpoint {
		return cluster.Endpoint{VNI: 42, Node: node, ID: id, IP: net.ParseIP(ip).To4(), MAC: mustMAC(t, mac),
			VTEP: net.ParseIP(vtep).To4(), Version: version}
	}
	peer := func(ip, mac, vtep string) dataplane.Peer {
		return dataplane.Peer{IP: net.ParseIP(ip).To4(), MAC: mustMAC(t, mac), VTEP: net.ParseIP(vtep).To4()}
	}
	local := []localEndpoint{{ID: "local1", IP: net.ParseIP("10.0.0.2").To4(), MAC: mustMAC(t, "02:00:00:00:00:02")}}
	const macA, macB = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
	const vtepB, vtepC, vtepD = "10.98.0.2", "10.98.0.3", "10.98.0.4"

	type want struct {
		peers     []string // "IP MAC VTEP", in order
		flood     []string
		conflicts map[string]string
		newIP     []string // keys of new conflicts that claim a local address
		newMAC    []string // keys of new MAC conflicts
		resolved  []string
	}
	cases := []struct {
		name string
		in   peerInput
		want want
	}{
		{
			name: "nothing",
			want: want{conflicts: map[string]string{}},
		},
		{
			name: "remotes sorted by IP",
			in: peerInput{Local: local, Remote: []cluster.Endpoint{
				rem("c", "r2", "10.0.0.20", macB, vtepC, 1),
				rem("b", "r1", "10.0.0.3", macA, vtepB, 1),
			}},
			want: want{peers: []string{"10.0.0.3 " + macA + " " + vtepB, "10.0.0.20 " + macB + " " + vtepC}, conflicts: map[string]string{}},
		},
		{
			name: "IP clash with a local endpoint",
			in: peerInput{Local: local, Remote: []cluster.Endpoint{
				rem("b", "r1", "10.0.0.2", macA, vtepB, 1),
				rem("b", "r2", "10.0.0.3", macB, vtepB, 1),
			}},
			want: want{
				peers:     []string{"10.0.0.3 " + macB + " " + vtepB},
				conflicts: map[string]string{"b/r1": "claims the address of local endpoint local1"},
				newIP:     []string{"b/r1"},
			},
		},
		{
			name: "MAC clash with a local endpoint",
			in: peerInput{Local: local, Remote: []cluster.Endpoint{
				rem("b", "r1", "10.0.0.3", "02:00:00:00:00:02", vtepB, 1),
			}},
			want: want{
				conflicts: map[string]string{"b/r1": "has the MAC of local endpoint local1"},
				newMAC:    []string{"b/r1"},
			},
		},
		{
			name: "same MAC behind two VTEPs: the newer wins",
			in: peerInput{Remote: []cluster.Endpoint{
				rem("b", "old", "10.0.0.3", macA, vtepB, 1),
				rem("c", "new", "10.0.0.4", macA, vtepC, 2),
				// the same MAC twice behind one VTEP is one FDB entry: fine
				rem("c", "twin", "10.0.0.5", macA, vtepC, 1),
			}},
			want: want{
				peers:     []string{"10.0.0.4 " + macA + " " + vtepC, "10.0.0.5 " + macA + " " + vtepC},
				conflicts: map[string]string{"b/old": "has the MAC of a newer endpoint behind VTEP " + vtepC},
				newMAC:    []string{"b/old"},
			},
		},
		{
			name: "same MAC and version behind two VTEPs: the node name breaks the tie",
			in: peerInput{Remote: []cluster.Endpoint{
				rem("c", "r", "10.0.0.4", macA, vtepC, 1),
				rem("b", "r", "10.0.0.3", macA, vtepB, 1),
			}},
			want: want{
				peers:     []string{"10.0.0.4 " + macA + " " + vtepC},
				conflicts: map[string]string{"b/r": "has the MAC of a newer endpoint behind VTEP " + vtepC},
				newMAC:    []string{"b/r"},
			},
		},
		{
			name: "two claims on one address: the newer wins, silently (the cluster counts it)",
			in: peerInput{Remote: []cluster.Endpoint{
				rem("b", "old", "10.0.0.3", macA, vtepB, 1),
				rem("c", "new", "10.0.0.3", macB, vtepC, 2),
			}},
			want: want{peers: []string{"10.0.0.3 " + macB + " " + vtepC}, conflicts: map[string]string{}},
		},
		{
			name: "restored entries lose to the cluster and to local endpoints",
			in: peerInput{Local: local,
				Remote: []cluster.Endpoint{rem("c", "r1", "10.0.0.3", macA, vtepC, 1)},
				Restored: []dataplane.Peer{
					peer("10.0.0.3", macB, vtepB),                // address now known to the cluster elsewhere
					peer("10.0.0.4", macA, vtepB),                // MAC now behind another VTEP
					peer("10.0.0.2", "02:00:00:00:00:99", vtepB), // a local endpoint's address
					peer("10.0.0.6", "02:00:00:00:00:02", vtepB), // a local endpoint's MAC
					peer("10.0.0.5", "02:00:00:00:00:05", vtepD), // unknown to the cluster yet: kept
				},
			},
			want: want{
				peers:     []string{"10.0.0.3 " + macA + " " + vtepC, "10.0.0.5 02:00:00:00:00:05 " + vtepD},
				conflicts: map[string]string{},
			},
		},
		{
			name: "flood list sorted and unique, restored VTEPs included",
			in: peerInput{Flood: true,
				Remote: []cluster.Endpoint{
					rem("c", "r1", "10.0.0.3", macA, vtepC, 1),
					rem("d", "r2", "10.0.0.4", macB, vtepD, 1),
					rem("c", "r3", "10.0.0.5", "02:00:00:00:00:0c", vtepC, 1),
				},
				Restored: []dataplane.Peer{peer("10.0.0.9", "02:00:00:00:00:09", vtepB)},
			},
			want: want{
				peers: []string{"10.0.0.3 " + macA + " " + vtepC, "10.0.0.4 " + macB + " " + vtepD,
					"10.0.0.5 02:00:00:00:00:0c " + vtepC, "10.0.0.9 02:00:00:00:00:09 " + vtepB},
				flood:     []string{vtepB, vtepC, vtepD},
				conflicts: map[string]string{},
			},
		},
		{
			name: "no flood list without flooding",
			in:   peerInput{Remote: []cluster.Endpoint{rem("c", "r1", "10.0.0.3", macA, vtepC, 1)}},
			want: want{peers: []string{"10.0.0.3 " + macA + " " + vtepC}, conflicts: map[string]string{}},
		},
		{
			name: "a conflict already reported is not new; one gone is resolved",
			in: peerInput{Local: local,
				Remote: []cluster.Endpoint{rem("b", "r1", "10.0.0.2", macA, vtepB, 1)},
				Reported: map[string]string{
					"b/r1":   "claims the address of local endpoint local1",
					"b/gone": "has the MAC of local endpoint local1",
				},
			},
			want: want{
				conflicts: map[string]string{"b/r1": "claims the address of local endpoint local1"},
				resolved:  []string{"b/gone"},
			},
		},
		{
			name: "a conflict whose problem changed is reported again",
			in: peerInput{Local: local,
				Remote:   []cluster.Endpoint{rem("b", "r1", "10.0.0.2", macA, vtepB, 1)},
				Reported: map[string]string{"b/r1": "has the MAC of local endpoint local1"},
			},
			want: want{
				conflicts: map[string]string{"b/r1": "claims the address of local endpoint local1"},
				newIP:     []string{"b/r1"},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			remoteBefore := append([]cluster.Endpoint(nil), tc.in.Remote...)
			plan := planPeers(tc.in)
			var got want
			for _, p := range plan.Peers {
				got.peers = append(got.peers, p.IP.String()+" "+p.MAC.String()+" "+p.VTEP.String())
			}
			for _, v := range plan.Flood {
				got.flood = append(got.flood, v.String())
			}
			got.conflicts = plan.Conflicts
			for _, c := range plan.New {
				if c.IP {
					got.newIP = append(got.newIP, conflictKey(&c.Endpoint))
				} else {
					got.newMAC = append(got.newMAC, conflictKey(&c.Endpoint))
				}
			}
			got.resolved = plan.Resolved
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("plan:\n got %+v\nwant %+v", got, tc.want)
			}
			if err := dataplane.CheckPeers(plan.Peers, plan.Flood); err != nil {
				t.Errorf("the dataplane would refuse the plan: %v", err)
			}
			if !reflect.DeepEqual(tc.in.Remote, remoteBefore) {
				t.Error("planPeers reordered its input")
			}
		})
	}
}

// TestPlanPeersReportsOnce: feeding a plan's conflicts back, as the driver
// does on every sync, reports nothing new.
func TestPlanPeersReportsOnce(t *testing.T) {
	in := peerInput{
		Local: []localEndpoint{{ID: "l", IP: net.ParseIP("10.0.0.2").To4(), MAC: mustMAC(t, "02:00:00:00:00:02")}},
		Remote: []cluster.Endpoint{
			{Node: "b", ID: "r1", IP: net.ParseIP("10.0.0.2").To4(), MAC: mustMAC(t, "02:00:00:00:00:0a"), VTEP: net.ParseIP("10.98.0.2").To4()},
			{Node: "b", ID: "r2", IP: net.ParseIP("10.0.0.3").To4(), MAC: mustMAC(t, "02:00:00:00:00:02"), VTEP: net.ParseIP("10.98.0.2").To4()},
		},
	}
	first := planPeers(in)
	if len(first.New) != 2 {
		t.Fatalf("first plan: %d new conflicts, want 2", len(first.New))
	}
	in.Reported = first.Conflicts
	if again := planPeers(in); len(again.New) != 0 || len(again.Resolved) != 0 {
		t.Fatalf("second plan: new %v, resolved %v; want none", again.New, again.Resolved)
	}
}
