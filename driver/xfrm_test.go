package driver

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/internal/ipsec"
	"github.com/vxovl/vxovl/internal/store"
	"github.com/vxovl/vxovl/internal/testutil/poll"
	"github.com/vxovl/vxovl/internal/vxlan"
)

var testIPsecSecret = []byte("driver-test-secret-0123456789abc")

func encryptedHarness(t *testing.T) *harness {
	t.Helper()
	return startHarness(t, filepath.Join(t.TempDir(), "state.db"), newFakeDataplane(),
		Config{NodeName: "a", IPsecSecret: testIPsecSecret})
}

func (f *fakeDataplane) xfrm() ([]int, []ipsec.SA) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.xfrmPorts), slices.Clone(f.sas)
}

func remoteEP(id, node, vtep string, version uint64) cluster.Endpoint {
	return cluster.Endpoint{VNI: 42, ID: id, IP: net.ParseIP("10.10.0.9").To4(), MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(version)},
		Node: node, VTEP: net.ParseIP(vtep).To4(), Version: version}
}

func TestParseEncryptedOption(t *testing.T) {
	for _, c := range []struct {
		val  any
		want bool
		err  bool
	}{{"true", true, false}, {"false", false, false}, {true, true, false}, {"yes", false, true}} {
		o, err := parseNetworkOptions(map[string]interface{}{genericOptionsKey: map[string]interface{}{OptEncrypted: c.val}})
		if (err != nil) != c.err || o.Encrypted != c.want {
			t.Errorf("encrypted=%v: got %v, %v; want %v, error %v", c.val, o.Encrypted, err, c.want, c.err)
		}
	}
}

func TestEncryptedNetworkRefusedWithoutSecretOrESP(t *testing.T) {
	noSecret := newHarness(t)
	err := noSecret.drv.CreateNetwork(createReq(map[string]interface{}{"vni": "42", "encrypted": "true"}, "10.10.0.0/24", ""))
	if err == nil || !strings.Contains(err.Error(), "GOSSIP_KEY") {
		t.Fatalf("without a secret: err = %v, want one naming GOSSIP_KEY", err)
	}
	noESP := encryptedHarness(t)
	noESP.dp.failOnce("CheckESP", errors.New("no ESP in this kernel"))
	err = noESP.drv.CreateNetwork(createReq(map[string]interface{}{"vni": "42", "encrypted": "true"}, "10.10.0.0/24", ""))
	if err == nil || !strings.Contains(err.Error(), "no ESP") {
		t.Fatalf("without ESP: err = %v, want the kernel's reason", err)
	}
	for _, h := range []*harness{noSecret, noESP} {
		if len(h.dp.networks) != 0 || len(h.g.networks) != 0 {
			t.Fatalf("refused create left state: %v %v", h.dp.networks, h.g.networks)
		}
		if nets, _ := store.ListJSON[networkRecord](h.st, bucketNetworks); len(nets) != 0 {
			t.Fatalf("refused create stored %v", nets)
		}
	}
}

