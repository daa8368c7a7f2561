package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// The run-latency host (issue 9): 50 networks with 20 remote endpoints each, published by a fake
// member, so that every reconcile pass checks 50 overlays and syncs 1,000 neighbor entries.
const (
	runLatNetworks   = 50
	runLatRemotesPer = 20
	runLatFirstIP    = 200  // remote endpoints are .200-.219 of each subnet; Docker's IPAM starts at .2
	runLatMTU        = 1450 // the lab underlay's 1500 less VXLAN's 50, set on both sides explicitly
	runLatVNIBase    = 15000
	// runLatBusy is the "interval" of passes run back to back on demand.
	runLatBusy = "busy"
)

// TestRunLatency measures the wall time of `docker run -d --network netK` on a host with 50
// vxovl networks and 1,000 remote endpoints, with reconcile passes running every second (the
// minimum RECONCILE_INTERVAL) and, as a control, with none (1h). Issue 9: a pass used to hold the
// driver lock through every network's health check and peer sync, so CreateEndpoint and Join,
// and with them docker run, waited for the whole pass.
//
// Next to each run's wall time it samples GET /vxovl/state every 50 ms, which waits for nothing
// but the driver lock: it shows the lock itself, without the noise of starting containers.
//
// It runs only with VXOVL_BENCH=1 (make bench-run-latency) and reports, it does not assert:
//
//	VXOVL_RUNLAT_PLUGINS   label=TREE,... source trees whose build/plugin to measure (make plugin
//	                       in each; relative to the repository), alternated; default main=.
//	VXOVL_RUNLAT_INTERVALS RECONCILE_INTERVAL values, default 1s,1h,busy; busy is 1h with
//	                       on-demand passes back to back (POST /vxovl/reconcile) during the runs,
//	                       as cluster churn can cause: the worst case of the old lock
//	VXOVL_RUNLAT_ROUNDS    times to measure every plugin and interval (default 1)
//	VXOVL_RUNLAT_RUNS      docker runs per measurement (default 30), over as many networks
//
// Each measurement starts from nothing: a fresh plugin state, the fake member, 50 networks
// created, the 1,000 neighbor entries programmed; then one warm-up run, the timed runs, and
// everything removed again.
func TestRunLatency(t *testing.T) {
	RequireBench(t)
	trees := runLatTrees(t)
	intervals := strings.Split(envOr("VXOVL_RUNLAT_INTERVALS", "1s,1h,"+runLatBusy), ",")
	rounds := runLatInt(t, "VXOVL_RUNLAT_ROUNDS", 1, 1, 20)
	runs := runLatInt(t, "VXOVL_RUNLAT_RUNS", 30, 1, runLatNetworks-1)

	bins := map[string]string{}
	dir := t.TempDir()
	for _, tree := range trees {
		bins[tree.Label] = BuildFakeMember(t, tree, dir)
	}
	l := Up(t, 1)
	fakeAddr := l.Subnet + ".240"
	if out, err := l.run(nil, "exec", "wire", "ip", "addr", "add", fakeAddr+"/24", "dev", "ulbr"); err != nil {
		t.Fatalf("the fake member's address in the wire namespace: %v\n%s", err, out)
	}

	nets := make([]FakeNetwork, runLatNetworks)
	remotes := map[netip.Addr]bool{}
	for k := range nets {
		nets[k] = FakeNetwork{VNI: uint32(runLatVNIBase + k + 1), Subnet: netip.MustParsePrefix(fmt.Sprintf("10.150.%d.0/24", k+1))}
		for r := range runLatRemotesPer {
			remotes[netip.AddrFrom4([4]byte{10, 150, byte(k + 1), byte(runLatFirstIP + r)})] = true
		}
	}

	var results []runLatResult
	for round := 1; round <= rounds; round++ {
		for _, interval := range intervals {
			order := slices.Clone(trees)
			if round%2 == 0 { // every other round the other way round, against drift in the load
				slices.Reverse(order)
			}
			for _, tree := range order {
				res := measureRunLatency(t, l, tree, bins[tree.Label], fakeAddr, interval, nets, remotes, runs)
				res.Round = round
				t.Logf("%s RECONCILE_INTERVAL=%s round %d: p50 %s p90 %s max %s ms; %d passes in %v (a pass %s ms); GET /vxovl/state %s ms; load %.1f-%.1f",
					tree.Label, interval, round, ms(Percentile(res.Lat, 50)), ms(Percentile(res.Lat, 90)),
					ms(Percentile(res.Lat, 100)), res.Passes, res.Elapsed.Round(time.Second), ms(res.Pass),
					stateLatency(res.State), res.Load[0], res.Load[1])
				results = append(results, res)
			}
		}
	}
	t.Logf("docker run -d latency, %d networks, %d remote endpoints, %d runs per row:\n%s",
		runLatNetworks, len(remotes), runs, runLatTable(trees, intervals, results))
}

