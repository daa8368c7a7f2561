package driver

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/vxovl/vxovl/internal/testutil/poll"
	"github.com/vxovl/vxovl/internal/vxlan"

	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/internal/dataplane"
	"github.com/vxovl/vxovl/internal/store"
)

const (
	netID  = "n1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	epID   = "e1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	epID2  = "e2cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	netID2 = "n2dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
)

type harness struct {
	t    *testing.T
	drv  *Driver
	dp   *fakeDataplane
	g    *fakeGossip
	st   *store.Store
	path string
	stop context.CancelFunc
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	return startHarness(t, path, newFakeDataplane(), Config{})
}

func startHarness(t *testing.T, path string, dp *fakeDataplane, cfg Config) *harness {
	t.Helper()
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.VTEP = net.ParseIP("10.98.0.1").To4()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = time.Hour
	}
	h := &harness{t: t, dp: dp, g: newFakeGossip(), st: st, path: path}
	h.drv = New(cfg, dp, st)
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = func() { cancel(); st.Close() }
	if err := h.drv.Start(ctx, h.g); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); st.Close() })
	return h
}

func createReq(opts map[string]interface{}, pool, gw string) *network.CreateNetworkRequest {
	return &network.CreateNetworkRequest{
		NetworkID: netID,
		Options:   map[string]interface{}{genericOptionsKey: opts},
		IPv4Data:  []*network.IPAMData{{AddressSpace: "x", Pool: pool, Gateway: gw}},
	}
}

func (h *harness) createNetwork(opts map[string]interface{}) {
	h.t.Helper()
	if err := h.drv.CreateNetwork(createReq(opts, "10.10.0.0/24", "10.10.0.1/24")); err != nil {
		h.t.Fatal(err)
	}
}

// createNetworkID makes a second network, with its own Docker ID.
func (h *harness) createNetworkID(id string, opts map[string]interface{}) error {
	req := createReq(opts, "10.10.0.0/24", "10.10.0.1/24")
	req.NetworkID = id
	return h.drv.CreateNetwork(req)
}

func (h *harness) createEndpoint(id, addr string) *network.CreateEndpointResponse {
	h.t.Helper()
	resp, err := h.drv.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netID, EndpointID: id,
		Interface: &network.EndpointInterface{Address: addr}})
	if err != nil {
		h.t.Fatal(err)
	}
	return resp
}

