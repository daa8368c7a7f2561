package dataplane

import (
	"fmt"

	"github.com/vxovl/vxovl/internal/vxlan"
	"golang.org/x/sys/unix"

	"errors"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

func testSpec(t testing.TB, vni uint32) NetworkSpec {
	return NetworkSpec{
		VNI:     vni,
		Gateway: mustCIDR(t, "10.10.0.1/24"),
		MTU:     1450,
		VTEP:    net.ParseIP("10.231.0.1"),
	}
}

func TestEnsureNetworkIdempotent(t *testing.T) {
	h := newTestHost(t, "idem")
	spec := testSpec(t, 100)
	h.ensureNetwork(spec)
	ov := h.overlay(100)
	first := linkIndexes(t, ov)
	h.ensureNetwork(spec)
	second := linkIndexes(t, ov)
	if !maps.Equal(first, second) {
		t.Fatalf("second EnsureNetwork changed links: %v -> %v", first, second)
	}
	if got := slices.Sorted(maps.Keys(second)); !slices.Equal(got, []string{"br0", "lo", "vxlan0"}) {
		t.Fatalf("overlay namespace links = %v, want br0 lo vxlan0", got)
	}

	vx, ok := mustLink(t, ov, VxlanName).(*netlink.Vxlan)
	if !ok {
		t.Fatalf("vxlan0 is not a vxlan device")
	}
	br := mustLink(t, ov, BridgeName)
	switch {
	case vx.VxlanId != 100 || vx.Port != vxlan.DefaultPort || !vx.SrcAddr.Equal(spec.VTEP):
		t.Errorf("vxlan0 id=%d port=%d local=%v, want 100 %d %v", vx.VxlanId, vx.Port, vx.SrcAddr, vxlan.DefaultPort, spec.VTEP)
	case vx.Learning || !vx.Proxy:
		t.Errorf("vxlan0 learning=%v proxy=%v, want false true", vx.Learning, vx.Proxy)
	case vx.MasterIndex != br.Attrs().Index:
		t.Errorf("vxlan0 not enslaved to br0")
	case vx.Flags&net.FlagUp == 0 || br.Attrs().Flags&net.FlagUp == 0:
		t.Errorf("vxlan0 or br0 not up")
	case vx.MTU != 1450 || br.Attrs().MTU != 1450:
		t.Errorf("MTU vxlan0=%d br0=%d, want 1450", vx.MTU, br.Attrs().MTU)
	}
	if flags, err := ov.LinkGetProtinfo(vx); err != nil || flags.Learning || !flags.Flood {
		t.Errorf("vxlan0's br0 port flags %s (%v), want learning off and flooding on", flags.String(), err)
	}
	addrs, err := ov.AddrList(br, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "10.10.0.1/24" {
		t.Errorf("br0 addresses = %v (%v), want exactly 10.10.0.1/24", addrs, err)
	}
	for name := range linkIndexes(t, h.host()) {
		if name != "lo" {
			t.Errorf("host namespace has leftover link %q", name)
		}
	}
	h.do(func() error {
		if err := h.ov.Health(spec); err != nil {
			t.Errorf("Health after EnsureNetwork: %v", err)
		}
		return nil
	})
	if !h.ov.NetworkExists(100) {
		t.Error("NetworkExists(100) = false")
	}
	if vnis, err := h.ov.Networks(); err != nil || !slices.Equal(vnis, []uint32{100}) {
		t.Errorf("Networks() = %v, %v; want [100]", vnis, err)
	}
}

func TestDeleteNetworkLeavesNothing(t *testing.T) {
	h := newTestHost(t, "del")
	spec := testSpec(t, 101)
	h.ensureNetwork(spec)
	// Outside the closure: do runs it on another goroutine, where t.Fatal
	// must not be called.
	mac := mustMAC(t, "02:42:0a:0a:00:02")
	h.do(func() error {
		_, err := h.ov.EnsureEndpoint(EndpointSpec{VNI: 101, ID: "abcdef0123456789", MAC: mac})
		return err
	})
	path := h.ov.NamespacePath(101)
	h.do(func() error { return h.ov.DeleteNetwork(101) })

	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin file %s still there: %v", path, err)
	}
	if isMounted(t, path) {
		t.Errorf("%s still mounted", path)
	}
	if names := slices.Collect(maps.Keys(linkIndexes(t, h.host()))); !slices.Equal(names, []string{"lo"}) {
		t.Errorf("host namespace links after delete = %v, want only lo", names)
	}
	if h.ov.NetworkExists(101) {
		t.Error("NetworkExists after delete")
	}
	if vnis, _ := h.ov.Networks(); len(vnis) != 0 {
		t.Errorf("Networks after delete = %v", vnis)
	}
	h.do(func() error { return h.ov.DeleteNetwork(101) }) // idempotent
}

func TestEnsureNetworkReusesLeftoverTempVxlan(t *testing.T) {
	h := newTestHost(t, "tmp")
	spec := testSpec(t, 102)
	spec.Port = vxlan.DefaultPort
	tmp := tempVxlanName(102)
	host := h.host()
	// An interrupted earlier call left a correct device in the host namespace.
	if err := host.LinkAdd(newVxlan(tmp, vxlanConfig{VNI: 102, Port: vxlan.DefaultPort, Local: spec.VTEP}, 1450)); err != nil {
		t.Fatal(err)
	}
	h.ensureNetwork(spec)
	if _, ok := linkIndexes(t, host)[tmp]; ok {
		t.Errorf("leftover %s still in host namespace", tmp)
	}
	h.do(func() error { return h.ov.Health(spec) })

	// A wrong leftover (other port) is replaced, not reused.
	h.do(func() error { return h.ov.DeleteNetwork(102) })
	if err := host.LinkAdd(newVxlan(tmp, vxlanConfig{VNI: 102, Port: 9999, Local: spec.VTEP}, 1450)); err != nil {
		t.Fatal(err)
	}
	h.ensureNetwork(spec)
	if _, ok := linkIndexes(t, host)[tmp]; ok {
		t.Errorf("wrong leftover %s still in host namespace", tmp)
	}
	h.do(func() error { return h.ov.Health(spec) })

	// Moved into the overlay namespace but never renamed.
	ov := h.overlay(102)
	if err := ov.LinkDel(mustLink(t, ov, VxlanName)); err != nil {
		t.Fatal(err)
	}
	if err := host.LinkAdd(newVxlan(tmp, vxlanConfig{VNI: 102, Port: vxlan.DefaultPort, Local: spec.VTEP}, 1450)); err != nil {
		t.Fatal(err)
	}
	if err := host.LinkSetNsFd(mustLink(t, host, tmp), nsFd(t, h.ov.NamespacePath(102))); err != nil {
		t.Fatal(err)
	}
	h.ensureNetwork(spec)
	if _, ok := linkIndexes(t, ov)[tmp]; ok {
		t.Errorf("leftover %s not renamed", tmp)
	}
	h.do(func() error { return h.ov.Health(spec) })
}

func nsFd(t testing.TB, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

func TestHealthAndRepair(t *testing.T) {
	h := newTestHost(t, "heal")
	spec := testSpec(t, 103)
	health := func() error {
		var err error
		h.do(func() error { err = h.ov.Health(spec); return nil })
		return err
	}
	if err := health(); !errors.Is(err, ErrNoNetwork) {
		t.Fatalf("Health before EnsureNetwork = %v, want ErrNoNetwork", err)
	}
	h.ensureNetwork(spec)
	ov := h.overlay(103)

	if err := ov.LinkDel(mustLink(t, ov, VxlanName)); err != nil {
		t.Fatal(err)
	}
	if err := health(); err == nil || !strings.Contains(err.Error(), "vxlan0 is missing") {
		t.Errorf("Health with vxlan0 deleted = %v, want 'vxlan0 is missing'", err)
	}
	h.ensureNetwork(spec)
	if err := health(); err != nil {
		t.Errorf("Health after repair: %v", err)
	}

	if err := ov.LinkSetDown(mustLink(t, ov, BridgeName)); err != nil {
		t.Fatal(err)
	}
	if err := health(); err == nil || !strings.Contains(err.Error(), "br0 is down") {
		t.Errorf("Health with br0 down = %v", err)
	}
	h.ensureNetwork(spec)

	if err := ov.LinkSetNoMaster(mustLink(t, ov, VxlanName)); err != nil {
		t.Fatal(err)
	}
	if err := health(); err == nil || !strings.Contains(err.Error(), "not attached") {
		t.Errorf("Health with vxlan0 detached = %v", err)
	}
	h.ensureNetwork(spec)
	if err := health(); err != nil {
		t.Errorf("Health after repair: %v", err)
	}

	// br0 learning on vxlan0 (an overlay made before issue 9 was fixed, or
	// learning turned on by hand) is damage: EnsureNetwork turns it off and
	// forgets what br0 learned there.
	vx := mustLink(t, ov, VxlanName)
	if err := ov.LinkSetLearning(vx, true); err != nil {
		t.Fatal(err)
	}
	learned := mustMAC(t, "02:42:0a:0a:00:63")
	if err := ov.NeighAdd(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_MASTER,
		State: netlink.NUD_REACHABLE, HardwareAddr: learned}); err != nil {
		t.Fatal(err)
	}
	if got := bridgeEntries(t, ov, learned); len(got) != 1 || got[0] != "vxlan0 dynamic" {
		t.Fatalf("br0 entries for the learned MAC = %q, want one dynamic on vxlan0", got)
	}
	if err := health(); err == nil || !strings.Contains(err.Error(), "vxlan0: br0 learns MACs on it") {
		t.Errorf("Health with learning on vxlan0's port = %v", err)
	}
	h.ensureNetwork(spec)
	if err := health(); err != nil {
		t.Errorf("Health after repair: %v", err)
	}
	if got := bridgeEntries(t, ov, learned); len(got) != 0 {
		t.Errorf("br0 entries for the learned MAC after EnsureNetwork = %q, want none", got)
	}
	if err := ov.LinkSetFlood(vx, false); err != nil {
		t.Fatal(err)
	}
	if err := health(); err == nil || !strings.Contains(err.Error(), "flooding is off") {
		t.Errorf("Health with flooding off on vxlan0's port = %v", err)
	}
	h.ensureNetwork(spec)
	if err := health(); err != nil {
		t.Errorf("Health after repair: %v", err)
	}

	// Deleting br0 leaves the endpoints' ports in the namespace, off any
	// bridge; the rebuilt br0 must take them back.
	id := "feedfacecafe0123"
	mac := mustMAC(t, "02:42:0a:0a:00:09")
	h.do(func() error {
		_, err := h.ov.EnsureEndpoint(EndpointSpec{VNI: 103, ID: id, MAC: mac, MTU: spec.MTU})
		return err
	})
	if err := ov.LinkDel(mustLink(t, ov, BridgeName)); err != nil {
		t.Fatal(err)
	}
	h.ensureNetwork(spec)
	if err := ov.LinkSetNoMaster(mustLink(t, ov, overlayIfName(id))); err != nil {
		t.Fatal(err)
	}
	if err := health(); err == nil || !strings.Contains(err.Error(), "endpoint port "+overlayIfName(id)+" is not attached") {
		t.Errorf("Health with an endpoint port detached = %v", err)
	}
	if err := ov.LinkDel(mustLink(t, ov, BridgeName)); err != nil {
		t.Fatal(err)
	}
	h.ensureNetwork(spec)
	port := mustLink(t, ov, overlayIfName(id))
	if port.Attrs().MasterIndex != mustLink(t, ov, BridgeName).Attrs().Index || port.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("after br0 was rebuilt the endpoint port has master %d, up %v; want on the new br0 and up",
			port.Attrs().MasterIndex, port.Attrs().Flags&net.FlagUp != 0)
	}
	if err := health(); err != nil {
		t.Errorf("Health after br0 rebuilt: %v", err)
	}

	// A changed port cannot be altered in place: vxlan0 is recreated.
	old := mustLink(t, ov, VxlanName).Attrs().Index
	spec2 := spec
	spec2.Port = 4790
	h.ensureNetwork(spec2)
	recreated := mustLink(t, ov, VxlanName).(*netlink.Vxlan)
	if recreated.Port != 4790 || recreated.Index == old {
		t.Errorf("vxlan0 port=%d index=%d (old %d), want recreated with 4790", recreated.Port, recreated.Index, old)
	}
	if err := health(); err == nil || !strings.Contains(err.Error(), "UDP port") {
		t.Errorf("Health(old spec) after port change = %v, want port mismatch", err)
	}
	h.do(func() error { return h.ov.Health(spec2) })
}

