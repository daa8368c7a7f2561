package e2e

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// The RSS host (issue 13: plugin RSS < 100 MB with 10,000 remote endpoints programmed on one
// host): 20 networks of 500 remote endpoints each, published by a fake member.
const (
	rssNetworks   = 20
	rssRemotesPer = 500
	rssFirstHost  = 10 // remote endpoints are .10-.509 of each /23; Docker's IPAM starts at .2
	rssVNIBase    = 16000
	rssMetrics    = 9747
)

// TestPluginRSS measures the resident memory of the plugin process on a lab host with 20 vxovl
// networks and no remote endpoint, then with 10,000 remote endpoints programmed in them (500
// a network, from a fake member): VmRSS and VmHWM from /proc/PID/status, and the Go heap as
// the plugin's /metrics reports it. The figures are read after one full reconcile pass, which
// syncs every entry, so that the high-water mark includes one.
//
// It runs only with VXOVL_BENCH=1 (make bench-rss) and reports, it does not assert.
func TestPluginRSS(t *testing.T) {
	RequireBench(t)
	tree := PluginTree{Label: "main", Dir: RepoRoot()}
	bin := BuildFakeMember(t, tree, t.TempDir())
	l := Up(t, 1)
	fakeAddr := l.Subnet + ".240"
	if out, err := l.run(nil, "exec", "wire", "ip", "addr", "add", fakeAddr+"/24", "dev", "ulbr"); err != nil {
		t.Fatalf("the fake member's address in the wire namespace: %v\n%s", err, out)
	}
	metrics := fmt.Sprintf("http://%s:%d/metrics", l.Addr(1), rssMetrics)
	l.InstallPlugin(t, 1, "PEERS="+fakeAddr, fmt.Sprintf("METRICS_ADDR=%s:%d", l.Addr(1), rssMetrics))

	nets := make([]FakeNetwork, rssNetworks)
	remotes := map[netip.Addr]bool{}
	start := time.Now()
	for k := range nets {
		nets[k] = FakeNetwork{VNI: uint32(rssVNIBase + k + 1), Subnet: netip.MustParsePrefix(fmt.Sprintf("10.160.%d.0/23", 2*k))}
		l.MustDocker(t, 1, "network", "create", "-d", Driver, "--subnet", nets[k].Subnet.String(),
			"-o", fmt.Sprint("vni=", nets[k].VNI), "-o", fmt.Sprint("mtu=", runLatMTU), fmt.Sprintf("rss%02d", k+1))
		a := nets[k].Subnet.Addr()
		for range rssFirstHost {
			a = a.Next()
		}
		for range rssRemotesPer {
			remotes[a] = true
			a = a.Next()
		}
	}
	t.Logf("%d networks created in %v", rssNetworks, time.Since(start).Round(10*time.Millisecond))
	idle := l.pluginMemory(t, 1, metrics)

	fake := l.StartFakeMember(t, bin, fakeAddr, l.Addr(1), runLatMTU, rssRemotesPer, rssFirstHost, nets)
	start = time.Now()
	took := poll.Until(t, 10*time.Minute, "the fake member's endpoints programmed on host 1", func() (bool, string) {
		n := l.CountNeighbors(t, 1, remotes)
		return n == len(remotes), fmt.Sprintf("%d of %d permanent neighbor entries\n%s", n, len(remotes), fake.Log())
	})
	t.Logf("%d remote endpoints programmed %v after the fake member was ready", len(remotes), took.Round(10*time.Millisecond))
	loaded := l.pluginMemory(t, 1, metrics)

	t.Logf("plugin memory, %d networks:\n%s\n%s", rssNetworks, idle.line(0), loaded.line(len(remotes)))
	t.Logf("per remote endpoint: RSS %.0f bytes, Go heap in use %.0f bytes",
		float64(loaded.RSS-idle.RSS)/float64(len(remotes)), float64(loaded.HeapInuse-idle.HeapInuse)/float64(len(remotes)))
}

// pluginMem is what host i's plugin process holds.
type pluginMem struct {
	RSS, HWM                    uint64 // VmRSS and VmHWM from /proc/PID/status, bytes
	HeapInuse, HeapAlloc, GoSys uint64 // go_memstats_heap_inuse_bytes, _heap_alloc_bytes, _sys_bytes
	Goroutines                  uint64 // go_goroutines
}

// line is the figures as a benchmark prints them, named by the remote endpoints programmed.
func (m pluginMem) line(remotes int) string {
	mb := func(b uint64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) }
	return fmt.Sprintf("BenchmarkPluginRSS/remote=%d\t1\t%s RSS-MB\t%s HWM-MB\t%s heap-inuse-MB\t%s heap-alloc-MB\t%s go-sys-MB\t%d goroutines",
		remotes, mb(m.RSS), mb(m.HWM), mb(m.HeapInuse), mb(m.HeapAlloc), mb(m.GoSys), m.Goroutines)
}

// pluginMemory runs one reconcile pass on host i's plugin, then reads its memory from /proc and
// from its /metrics (at url, reached from the wire namespace).
func (l *Lab) pluginMemory(t testing.TB, i int, url string) pluginMem {
	t.Helper()
	l.pluginPost(t, i, "/vxovl/reconcile")
	var m pluginMem
	pid := l.pluginPID(t, i)
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("host %d: plugin status: %v", i, err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// "VmRSS:	   12345 kB"
		k, v, _ := strings.Cut(s.Text(), ":")
		var dst *uint64
		switch k {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.HWM
		default:
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("host %d: plugin pid %d: %s: %q", i, pid, k, v)
		}
		*dst = kb << 10
	}
	if m.RSS == 0 || m.HWM == 0 {
		t.Fatalf("host %d: plugin pid %d: no VmRSS or VmHWM in its status", i, pid)
	}
	body, err := l.GetFromWire(url)
	if err != nil {
		t.Fatalf("host %d: %v", i, err)
	}
	want := map[string]*uint64{"go_memstats_heap_inuse_bytes": &m.HeapInuse, "go_memstats_heap_alloc_bytes": &m.HeapAlloc,
		"go_memstats_sys_bytes": &m.GoSys, "go_goroutines": &m.Goroutines}
	for _, line := range strings.Split(body, "\n") {
		name, val, ok := strings.Cut(line, " ")
		if dst, known := want[name]; ok && known {
			v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err != nil {
				t.Fatalf("host %d: /metrics line %q: %v", i, line, err)
			}
			*dst = uint64(v)
			delete(want, name)
		}
	}
	if len(want) > 0 {
		t.Fatalf("host %d: /metrics lacks %v", i, want)
	}
	return m
}