func TestParseNetworkOptions(t *testing.T) {
	good := map[string]interface{}{"vni": "42", "mtu": "1400", "flood": "true", "com.docker.network.enable_ipv6": "false"}
	o, err := parseNetworkOptions(map[string]interface{}{genericOptionsKey: good, internalOptionKey: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := (networkOptions{VNI: 42, MTU: 1400, Flood: true, Internal: true}); o != want {
		t.Fatalf("got %+v want %+v", o, want)
	}
	bad := []map[string]interface{}{
		{"vni": "abc"}, {"vni": "0"}, {"vni": "16777216"}, {"vni": "-1"}, {"vni": "1.5"},
		{"mtu": "abc"}, {"mtu": "100"}, {"mtu": "100000"},
		{"flood": "maybe"}, {"colour": "blue"},
	}
	for _, b := range bad {
		if _, err := parseNetworkOptions(map[string]interface{}{genericOptionsKey: b}); err == nil {
			t.Errorf("options %v: no error", b)
		}
	}
	if _, err := parseNetworkOptions(map[string]interface{}{genericOptionsKey: "not a map"}); err == nil {
		t.Error("non-object generic options: no error")
	}
}

func TestDeriveVNIIsStableAndInRange(t *testing.T) {
	_, a, _ := net.ParseCIDR("10.10.0.0/24")
	_, b, _ := net.ParseCIDR("10.10.0.0/24")
	_, c, _ := net.ParseCIDR("10.10.1.0/24")
	if DeriveVNI(a) != DeriveVNI(b) {
		t.Fatal("same subnet, different VNI")
	}
	if DeriveVNI(a) == DeriveVNI(c) {
		t.Fatal("neighbouring subnets collide")
	}
	for _, n := range []*net.IPNet{a, c} {
		if v := DeriveVNI(n); v < 1 || v > vxlan.MaxVNI {
			t.Fatalf("VNI %d out of range", v)
		}
	}
}

func TestCreateNetworkBuildsOverlay(t *testing.T) {
	h := newHarness(t)
	h.createNetwork(map[string]interface{}{"vni": "42"})
	spec, ok := h.dp.networks[42]
	if !ok {
		t.Fatal("no overlay built")
	}
	if spec.MTU != 1450 || spec.Port != 4789 || spec.Gateway.String() != "10.10.0.1/24" || !spec.VTEP.Equal(net.ParseIP("10.98.0.1")) {
		t.Fatalf("spec = %+v", spec)
	}
	if h.g.networks[42].Subnet != "10.10.0.0/24" {
		t.Fatalf("network not published: %+v", h.g.networks)
	}
	// Docker retrying the same call is harmless.
	if err := h.drv.CreateNetwork(createReq(map[string]interface{}{"vni": "42"}, "10.10.0.0/24", "10.10.0.1/24")); err != nil {
		t.Fatalf("repeated CreateNetwork: %v", err)
	}
}

func TestCreateNetworkBadInputChangesNothing(t *testing.T) {
	h := newHarness(t)
	cases := map[string]*network.CreateNetworkRequest{
		"ipv6": {NetworkID: netID, IPv4Data: []*network.IPAMData{{Pool: "10.1.0.0/24"}},
			IPv6Data: []*network.IPAMData{{Pool: "fd00::/64"}}},
		"no pool":       {NetworkID: netID},
		"two pools":     {NetworkID: netID, IPv4Data: []*network.IPAMData{{Pool: "10.1.0.0/24"}, {Pool: "10.2.0.0/24"}}},
		"bad pool":      {NetworkID: netID, IPv4Data: []*network.IPAMData{{Pool: "10.1.0.0/33"}}},
		"v6 pool as v4": {NetworkID: netID, IPv4Data: []*network.IPAMData{{Pool: "fd00::/64"}}},
		"gw outside":    {NetworkID: netID, IPv4Data: []*network.IPAMData{{Pool: "10.1.0.0/24", Gateway: "10.2.0.1/24"}}},
		"bad vni":       createReq(map[string]interface{}{"vni": "x"}, "10.1.0.0/24", ""),
		"bad mtu":       createReq(map[string]interface{}{"mtu": "70000"}, "10.1.0.0/24", ""),
		"no id":         {IPv4Data: []*network.IPAMData{{Pool: "10.1.0.0/24"}}},
		"nil pool":      {NetworkID: netID, IPv4Data: []*network.IPAMData{nil}},
	}
	for name, req := range cases {
		if err := h.drv.CreateNetwork(req); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if len(h.dp.networks) != 0 || len(h.g.networks) != 0 {
		t.Fatalf("bad input left state: %v %v", h.dp.networks, h.g.networks)
	}
	if nets, _ := store.ListJSON[networkRecord](h.st, bucketNetworks); len(nets) != 0 {
		t.Fatalf("bad input stored: %v", nets)
	}
}

func TestDuplicateVNIIsRefused(t *testing.T) {
	h := newHarness(t)
	h.createNetwork(map[string]interface{}{"vni": "7"})
	req := createReq(map[string]interface{}{"vni": "7"}, "10.20.0.0/24", "")
	req.NetworkID = "other"
	err := h.drv.CreateNetwork(req)
	if err == nil || !strings.Contains(err.Error(), "VNI 7 is already used") {
		t.Fatalf("duplicate VNI: %v", err)
	}
	if len(h.dp.networks) != 1 {
		t.Fatal("second network built")
	}
}

func TestClusterConflictBuildsNothing(t *testing.T) {
	h := newHarness(t)
	h.g.conflicts[9] = errors.New("node b defines VNI 9 as 10.9.0.0/24 mtu 1450")
	err := h.drv.CreateNetwork(createReq(map[string]interface{}{"vni": "9"}, "10.10.0.0/24", ""))
	if err == nil || !strings.Contains(err.Error(), "node b") {
		t.Fatalf("conflict: %v", err)
	}
	if len(h.dp.networks) != 0 {
		t.Fatal("overlay built despite conflict")
	}
}

func TestKernelFailureRollsBack(t *testing.T) {
	h := newHarness(t)
	h.dp.failOnce("EnsureNetwork", errors.New("netlink: operation not permitted"))
	if err := h.drv.CreateNetwork(createReq(map[string]interface{}{"vni": "5"}, "10.10.0.0/24", "")); err == nil {
		t.Fatal("no error")
	}
	if len(h.dp.networks) != 0 || len(h.g.networks) != 0 {
		t.Fatalf("not rolled back: %v %v", h.dp.networks, h.g.networks)
	}
	// And the same request works afterwards.
	h.createNetwork(map[string]interface{}{"vni": "5"})
}

func TestEndpointLifecycle(t *testing.T) {
	h := newHarness(t)
	h.createNetwork(map[string]interface{}{"vni": "42"})
	resp := h.createEndpoint(epID, "10.10.0.2/24")
	if resp.Interface == nil || resp.Interface.MacAddress == "" || resp.Interface.Address != "" {
		t.Fatalf("want only a generated MAC back, got %+v", resp.Interface)
	}
	mac, _ := net.ParseMAC(resp.Interface.MacAddress)
	if mac[0]&2 == 0 || mac[0]&1 == 1 {
		t.Fatalf("MAC %s is not locally administered unicast", mac)
	}
	if endpointMAC(42, net.ParseIP("10.10.0.2")).String() != mac.String() {
		t.Fatal("MAC is not stable for the address")
	}
	if h.g.local[epID].IP.String() != "10.10.0.2" {
		t.Fatal("endpoint not announced at CreateEndpoint")
	}
	// A MAC given by Docker is kept and not echoed back.
	resp2, err := h.drv.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID2,
		Interface: &network.EndpointInterface{Address: "10.10.0.3/24", MacAddress: "02:11:22:33:44:55"}})
	if err != nil || resp2.Interface != nil {
		t.Fatalf("given MAC: %+v %v", resp2, err)
	}

	join, err := h.drv.Join(&network.JoinRequest{NetworkID: netID, EndpointID: epID, SandboxKey: "/var/run/docker/netns/x"})
	if err != nil {
		t.Fatal(err)
	}
	if join.InterfaceName.DstPrefix != "eth" || join.InterfaceName.SrcName == "" || join.Gateway != "" || join.DisableGatewayService {
		t.Fatalf("join = %+v", join)
	}
	if _, ok := h.dp.endpoints[epID]; !ok {
		t.Fatal("no veth")
	}
	if err := h.drv.Leave(&network.LeaveRequest{NetworkID: netID, EndpointID: epID}); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.dp.endpoints[epID]; ok {
		t.Fatal("veth left after Leave")
	}
	if err := h.drv.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID}); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.g.local[epID]; ok {
		t.Fatal("endpoint still announced")
	}
	if err := h.drv.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netID}); err != nil {
		t.Fatal(err)
	}
	if len(h.dp.networks)+len(h.dp.endpoints)+len(h.g.local)+len(h.g.networks) != 0 {
		t.Fatalf("leftovers: %v %v %v %v", h.dp.networks, h.dp.endpoints, h.g.local, h.g.networks)
	}
}

