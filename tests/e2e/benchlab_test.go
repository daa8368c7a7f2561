package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Helpers of the lab benchmarks (VXOVL_BENCH=1): a plugin from any source tree, a fake cluster
// member, neighbor counts and percentiles.

// RequireBench skips a lab benchmark unless VXOVL_BENCH=1 (they take minutes and load the
// machine: never part of `make test`), then requires the lab as Require does.
func RequireBench(t testing.TB) {
	t.Helper()
	if os.Getenv("VXOVL_BENCH") != "1" {
		t.Skip("lab benchmark: set VXOVL_BENCH=1 and VXOVL_E2E=1 (as root; `make bench-run-latency` does)")
	}
	Require(t)
}

// PluginTree is a source tree of vxovl whose plugin a benchmark installs: its build/plugin
// (make plugin in that tree) and the fake member built from its own cluster package.
type PluginTree struct {
	Label string // how the results name it, e.g. "old" or "main"
	Dir   string // the tree's top directory
}

// PluginDir is the tree's managed plugin directory (config.json and rootfs).
func (p PluginTree) PluginDir() string { return filepath.Join(p.Dir, "build", "plugin") }

// hasDockerMount says whether the plugin's config.json declares the "docker" mount (the
// Engine API socket's directory), which plugins built before it existed lack: `plugin set` of
// an unknown mount fails.
func (p PluginTree) hasDockerMount() (bool, error) {
	b, err := os.ReadFile(filepath.Join(p.PluginDir(), "config.json"))
	if err != nil {
		return false, fmt.Errorf("%w (run make plugin in %s)", err, p.Dir)
	}
	var cfg struct {
		Mounts []struct{ Name string }
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return false, fmt.Errorf("%s: %w", filepath.Join(p.PluginDir(), "config.json"), err)
	}
	for _, m := range cfg.Mounts {
		if m.Name == "docker" {
			return true, nil
		}
	}
	return false, nil
}

