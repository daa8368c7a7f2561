// Package e2e runs vxovl in a lab of real Docker hosts: one network namespace and one dockerd
// per simulated host, driven by examples/lab/lab.sh. The tests run only with VXOVL_E2E=1 (as
// root, with the lab's packages installed and build/plugin made: `make test` does all of it);
// with VXOVL_E2E=1 a missing prerequisite is a failure, not a skip.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"
)

// Lab settings the e2e tests use. A name and subnet of their own keep a test run from colliding
// with `make demo` or a lab someone brought up by hand.
const (
	DefaultName   = "vxe2e"
	DefaultSubnet = "10.97.0"
	// PluginName is what lab.sh install-plugin calls the plugin; drivers are "vxovl:latest".
	PluginName = "vxovl"
	Driver     = PluginName + ":latest"
)

// commandTimeout bounds every lab.sh and docker call so a hung daemon fails a test instead of
// eating the CI budget.
const commandTimeout = 2 * time.Minute

// Enabled reports whether the e2e tests were asked for.
func Enabled() bool { return os.Getenv("VXOVL_E2E") == "1" }

// Docker versions a lab's hosts can run (lab.sh LAB_DOCKER).
const (
	// Docker20 is the system's docker.io 20.10 with docker-compose 1.29 (compose v1).
	Docker20 = 20
	// Docker26 is Debian trixie's docker.io 26.1 with docker-compose 2.26 (compose v2), unpacked
	// beside the system's by make deps (lab.sh fetch-docker26).
	Docker26 = 26
)

// Options choose how UpWith builds a lab.
type Options struct {
	// Docker is the hosts' Docker version, Docker20 (also when zero) or Docker26.
	Docker int
}

// Lab is a running lab of N hosts, numbered from 1.
type Lab struct {
	Name          string // prefix of its namespaces (LAB_NAME)
	Subnet        string // first three octets of the underlay /24 (LAB_SUBNET)
	Dir           string // where hosts keep their data (LAB_DIR)
	N             int
	DockerVersion int // the hosts' Docker version (LAB_DOCKER): Docker20 or Docker26

	script string
}

// NewLab describes a lab without starting it. Settings come from VXOVL_E2E_LAB_NAME and
// VXOVL_E2E_LAB_SUBNET when set.
func NewLab() *Lab {
	name := envOr("VXOVL_E2E_LAB_NAME", DefaultName)
	return &Lab{
		Name:          name,
		Subnet:        envOr("VXOVL_E2E_LAB_SUBNET", DefaultSubnet),
		Dir:           filepath.Join(os.TempDir(), name),
		DockerVersion: Docker20,
		script:        filepath.Join(RepoRoot(), "examples", "lab", "lab.sh"),
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// RepoRoot is the repository's top directory: go test runs a package in its own directory,
// tests/e2e, two levels below it.
func RepoRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		return "../.."
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// Require skips the test unless VXOVL_E2E=1, and fails it when the lab cannot run here.
func Require(t testing.TB) {
	t.Helper()
	if !Enabled() {
		t.Skip("lab e2e test: set VXOVL_E2E=1 (as root; `make test` does)")
	}
	if err := Prerequisites(); err != nil {
		t.Fatalf("VXOVL_E2E=1 but the lab cannot run: %v", err)
	}
}

// Prerequisites says what is missing for the lab, or nil.
func Prerequisites() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"dockerd", "docker", "ip", "bridge", "nsenter", "unshare", "iperf3", "docker-registry", "docker-compose"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		missing = append(missing, "/bin/busybox (busybox-static)")
	}
	if _, err := os.Stat(filepath.Join(RepoRoot(), "build", "plugin", "config.json")); err != nil {
		missing = append(missing, "build/plugin (make plugin)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: run `make deps plugin` as root", strings.Join(missing, ", "))
	}
	return nil
}

// Up starts a lab of n Docker 20 hosts and tears it down when the test ends, even on failure.
func Up(t testing.TB, n int) *Lab {
	t.Helper()
	return UpWith(t, n, Options{})
}