func TestInternalNetworkDisablesGatewayService(t *testing.T) {
	h := newHarness(t)
	req := createReq(nil, "10.10.0.0/24", "")
	req.Options[internalOptionKey] = true
	if err := h.drv.CreateNetwork(req); err != nil {
		t.Fatal(err)
	}
	h.createEndpoint(epID, "10.10.0.2/24")
	join, err := h.drv.Join(&network.JoinRequest{NetworkID: netID, EndpointID: epID})
	if err != nil || !join.DisableGatewayService {
		t.Fatalf("internal join = %+v, %v", join, err)
	}
}

func TestEndpointBadInput(t *testing.T) {
	h := newHarness(t)
	h.createNetwork(nil)
	bad := map[string]*network.CreateEndpointRequest{
		"unknown network": {NetworkID: "nope", EndpointID: epID, Interface: &network.EndpointInterface{Address: "10.10.0.2/24"}},
		"no interface":    {NetworkID: netID, EndpointID: epID},
		"no id":           {NetworkID: netID, Interface: &network.EndpointInterface{Address: "10.10.0.2/24"}},
		"outside subnet":  {NetworkID: netID, EndpointID: epID, Interface: &network.EndpointInterface{Address: "10.11.0.2/24"}},
		"garbage address": {NetworkID: netID, EndpointID: epID, Interface: &network.EndpointInterface{Address: "banana"}},
		"ipv6":            {NetworkID: netID, EndpointID: epID, Interface: &network.EndpointInterface{Address: "10.10.0.2/24", AddressIPv6: "fd00::2/64"}},
		"multicast mac":   {NetworkID: netID, EndpointID: epID, Interface: &network.EndpointInterface{Address: "10.10.0.2/24", MacAddress: "01:00:5e:00:00:01"}},
	}
	for name, req := range bad {
		if _, err := h.drv.CreateEndpoint(req); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if len(h.g.local) != 0 {
		t.Fatal("bad endpoint announced")
	}
	h.createEndpoint(epID, "10.10.0.2/24")
	if _, err := h.drv.Join(&network.JoinRequest{NetworkID: netID, EndpointID: epID, SandboxKey: "/var/run/docker/netns/x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.drv.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID2,
		Interface: &network.EndpointInterface{Address: "10.10.0.2/24"}}); err == nil {
		t.Error("the address of an endpoint with a running container accepted again")
	}
	for name, err := range map[string]error{
		"join unknown ep":    func() error { _, e := h.drv.Join(&network.JoinRequest{NetworkID: netID, EndpointID: "x"}); return e }(),
		"join unknown net":   func() error { _, e := h.drv.Join(&network.JoinRequest{NetworkID: "x", EndpointID: epID}); return e }(),
		"leave unknown":      h.drv.Leave(&network.LeaveRequest{NetworkID: netID, EndpointID: "x"}),
		"delete unknown ep":  h.drv.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netID, EndpointID: "x"}),
		"delete unknown net": h.drv.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: "x"}),
		"info unknown": func() error {
			_, e := h.drv.EndpointInfo(&network.InfoRequest{NetworkID: netID, EndpointID: "x"})
			return e
		}(),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	h.dp.failOnce("EnsureEndpoint", errors.New("boom"))
	if _, err := h.drv.Join(&network.JoinRequest{NetworkID: netID, EndpointID: epID}); err == nil {
		t.Fatal("join with failing kernel: no error")
	}
	if len(h.dp.endpoints) != 0 {
		t.Fatal("failed join left a veth")
	}
}

func TestRemoteEndpointsAreProgrammed(t *testing.T) {
	h := newHarness(t)
	h.createNetwork(map[string]interface{}{"vni": "42", "flood": "true"})
	h.createEndpoint(epID, "10.10.0.2/24")
	h.g.setRemote(42,
		cluster.Endpoint{VNI: 42, ID: "r1", IP: net.ParseIP("10.10.0.3").To4(), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, Node: "b", VTEP: net.ParseIP("10.98.0.2").To4()},
		cluster.Endpoint{VNI: 42, ID: "r2", IP: net.ParseIP("10.10.0.4").To4(), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 10}, Node: "c", VTEP: net.ParseIP("10.98.0.3").To4()},
		// claims the local endpoint's address: must not be programmed
		cluster.Endpoint{VNI: 42, ID: "r3", IP: net.ParseIP("10.10.0.2").To4(), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 11}, Node: "c", VTEP: net.ParseIP("10.98.0.3").To4()},
	)
	h.drv.EndpointsChanged(42)
	want := []string{"10.10.0.3@10.98.0.2", "10.10.0.4@10.98.0.3"}
	// The sync counts its conflicts once it is done with the kernel.
	poll.True(t, 5*time.Second, "peers programmed and the conflict counted", func() bool {
		return reflect.DeepEqual(h.dp.peerIPs(42), want) && h.drv.Stats().IPConflicts > 0
	})
	if s := h.drv.Stats(); s.IPConflicts != 1 {
		t.Fatalf("conflict counted %d times, want 1", s.IPConflicts)
	}
	// Later syncs of the same conflict do not count it again.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.drv.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if s := h.drv.Stats(); s.IPConflicts != 1 {
		t.Fatalf("after a reconcile the conflict is counted %d times, want 1", s.IPConflicts)
	}
	h.dp.mu.Lock()
	flood := h.dp.flood[42]
	h.dp.mu.Unlock()
	if len(flood) != 2 {
		t.Fatalf("flood = %v", flood)
	}
	h.g.setRemote(42)
	h.drv.EndpointsChanged(42)
	poll.True(t, 5*time.Second, "peers removed", func() bool { return len(h.dp.peerIPs(42)) == 0 })
}

