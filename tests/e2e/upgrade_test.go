package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// The upgrade acceptance tests (issue 14): `docker plugin disable -f` + `enable`, and
// `docker plugin upgrade` between them, keep running containers connected, because the overlay
// namespaces are pinned in the plugin's netns mount (a shared host directory that dockerd never
// unmounts) and the next plugin process re-adopts them; and removing every network and then the
// plugin leaves nothing behind on the host.

const (
	upSubnet = "10.138.0.0/24"
	upNet    = "up"
)

// TestPluginUpgradeHitless: two hosts on Docker 20.10, the plugin installed from a local
// registry as :v1; host 1 runs `docker plugin disable -f`, `docker plugin upgrade` to :v2 and
// `docker plugin enable` while containers on both hosts ping each other at 10/s.
func TestPluginUpgradeHitless(t *testing.T) {
	l := Up(t, 2)
	l.StartRegistry(t)
	v1, v2 := l.Registry()+"/vxovl:v1", l.Registry()+"/vxovl:v2"
	pushTwoVersions(t, l, v1, v2)
	for i := 1; i <= 2; i++ {
		l.InstallPluginFrom(t, i, v1, "PEERS="+l.PeersExcept(i))
	}

	hitless(t, l, func(t *testing.T) {
		l.MustDocker(t, 1, "plugin", "disable", "-f", PluginName)
		l.MustDocker(t, 1, "plugin", "upgrade", "--grant-all-permissions", "--skip-remote-check", PluginName, v2)
		// Docker's upgrade resets the mounts' sources to the new config's defaults.
		l.MustDocker(t, 1, append([]string{"plugin", "set", PluginName}, l.PluginMounts(1)...)...)
		l.MustDocker(t, 1, "plugin", "enable", PluginName)
	})
	if ref := l.MustDocker(t, 1, "plugin", "inspect", "-f", "{{.PluginReference}}", PluginName); ref != v2 {
		t.Errorf("host 1 runs %s after the upgrade, want %s", ref, v2)
	}
}

// TestPluginDisableEnableHitless: the same with `disable -f` + `enable` alone, on Docker 20.10
// and on Docker 26.
func TestPluginDisableEnableHitless(t *testing.T) {
	for _, v := range []int{Docker20, Docker26} {
		t.Run(fmt.Sprintf("docker%d", v), func(t *testing.T) {
			l := UpWith(t, 2, Options{Docker: v})
			for i := 1; i <= 2; i++ {
				l.InstallPlugin(t, i, "PEERS="+l.PeersExcept(i))
			}
			hitless(t, l, func(t *testing.T) {
				l.MustDocker(t, 1, "plugin", "disable", "-f", PluginName)
				l.MustDocker(t, 1, "plugin", "enable", PluginName)
			})
		})
	}
}