// runLatResult is one measurement: one plugin, one interval.
type runLatResult struct {
	Label, Interval string
	Round           int
	Lat             []time.Duration // each docker run's wall time
	Passes          uint64          // reconcile passes the driver counted during the runs
	Elapsed         time.Duration   // of the runs
	Load            [2]float64      // 1-minute load average before and after the runs
	Create          time.Duration   // creating the 50 networks
	Program         time.Duration   // from the last network to all 1,000 neighbor entries
	Pass            time.Duration   // median of on-demand passes (POST /vxovl/reconcile) after the runs
	// State is the latency of GET /vxovl/state, sampled every 50 ms during the runs: it takes the
	// driver lock and nothing slow, so it shows how long the lock was held by others.
	State []time.Duration
}

func measureRunLatency(t *testing.T, l *Lab, tree PluginTree, bin, fakeAddr, interval string,
	nets []FakeNetwork, remotes map[netip.Addr]bool, runs int) runLatResult {
	t.Helper()
	res := runLatResult{Label: tree.Label, Interval: interval}
	fake := l.StartFakeMember(t, bin, fakeAddr, l.Addr(1), runLatMTU, runLatRemotesPer, runLatFirstIP, nets)
	defer fake.Stop(t)
	reconcileInterval := interval
	if interval == runLatBusy {
		reconcileInterval = "1h"
	}
	l.InstallPluginTree(t, 1, tree, "PEERS="+fakeAddr, "RECONCILE_INTERVAL="+reconcileInterval)
	// Clean-ups log rather than fail: after a failure, lab down removes what they could not.
	defer l.cleanUp(t, "plugin", "disable", "-f", PluginName)

	start := time.Now()
	names := make([]string, len(nets))
	for k, n := range nets {
		names[k] = fmt.Sprintf("rl%02d", k+1)
		l.MustDocker(t, 1, "network", "create", "-d", Driver, "--subnet", n.Subnet.String(),
			"-o", fmt.Sprint("vni=", n.VNI), "-o", fmt.Sprint("mtu=", runLatMTU), names[k])
	}
	defer l.cleanUp(t, append([]string{"network", "rm"}, names...)...)
	res.Create = time.Since(start)
	res.Program = poll.Until(t, 3*time.Minute, "the fake member's endpoints programmed on host 1", func() (bool, string) {
		n := l.CountNeighbors(t, 1, remotes)
		return n == len(remotes), fmt.Sprintf("%d of %d permanent neighbor entries\n%s", n, len(remotes), fake.Log())
	})

	var containers []string
	defer func() {
		if len(containers) > 0 {
			l.cleanUp(t, append([]string{"rm", "-f"}, containers...)...)
		}
	}()
	run := func(name, network string) time.Duration {
		containers = append(containers, name)
		took, err := l.timeDockerRun(1, name, network)
		if err != nil {
			t.Fatalf("%s: %v\n%s", tree.Label, err, l.PluginLog(1))
		}
		return took
	}
	// The first run after the plugin starts pays for warming caches: on the one network the
	// timed runs leave out.
	run("rl-warm", names[len(names)-1])

	before := l.pluginState(t, 1).Driver.Reconciles
	stopPasses := func() {}
	if interval == runLatBusy {
		stopPasses = l.passesBackToBack(t, 1)
	}
	stopSampling := l.sampleState(t, 1, 50*time.Millisecond)
	res.Load[0] = LoadAvg()
	start = time.Now()
	for i := range runs {
		res.Lat = append(res.Lat, run(fmt.Sprintf("rl-%d", i), names[i*(len(names)-1)/runs]))
	}
	res.Elapsed = time.Since(start)
	res.Load[1] = LoadAvg()
	res.State = stopSampling()
	stopPasses()
	res.Passes = l.pluginState(t, 1).Driver.Reconciles - before
	// How long a whole pass takes here: what a run could wait for when a pass held the lock.
	var passes []time.Duration
	for range 3 {
		start := time.Now()
		l.pluginPost(t, 1, "/vxovl/reconcile")
		passes = append(passes, time.Since(start))
	}
	res.Pass = Percentile(passes, 50)
	return res
}

// passesBackToBack asks host i's plugin for one reconcile pass after another until the returned
// function is called, which fails the test if a pass request failed.
func (l *Lab) passesBackToBack(t testing.TB, i int) (stop func()) {
	t.Helper()
	client := pluginClient(l.pluginPID(t, i))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://vxovl/vxovl/reconcile", nil)
			resp, err := client.Do(req)
			if err != nil {
				if ctx.Err() == nil {
					done <- err
					return
				}
				break
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				done <- fmt.Errorf("POST /vxovl/reconcile: %s", resp.Status)
				return
			}
		}
		done <- nil
	}()
	return func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("host %d: passes back to back: %v", i, err)
		}
	}
}