// TestMACClashes: two remote endpoints with one MAC behind two VTEPs (the
// same --mac-address on two hosts), or a remote with a local endpoint's MAC,
// must not stall the network's tables: the newer remote claim is programmed,
// the other is left out, counted and logged once.
func TestMACClashes(t *testing.T) {
	h := newHarness(t)
	h.createNetwork(map[string]interface{}{"vni": "42"})
	localMAC, err := net.ParseMAC(h.createEndpoint(epID, "10.10.0.2/24").Interface.MacAddress)
	if err != nil {
		t.Fatal(err)
	}
	shared := net.HardwareAddr{2, 0, 0, 0, 0, 9}
	vtepB, vtepC := net.ParseIP("10.98.0.2").To4(), net.ParseIP("10.98.0.3").To4()
	h.g.setRemote(42,
		cluster.Endpoint{VNI: 42, ID: "old", IP: net.ParseIP("10.10.0.3").To4(), MAC: shared, Node: "b", VTEP: vtepB, Version: 1},
		cluster.Endpoint{VNI: 42, ID: "new", IP: net.ParseIP("10.10.0.4").To4(), MAC: shared, Node: "c", VTEP: vtepC, Version: 2},
		// The same MAC twice behind one VTEP is programmable: one FDB entry.
		cluster.Endpoint{VNI: 42, ID: "twin", IP: net.ParseIP("10.10.0.5").To4(), MAC: shared, Node: "c", VTEP: vtepC, Version: 1},
		cluster.Endpoint{VNI: 42, ID: "mine", IP: net.ParseIP("10.10.0.6").To4(), MAC: localMAC, Node: "b", VTEP: vtepB, Version: 3},
		cluster.Endpoint{VNI: 42, ID: "fine", IP: net.ParseIP("10.10.0.7").To4(), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 10}, Node: "b", VTEP: vtepB, Version: 1},
	)
	h.drv.EndpointsChanged(42)
	want := []string{"10.10.0.4@10.98.0.3", "10.10.0.5@10.98.0.3", "10.10.0.7@10.98.0.2"}
	poll.True(t, 5*time.Second, "the non-clashing peers programmed", func() bool { return reflect.DeepEqual(h.dp.peerIPs(42), want) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.drv.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if s := h.drv.Stats(); s.MACConflicts != 2 || s.IPConflicts != 0 || s.SyncErrors != 0 {
		t.Fatalf("MAC conflicts %d, IP conflicts %d, sync errors %d; want 2, 0, 0", s.MACConflicts, s.IPConflicts, s.SyncErrors)
	}
	// The newer claim goes away: the older one is programmed now.
	h.g.setRemote(42,
		cluster.Endpoint{VNI: 42, ID: "old", IP: net.ParseIP("10.10.0.3").To4(), MAC: shared, Node: "b", VTEP: vtepB, Version: 1})
	h.drv.EndpointsChanged(42)
	poll.True(t, 5*time.Second, "the older claim programmed", func() bool {
		return reflect.DeepEqual(h.dp.peerIPs(42), []string{"10.10.0.3@10.98.0.2"})
	})
}

// TestFailedDeletesAreRetried: Docker forgets a network or endpoint even
// when the driver's delete fails, so a failed kernel step must neither keep
// a ghost that blocks its address or VNI nor be forgotten: the reconcile
// loop finishes it.
func TestFailedDeletesAreRetried(t *testing.T) {
	h := newHarness(t)
	h.createNetwork(map[string]interface{}{"vni": "42"})
	h.createEndpoint(epID, "10.10.0.2/24")
	reconcile := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.drv.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}

	h.dp.failOnce("DeleteEndpoint", errors.New("netlink: device busy"))
	err := h.drv.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID})
	if err == nil || !strings.Contains(err.Error(), "retries the clean-up") {
		t.Fatalf("failed DeleteEndpoint = %v, want an error saying it is retried", err)
	}
	if s := h.drv.Stats(); s.LocalEndpoints != 0 || s.UnfinishedCleanups != 1 {
		t.Fatalf("after a failed delete: %d local endpoints, %d unfinished clean-ups; want 0, 1", s.LocalEndpoints, s.UnfinishedCleanups)
	}
	// Docker hands the address to the next container: it must be accepted.
	const ep2 = "e2cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	h.createEndpoint(ep2, "10.10.0.2/24")
	reconcile()
	h.dp.mu.Lock()
	_, veth := h.dp.endpoints[epID]
	h.dp.mu.Unlock()
	if veth || h.drv.Stats().UnfinishedCleanups != 0 {
		t.Fatalf("after a reconcile: old veth present %v, unfinished %d; want false, 0", veth, h.drv.Stats().UnfinishedCleanups)
	}
	if eps, _ := store.ListJSON[endpointRecord](h.st, bucketEndpoints); len(eps) != 1 || eps[ep2].ID != ep2 {
		t.Fatalf("stored endpoints %+v, want only %s", eps, short(ep2))
	}

	h.dp.failOnce("DeleteNetwork", errors.New("netlink: device busy"))
	if err := h.drv.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netID}); err == nil {
		t.Fatal("failed DeleteNetwork answered no error")
	}
	// The same VNI is free for a new network at once, and the retried
	// clean-up of the old one must not tear the new one down.
	if err := h.createNetworkID(netID2, map[string]interface{}{"vni": "42"}); err != nil {
		t.Fatalf("CreateNetwork with the VNI of a network whose delete failed: %v", err)
	}
	h.dp.mu.Lock()
	deletesBefore := h.dp.deleted[42]
	h.dp.mu.Unlock()
	reconcile()
	h.dp.mu.Lock()
	deletes := h.dp.deleted[42] - deletesBefore
	h.dp.mu.Unlock()
	if deletes != 0 || h.drv.Stats().UnfinishedCleanups != 0 {
		t.Fatalf("after a reconcile: %d DeleteNetwork(42) calls since the new network was made, unfinished %d; want 0, 0",
			deletes, h.drv.Stats().UnfinishedCleanups)
	}
	if nets, _ := store.ListJSON[networkRecord](h.st, bucketNetworks); len(nets) != 1 || nets[netID2].ID != netID2 {
		t.Fatalf("stored networks %+v, want only %s", nets, short(netID2))
	}

	// A namespace no network owns (a rollback whose delete failed) goes too.
	h.dp.mu.Lock()
	h.dp.networks[77] = dataplane.NetworkSpec{VNI: 77}
	h.dp.mu.Unlock()
	reconcile()
	h.dp.mu.Lock()
	_, leftover := h.dp.networks[77]
	h.dp.mu.Unlock()
	if leftover {
		t.Fatal("reconcile kept an overlay namespace no network owns")
	}
}

