package metrics

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/driver"
	"github.com/vxovl/vxovl/internal/dataplane"
	"github.com/vxovl/vxovl/internal/ipsec"
	"github.com/vxovl/vxovl/internal/store"
	"github.com/vxovl/vxovl/internal/testutil/poll"
	"github.com/vxovl/vxovl/ipam"
)

// nullDataplane is a kernel that accepts everything: the benchmark times
// the driver's state and the scrape, not netlink.
type nullDataplane struct{}

func (nullDataplane) EnsureNetwork(dataplane.NetworkSpec) error { return nil }
func (nullDataplane) DeleteNetwork(uint32) error                { return nil }
func (nullDataplane) Health(dataplane.NetworkSpec) error        { return nil }
func (nullDataplane) CheckESP() error                           { return nil }
func (nullDataplane) EnsureXfrm([]int, []ipsec.SA, bool) (dataplane.XfrmResult, error) {
	return dataplane.XfrmResult{}, nil
}
func (nullDataplane) Networks() ([]uint32, error) { return nil, nil }
func (nullDataplane) EnsureEndpoint(s dataplane.EndpointSpec) (string, error) {
	return "vx" + s.ID[:8], nil
}
func (nullDataplane) DeleteEndpoint(uint32, string) error           { return nil }
func (nullDataplane) EndpointAttached(uint32, string) (bool, error) { return true, nil }
func (nullDataplane) SyncPeers(uint32, []dataplane.Peer, []net.IP) (dataplane.SyncResult, error) {
	return dataplane.SyncResult{}, nil
}
func (nullDataplane) ListenDNS(uint32, netip.Addr, int) (net.PacketConn, net.Listener, error) {
	return nil, nil, fmt.Errorf("no name servers in the benchmark")
}

// staticGossip is a cluster whose other hosts hold a fixed set of
// endpoints; like the real one it hands out copies.
type staticGossip struct{ remote map[uint32][]cluster.Endpoint }

func (g *staticGossip) PublishNetwork(cluster.Network) error { return nil }
func (g *staticGossip) WithdrawNetwork(uint32) error         { return nil }
func (g *staticGossip) PublishEndpoint(ep cluster.Endpoint) (cluster.Endpoint, error) {
	ep.Version, ep.Created = 1, 1
	return ep, nil
}
func (g *staticGossip) WithdrawEndpoint(uint32, string) error { return nil }
func (g *staticGossip) Endpoints(vni uint32) []cluster.Endpoint {
	out := make([]cluster.Endpoint, 0, len(g.remote[vni]))
	for _, ep := range g.remote[vni] {
		ep.IP = slices.Clone(ep.IP)
		ep.MAC = slices.Clone(ep.MAC)
		ep.VTEP = slices.Clone(ep.VTEP)
		ep.Names = slices.Clone(ep.Names)
		out = append(out, ep)
	}
	return out
}

// loadedDriver is a real driver with nets networks, each with local
// endpoints of its own and remote ones on 10 other hosts, synced.
func loadedDriver(b *testing.B, nets, local, remote int) (*driver.Driver, []string) {
	b.Helper()
	st, err := store.Open(filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	g := &staticGossip{remote: map[uint32][]cluster.Endpoint{}}
	drv := driver.New(driver.Config{
		VTEP: net.IPv4(10, 98, 0, 1).To4(), ReconcileInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, nullDataplane{}, st)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(func() { cancel(); drv.Wait(); st.Close() })
	if err := drv.Start(ctx, g); err != nil {
		b.Fatal(err)
	}
	// All of the cluster's endpoints first: the driver's loop reads them
	// as soon as the first network exists.
	for i := range nets {
		vni := uint32(1000 + i)
		for j := range remote {
			ip := net.IPv4(10, 200, byte(i), byte(20+j)).To4()
			g.remote[vni] = append(g.remote[vni], cluster.Endpoint{
				VNI: vni, ID: fmt.Sprintf("remote%058d", i*1000+j), IP: ip,
				MAC:  net.HardwareAddr{2, 0x42, 10, 200, byte(i), byte(20 + j)},
				Node: fmt.Sprintf("h%d", 2+j%10), VTEP: net.IPv4(10, 98, 0, byte(2+j%10)).To4(),
				Names: []string{fmt.Sprintf("svc%d", j)}, Version: 1, Created: 1,
			})
		}
	}
	var ids []string // network/endpoint of every local endpoint
	for i := range nets {
		vni := uint32(1000 + i)
		netID := fmt.Sprintf("net%061d", i)
		err := drv.CreateNetwork(&network.CreateNetworkRequest{
			NetworkID: netID,
			Options:   map[string]any{"com.docker.network.generic": map[string]any{"vni": fmt.Sprint(vni), "dns": "false"}},
			IPv4Data: []*network.IPAMData{{AddressSpace: "x",
				Pool: fmt.Sprintf("10.200.%d.0/24", i), Gateway: fmt.Sprintf("10.200.%d.1/24", i)}},
		})
		if err != nil {
			b.Fatal(err)
		}
		for j := range local {
			epID := fmt.Sprintf("local%059d", i*1000+j)
			_, err := drv.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID,
				Interface: &network.EndpointInterface{Address: fmt.Sprintf("10.200.%d.%d/24", i, 2+j)}})
			if err != nil {
				b.Fatal(err)
			}
			ids = append(ids, netID, epID)
		}
	}
	poll.True(b, time.Minute, "every network synced", func() bool {
		for _, n := range drv.Networks() {
			if n.Neighbors != remote {
				return false
			}
		}
		return true
	})
	return drv, ids
}