// UpWith is Up with options: UpWith(t, 2, Options{Docker: Docker26}) runs the hosts on Docker 26.
// A Docker version that cannot run here fails the test and says what is missing.
func UpWith(t testing.TB, n int, opts Options) *Lab {
	t.Helper()
	Require(t)
	l := NewLab()
	switch opts.Docker {
	case 0, Docker20:
	case Docker26:
		l.DockerVersion = Docker26
	default:
		t.Fatalf("UpWith: Docker %d is not a lab version (Docker20 or Docker26)", opts.Docker)
	}
	if out, err := l.run(nil, "check-docker", strconv.Itoa(l.DockerVersion)); err != nil {
		t.Fatalf("VXOVL_E2E=1 but the lab cannot run Docker %d hosts: %v\n%s", l.DockerVersion, err, out)
	}
	// A lab left by an interrupted run would make `up` refuse.
	if _, err := l.run(nil, "down"); err != nil {
		t.Fatalf("clearing an old lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.dumpLogs(t)
		}
		start := time.Now()
		if out, err := l.run(nil, "down"); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
		t.Logf("lab down took %v", time.Since(start).Round(10*time.Millisecond))
	})
	start := time.Now()
	if out, err := l.run(nil, "up", strconv.Itoa(n)); err != nil {
		t.Fatalf("lab up %d: %v\n%s", n, err, out)
	}
	l.N = n
	t.Logf("lab up %d (Docker %d) took %v", n, l.DockerVersion, time.Since(start).Round(10*time.Millisecond))
	return l
}

// Down tears the lab down (idempotent).
func (l *Lab) Down() error {
	out, err := l.run(nil, "down")
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// Leftovers lists what the lab left on this machine: processes, mounts under its directory,
// network namespaces, the directory itself. Nothing after a clean down.
func (l *Lab) Leftovers() ([]string, error) {
	var left []string
	pids, err := l.run(nil, "pids")
	if err != nil {
		return nil, err
	}
	for _, p := range strings.Fields(pids) {
		left = append(left, "process "+p)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == l.Dir || strings.HasPrefix(f[4], l.Dir+"/")) {
			left = append(left, "mount "+f[4])
		}
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, l.Name+"-") {
			left = append(left, "namespace "+strings.Fields(line)[0])
		}
	}
	if _, err := os.Stat(l.Dir); !os.IsNotExist(err) {
		left = append(left, "directory "+l.Dir)
	}
	return left, nil
}