// TestFailedDeletesStayDeletedAcrossRestart: the retries of a failed delete
// live in memory only, so the records must already be gone when the plugin
// restarts before a retry succeeded; the leftover namespace goes at start.
func TestFailedDeletesStayDeletedAcrossRestart(t *testing.T) {
	h := newHarness(t)
	h.createNetwork(map[string]interface{}{"vni": "42"})
	h.createEndpoint(epID, "10.10.0.2/24")
	h.dp.failOnce("DeleteEndpoint", errors.New("netlink: device busy"))
	if err := h.drv.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID}); err == nil {
		t.Fatal("failed DeleteEndpoint answered no error")
	}
	h.stop()
	h = startHarness(t, h.path, h.dp, Config{})
	if s := h.drv.Stats(); s.Networks != 1 || s.LocalEndpoints != 0 {
		t.Fatalf("after a restart %d networks, %d endpoints; want the network without the deleted endpoint", s.Networks, s.LocalEndpoints)
	}

	h.dp.failOnce("DeleteNetwork", errors.New("netlink: device busy"))
	if err := h.drv.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netID}); err == nil {
		t.Fatal("failed DeleteNetwork answered no error")
	}
	h.stop()
	h2 := startHarness(t, h.path, h.dp, Config{})
	if s := h2.drv.Stats(); s.Networks != 0 || s.LocalEndpoints != 0 {
		t.Fatalf("after the restart %d networks, %d endpoints; want none", s.Networks, s.LocalEndpoints)
	}
	if len(h2.g.local) != 0 {
		t.Fatalf("the restart announced %v", h2.g.local)
	}
	h2.dp.mu.Lock()
	_, leftover := h2.dp.networks[42]
	h2.dp.mu.Unlock()
	if leftover {
		t.Fatal("the overlay whose delete failed survived the restart")
	}
	if err := h2.createNetworkID(netID2, map[string]interface{}{"vni": "42"}); err != nil {
		t.Fatalf("CreateNetwork with the VNI after the restart: %v", err)
	}
}