func TestEndpointLifecycle(t *testing.T) {
	h := newTestHost(t, "ep")
	h.ensureNetwork(testSpec(t, 104))
	id := "0123456789abcdef0123"
	mac := mustMAC(t, "02:42:0a:0a:00:07")
	ep := EndpointSpec{VNI: 104, ID: id, MAC: mac, MTU: 1450}
	var name string
	h.do(func() (err error) { name, err = h.ov.EnsureEndpoint(ep); return err })
	if name != HostIfName(id) || len(name) > 15 {
		t.Fatalf("host name %q, want %q (<= 15 chars)", name, HostIfName(id))
	}
	host, ov := h.host(), h.overlay(104)
	he := mustLink(t, host, name)
	oe := mustLink(t, ov, overlayIfName(id))
	switch {
	case he.Type() != "veth":
		t.Errorf("container end is %s", he.Type())
	case he.Attrs().HardwareAddr.String() != mac.String() || he.Attrs().MTU != 1450:
		t.Errorf("container end mac=%s mtu=%d", he.Attrs().HardwareAddr, he.Attrs().MTU)
	case he.Attrs().Flags&net.FlagUp != 0:
		t.Errorf("container end is up, want down")
	case oe.Attrs().MasterIndex != mustLink(t, ov, BridgeName).Attrs().Index || oe.Attrs().Flags&net.FlagUp == 0 || oe.Attrs().MTU != 1450:
		t.Errorf("overlay end master=%d up=%v mtu=%d", oe.Attrs().MasterIndex, oe.Attrs().Flags&net.FlagUp != 0, oe.Attrs().MTU)
	}

	attached := func(vni uint32) bool {
		t.Helper()
		var ok bool
		h.do(func() (err error) { ok, err = h.ov.EndpointAttached(vni, id); return err })
		return ok
	}
	if attached(104) {
		t.Error("EndpointAttached = true while the container end is still in the host")
	}

	before := [2]map[string]int{linkIndexes(t, host), linkIndexes(t, ov)}
	h.do(func() error { _, err := h.ov.EnsureEndpoint(ep); return err })
	if after := [2]map[string]int{linkIndexes(t, host), linkIndexes(t, ov)}; !maps.Equal(before[0], after[0]) || !maps.Equal(before[1], after[1]) {
		t.Errorf("second EnsureEndpoint changed links: %v -> %v", before, after)
	}

	// Docker moves the container end away; a repeated Ensure must not recreate it.
	ctr := newNS(t, "ctr")
	if err := host.LinkSetNsFd(he, nsFd(t, ctr)); err != nil {
		t.Fatal(err)
	}
	h.do(func() error { _, err := h.ov.EnsureEndpoint(ep); return err })
	if _, ok := linkIndexes(t, host)[name]; ok {
		t.Error("EnsureEndpoint recreated a container end that Docker had moved away")
	}

	if !attached(104) {
		t.Error("EndpointAttached = false while the container end is in a container")
	}
	h.do(func() error { return h.ov.DeleteEndpoint(104, id) })
	if _, ok := linkIndexes(t, ov)[overlayIfName(id)]; ok {
		t.Error("overlay end still present")
	}
	if attached(104) || attached(999) {
		t.Error("EndpointAttached = true after DeleteEndpoint, or on a missing network")
	}
	if _, ok := linkIndexes(t, nsHandle(t, ctr))[name]; ok {
		t.Error("container end still present in the container namespace")
	}
	h.do(func() error { return h.ov.DeleteEndpoint(104, id) }) // idempotent

	// Docker destroys a container's sandbox by moving the container end
	// back to the host under its old name: no container any more.
	h.do(func() error { _, err := h.ov.EnsureEndpoint(ep); return err })
	ctrH := nsHandle(t, ctr)
	if err := host.LinkSetNsFd(mustLink(t, host, name), nsFd(t, ctr)); err != nil {
		t.Fatal(err)
	}
	if err := ctrH.LinkSetNsFd(mustLink(t, ctrH, name), nsFd(t, h.ns)); err != nil {
		t.Fatal(err)
	}
	if attached(104) {
		t.Error("EndpointAttached = true after the container end came back to the host")
	}
	// Delete also works when the container end is in the host.
	h.do(func() error { return h.ov.DeleteEndpoint(104, id) })
	if _, ok := linkIndexes(t, host)[name]; ok {
		t.Error("container end still in host after DeleteEndpoint")
	}

	err := h.try(func() error {
		_, err := h.ov.EnsureEndpoint(EndpointSpec{VNI: 999, ID: id, MAC: mac})
		return err
	})
	if !errors.Is(err, ErrNoNetwork) {
		t.Errorf("EnsureEndpoint on missing network = %v, want ErrNoNetwork", err)
	}
}