// run calls lab.sh with the lab's settings and extra environment.
func (l *Lab) run(env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, l.script, args...)
	cmd.Env = append(os.Environ(),
		"LAB_NAME="+l.Name, "LAB_SUBNET="+l.Subnet, "LAB_DIR="+l.Dir,
		"LAB_REGISTRY="+l.Registry(), "LAB_DNS="+l.DNS(), "LAB_DOCKER="+strconv.Itoa(l.DockerVersion))
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("lab.sh %s: timed out after %v", strings.Join(args, " "), commandTimeout)
	} else if err != nil {
		err = fmt.Errorf("lab.sh %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(out.String()), err
}

// Addr is host i's underlay address.
func (l *Lab) Addr(i int) string { return fmt.Sprintf("%s.%d", l.Subnet, i) }

// Registry is the address of the lab's registry (lab.sh registry), trusted by every dockerd.
func (l *Lab) Registry() string { return l.Subnet + ".250:5000" }

// DNS is the lab's upstream DNS address: every host's /etc/resolv.conf names it and nothing
// else, the plugin's included (dockerd binds the host's resolv.conf into it). ServeDNS answers
// there; otherwise queries time out inside the lab.
func (l *Lab) DNS() string { return l.Subnet + ".253" }

// HostDir is where host i keeps its docker data, plugin state and logs.
func (l *Lab) HostDir(i int) string { return filepath.Join(l.Dir, "h"+strconv.Itoa(i)) }

// DockerHost is host i's API endpoint, as DOCKER_HOST takes it.
func (l *Lab) DockerHost(i int) string {
	return "unix://" + filepath.Join(l.HostDir(i), "run", "docker.sock")
}

// Netns is the name of host i's network namespace.
func (l *Lab) Netns(i int) string { return fmt.Sprintf("%s-h%d", l.Name, i) }

// Docker runs the docker client against host i and returns its combined output.
func (l *Lab) Docker(t testing.TB, i int, args ...string) (string, error) {
	t.Helper()
	return l.run(nil, append([]string{"docker", strconv.Itoa(i)}, args...)...)
}

// MustDocker is Docker that fails the test on error.
func (l *Lab) MustDocker(t testing.TB, i int, args ...string) string {
	t.Helper()
	out, err := l.Docker(t, i, args...)
	if err != nil {
		t.Fatalf("host %d: docker %s: %v\n%s", i, strings.Join(args, " "), err, out)
	}
	return out
}

// Compose runs the lab's docker-compose against host i, in the test's directory (give -f): compose
// v1 (docker-compose 1.29) on Docker 20 hosts, v2 (2.26) on Docker 26 hosts. Both take -p,
// --profile and -f alike; they name containers differently (ComposeContainer finds them).
func (l *Lab) Compose(t testing.TB, i int, args ...string) (string, error) {
	t.Helper()
	return l.run(nil, append([]string{"compose", strconv.Itoa(i)}, args...)...)
}

// MustCompose is Compose that fails the test on error.
func (l *Lab) MustCompose(t testing.TB, i int, args ...string) string {
	t.Helper()
	out, err := l.Compose(t, i, args...)
	if err != nil {
		t.Fatalf("host %d: docker-compose %s: %v\n%s", i, strings.Join(args, " "), err, out)
	}
	return out
}

// ComposeContainer is the ID of the running container of a compose project's service on host i
// (compose v1 calls it P_S_1, v2 P-S-1; both label it).
func (l *Lab) ComposeContainer(t testing.TB, i int, project, service string) string {
	t.Helper()
	ids := strings.Fields(l.MustDocker(t, i, "ps", "-q",
		"--filter", "label=com.docker.compose.project="+project,
		"--filter", "label=com.docker.compose.service="+service))
	if len(ids) != 1 {
		t.Fatalf("host %d: compose project %s service %s: running containers %v, want one", i, project, service, ids)
	}
	return ids[0]
}

// Exec runs cmd in host i's network namespace.
func (l *Lab) Exec(t testing.TB, i int, cmd ...string) (string, error) {
	t.Helper()
	return l.run(nil, append([]string{"exec", strconv.Itoa(i)}, cmd...)...)
}

// InstallPlugin creates vxovl on host i from build/plugin (ADVERTISE_ADDR defaults to the
// host's underlay address), applies settings KEY=VALUE and enables it.
func (l *Lab) InstallPlugin(t testing.TB, i int, settings ...string) {
	t.Helper()
	l.installPlugin(t, i, nil, settings...)
}

// InstallPluginFrom is InstallPlugin with `docker plugin install REF` instead of create.
func (l *Lab) InstallPluginFrom(t testing.TB, i int, ref string, settings ...string) {
	t.Helper()
	l.installPlugin(t, i, []string{"LAB_PLUGIN_REF=" + ref}, settings...)
}

func (l *Lab) installPlugin(t testing.TB, i int, env []string, settings ...string) {
	t.Helper()
	start := time.Now()
	out, err := l.run(env, append([]string{"install-plugin", strconv.Itoa(i)}, settings...)...)
	if err != nil {
		t.Fatalf("host %d: install plugin: %v\n%s\n%s", i, err, out, l.PluginLog(i))
	}
	t.Logf("host %d: plugin installed and enabled in %v", i, time.Since(start).Round(10*time.Millisecond))
}

// StartRegistry starts the lab's registry on Registry().
func (l *Lab) StartRegistry(t testing.TB) {
	t.Helper()
	if out, err := l.run(nil, "registry"); err != nil {
		t.Fatalf("lab registry: %v\n%s", err, out)
	}
}

// PeersExcept lists every host's underlay address but i's, comma-separated (for PEERS=).
func (l *Lab) PeersExcept(i int) string {
	var peers []string
	for h := 1; h <= l.N; h++ {
		if h != i {
			peers = append(peers, l.Addr(h))
		}
	}
	return strings.Join(peers, ",")
}

// NetnsDir is host i's directory of overlay namespace pins (the plugin's netns mount, a shared
// mount that lab.sh makes; the host's /run/vxovl on a real host).
func (l *Lab) NetnsDir(i int) string { return filepath.Join(l.HostDir(i), "netns") }

// PluginMounts are the `docker plugin set` arguments that point host i's plugin mounts at the
// host's own directories, as lab.sh install-plugin sets them. `docker plugin upgrade` resets
// mount sources to the new version's defaults (it keeps env settings): set them again after it.
func (l *Lab) PluginMounts(i int) []string {
	d := l.HostDir(i)
	return []string{"state.source=" + filepath.Join(d, "state"), "netns.source=" + l.NetnsDir(i),
		"docker.source=" + filepath.Join(d, "run")}
}

// Overlays lists the overlay namespaces vxovl pinned on host i, as paths on this machine.
func (l *Lab) Overlays(t testing.TB, i int) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(l.NetnsDir(i), "vni-*"))
	if err != nil {
		t.Fatalf("listing overlay namespaces of host %d: %v", i, err)
	}
	return paths
}

