package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// Settings of the observability lab.
const (
	obsMetricsPort = 9747
	obsNet, obsVNI = "obsnet", 4747
	obsSubnet      = "10.147.0.0/24"
	// obsScrape is the lab Prometheus's scrape interval: short, so that what the plugin
	// counts shows up in Prometheus within a couple of seconds.
	obsScrape = time.Second
	// obsWait bounds every wait on Prometheus: gossip convergence or an endpoint's arrival plus
	// one scrape, with room for a busy machine.
	obsWait = 30 * time.Second
)

// TestObservability runs a real Prometheus server (Debian's prometheus package) on the lab's
// underlay scraping three hosts' METRICS_ADDR, and checks what an operator would look at: every
// target up, the cluster's size, remote endpoints following a container on another host, the
// API histogram counting docker run's calls, promtool's linter clean on every host's /metrics,
// the status page as chromium headless renders it, and `vxovl status`. Gossip runs with a key,
// which none of them may show. On Docker 20.10 and on Docker 26.
func TestObservability(t *testing.T) { observability(t, Options{Docker: Docker20}) }

func TestObservabilityDocker26(t *testing.T) { observability(t, Options{Docker: Docker26}) }

func observability(t *testing.T, opts Options) {
	Require(t)
	requireTools(t, "prometheus", "promtool", "chromium")
	start := time.Now()
	l := UpWith(t, 3, opts)
	key := obsGossipKey(t)
	for i := 1; i <= 3; i++ {
		l.InstallPlugin(t, i, "PEERS="+l.PeersExcept(i), "NODE_NAME="+obsNode(i), "GOSSIP_KEY="+key,
			fmt.Sprintf("METRICS_ADDR=%s:%d", l.Addr(i), obsMetricsPort))
	}
	for i := 1; i <= 3; i++ {
		l.MustDocker(t, i, "network", "create", "-d", Driver, "--subnet", obsSubnet,
			"--ip-range", fmt.Sprintf("10.147.0.%d/26", (i-1)*64), "-o", fmt.Sprint("vni=", obsVNI), obsNet)
	}
	o := &obsLab{Lab: l}
	o.prom = l.StartPrometheus(t, obsScrape, o.targets()...)

	t.Run("TargetsUp", func(t *testing.T) {
		took := poll.Until(t, obsWait, "Prometheus scraping all three hosts", func() (bool, string) {
			ts, err := o.prom.Targets()
			if err != nil {
				return false, err.Error()
			}
			var bad []string
			for _, tg := range ts {
				if tg.Health != "up" {
					bad = append(bad, fmt.Sprintf("%s %s (%s)", tg.Labels["instance"], tg.Health, tg.LastError))
				}
			}
			return len(ts) == 3 && len(bad) == 0, fmt.Sprintf("%d targets, not up: %v", len(ts), bad)
		})
		t.Logf("all 3 targets up %v after Prometheus started", took.Round(10*time.Millisecond))
		o.waitValues(t, "gossip encrypted on every host", "vxovl_gossip_encrypted", o.each(1))
	})

	t.Run("ClusterMembers", func(t *testing.T) {
		took := o.waitValues(t, "3 cluster members on every host", "vxovl_cluster_members", o.each(3))
		t.Logf("vxovl_cluster_members 3 on every host after %v", took.Round(10*time.Millisecond))
	})

	t.Run("RemoteEndpointsAndAPIHistogram", func(t *testing.T) {
		remote := fmt.Sprintf(`vxovl_endpoints{vni="%d",location="remote"}`, obsVNI)
		local := fmt.Sprintf(`vxovl_endpoints{vni="%d",location="local"}`, obsVNI)
		o.waitValues(t, "no remote endpoint yet", remote, o.each(0))
		o.waitValues(t, "no local endpoint yet", local, o.each(0))
		// What docker run and docker rm ask host 2's plugin, once each.
		runCalls := []string{"NetworkDriver.CreateEndpoint", "NetworkDriver.Join"}
		rmCalls := []string{"NetworkDriver.Leave", "NetworkDriver.DeleteEndpoint"}
		before := map[string]float64{}
		for _, m := range append(runCalls, rmCalls...) {
			before[m] = o.count(t, 2, m)
		}

		run := time.Now()
		l.MustDocker(t, 2, "run", "-d", "--name", "obs2", "--network", obsNet, "vxovl/busybox", "sleep", "3600")
		took := o.waitValues(t, "host 2's container as a remote endpoint on hosts 1 and 3 (and local on 2)",
			remote, map[int]float64{1: 1, 2: 0, 3: 1})
		o.waitValues(t, "host 2's container as its local endpoint", local, map[int]float64{1: 0, 2: 1, 3: 0})
		t.Logf("Prometheus saw host 2's container on hosts 1 and 3 %v after docker run returned (%v after it started)",
			took.Round(10*time.Millisecond), time.Since(run).Round(10*time.Millisecond))
		for _, m := range runCalls {
			o.waitCount(t, 2, m, before[m]+1)
		}
		for _, m := range rmCalls {
			if n := o.count(t, 2, m); n != before[m] {
				t.Errorf("host 2: %s counted %v after docker run, %v before: docker run does not call it", m, n, before[m])
			}
		}

		l.MustDocker(t, 2, "rm", "-f", "obs2")
		took = o.waitValues(t, "host 2's container gone from hosts 1 and 3", remote, o.each(0))
		o.waitValues(t, "host 2's container gone from host 2", local, o.each(0))
		t.Logf("Prometheus saw host 2's container gone from hosts 1 and 3 %v after docker rm returned", took.Round(10*time.Millisecond))
		for _, m := range rmCalls {
			o.waitCount(t, 2, m, before[m]+1)
		}
		for _, m := range runCalls {
			if n := o.count(t, 2, m); n != before[m]+1 {
				t.Errorf("host 2: %s counted %v after docker run and rm, %v before: want one call", m, n, before[m])
			}
		}
		// The histogram and the request counter count the same calls.
		for _, m := range append(runCalls, rmCalls...) {
			ok := o.value(t, 2, fmt.Sprintf(`vxovl_api_requests_total{method=%q,result="ok"}`, m))
			if n := o.count(t, 2, m); ok != n {
				t.Errorf("host 2: %s: vxovl_api_requests_total{result=\"ok\"} %v, histogram count %v", m, ok, n)
			}
		}
	})

	t.Run("PromtoolCheckMetrics", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			body, err := l.GetFromWire(o.url(i, "/metrics"))
			if err != nil {
				t.Fatalf("host %d: %v", i, err)
			}
			for _, name := range []string{"vxovl_build_info", "vxovl_cluster_members", "vxovl_endpoints",
				"vxovl_api_request_duration_seconds_bucket", "go_goroutines", "process_resident_memory_bytes"} {
				if !strings.Contains(body, "\n"+name) {
					t.Errorf("host %d: /metrics has no %s", i, name)
				}
			}
			if strings.Contains(body, key) {
				t.Errorf("host %d: /metrics shows the GOSSIP_KEY", i)
			}
			out, err := CheckMetrics(t, body)
			if err != nil {
				t.Errorf("host %d: promtool check metrics found problems in /metrics (%d bytes): %v\n%s", i, len(body), err, out)
			} else {
				t.Logf("host %d: promtool check metrics: clean (%d bytes, %d lines)", i, len(body), strings.Count(body, "\n"))
			}
		}
	})

	// What host 1 shows of the cluster: every member by name and the network by the name the
	// operator gave it (each host has its own ID for it). Host 1 has no container on it: the
	// name must come from Docker's network, not from a container's connect.
	want := []string{obsNode(1), obsNode(2), obsNode(3), obsNet}

	t.Run("StatusPageInChromium", func(t *testing.T) {
		page := l.Browse(t, o.url(1, "/"), "status-h1")
		for _, w := range want {
			if !strings.Contains(page.Text, w) {
				t.Errorf("host 1's status page does not show %q; its text:\n%s", w, page.Text)
			}
		}
		if strings.Contains(page.DOM, key) {
			t.Errorf("host 1's status page shows the GOSSIP_KEY")
		}
		js, err := l.GetFromWire(o.url(1, "/status.json"))
		if err != nil {
			t.Fatalf("host 1: %v", err)
		}
		for _, w := range want {
			if !strings.Contains(js, w) {
				t.Errorf("host 1's /status.json does not show %q:\n%s", w, js)
			}
		}
		if strings.Contains(js, key) {
			t.Errorf("host 1's /status.json shows the GOSSIP_KEY")
		}
	})

	t.Run("VxovlStatus", func(t *testing.T) {
		out, err := l.VxovlStatus(t, 1)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		t.Logf("vxovl status on host 1:\n%s", out)
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("vxovl status on host 1 does not show %q", w)
			}
		}
		if strings.Contains(out, key) {
			t.Errorf("vxovl status on host 1 shows the GOSSIP_KEY")
		}
	})
	t.Logf("TestObservability body took %v (lab down follows)", time.Since(start).Round(10*time.Millisecond))
}