// BenchmarkScrape serves /metrics for a real driver holding 50 networks of
// 10 local and 190 remote endpoints: 10,000 endpoints.
//
// The collector takes its copies (Networks holds the driver's lock only to
// copy the local endpoints, not while it copies the cluster's) and only
// then makes and renders the metrics, so an API call never waits for a
// scrape's rendering. The with-api-calls variant shows it: a goroutine
// makes EndpointOperInfo calls, which take the driver's lock, back to back
// during the scrapes; their longest wait is reported next to the time of a
// scrape.
func BenchmarkScrape(b *testing.B) {
	const nets, local, remote = 50, 10, 190
	drv, ids := loadedDriver(b, nets, local, remote)
	m := New("bench")
	pools := make([]ipam.PoolStatus, nets)
	for i := range pools {
		pools[i] = ipam.PoolStatus{Subnet: netip.MustParsePrefix(fmt.Sprintf("10.200.%d.0/24", i)), Blocks: 1, Addresses: local}
	}
	err := m.Watch(Sources{Driver: drv, IPAM: &fakeIPAM{pools: pools},
		Cluster: &fakeCluster{members: make([]cluster.Member, 11)}})
	if err != nil {
		b.Fatal(err)
	}
	h := m.Handler()
	scrapeOnce := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 200 {
			b.Fatalf("scrape: %d", rec.Code)
		}
		return rec.Body.Len()
	}
	size := scrapeOnce()

	b.Run("scrape", func(b *testing.B) {
		for b.Loop() {
			scrapeOnce()
		}
		b.ReportMetric(float64(size), "bytes/scrape")
	})
	b.Run("networks-snapshot", func(b *testing.B) {
		for b.Loop() {
			drv.Networks()
		}
	})
	// The API calls' waits, alone and during back-to-back scrapes. Were the
	// lock held while a scrape renders, about one call per scrape would wait
	// most of a scrape's time. On a busy machine the scheduler makes calls
	// wait too: the mutex profile tells the waits the scrapes caused by
	// holding the driver's lock (its contention, charged to the stack that
	// unlocked: the collector's) from the rest.
	hammer := func(b *testing.B, scrape bool) {
		runtime.SetMutexProfileFraction(1)
		defer runtime.SetMutexProfileFraction(0)
		causedBefore := lockWaitsCausedBy(b, "(*stateCollector).Collect")
		stop := make(chan struct{})
		var w waits
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := (i % (len(ids) / 2)) * 2
				start := time.Now()
				if _, err := drv.EndpointInfo(&network.InfoRequest{NetworkID: ids[k], EndpointID: ids[k+1]}); err != nil {
					panic(err)
				}
				w.add(time.Since(start))
			}
		})
		start := time.Now()
		for b.Loop() {
			if scrape {
				scrapeOnce()
			} else {
				time.Sleep(10 * time.Millisecond) // about a scrape's time
			}
		}
		per := time.Since(start) / time.Duration(b.N)
		close(stop)
		wg.Wait()
		b.ReportMetric(float64(w.n), "api-calls")
		b.ReportMetric(float64(w.over1ms), "api-calls>1ms")
		b.ReportMetric(float64(w.max)/float64(time.Millisecond), "max-api-ms")
		if scrape {
			b.ReportMetric(float64(per)/float64(time.Millisecond), "scrape-ms")
			caused := lockWaitsCausedBy(b, "(*stateCollector).Collect") - causedBefore
			b.ReportMetric(float64(caused)/float64(b.N)/float64(time.Microsecond), "lock-wait-us/scrape")
		}
	}
	b.Run("api-calls-alone", func(b *testing.B) { hammer(b, false) })
	b.Run("api-calls-during-scrapes", func(b *testing.B) { hammer(b, true) })
}

// waits summarises how long calls took, without a slice per call.
type waits struct {
	n, over1ms int
	max        time.Duration
}

func (w *waits) add(d time.Duration) {
	w.n++
	if d > time.Millisecond {
		w.over1ms++
	}
	w.max = max(w.max, d)
}

// lockWaitsCausedBy sums, from the mutex profile, the time goroutines waited
// for a sync.Mutex held by a stack with frame in it.
func lockWaitsCausedBy(b *testing.B, frame string) time.Duration {
	var buf bytes.Buffer
	if err := pprof.Lookup("mutex").WriteTo(&buf, 1); err != nil {
		b.Fatal(err)
	}
	var perSecond, total, cycles float64
	flush := func(match bool) {
		if match {
			total += cycles
		}
		cycles = 0
	}
	match := false
	for line := range strings.Lines(buf.String()) {
		switch {
		case strings.HasPrefix(line, "cycles/second="):
			fmt.Sscanf(line, "cycles/second=%g", &perSecond)
		case strings.HasPrefix(line, "#"):
			match = match || strings.Contains(line, frame)
		case len(line) > 0 && line[0] >= '0' && line[0] <= '9':
			flush(match)
			match = false
			fmt.Sscanf(line, "%g", &cycles)
		}
	}
	flush(match)
	if perSecond == 0 {
		b.Fatal("mutex profile without cycles/second")
	}
	return time.Duration(total / perSecond * float64(time.Second))
}