// TestStaleEndpointOfGoneContainer: a container went away while vxovl could
// not hear Docker's Leave and DeleteEndpoint. Its endpoint must not block
// the address Docker hands to the next container, and a restart forgets it.
func TestStaleEndpointOfGoneContainer(t *testing.T) {
	h := newHarness(t)
	h.createNetwork(map[string]interface{}{"vni": "42"})
	join := func(id string) {
		t.Helper()
		if _, err := h.drv.Join(&network.JoinRequest{NetworkID: netID, EndpointID: id, SandboxKey: "/var/run/docker/netns/x"}); err != nil {
			t.Fatal(err)
		}
	}
	h.createEndpoint(epID, "10.10.0.2/24")
	join(epID)
	h.dp.containerGone(epID)
	h.createEndpoint(epID2, "10.10.0.2/24")
	join(epID2)
	if s := h.drv.Stats(); s.LocalEndpoints != 1 {
		t.Fatalf("%d local endpoints, want only the new one", s.LocalEndpoints)
	}
	if _, ok := h.g.local[epID]; ok {
		t.Fatal("the stale endpoint is still announced")
	}

	// A restart: the new endpoint's container died meanwhile; one joined
	// endpoint with a veth and one not joined yet are kept.
	const ep3, ep4 = "e3" + "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "e4" + "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
	h.createEndpoint(ep3, "10.10.0.3/24")
	join(ep3)
	h.createEndpoint(ep4, "10.10.0.4/24")
	h.dp.containerGone(epID2)
	h.stop()
	h2 := startHarness(t, h.path, h.dp, Config{})
	if s := h2.drv.Stats(); s.LocalEndpoints != 2 {
		t.Fatalf("after the restart %d local endpoints, want 2 (the running and the not yet joined)", s.LocalEndpoints)
	}
	if eps, _ := store.ListJSON[endpointRecord](h2.st, bucketEndpoints); len(eps) != 2 || eps[ep3].ID == "" || eps[ep4].ID == "" {
		t.Fatalf("stored endpoints after the restart: %v", eps)
	}
	// The running container's port is set up again (a port made by an older
	// vxovl gets today's bridge settings); the one not joined is left alone.
	if n := h2.dp.ensured[ep3]; n != 2 {
		t.Fatalf("the running endpoint's port was set up %d times (join and restart), want 2", n)
	}
	if n := h2.dp.ensured[ep4]; n != 0 {
		t.Fatalf("the endpoint not joined got a port at the restart (%d)", n)
	}
}

func TestReconcileRepairsDrift(t *testing.T) {
	h := newHarness(t)
	h.createNetwork(map[string]interface{}{"vni": "42"})
	h.g.setRemote(42, cluster.Endpoint{VNI: 42, ID: "r1", IP: net.ParseIP("10.10.0.3").To4(),
		MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, Node: "b", VTEP: net.ParseIP("10.98.0.2").To4()})
	h.drv.EndpointsChanged(42)
	poll.True(t, 5*time.Second, "peer programmed", func() bool { return len(h.dp.peerIPs(42)) == 1 })
	// Someone deletes the VXLAN device and its entries by hand.
	h.dp.mu.Lock()
	h.dp.unhealthy[42] = true
	h.dp.peers[42] = nil
	h.dp.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.drv.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if len(h.dp.peerIPs(42)) != 1 || h.dp.unhealthy[42] {
		t.Fatal("drift not repaired")
	}
	if h.drv.Stats().DriftRepairs < 2 {
		t.Fatalf("repairs not counted: %+v", h.drv.Stats())
	}
}

func TestRestartRestoresState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	dp := newFakeDataplane()
	h := startHarness(t, path, dp, Config{})
	h.createNetwork(map[string]interface{}{"vni": "42"})
	h.createEndpoint(epID, "10.10.0.2/24")
	if _, err := h.drv.Join(&network.JoinRequest{NetworkID: netID, EndpointID: epID}); err != nil {
		t.Fatal(err)
	}
	h.g.setRemote(42, cluster.Endpoint{VNI: 42, ID: "r1", IP: net.ParseIP("10.10.0.3").To4(),
		MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, Node: "b", VTEP: net.ParseIP("10.98.0.2").To4()})
	h.drv.EndpointsChanged(42)
	poll.True(t, 5*time.Second, "peer programmed", func() bool { return len(dp.peerIPs(42)) == 1 })
	h.stop()

	// A host reboot: the kernel is empty, only the store remains, plus a
	// leftover namespace of a network that was never stored.
	dp2 := newFakeDataplane()
	dp2.networks[777] = dp2.networks[0]
	h2 := startHarness(t, path, dp2, Config{RestoreGrace: time.Hour})
	if _, ok := dp2.networks[42]; !ok {
		t.Fatal("overlay not rebuilt")
	}
	if _, ok := dp2.networks[777]; ok {
		t.Fatal("leftover namespace not removed")
	}
	if _, ok := h2.g.local[epID]; !ok {
		t.Fatal("endpoint not re-announced")
	}
	// The cluster knows nothing yet; the remembered peer stays programmed.
	if got := dp2.peerIPs(42); len(got) != 1 {
		t.Fatalf("remembered peers not programmed during grace: %v", got)
	}
	// The endpoint is still usable: Leave and Delete work after restart.
	if err := h2.drv.Leave(&network.LeaveRequest{NetworkID: netID, EndpointID: epID}); err != nil {
		t.Fatal(err)
	}
}

func TestRestoredPeersDroppedOnceClusterCaughtUp(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	dp := newFakeDataplane()
	h := startHarness(t, path, dp, Config{})
	h.createNetwork(map[string]interface{}{"vni": "42"})
	h.g.setRemote(42, cluster.Endpoint{VNI: 42, ID: "r1", IP: net.ParseIP("10.10.0.3").To4(),
		MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, Node: "b", VTEP: net.ParseIP("10.98.0.2").To4()})
	h.drv.EndpointsChanged(42)
	poll.True(t, 5*time.Second, "peer programmed", func() bool { return len(dp.peerIPs(42)) == 1 })
	h.stop()

	// While the plugin was down, r1 went away. After the restart the
	// remembered entry stays only until the cluster has caught up.
	h2 := startHarness(t, path, dp, Config{RestoreGrace: time.Hour})
	if got := dp.peerIPs(42); len(got) != 1 {
		t.Fatalf("remembered peer not kept while catching up: %v", got)
	}
	h2.g.mu.Lock()
	h2.g.caughtUp = true
	h2.g.mu.Unlock()
	poll.True(t, 5*time.Second, "remembered peer dropped", func() bool { return len(dp.peerIPs(42)) == 0 })
}