// TestPluginRemoveLeavesNothing: after a disable -f + enable (so that the process that removes
// the overlays is one that re-adopted them), removing every container, every network and then
// the plugin leaves no pinned namespace, veth, bridge or VXLAN device on the host.
func TestPluginRemoveLeavesNothing(t *testing.T) {
	l := Up(t, 1)
	l.InstallPlugin(t, 1)
	for n, subnet := range map[string]string{"rm1": "10.139.0.0/24", "rm2": "10.139.1.0/24"} {
		l.MustDocker(t, 1, "network", "create", "-d", Driver, "--ipam-driver", Driver, "--subnet", subnet, n)
		l.MustDocker(t, 1, "run", "-d", "--name", "c-"+n, "--network", n, "vxovl/busybox", "sleep", "100000")
	}
	pins := l.Overlays(t, 1)
	if len(pins) != 2 {
		t.Fatalf("overlay namespaces on host 1: %v, want 2", pins)
	}
	var nsIDs []string // net:[inode], as mountinfo names a pinned namespace
	for _, p := range pins {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatalf("pin %s: %v", p, err)
		}
		nsIDs = append(nsIDs, fmt.Sprintf("net:[%d]", st.Ino))
	}
	l.MustDocker(t, 1, "plugin", "disable", "-f", PluginName)
	l.MustDocker(t, 1, "plugin", "enable", PluginName)
	if got := l.Overlays(t, 1); !slices.Equal(got, pins) {
		t.Fatalf("overlay namespaces after disable -f + enable: %v, want %v", got, pins)
	}

	l.MustDocker(t, 1, "rm", "-f", "c-rm1", "c-rm2")
	l.MustDocker(t, 1, "network", "rm", "rm1", "rm2")
	l.MustDocker(t, 1, "plugin", "disable", PluginName)
	l.MustDocker(t, 1, "plugin", "rm", "-f", PluginName)

	if left := l.Overlays(t, 1); len(left) != 0 {
		t.Errorf("pins left in %s: %v", l.NetnsDir(1), left)
	}
	if entries, err := os.ReadDir(l.NetnsDir(1)); err != nil || len(entries) != 0 {
		t.Errorf("pin directory %s: %v entries (%v), want empty", l.NetnsDir(1), len(entries), err)
	}
	// The pins' mounts, as this machine and host 1's dockerd see them.
	for _, mi := range []string{"/proc/self/mountinfo", fmt.Sprintf("/proc/%d/mountinfo", l.mhDockerdPID(t, 1))} {
		b, err := os.ReadFile(mi)
		if err != nil {
			t.Fatalf("%s: %v", mi, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, l.NetnsDir(1)+"/") || slices.ContainsFunc(nsIDs, func(id string) bool { return strings.Contains(line, id) }) {
				t.Errorf("%s still mounts an overlay namespace: %s", mi, line)
			}
		}
	}
	out, err := l.Exec(t, 1, "ip", "-o", "-d", "link", "show")
	if err != nil {
		t.Fatalf("ip -d link on host 1: %v\n%s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		switch {
		case name == "lo", name == "eth0": // the lab host's own, its underlay veth
		case name == "docker_gwbridge": // Docker's, kept after network rm (README: Limits)
		case strings.HasPrefix(name, "vx"), strings.Contains(line, " vxlan "), strings.Contains(line, " bridge "),
			strings.Contains(line, " veth "):
			t.Errorf("host 1 keeps %s after the networks and the plugin were removed: %s", name, line)
		}
	}
}