// sampleState times GET /vxovl/state on host i's plugin every period until the returned function
// is called, which returns the latencies (and fails the test if a request failed).
func (l *Lab) sampleState(t testing.TB, i int, period time.Duration) (stop func() []time.Duration) {
	t.Helper()
	client := pluginClient(l.pluginPID(t, i))
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		lat []time.Duration
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				done <- r
				return
			case <-tick.C:
			}
			start := time.Now()
			resp, err := client.Get("http://vxovl/vxovl/state")
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
			if err != nil {
				r.err = err
				done <- r
				return
			}
			r.lat = append(r.lat, time.Since(start))
		}
	}()
	return func() []time.Duration {
		t.Helper()
		cancel()
		r := <-done
		if r.err != nil {
			t.Fatalf("host %d: sampling GET /vxovl/state: %v", i, r.err)
		}
		return r.lat
	}
}

// cleanUp runs a clean-up docker command on host 1 and logs its failure.
func (l *Lab) cleanUp(t testing.TB, args ...string) {
	t.Helper()
	if out, err := l.Docker(t, 1, args...); err != nil {
		t.Logf("clean-up: %v\n%s", err, out)
	}
}

// timeDockerRun is the wall time of the docker client's `run -d` of a sleeping busybox on host i,
// called directly (lab.sh would add a shell's start to every figure).
func (l *Lab) timeDockerRun(i int, name, network string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "-H", l.DockerHost(i), "run", "-d", "--name", name,
		"--network", network, "vxovl/busybox", "sleep", "600")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("host %d: docker run --network %s: %w\n%s", i, network, err, out)
	}
	return took, nil
}

// runLatTable is the results as a table: one row per measurement, then every plugin and interval
// over all rounds.
func runLatTable(trees []PluginTree, intervals []string, results []runLatResult) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "plugin\tinterval\tround\truns\tp50 ms\tp90 ms\tmax ms\tpasses/s\tpass ms\tstate p50/p99/max ms\tload\t50 creates s\tprogram s\t")
	for _, r := range results {
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%.2f\t%s\t%s\t%.1f-%.1f\t%.1f\t%.1f\t\n", r.Label, r.Interval, r.Round,
			len(r.Lat), ms(Percentile(r.Lat, 50)), ms(Percentile(r.Lat, 90)), ms(Percentile(r.Lat, 100)),
			float64(r.Passes)/r.Elapsed.Seconds(), ms(r.Pass), stateLatency(r.State), r.Load[0], r.Load[1], r.Create.Seconds(), r.Program.Seconds())
	}
	for _, interval := range intervals {
		for _, tree := range trees {
			var all, state []time.Duration
			var passes uint64
			var elapsed time.Duration
			for _, r := range results {
				if r.Label == tree.Label && r.Interval == interval {
					all = append(all, r.Lat...)
					state = append(state, r.State...)
					passes += r.Passes
					elapsed += r.Elapsed
				}
			}
			fmt.Fprintf(w, "%s\t%s\tall\t%d\t%s\t%s\t%s\t%.2f\t\t%s\t\t\t\t\n", tree.Label, interval, len(all),
				ms(Percentile(all, 50)), ms(Percentile(all, 90)), ms(Percentile(all, 100)), float64(passes)/elapsed.Seconds(),
				stateLatency(state))
		}
	}
	w.Flush()
	return b.String()
}

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// stateLatency is "p50/p99/max" of GET /vxovl/state latencies in milliseconds, to 0.1 ms.
func stateLatency(ds []time.Duration) string {
	f := func(p float64) string { return strconv.FormatFloat(float64(Percentile(ds, p))/1e6, 'f', 1, 64) }
	return f(50) + "/" + f(99) + "/" + f(100)
}

// runLatTrees reads VXOVL_RUNLAT_PLUGINS (label=TREE,...; default main=the repository).
func runLatTrees(t *testing.T) []PluginTree {
	t.Helper()
	spec := envOr("VXOVL_RUNLAT_PLUGINS", "main=.")
	var trees []PluginTree
	seen := map[string]bool{}
	for _, f := range strings.Split(spec, ",") {
		label, dir, ok := strings.Cut(f, "=")
		if !ok || label == "" || dir == "" || seen[label] || strings.ContainsAny(label, " \t/") {
			t.Fatalf("VXOVL_RUNLAT_PLUGINS=%q: want label=TREE,... with distinct labels", spec)
		}
		seen[label] = true
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(RepoRoot(), dir)
		}
		tree := PluginTree{Label: label, Dir: filepath.Clean(dir)}
		if _, err := os.Stat(filepath.Join(tree.PluginDir(), "config.json")); err != nil {
			t.Fatalf("plugin %s: %v (run make plugin in %s)", label, err, tree.Dir)
		}
		trees = append(trees, tree)
	}
	return trees
}

func runLatInt(t *testing.T, key string, def, lo, hi int) int {
	t.Helper()
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		t.Fatalf("%s=%q: want a number from %d to %d", key, v, lo, hi)
	}
	return n
}