func TestEncryptedNetworkSAsFollowMembership(t *testing.T) {
	h := encryptedHarness(t)
	h.createNetwork(map[string]interface{}{"vni": "42", "encrypted": "true"})
	h.dp.mu.Lock()
	spec := h.dp.networks[42]
	h.dp.mu.Unlock()
	if spec.Port != vxlan.DefaultEncryptedPort || spec.MTU != vxlan.DefaultMTU-vxlan.ESPOverhead {
		t.Fatalf("encrypted network built on port %d MTU %d, want %d and %d", spec.Port, spec.MTU, vxlan.DefaultEncryptedPort, vxlan.DefaultMTU-vxlan.ESPOverhead)
	}
	if n := h.g.networks[42]; !n.Encrypted {
		t.Fatalf("published definition %+v is not encrypted", n)
	}
	h.createEndpoint(epID, "10.10.0.2/24")
	h.g.setRemote(42, remoteEP("r1", "b", "10.98.0.2", 1), remoteEP("r2", "c", "10.98.0.3", 2), remoteEP("r3", "c", "10.98.0.3", 3))
	h.drv.EndpointsChanged(42)
	peersOf := func() map[string]bool {
		_, sas := h.dp.xfrm()
		out := map[string]bool{}
		for _, sa := range sas {
			out[sa.Peer] = true
		}
		return out
	}
	poll.True(t, 5*time.Second, "SAs for b and c", func() bool { return len(peersOf()) == 2 })
	ports, sas := h.dp.xfrm()
	if !slices.Equal(ports, []int{vxlan.DefaultEncryptedPort}) {
		t.Fatalf("policy ports %v", ports)
	}
	// Per peer: one send SA and three receive SAs (the generations around
	// the current one).
	if len(sas) != 2*4 {
		t.Fatalf("%d SAs, want 8: %v", len(sas), sas)
	}
	// c dies: its endpoints go, and so do its SAs.
	h.g.setRemote(42, remoteEP("r1", "b", "10.98.0.2", 1))
	h.drv.EndpointsChanged(42)
	poll.True(t, 5*time.Second, "c's SAs removed", func() bool { p := peersOf(); return len(p) == 1 && p["b"] })

	// A reconcile puts back what the kernel lost.
	h.dp.mu.Lock()
	h.dp.sas = h.dp.sas[1:]
	h.dp.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.drv.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if _, sas := h.dp.xfrm(); len(sas) != 4 {
		t.Fatalf("after reconcile %d SAs, want 4", len(sas))
	}

	if err := h.drv.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netID}); err != nil {
		t.Fatal(err)
	}
	poll.True(t, 5*time.Second, "no IPsec left after network rm", func() bool {
		ports, sas := h.dp.xfrm()
		return len(ports) == 0 && len(sas) == 0
	})
}

func TestXfrmGenerations(t *testing.T) {
	send, recv := xfrmGenerations(time.Unix(7200+5, 0), time.Hour)
	if send != 2 || !slices.Equal(recv, []uint64{1, 2, 3}) {
		t.Fatalf("send %d receive %v, want 2 and [1 2 3]", send, recv)
	}
	if send, recv := xfrmGenerations(time.Unix(5, 0), time.Hour); send != 0 || !slices.Equal(recv, []uint64{0, 1}) {
		t.Fatalf("at the epoch: send %d receive %v", send, recv)
	}
}

func TestXfrmPeers(t *testing.T) {
	eps := []cluster.Endpoint{
		remoteEP("1", "b", "10.98.0.2", 1),
		remoteEP("2", "b", "10.98.0.7", 5), // b moved: the newest endpoint's VTEP wins
		remoteEP("3", "a", "10.98.0.1", 2), // ourselves
		remoteEP("4", "", "10.98.0.4", 2),  // no owner
		{Node: "d", VTEP: nil},
	}
	got := xfrmPeers("a", eps)
	if len(got) != 1 || got[0].Name != "b" || !got[0].IP.Equal(net.ParseIP("10.98.0.7")) {
		t.Fatalf("peers %v, want b at 10.98.0.7", got)
	}
}

// A plugin restart finds the SAs in the kernel and keeps them while the
// cluster view comes back (re-adoption: no gap in traffic); once the view
// is complete, what it no longer needs goes.
func TestEncryptedRestartKeepsSAs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	dp := newFakeDataplane()
	cfg := Config{NodeName: "a", IPsecSecret: testIPsecSecret, RestoreGrace: time.Hour}
	h := startHarness(t, path, dp, cfg)
	h.createNetwork(map[string]interface{}{"vni": "42", "encrypted": "true"})
	h.createEndpoint(epID, "10.10.0.2/24")
	h.g.setRemote(42, remoteEP("r1", "b", "10.98.0.2", 1))
	h.drv.EndpointsChanged(42)
	poll.True(t, 5*time.Second, "SAs for b", func() bool { _, sas := dp.xfrm(); return len(sas) == 4 })
	h.stop()

	h2 := startHarness(t, path, dp, cfg) // same kernel: only the plugin restarted
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h2.drv.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if ports, sas := dp.xfrm(); len(sas) != 4 || len(ports) != 1 {
		t.Fatalf("during the restore grace the SAs went: ports %v, %d SAs", ports, len(sas))
	}
	h2.g.mu.Lock()
	h2.g.caughtUp = true
	h2.g.mu.Unlock()
	poll.True(t, 5*time.Second, "b's SAs removed once the cluster view is complete without b", func() bool {
		ports, sas := dp.xfrm()
		return len(sas) == 0 && len(ports) == 1
	})
}