// pushTwoVersions pushes the plugin as v1 (build/plugin) and as v2 (the same build with one more
// file, so that the upgrade really replaces the plugin's rootfs and config digest).
func pushTwoVersions(t *testing.T, l *Lab, v1, v2 string) {
	t.Helper()
	dir := filepath.Join(l.Dir, "plugin-v2")
	if out, err := exec.Command("cp", "-a", filepath.Join(RepoRoot(), "build", "plugin"), dir).CombinedOutput(); err != nil {
		t.Fatalf("copying build/plugin: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "rootfs", "etc", "vxovl-e2e-version"), []byte("v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for ref, src := range map[string]string{v1: filepath.Join(RepoRoot(), "build", "plugin"), v2: dir} {
		l.MustDocker(t, 1, "plugin", "create", ref, src)
		l.MustDocker(t, 1, "plugin", "push", ref)
		l.MustDocker(t, 1, "plugin", "rm", ref)
	}
}

// hitless runs restart (the operator's commands on host 1) while c1 on host 1 and c2 on host 2
// ping each other at 10/s, and checks that at most one packet is lost each way, that both
// containers keep their interface (name, address, MAC), that a container started afterwards on
// host 1 reaches both, and that host 1 rejoined as itself (same node name, one member).
func hitless(t *testing.T, l *Lab, restart func(t *testing.T)) {
	t.Helper()
	for i := 1; i <= 2; i++ {
		l.MustDocker(t, i, "network", "create", "-d", Driver, "--ipam-driver", Driver, "--subnet", upSubnet, upNet)
		l.MustDocker(t, i, "run", "-d", "--name", "c"+strconv.Itoa(i), "--network", upNet, "vxovl/busybox", "sleep", "100000")
	}
	ip1, ip2 := l.ContainerIP(t, 1, "c1", upNet), l.ContainerIP(t, 2, "c2", upNet)
	l.waitPing(t, 1, "c1", ip2, 30*time.Second)
	l.waitPing(t, 2, "c2", ip1, 30*time.Second)
	if1, if2 := l.ifaceOf(t, 1, "c1", ip1), l.ifaceOf(t, 2, "c2", ip2)
	node := l.mhPluginState(t, 1).Node
	oldPID := l.pluginPID(t, 1)
	const caughtUp = "dropping the remote entries remembered from before the restart"
	caughtUpBefore := l.countLog(1, caughtUp)

	stop1 := pingFrom(t, l.MustDocker(t, 1, "inspect", "-f", "{{.State.Pid}}", "c1"), ip2)
	stop2 := pingFrom(t, l.MustDocker(t, 2, "inspect", "-f", "{{.State.Pid}}", "c2"), ip1)
	start := time.Now()
	restart(t)
	t.Logf("host 1's commands took %v", time.Since(start).Round(time.Millisecond))
	poll.Until(t, 30*time.Second, "host 1's new plugin serving", func() (bool, string) {
		pid, err := l.findPluginPID(1)
		if err != nil || pid == oldPID {
			return false, fmt.Sprintf("pid %d (%v)", pid, err)
		}
		_, err = l.getState(pid)
		return err == nil, fmt.Sprint(err)
	})
	t.Logf("host 1's plugin serving again %v after the first command", time.Since(start).Round(time.Millisecond))
	// The restore keeps the remote entries it found until the cluster has caught up, then drops
	// what the cluster no longer has: the pings run through that too.
	poll.Until(t, 30*time.Second, "host 1's new plugin caught up with the cluster", func() (bool, string) {
		n := l.countLog(1, caughtUp)
		return n > caughtUpBefore, fmt.Sprintf("%d log lines %q", n, caughtUp)
	})
	t.Logf("host 1's plugin caught up %v after the first command", time.Since(start).Round(time.Millisecond))

	for _, p := range []struct {
		what string
		stop func() (int, int)
	}{{"c1 -> c2", stop1}, {"c2 -> c1", stop2}} {
		sent, recv := p.stop()
		t.Logf("ping %s at 10/s through host 1's restart: %d sent, %d received, %d lost", p.what, sent, recv, sent-recv)
		if sent-recv > 1 {
			t.Errorf("ping %s lost %d of %d packets, want at most 1", p.what, sent-recv, sent)
		}
	}
	if got := l.ifaceOf(t, 1, "c1", ip1); got != if1 {
		t.Errorf("c1's overlay interface changed: was %q, now %q", if1, got)
	}
	if got := l.ifaceOf(t, 2, "c2", ip2); got != if2 {
		t.Errorf("c2's overlay interface changed: was %q, now %q", if2, got)
	}

	if got := l.mhPluginState(t, 1).Node; got != node {
		t.Errorf("host 1 came back as node %q, was %q", got, node)
	}
	poll.Until(t, 20*time.Second, "host 2 sees host 1 once, by its old name", func() (bool, string) {
		st := l.mhPluginState(t, 2)
		var named []string
		for _, m := range st.Members {
			if m.Addr == l.Addr(1) || m.Name == node {
				named = append(named, m.Name+"@"+m.Addr)
			}
		}
		return len(st.Members) == 2 && slices.Equal(named, []string{node + "@" + l.Addr(1)}), fmt.Sprint(st.Members)
	})

	// A container started afterwards on host 1 reaches both.
	l.MustDocker(t, 1, "run", "-d", "--name", "c3", "--network", upNet, "vxovl/busybox", "sleep", "100000")
	ip3 := l.ContainerIP(t, 1, "c3", upNet)
	l.waitPing(t, 1, "c3", ip2, 20*time.Second)
	l.waitPing(t, 2, "c2", ip3, 20*time.Second)
	l.waitPing(t, 1, "c3", ip1, 10*time.Second)
}

// ifaceOf describes container c's interface holding ip: "name addr/len mac", or "" if none does.
func (l *Lab) ifaceOf(t testing.TB, i int, c, ip string) string {
	t.Helper()
	addrs, err := l.Docker(t, i, "exec", c, "ip", "-o", "-4", "addr", "show")
	if err != nil {
		t.Fatalf("ip addr in %s on host %d: %v\n%s", c, i, err, addrs)
	}
	for _, line := range strings.Split(addrs, "\n") {
		f := strings.Fields(line) // 4: eth0    inet 10.138.0.5/24 brd ...
		if len(f) < 4 || f[2] != "inet" || !strings.HasPrefix(f[3], ip+"/") {
			continue
		}
		link := l.MustDocker(t, i, "exec", c, "ip", "-o", "link", "show", "dev", f[1])
		_, mac, _ := strings.Cut(link, "link/ether ")
		mac, _, _ = strings.Cut(mac, " ")
		return f[1] + " " + f[3] + " " + mac
	}
	return ""
}