// InNetns runs cmd inside the network namespace pinned at path (an overlay namespace).
func InNetns(t testing.TB, path string, cmd ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + path}, cmd...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Neighbors is the permanent neighbor table of an overlay namespace (ip neigh).
func Neighbors(t testing.TB, overlay string) string {
	t.Helper()
	out, err := InNetns(t, overlay, "ip", "neigh", "show", "nud", "permanent")
	if err != nil {
		t.Fatalf("ip neigh in %s: %v\n%s", overlay, err, out)
	}
	return out
}

// FDB is the forwarding database of an overlay namespace (bridge fdb), VXLAN entries included.
func FDB(t testing.TB, overlay string) string {
	t.Helper()
	out, err := InNetns(t, overlay, "bridge", "fdb", "show")
	if err != nil {
		t.Fatalf("bridge fdb in %s: %v\n%s", overlay, err, out)
	}
	return out
}

// Links lists the interface names in host i's network namespace.
func (l *Lab) Links(t testing.TB, i int) []string {
	t.Helper()
	out, err := exec.Command("ip", "-n", l.Netns(i), "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("links of host %d: %v\n%s", i, err, out)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		// "7: eth0@if8: <...": the name is the second field, without its peer suffix.
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		names = append(names, name)
	}
	return names
}

// ContainerIP is the address of container c on network net, on host i.
func (l *Lab) ContainerIP(t testing.TB, i int, c, net string) string {
	t.Helper()
	ip := l.MustDocker(t, i, "inspect", "-f",
		fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, net), c)
	if ip == "" {
		t.Fatalf("container %s on host %d has no address on %s", c, i, net)
	}
	return ip
}

// PluginLog is the tail of what matters in host i's dockerd log: the plugin's own output
// (tagged plugin=ID) and dockerd's warnings and errors.
func (l *Lab) PluginLog(i int) string {
	b, err := os.ReadFile(filepath.Join(l.HostDir(i), "dockerd.log"))
	if err != nil {
		return ""
	}
	var lines []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, " plugin=") || strings.Contains(line, "level=error") ||
			strings.Contains(line, "level=warning") || strings.Contains(line, "level=fatal") {
			lines = append(lines, line)
		}
	}
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	return strings.Join(lines, "\n")
}

func (l *Lab) dumpLogs(t testing.TB) {
	for i := 1; i <= l.N; i++ {
		t.Logf("--- host %d dockerd.log (tail) ---\n%s", i, l.PluginLog(i))
	}
}