func TestBadInput(t *testing.T) {
	o := New(t.TempDir(), "", nil)
	vtep := net.ParseIP("10.231.0.1")
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	for name, spec := range map[string]NetworkSpec{
		"vni 0":        {VNI: 0, VTEP: vtep},
		"vni too big":  {VNI: vxlan.MaxVNI + 1, VTEP: vtep},
		"mtu small":    {VNI: 1, VTEP: vtep, MTU: 67},
		"mtu big":      {VNI: 1, VTEP: vtep, MTU: 65536},
		"nil vtep":     {VNI: 1},
		"ipv6 vtep":    {VNI: 1, VTEP: net.ParseIP("2001:db8::1")},
		"zero vtep":    {VNI: 1, VTEP: net.IPv4zero},
		"port":         {VNI: 1, VTEP: vtep, Port: 70000},
		"ipv6 gateway": {VNI: 1, VTEP: vtep, Gateway: mustCIDR(t, "2001:db8::1/64")},
	} {
		if err := o.EnsureNetwork(spec); err == nil {
			t.Errorf("EnsureNetwork(%s) accepted bad input", name)
		}
		if err := o.Health(spec); err == nil {
			t.Errorf("Health(%s) accepted bad input", name)
		}
	}
	for name, ep := range map[string]EndpointSpec{
		"empty id":      {VNI: 1, MAC: mac},
		"id with slash": {VNI: 1, ID: "ab/cd", MAC: mac},
		"nil mac":       {VNI: 1, ID: "abc"},
		"multicast mac": {VNI: 1, ID: "abc", MAC: net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}},
		"vni":           {VNI: 0, ID: "abc", MAC: mac},
	} {
		if _, err := o.EnsureEndpoint(ep); err == nil || errors.Is(err, ErrNoNetwork) {
			t.Errorf("EnsureEndpoint(%s) = %v, want validation error", name, err)
		}
	}
	ip := net.ParseIP("10.10.0.2")
	for name, c := range map[string]struct {
		peers []Peer
		flood []net.IP
	}{
		"ipv6 peer":    {peers: []Peer{{IP: net.ParseIP("2001:db8::2"), MAC: mac, VTEP: vtep}}},
		"nil vtep":     {peers: []Peer{{IP: ip, MAC: mac}}},
		"short mac":    {peers: []Peer{{IP: ip, MAC: mac[:4], VTEP: vtep}}},
		"ip two macs":  {peers: []Peer{{IP: ip, MAC: mac, VTEP: vtep}, {IP: ip, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, VTEP: vtep}}},
		"mac two vtep": {peers: []Peer{{IP: ip, MAC: mac, VTEP: vtep}, {IP: net.ParseIP("10.10.0.3"), MAC: mac, VTEP: net.ParseIP("10.231.0.9")}}},
		"ipv6 flood":   {flood: []net.IP{net.ParseIP("2001:db8::1")}},
	} {
		if _, err := o.SyncPeers(1, c.peers, c.flood); err == nil || errors.Is(err, ErrNoNetwork) {
			t.Errorf("SyncPeers(%s) = %v, want validation error", name, err)
		}
	}
	if _, err := o.SyncPeers(1, nil, nil); !errors.Is(err, ErrNoNetwork) {
		t.Errorf("SyncPeers on missing network = %v, want ErrNoNetwork", err)
	}
	if err := o.DeleteNetwork(0); err == nil {
		t.Error("DeleteNetwork(0) accepted")
	}
	if err := o.DeleteEndpoint(1, "../x"); err == nil {
		t.Error("DeleteEndpoint with bad id accepted")
	}
	if got := HostIfName("0123456789abcdef"); got != "vxc0123456789" {
		t.Errorf("HostIfName = %q", got)
	}
}

