package driver

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/miekg/dns"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/dnsserver"
	"github.com/vxovl/vxovl/internal/dataplane"
	"github.com/vxovl/vxovl/internal/testutil/poll"
)

func TestNameRecords(t *testing.T) {
	ip := func(s string) net.IP { return net.ParseIP(s).To4() }
	mac := func(b byte) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, b} }
	remote := func(id, addr string, m byte, names ...string) cluster.Endpoint {
		return cluster.Endpoint{ID: id, IP: ip(addr), MAC: mac(m), Names: names}
	}
	peer := func(addr string, m byte) dataplane.Peer { return dataplane.Peer{IP: ip(addr), MAC: mac(m)} }
	rec := func(addr string, names ...string) dnsserver.Record {
		return dnsserver.Record{Names: names, IP: netip.MustParseAddr(addr)}
	}
	for _, tc := range []struct {
		name   string
		local  []localEndpoint
		remote []cluster.Endpoint
		peers  []dataplane.Peer
		want   []dnsserver.Record
	}{
		{name: "nothing"},
		{
			name:  "local endpoints with names; one without is left out",
			local: []localEndpoint{{IP: ip("10.0.0.2"), Names: []string{"web"}}, {IP: ip("10.0.0.3")}},
			want:  []dnsserver.Record{rec("10.0.0.2", "web")},
		},
		{
			name:   "programmed remote endpoints",
			remote: []cluster.Endpoint{remote("r1", "10.0.0.4", 4, "db"), remote("r2", "10.0.0.5", 5, "api", "v1")},
			peers:  []dataplane.Peer{peer("10.0.0.4", 4), peer("10.0.0.5", 5)},
			want:   []dnsserver.Record{rec("10.0.0.4", "db"), rec("10.0.0.5", "api", "v1")},
		},
		{
			// A remote endpoint left out of the tables (a conflict) is not
			// reachable: its names would send clients nowhere.
			name:   "remote endpoints that are not programmed",
			remote: []cluster.Endpoint{remote("r1", "10.0.0.4", 4, "db"), remote("r2", "10.0.0.5", 5, "api")},
			peers:  []dataplane.Peer{peer("10.0.0.5", 9)}, // 10.0.0.5 is programmed with another MAC
		},
		{
			name:   "an alias on both hosts",
			local:  []localEndpoint{{IP: ip("10.0.0.2"), Names: []string{"echo"}}},
			remote: []cluster.Endpoint{remote("r1", "10.0.0.4", 4, "echo")},
			peers:  []dataplane.Peer{peer("10.0.0.4", 4)},
			want:   []dnsserver.Record{rec("10.0.0.2", "echo"), rec("10.0.0.4", "echo")},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := nameRecords(tc.local, tc.remote, tc.peers); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestZone(t *testing.T) {
	for in, want := range map[string]string{"app": "app", "My_Net": "my_net", "vxapp.prod": "vxapp.prod", "bad name": "", "-x": ""} {
		if got := zone(in); got != want {
			t.Errorf("zone(%q) = %q, want %q", in, got, want)
		}
	}
}

// query asks the name server at addr for name and returns the answer's
// rcode and A addresses (sorted).
func query(t *testing.T, addr, name string, qtype uint16) (int, []string) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		return -1, nil
	}
	var ips []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	slices.Sort(ips)
	return r.Rcode, ips
}

// answers waits until the name server of vni answers name with want.
func (h *harness) answers(vni uint32, name string, want ...string) {
	h.t.Helper()
	poll.Until(h.t, 5*time.Second, name+" -> "+fmtIPs(want), func() (bool, string) {
		addr := h.dp.dnsAddr(vni)
		if addr == "" {
			return false, "no name server"
		}
		rcode, got := query(h.t, addr, name, dns.TypeA)
		return rcode == dns.RcodeSuccess && slices.Equal(got, want), dns.RcodeToString[rcode] + " " + fmtIPs(got)
	})
}

func fmtIPs(ips []string) string { return "[" + strings.Join(ips, " ") + "]" }

func namesHarness(t *testing.T, path string) *harness {
	// No upstream resolvers: a name the network does not know gets
	// SERVFAIL, and nothing leaves the machine.
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return startHarness(t, path, newFakeDataplane(), Config{DNS: dnsserver.Config{ResolvConf: conf}})
}