// UpstreamDNS is a fake upstream DNS server on the lab's DNS address (Lab.DNS), in the underlay's
// own namespace: every host's resolv.conf names it, so hosts, plugins and host-network containers
// ask it, and nothing in the lab asks the machine's resolver.
type UpstreamDNS struct {
	records map[string]netip.Addr // fully qualified, lower case

	mu      sync.Mutex
	queries []DNSQuery
}

// DNSQuery is one question the fake upstream received.
type DNSQuery struct {
	Name string     // fully qualified, as asked
	Type string     // A, AAAA, ...
	From netip.Addr // the asker
}

// ServeDNS answers A queries for records (name -> IPv4 address) on DNS():53/udp until the test
// ends; any other question gets NXDOMAIN. It records every question (Queries).
func (l *Lab) ServeDNS(t testing.TB, records map[string]string) *UpstreamDNS {
	t.Helper()
	u := &UpstreamDNS{records: make(map[string]netip.Addr, len(records))}
	for name, ip := range records {
		a, err := netip.ParseAddr(ip)
		if err != nil || !a.Is4() {
			t.Fatalf("ServeDNS: %s -> %q is not an IPv4 address", name, ip)
		}
		u.records[dns.CanonicalName(name)] = a
	}
	addr := net.JoinHostPort(l.DNS(), "53")
	pc, err := listenPacketIn(filepath.Join("/run/netns", l.Name+"-wire"), addr)
	if err != nil {
		t.Fatalf("fake upstream DNS on %s in the lab's wire namespace: %v", addr, err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(u.answer)}
	served := make(chan error, 1)
	go func() { served <- srv.ActivateAndServe() }()
	t.Cleanup(func() {
		_ = srv.Shutdown()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Errorf("fake upstream DNS on %s did not stop within 10s", addr)
		}
	})
	return u
}

// Queries are the questions received so far, oldest first.
func (u *UpstreamDNS) Queries() []DNSQuery {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]DNSQuery(nil), u.queries...)
}

func (u *UpstreamDNS) answer(w dns.ResponseWriter, req *dns.Msg) {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	from, _ := netip.ParseAddrPort(w.RemoteAddr().String())
	for _, q := range req.Question {
		name := dns.CanonicalName(q.Name)
		u.mu.Lock()
		u.queries = append(u.queries, DNSQuery{Name: q.Name, Type: dns.TypeToString[q.Qtype], From: from.Addr().Unmap()})
		u.mu.Unlock()
		a, ok := u.records[name]
		switch {
		case !ok:
			resp.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA:
			resp.Answer = append(resp.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
				A:   a.AsSlice(),
			})
		}
	}
	_ = w.WriteMsg(resp)
}

// socketIn makes a socket inside the network namespace pinned at nsPath: a socket stays in the
// namespace it was made in. The thread that made it is switched and never switched back: its
// goroutine ends locked, which ends the thread too.
func socketIn[S any](nsPath string, open func() (S, error)) (S, error) {
	type result struct {
		s   S
		err error
	}
	made := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		var zero S
		ns, err := netns.GetFromPath(nsPath)
		if err != nil {
			made <- result{zero, fmt.Errorf("opening %s: %w", nsPath, err)}
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			made <- result{zero, fmt.Errorf("entering %s: %w", nsPath, err)}
			return
		}
		s, err := open()
		made <- result{s, err}
	}()
	r := <-made
	return r.s, r.err
}

// listenPacketIn opens a UDP socket bound to addr inside the network namespace pinned at nsPath.
func listenPacketIn(nsPath, addr string) (net.PacketConn, error) {
	return socketIn(nsPath, func() (net.PacketConn, error) { return net.ListenPacket("udp4", addr) })
}

// dialIn connects to addr from inside the network namespace at nsPath.
func dialIn(nsPath, network, addr string, timeout time.Duration) (net.Conn, error) {
	return socketIn(nsPath, func() (net.Conn, error) { return net.DialTimeout(network, addr, timeout) })
}