// obsNode is host i's cluster name in this test.
func obsNode(i int) string { return fmt.Sprintf("obs-h%d", i) }

// obsGossipKey is a fresh 32-byte gossip key, base64 as GOSSIP_KEY takes it.
func obsGossipKey(t testing.TB) string {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatalf("gossip key: %v", err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

// obsLab is the lab with its Prometheus, which scrapes every host's METRICS_ADDR.
type obsLab struct {
	*Lab
	prom *Prometheus
}

func (o *obsLab) metricsAddr(i int) string { return fmt.Sprintf("%s:%d", o.Addr(i), obsMetricsPort) }

func (o *obsLab) url(i int, path string) string { return "http://" + o.metricsAddr(i) + path }

func (o *obsLab) targets() []string {
	var ts []string
	for i := 1; i <= o.N; i++ {
		ts = append(ts, o.metricsAddr(i))
	}
	return ts
}

// each wants v on every host.
func (o *obsLab) each(v float64) map[int]float64 {
	m := map[int]float64{}
	for i := 1; i <= o.N; i++ {
		m[i] = v
	}
	return m
}

// hostValues is expr's value on each host as Prometheus last scraped it, by the series'
// instance; more than one series for a host is an error.
func (o *obsLab) hostValues(expr string) (map[int]float64, error) {
	samples, err := o.prom.Query(expr)
	if err != nil {
		return nil, err
	}
	host := map[string]int{}
	for i := 1; i <= o.N; i++ {
		host[o.metricsAddr(i)] = i
	}
	vals := map[int]float64{}
	for _, s := range samples {
		i, ok := host[s.Metric["instance"]]
		if !ok {
			return nil, fmt.Errorf("%s: a series of an unknown instance: %v", expr, s.Metric)
		}
		if _, dup := vals[i]; dup {
			return nil, fmt.Errorf("%s: more than one series for host %d: %v", expr, i, samples)
		}
		vals[i] = s.Value
	}
	return vals, nil
}

// waitValues waits (obsWait) until expr has the wanted value on each host in want, and returns
// how long that took. A host without the series has not the wanted value: a gauge is there
// from the start.
func (o *obsLab) waitValues(t testing.TB, what, expr string, want map[int]float64) time.Duration {
	t.Helper()
	return poll.Until(t, obsWait, what+" ("+expr+")", func() (bool, string) {
		got, err := o.hostValues(expr)
		if err != nil {
			return false, err.Error()
		}
		for _, i := range slices.Sorted(maps.Keys(want)) {
			if v, ok := got[i]; !ok || v != want[i] {
				return false, fmt.Sprintf("want %v by host, Prometheus has %v", want, got)
			}
		}
		return true, ""
	})
}

// value is expr's value on host i now (0 when it has no series: an untouched counter).
func (o *obsLab) value(t testing.TB, i int, expr string) float64 {
	t.Helper()
	got, err := o.hostValues(expr)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return got[i]
}

// count is how many calls of a plugin API method host i's histogram has counted.
func (o *obsLab) count(t testing.TB, i int, method string) float64 {
	t.Helper()
	return o.value(t, i, obsCountExpr(method))
}

// waitCount waits until host i's histogram has counted n calls of method; more is a failure
// at once.
func (o *obsLab) waitCount(t testing.TB, i int, method string, n float64) {
	t.Helper()
	expr := obsCountExpr(method)
	poll.Until(t, obsWait, fmt.Sprintf("host %d: %s = %v", i, expr, n), func() (bool, string) {
		v := o.value(t, i, expr)
		if v > n {
			t.Fatalf("host %d: %s = %v, want %v: counted more calls than were made", i, expr, v, n)
		}
		return v == n, fmt.Sprintf("Prometheus has %v", v)
	})
}

func obsCountExpr(method string) string {
	return fmt.Sprintf("vxovl_api_request_duration_seconds_count{method=%q}", method)
}
