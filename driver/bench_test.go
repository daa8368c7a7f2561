package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/internal/dataplane"
	"github.com/vxovl/vxovl/internal/ipsec"
	"github.com/vxovl/vxovl/internal/store"
	"github.com/vxovl/vxovl/internal/testutil/kerneltest"
)

// nsDataplane is the real kernel dataplane used from inside a throwaway
// "host" namespace, as the plugin uses it from inside the host's.
type nsDataplane struct {
	host string
	ov   *dataplane.Overlay
}

func (k nsDataplane) in(fn func() error) error { return dataplane.Do(k.host, fn) }

func (k nsDataplane) EnsureNetwork(s dataplane.NetworkSpec) error {
	return k.in(func() error { return k.ov.EnsureNetwork(s) })
}

func (k nsDataplane) CheckESP() error { return k.in(k.ov.CheckESP) }

func (k nsDataplane) EnsureXfrm(ports []int, sas []ipsec.SA, prune bool) (res dataplane.XfrmResult, err error) {
	err = k.in(func() (err error) { res, err = k.ov.EnsureXfrm(ports, sas, prune); return err })
	return res, err
}

// ListenDNS opens the sockets inside the overlay namespace, which the
// dataplane finds by path whatever namespace the caller is in.
func (k nsDataplane) ListenDNS(vni uint32, addr netip.Addr, port int) (net.PacketConn, net.Listener, error) {
	return k.ov.ListenDNS(vni, addr, port)
}

func (k nsDataplane) DeleteNetwork(vni uint32) error {
	return k.in(func() error { return k.ov.DeleteNetwork(vni) })
}

func (k nsDataplane) Health(s dataplane.NetworkSpec) error {
	return k.in(func() error { return k.ov.Health(s) })
}

func (k nsDataplane) Networks() ([]uint32, error) { return k.ov.Networks() }

func (k nsDataplane) EnsureEndpoint(s dataplane.EndpointSpec) (name string, err error) {
	err = k.in(func() error { name, err = k.ov.EnsureEndpoint(s); return err })
	return name, err
}

func (k nsDataplane) DeleteEndpoint(vni uint32, id string) error {
	return k.in(func() error { return k.ov.DeleteEndpoint(vni, id) })
}

func (k nsDataplane) EndpointAttached(vni uint32, id string) (ok bool, err error) {
	err = k.in(func() error { ok, err = k.ov.EndpointAttached(vni, id); return err })
	return ok, err
}

func (k nsDataplane) SyncPeers(vni uint32, peers []dataplane.Peer, flood []net.IP) (res dataplane.SyncResult, err error) {
	err = k.in(func() error { res, err = k.ov.SyncPeers(vni, peers, flood); return err })
	return res, err
}

// newKernelDataplane pins a throwaway host namespace and removes it, with
// every overlay namespace made from it, when the benchmark ends.
func newKernelDataplane(b *testing.B) nsDataplane {
	b.Helper()
	kerneltest.RequireRoot(b)
	dir := b.TempDir()
	k := nsDataplane{host: filepath.Join(dir, "host"), ov: dataplane.New(filepath.Join(dir, "netns"), "", nil)}
	if err := dataplane.CreatePinned(k.host); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		vnis, err := k.ov.Networks()
		for _, v := range vnis {
			err = errors.Join(err, k.DeleteNetwork(v))
		}
		if err = errors.Join(err, dataplane.Unpin(k.host)); err != nil {
			b.Errorf("removing the benchmark's namespaces: %v", err)
		}
	})
	return k
}

// BenchmarkEndpointLatencyDuringReconcile measures what `docker run` waits
// on in the driver (CreateEndpoint, then Join) on a host with 50 networks and
// 1,000 remote endpoints while reconcile passes run back to back. Needs root;
// run with a fixed count, e.g. -benchtime=200x.
func BenchmarkEndpointLatencyDuringReconcile(b *testing.B) {
	const networks, remotesPerNetwork = 50, 20
	k := newKernelDataplane(b)
	st, err := store.Open(filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	g := newFakeGossip()
	d := New(Config{
		VTEP: net.IPv4(10, 231, 0, 1).To4(), ReconcileInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, k, st)
	ctx, cancel := context.WithCancel(context.Background())
	defer d.Wait()
	defer cancel()
	if err := d.Start(ctx, g); err != nil {
		b.Fatal(err)
	}
	netIDs := make([]string, networks)
	for n := range networks {
		netIDs[n] = fmt.Sprintf("%064x", 0xbe0000+n)
		vni := uint32(5000 + n)
		err := d.CreateNetwork(&network.CreateNetworkRequest{
			NetworkID: netIDs[n],
			Options:   map[string]interface{}{genericOptionsKey: map[string]interface{}{"vni": fmt.Sprint(vni)}},
			IPv4Data:  []*network.IPAMData{{Pool: fmt.Sprintf("10.200.%d.0/24", n), Gateway: fmt.Sprintf("10.200.%d.1/24", n)}},
		})
		if err != nil {
			b.Fatal(err)
		}
		remotes := make([]cluster.Endpoint, remotesPerNetwork)
		for r := range remotes {
			remotes[r] = cluster.Endpoint{
				VNI: vni, ID: fmt.Sprintf("r%d", r), Node: fmt.Sprintf("node%d", r%10), Version: 1,
				IP:   net.IPv4(10, 200, byte(n), byte(10+r)).To4(),
				MAC:  net.HardwareAddr{2, 0x42, 0, 0, byte(n), byte(r)},
				VTEP: net.IPv4(10, 231, 0, byte(2+r%10)).To4(),
			}
		}
		g.setRemote(vni, remotes...)
	}
	if err := d.Reconcile(ctx); err != nil { // programs the 1,000 remote entries
		b.Fatal(err)
	}

	b.Run("idle", func(b *testing.B) { measureEndpointLatency(b, d, netIDs, false) })
	b.Run("passes", func(b *testing.B) { measureEndpointLatency(b, d, netIDs, true) })
}

// measureEndpointLatency times CreateEndpoint+Join b.N times, round-robin
// over the networks, with reconcile passes running back to back when
// reconciling is set, and reports the latency's p50, p99 and max.
func measureEndpointLatency(b *testing.B, d *Driver, netIDs []string, reconciling bool) {
	var passes int
	var wg sync.WaitGroup
	ctx, stopPasses := context.WithCancel(context.Background())
	defer stopPasses()
	if reconciling {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d.Reconcile(ctx) == nil {
				passes++
			}
		}()
	}
	lat := make([]time.Duration, 0, b.N)
	start := time.Now()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := i % len(netIDs)
		id := fmt.Sprintf("%010x%054x", 0xe00000+i, 0)
		t0 := time.Now()
		_, err := d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netIDs[n], EndpointID: id,
			Interface: &network.EndpointInterface{Address: fmt.Sprintf("10.200.%d.%d/24", n, 100+(i/len(netIDs))%100)}})
		if err == nil {
			_, err = d.Join(&network.JoinRequest{NetworkID: netIDs[n], EndpointID: id, SandboxKey: "/nonexistent"})
		}
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := d.Leave(&network.LeaveRequest{NetworkID: netIDs[n], EndpointID: id}); err != nil {
			b.Fatal(err)
		}
		if err := d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netIDs[n], EndpointID: id}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	elapsed := time.Since(start)
	stopPasses()
	wg.Wait()
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	b.ReportMetric(float64(passes)/elapsed.Seconds(), "passes/s")
}