// Health runs for every network at every reconcile, under the driver's lock;
// it now also reads vxlan0's bridge port flags.
func BenchmarkHealth(b *testing.B) {
	for _, ports := range []int{0, 100} {
		b.Run(fmt.Sprintf("endpoints=%d", ports), func(b *testing.B) {
			h := newTestHost(b, "bh")
			spec := testSpec(b, 107)
			h.ensureNetwork(spec)
			for i := range ports {
				mac := net.HardwareAddr{2, 0x42, 0x0a, 0x0a, 1, byte(i)}
				h.do(func() error {
					_, err := h.ov.EnsureEndpoint(EndpointSpec{VNI: 107, ID: fmt.Sprintf("%010dbench", i), MAC: mac, MTU: spec.MTU})
					return err
				})
			}
			h.do(func() error {
				for b.Loop() {
					if err := h.ov.Health(spec); err != nil {
						return err
					}
				}
				return nil
			})
		})
	}
}

// Health must not see an endpoint half made: a reconcile pass that runs
// while a container joins would call its new, not yet attached port damage
// and rebuild the overlay (seen in the 8-host lab as "endpoint port ... is
// not attached to br0" during parallel container starts).
func TestHealthDuringEndpointCreation(t *testing.T) {
	h := newTestHost(t, "hrace")
	spec := testSpec(t, 105)
	h.ensureNetwork(spec)
	done := make(chan struct{})
	errs := make(chan error, 1)
	go func() {
		defer close(done)
		errs <- h.try(func() error {
			for i := range 40 {
				id := fmt.Sprintf("race%012d", i)
				if _, err := h.ov.EnsureEndpoint(EndpointSpec{VNI: 105, ID: id, MAC: net.HardwareAddr{2, 0x42, 0, 0, 1, byte(i)}, MTU: spec.MTU}); err != nil {
					return err
				}
			}
			return nil
		})
	}()
	checks := 0
	for running := true; running; checks++ {
		select {
		case <-done:
			running = false
		default:
		}
		if err := h.try(func() error { return h.ov.Health(spec) }); err != nil {
			t.Fatalf("Health while endpoints are created (check %d): %v", checks, err)
		}
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d health checks during 40 endpoint creations", checks)
}