func TestNameServer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	h := namesHarness(t, path)
	h.createNetwork(map[string]interface{}{"vni": "42"})
	h.createEndpoint(epID, "10.10.0.2/24")
	if !h.drv.Manages(netID) || h.drv.Manages("other") {
		t.Fatal("Manages does not tell vxovl's networks from others")
	}

	h.drv.SetNames(netID, "app", epID, []string{"Web", "web-1"})
	h.answers(42, "web", "10.10.0.2")
	h.answers(42, "web-1.app", "10.10.0.2")
	if got := h.g.local[epID].Names; !slices.Equal(got, []string{"web", "web-1"}) {
		t.Fatalf("names announced to the cluster: %v", got)
	}

	// An alias on another host: both addresses; a conflicting remote
	// endpoint's names are not served.
	h.g.setRemote(42,
		cluster.Endpoint{VNI: 42, ID: "r1", IP: net.ParseIP("10.10.0.3").To4(), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9},
			Node: "b", VTEP: net.ParseIP("10.98.0.2").To4(), Names: []string{"web", "db"}},
		cluster.Endpoint{VNI: 42, ID: "r2", IP: net.ParseIP("10.10.0.2").To4(), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 10},
			Node: "c", VTEP: net.ParseIP("10.98.0.3").To4(), Names: []string{"thief"}},
	)
	h.drv.EndpointsChanged(42)
	h.answers(42, "web", "10.10.0.2", "10.10.0.3")
	h.answers(42, "db.app", "10.10.0.3")
	if rcode, _ := query(t, h.dp.dnsAddr(42), "thief.app", dns.TypeA); rcode != dns.RcodeNameError {
		t.Fatalf("a conflicting remote endpoint's name answered %s, want NXDOMAIN", dns.RcodeToString[rcode])
	}

	// The remote endpoint goes away.
	h.g.setRemote(42)
	h.drv.EndpointsChanged(42)
	h.answers(42, "web", "10.10.0.2")

	// Names survive a restart: stored, and announced again with the endpoint.
	h.stop()
	h2 := namesHarness(t, path)
	if got := h2.g.local[epID].Names; !slices.Equal(got, []string{"web", "web-1"}) {
		t.Fatalf("names announced after a restart: %v", got)
	}
	h2.answers(42, "web-1.app", "10.10.0.2")

	// Unknown network or endpoint: nothing happens, nothing breaks.
	h2.drv.SetNames("nope", "x", epID, []string{"x"})
	h2.drv.SetNames(netID, "app", "nope", []string{"x"})

	// The server goes away with the network.
	addr := h2.dp.dnsAddr(42)
	if err := h2.drv.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netID}); err != nil {
		t.Fatal(err)
	}
	if rcode, _ := query(t, addr, "web", dns.TypeA); rcode != -1 {
		t.Fatalf("the deleted network's name server still answers (%s)", dns.RcodeToString[rcode])
	}
	if h2.drv.Manages(netID) {
		t.Fatal("Manages still lists a deleted network")
	}
}

func TestNameServerOff(t *testing.T) {
	h := namesHarness(t, filepath.Join(t.TempDir(), "state.db"))
	h.createNetwork(map[string]interface{}{"vni": "42", "dns": "false"})
	h.createEndpoint(epID, "10.10.0.2/24")
	h.drv.SetNames(netID, "app", epID, []string{"web"})
	if err := h.drv.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	if addr := h.dp.dnsAddr(42); addr != "" {
		t.Fatalf("-o dns=false network has a name server on %s", addr)
	}
	if err := h.drv.CreateNetwork(createReq(map[string]interface{}{"dns": "maybe"}, "10.11.0.0/24", "10.11.0.1/24")); err == nil {
		t.Fatal("-o dns=maybe accepted")
	}
}

// A name server that could not start (port taken, namespace gone) is
// started by the next sync.
func TestNameServerRetried(t *testing.T) {
	h := namesHarness(t, filepath.Join(t.TempDir(), "state.db"))
	h.dp.failOnce("ListenDNS", errors.New("address already in use"))
	h.createNetwork(map[string]interface{}{"vni": "42"})
	h.createEndpoint(epID, "10.10.0.2/24")
	h.drv.SetNames(netID, "app", epID, []string{"web"})
	if err := h.drv.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.answers(42, "web", "10.10.0.2")
}

func TestNetworks(t *testing.T) {
	h := namesHarness(t, filepath.Join(t.TempDir(), "state.db"))
	h.createNetwork(map[string]interface{}{"vni": "42", "flood": "true"})
	h.createEndpoint(epID, "10.10.0.2/24")
	h.drv.SetNames(netID, "app", epID, []string{"web"})
	h.g.setRemote(42,
		cluster.Endpoint{VNI: 42, ID: "r1", IP: net.ParseIP("10.10.0.3").To4(), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9},
			Node: "b", VTEP: net.ParseIP("10.98.0.2").To4(), Names: []string{"db"}},
		// claims the local endpoint's address: listed, not programmed, counted
		cluster.Endpoint{VNI: 42, ID: "r2", IP: net.ParseIP("10.10.0.2").To4(), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 10},
			Node: "c", VTEP: net.ParseIP("10.98.0.3").To4()},
	)
	h.drv.EndpointsChanged(42)
	var got []NetworkStatus
	poll.True(t, 5*time.Second, "the remote endpoint programmed and shown", func() bool {
		got = h.drv.Networks()
		return len(got) == 1 && got[0].Neighbors == 1
	})
	n := got[0]
	if n.Name != "app" || n.VNI != 42 || n.Subnet != "10.10.0.0/24" || n.Gateway != "10.10.0.1" || !n.Flood || !n.DNS {
		t.Fatalf("network: %+v", n)
	}
	if len(n.Local) != 1 || n.Local[0].IP != "10.10.0.2" || !slices.Equal(n.Local[0].Names, []string{"web"}) || n.Local[0].Node != "" {
		t.Fatalf("local endpoints: %+v", n.Local)
	}
	if len(n.Remote) != 2 || n.Remote[0].IP != "10.10.0.2" || n.Remote[1].Node != "b" || n.Remote[1].VTEP != "10.98.0.2" ||
		n.Remote[1].MAC != "02:00:00:00:00:09" || !slices.Equal(n.Remote[1].Names, []string{"db"}) {
		t.Fatalf("remote endpoints: %+v", n.Remote)
	}
	if n.Neighbors != 1 || n.FDB != 1 || n.FloodEntries != 1 || n.Conflicts != 1 {
		t.Fatalf("programmed: %d neighbors, %d FDB, %d flood, %d conflicts; want 1 each", n.Neighbors, n.FDB, n.FloodEntries, n.Conflicts)
	}
}