// TestReconcileCountsOnlyDrift: drift is a difference between the kernel and
// what vxovl last programmed. A cluster change the reconcile pass applies
// before the change's own sync ran is not drift; an entry deleted by hand is.
func TestReconcileCountsOnlyDrift(t *testing.T) {
	vtepB, vtepC := net.ParseIP("10.98.0.2").To4(), net.ParseIP("10.98.0.3").To4()
	rem := func(id string, last byte, vtep net.IP) cluster.Endpoint {
		return cluster.Endpoint{VNI: 42, ID: id, IP: net.IPv4(10, 10, 0, last).To4(),
			MAC: net.HardwareAddr{2, 0, 0, 0, 0, last}, Node: "b", VTEP: vtep, Version: 1}
	}
	r3, r4, r5 := rem("r3", 3, vtepB), rem("r4", 4, vtepB), rem("r5", 5, vtepB)
	cases := []struct {
		name      string
		before    []cluster.Endpoint // programmed by an ordinary sync
		pending   []cluster.Endpoint // what the cluster knows when the pass runs, not synced yet
		damage    []string           // peer IPs whose entries are deleted by hand before the pass
		wantDrift uint64             // neighbor plus FDB entries put back
	}{
		{name: "nothing changed", before: []cluster.Endpoint{r3, r4}, pending: []cluster.Endpoint{r3, r4}},
		{name: "endpoint added", before: []cluster.Endpoint{r3}, pending: []cluster.Endpoint{r3, r4}},
		{name: "endpoint removed", before: []cluster.Endpoint{r3, r4}, pending: []cluster.Endpoint{r3}},
		{name: "endpoint moved to another host", before: []cluster.Endpoint{r3}, pending: []cluster.Endpoint{rem("r3", 3, vtepC)}},
		{name: "entry deleted by hand", before: []cluster.Endpoint{r3, r4}, pending: []cluster.Endpoint{r3, r4},
			damage: []string{"10.10.0.4"}, wantDrift: 2},
		{name: "entry deleted by hand and an endpoint added", before: []cluster.Endpoint{r3, r4}, pending: []cluster.Endpoint{r3, r4, r5},
			damage: []string{"10.10.0.3"}, wantDrift: 2},
		// The kernel differed from what vxovl had programmed: drift, even
		// though the cluster change removes the entry right after.
		{name: "entry deleted by hand that the cluster removes too", before: []cluster.Endpoint{r3, r4}, pending: []cluster.Endpoint{r3},
			damage: []string{"10.10.0.4"}, wantDrift: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			// Known before the network exists, so that the sync CreateNetwork
			// asks for programs them and no other sync is pending.
			h.g.setRemote(42, tc.before...)
			h.createNetwork(map[string]interface{}{"vni": "42"})
			poll.True(t, 5*time.Second, "the first endpoints programmed", func() bool { return len(h.dp.peerIPs(42)) == len(tc.before) })
			h.dp.damage(42, tc.damage...)
			// No EndpointsChanged: the pass finds the change first.
			h.g.setRemote(42, tc.pending...)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := h.drv.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, ep := range tc.pending {
				want = append(want, ep.IP.String()+"@"+ep.VTEP.String())
			}
			if got := h.dp.peerIPs(42); !reflect.DeepEqual(got, want) {
				t.Errorf("after the pass the kernel has %v, want %v", got, want)
			}
			if s := h.drv.Stats(); s.DriftRepairs != tc.wantDrift || s.SyncErrors != 0 {
				t.Errorf("drift repairs %d, sync errors %d; want %d, 0", s.DriftRepairs, s.SyncErrors, tc.wantDrift)
			}
		})
	}
}

// finishes runs fn and fails the test if it does not return within 5 s:
// it is waiting for something it must not wait for.
func finishes(t *testing.T, what string, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not finish while a reconcile pass was in the kernel", what)
	}
}