// InstallPluginTree replaces host i's plugin with the one built in tree, with an empty state
// directory: create, set (the state mount, the docker mount when the plugin has it,
// ADVERTISE_ADDR, settings KEY=VALUE) and enable. Networks of the old plugin must be gone.
func (l *Lab) InstallPluginTree(t testing.TB, i int, tree PluginTree, settings ...string) {
	t.Helper()
	docker, err := tree.hasDockerMount()
	if err != nil {
		t.Fatalf("plugin of %s: %v", tree.Label, err)
	}
	l.RemovePlugin(t, i)
	state := filepath.Join(l.HostDir(i), "state")
	if err := os.RemoveAll(state); err != nil {
		t.Fatalf("clearing host %d's plugin state: %v", i, err)
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	set := []string{"plugin", "set", PluginName, "state.source=" + state, "ADVERTISE_ADDR=" + l.Addr(i)}
	if docker {
		set = append(set, "docker.source="+filepath.Join(l.HostDir(i), "run"))
	}
	start := time.Now()
	l.MustDocker(t, i, "plugin", "create", PluginName, tree.PluginDir())
	l.MustDocker(t, i, append(set, settings...)...)
	if out, err := l.Docker(t, i, "plugin", "enable", PluginName); err != nil {
		t.Fatalf("host %d: enabling the plugin of %s: %v\n%s\n%s", i, tree.Label, err, out, l.PluginLog(i))
	}
	t.Logf("host %d: plugin of %s (%s) installed and enabled in %v", i, tree.Label, tree.Dir,
		time.Since(start).Round(10*time.Millisecond))
}

// RemovePlugin disables (if enabled) and removes host i's plugin, if any.
func (l *Lab) RemovePlugin(t testing.TB, i int) {
	t.Helper()
	enabled, err := l.Docker(t, i, "plugin", "inspect", "-f", "{{.Enabled}}", PluginName)
	if err != nil {
		return
	}
	if enabled == "true" {
		l.MustDocker(t, i, "plugin", "disable", "-f", PluginName)
	}
	l.MustDocker(t, i, "plugin", "rm", "-f", PluginName)
}

// BuildFakeMember builds tests/e2e/fakemember against tree's own cluster package (the record
// format must be the plugin's) into dir, and returns the binary's path. The source goes into the
// tree's build/ directory (git ignores it) for the build only, under a name that ./... patterns
// skip (a leading underscore), so nothing else in that tree compiles it.
func BuildFakeMember(t testing.TB, tree PluginTree, dir string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(RepoRoot(), "tests", "e2e", "fakemember", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(tree.Dir, "build", "_fakemember")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(pkg)
	if err := os.WriteFile(filepath.Join(pkg, "main.go"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "fakemember-"+tree.Label)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./build/_fakemember")
	cmd.Dir = tree.Dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the fake member against %s: %v\n%s", tree.Dir, err, out)
	}
	return bin
}

// FakeNetwork is a network a fake member publishes.
type FakeNetwork struct {
	VNI    uint32
	Subnet netip.Prefix
}

// FakeMember is a running fakemember process.
type FakeMember struct {
	cmd     *exec.Cmd
	done    chan error // the process's end, once
	log     string
	stopped bool
}

// StartFakeMember runs the fakemember binary on addr in the lab's wire namespace (addr must be
// on the underlay bridge's subnet and already assigned there): it joins peer's gossip and
// publishes nets with perNetwork endpoints each, from host number first in every subnet, at the
// given MTU. It returns once the records are published; Stop ends it (also at the test's end).
func (l *Lab) StartFakeMember(t testing.TB, bin, addr, peer string, mtu, perNetwork, first int, nets []FakeNetwork) *FakeMember {
	t.Helper()
	spec := make([]string, len(nets))
	for k, n := range nets {
		spec[k] = fmt.Sprintf("%d=%s", n.VNI, n.Subnet)
	}
	f := &FakeMember{done: make(chan error, 1), log: filepath.Join(t.TempDir(), "fakemember.log")}
	logf, err := os.Create(f.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// nsenter enters the namespace and execs the member: the process is the member itself.
	f.cmd = exec.Command("nsenter", "--net=/run/netns/"+l.Name+"-wire", bin,
		"-bind", addr, "-peer", peer, "-mtu", fmt.Sprint(mtu), "-per-network", fmt.Sprint(perNetwork),
		"-first", fmt.Sprint(first), "-networks", strings.Join(spec, ","))
	f.cmd.Stderr = logf
	out, err := f.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cmd.Start(); err != nil {
		t.Fatalf("starting the fake member: %v", err)
	}
	ready := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if strings.HasPrefix(s.Text(), "ready ") {
				ready <- s.Text()
			}
		}
		f.done <- f.cmd.Wait()
	}()
	t.Cleanup(func() { f.Stop(t) })
	select {
	case line := <-ready:
		t.Logf("fake member on %s (pid %d): %s", addr, f.cmd.Process.Pid, line)
	case err := <-f.done:
		f.done <- err
		t.Fatalf("fake member exited before it was ready: %v\n%s", err, f.Log())
	case <-time.After(time.Minute):
		t.Fatalf("fake member not ready within a minute\n%s", f.Log())
	}
	return f
}

// Log is what the fake member wrote on stderr (warnings and errors).
func (f *FakeMember) Log() string {
	b, _ := os.ReadFile(f.log)
	return string(b)
}

// Stop ends the fake member (TERM, KILL after 10 s) and waits for it; idempotent.
func (f *FakeMember) Stop(t testing.TB) {
	t.Helper()
	if f.stopped {
		return
	}
	f.stopped = true
	_ = f.cmd.Process.Signal(syscall.SIGTERM) // fails only if it has ended: done says how
	select {
	case err := <-f.done:
		if err != nil {
			t.Logf("fake member: %v\n%s", err, f.Log())
		}
	case <-time.After(10 * time.Second):
		_ = f.cmd.Process.Kill()
		<-f.done
		t.Errorf("fake member ignored TERM for 10s: killed\n%s", f.Log())
	}
}

// CountNeighbors counts, over host i's overlay namespaces, the permanent neighbor entries whose
// address is in want.
func (l *Lab) CountNeighbors(t testing.TB, i int, want map[netip.Addr]bool) int {
	t.Helper()
	n := 0
	for _, ov := range l.Overlays(t, i) {
		out, err := InNetns(t, ov, "ip", "neigh", "show", "nud", "permanent")
		if err != nil {
			// An overlay being made or removed right now: count it next time.
			continue
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			if a, err := netip.ParseAddr(f[0]); err == nil && want[a] {
				n++
			}
		}
	}
	return n
}

// LoadAvg is the machine's 1-minute load average.
func LoadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return math.NaN()
	}
	var one float64
	if _, err := fmt.Sscan(string(b), &one); err != nil {
		return math.NaN()
	}
	return one
}

// Percentile is the nearest-rank p-th percentile (0 < p <= 100) of ds; zero for none.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(k, len(s)-1))]
}