// TestReconcilePassDoesNotBlockTheAPI: while a reconcile pass works on one
// network's kernel state, API calls go on (issue 9: they waited for the
// whole pass), and a network deleted during the pass is not brought back
// by it, in the kernel or in the store.
func TestReconcilePassDoesNotBlockTheAPI(t *testing.T) {
	h := newHarness(t)
	vnis := map[string]uint32{netID: 41, netID2: 42}
	for id, vni := range vnis {
		if err := h.createNetworkID(id, map[string]interface{}{"vni": fmt.Sprint(vni)}); err != nil {
			t.Fatal(err)
		}
		h.g.setRemote(vni, cluster.Endpoint{VNI: vni, ID: "r1", IP: net.ParseIP("10.10.0.3").To4(),
			MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, Node: "b", VTEP: net.ParseIP("10.98.0.2").To4()})
		h.drv.EndpointsChanged(vni)
	}
	poll.True(t, 5*time.Second, "peers programmed", func() bool {
		return len(h.dp.peerIPs(41)) == 1 && len(h.dp.peerIPs(42)) == 1
	})

	entered := make(chan uint32, 1)
	release := make(chan struct{})
	var once, releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	h.dp.mu.Lock()
	h.dp.healthHook = func(vni uint32) { once.Do(func() { entered <- vni; <-release }) }
	h.dp.mu.Unlock()
	passDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		passDone <- h.drv.Reconcile(ctx)
	}()
	var busy uint32
	select {
	case busy = <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the reconcile pass did not reach the kernel")
	}
	busyID, otherID := netID, netID2
	if busy == vnis[netID2] {
		busyID, otherID = netID2, netID
	}

	finishes(t, "Stats", func() error { h.drv.Stats(); return nil })
	finishes(t, "CreateEndpoint and Join on the network the pass is working on", func() error {
		if _, err := h.drv.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: busyID, EndpointID: epID,
			Interface: &network.EndpointInterface{Address: "10.10.0.5/24"}}); err != nil {
			return err
		}
		_, err := h.drv.Join(&network.JoinRequest{NetworkID: busyID, EndpointID: epID})
		return err
	})
	finishes(t, "DeleteNetwork of a network the pass has not reached", func() error {
		return h.drv.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: otherID})
	})
	// Must wait for the pass to be done with the network: deleting it under
	// the pass's feet lets the pass rebuild it. Nothing signals that the
	// call is waiting, so give it a moment to (wrongly) finish.
	deleted := make(chan error, 1)
	go func() { deleted <- h.drv.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: busyID}) }()
	select {
	case err := <-deleted:
		t.Errorf("DeleteNetwork finished (err %v) while a sync of the network was in the kernel", err)
		deleted <- nil
	case <-time.After(200 * time.Millisecond):
	}
	releaseOnce.Do(func() { close(release) })
	for _, c := range []chan error{passDone, deleted} {
		select {
		case err := <-c:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the reconcile pass or the DeleteNetwork waiting for it did not finish")
		}
	}

	h.dp.mu.Lock()
	left := fmt.Sprint(h.dp.networks)
	h.dp.mu.Unlock()
	if left != "map[]" {
		t.Errorf("overlays left after both networks were deleted: %s", left)
	}
	if peers, _ := store.ListJSON[[]peerRecord](h.st, bucketPeers); len(peers) != 0 {
		t.Errorf("peer records left after both networks were deleted: %v", peers)
	}
	if s := h.drv.Stats(); s.Networks != 0 || s.SyncErrors != 0 {
		t.Errorf("%d networks, %d sync errors; want 0, 0", s.Networks, s.SyncErrors)
	}
}

// TestNetworksComeAndGoDuringPasses: networks with one VNI created and
// deleted over and over while passes and cluster syncs run leave exactly
// the live networks in the kernel and the store (run with -race).
func TestNetworksComeAndGoDuringPasses(t *testing.T) {
	h := newHarness(t)
	remote := cluster.Endpoint{VNI: 42, ID: "r1", IP: net.ParseIP("10.10.0.3").To4(),
		MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, Node: "b", VTEP: net.ParseIP("10.98.0.2").To4()}
	h.g.setRemote(42, remote)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			_ = h.drv.Reconcile(ctx)
			h.drv.EndpointsChanged(42)
		}
	}()
	for i := range 50 {
		id := fmt.Sprintf("net%d", i)
		if err := h.createNetworkID(id, map[string]interface{}{"vni": "42"}); err != nil {
			t.Fatal(err)
		}
		if err := h.drv.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.createNetworkID(netID, map[string]interface{}{"vni": "42"}); err != nil {
		t.Fatal(err)
	}
	cancel()
	wg.Wait()
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	if err := h.drv.Reconcile(rctx); err != nil {
		t.Fatal(err)
	}
	h.dp.mu.Lock()
	_, live := h.dp.networks[42]
	n := len(h.dp.networks)
	h.dp.mu.Unlock()
	if !live || n != 1 || len(h.dp.peerIPs(42)) != 1 {
		t.Fatalf("kernel: VNI 42 present %v, %d overlays, peers %v; want the one live network with its peer", live, n, h.dp.peerIPs(42))
	}
	if nets, _ := store.ListJSON[networkRecord](h.st, bucketNetworks); len(nets) != 1 || nets[netID].ID != netID {
		t.Fatalf("stored networks %v, want only %s", nets, short(netID))
	}
	if s := h.drv.Stats(); s.SyncErrors != 0 || s.DriftRepairs != 0 {
		t.Fatalf("%d sync errors, %d drift repairs; want 0, 0", s.SyncErrors, s.DriftRepairs)
	}
}

// syncBuffer is a bytes.Buffer the driver's goroutines can log into.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// An operator greps logs for a MAC as `ip link` prints it; slog prints a
// net.HardwareAddr as its raw bytes unless the driver formats it.
func TestLogsMACAsText(t *testing.T) {
	var logs syncBuffer
	h := startHarness(t, filepath.Join(t.TempDir(), "state.db"), newFakeDataplane(),
		Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	h.createNetwork(nil)
	h.createEndpoint("ep1", "10.10.0.2/24")
	mac := endpointMAC(DeriveVNI(mustCIDR(t, "10.10.0.0/24")), net.ParseIP("10.10.0.2"))
	if !strings.Contains(logs.String(), "mac="+mac.String()) {
		t.Fatalf("log does not show the MAC as text %s:\n%s", mac, logs.String())
	}
}

func mustCIDR(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
