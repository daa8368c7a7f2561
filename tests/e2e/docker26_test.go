package e2e

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// Docker 26 (Debian trixie's docker.io 26.1, compose v2): vxovl works there as on 20.10. One
// 2-host lab runs the cross-host scenario, the compose example with compose v2, and checks the
// lab's own resolver as the plugin sees it.
func TestDocker26(t *testing.T) {
	l := UpWith(t, 2, Options{Docker: Docker26})
	if v := l.MustDocker(t, 1, "version", "-f", "{{.Server.Version}}"); !strings.HasPrefix(v, "26.") {
		t.Fatalf("host 1 runs dockerd %s, want 26.x", v)
	}
	if v := l.MustCompose(t, 1, "version", "--short"); !strings.HasPrefix(v, "2.") {
		t.Fatalf("the lab's compose on Docker 26 is %q, want v2", v)
	}
	for i := 1; i <= 2; i++ {
		l.InstallPlugin(t, i, "PEERS="+l.PeersExcept(i))
	}

	t.Run("cross-host", func(t *testing.T) { crossHost(t, l) })
	t.Run("compose v2 example", func(t *testing.T) { composeExample(t, l) })

	t.Run("plugin sees the lab's resolver and dockerd", func(t *testing.T) { pluginSeesLab(t, l, 1) })

	// dockerd recreates its socket at each start while --live-restore keeps the plugin running:
	// the plugin must see the new socket, not keep a bind of the old one.
	t.Run("plugin reaches dockerd after a live-restore restart", func(t *testing.T) {
		// busybox sleep as PID 1 ignores SIGTERM: dockerd 26 would wait 10s for it at each stop.
		l.MustDocker(t, 1, "rm", "-f", "c1")
		l.lab(t, "stop-host", "1")
		l.lab(t, "start-host", "1", "--live-restore")
		pid := l.waitPluginPID(t, 1)
		l.lab(t, "stop-host", "1")
		l.lab(t, "start-host", "1", "--live-restore")
		if now := l.waitPluginPID(t, 1); now != pid {
			t.Fatalf("the plugin restarted (pid %d, was %d): --live-restore should keep it", now, pid)
		}
		if err := l.pluginSeesDockerd(1); err != nil {
			t.Error(err)
		}
	})

	// A host-network container asks the host's resolver: the fake upstream answers it.
	t.Run("lab upstream DNS", func(t *testing.T) {
		up := l.ServeDNS(t, map[string]string{"upstream.lab.test": "10.1.2.3"})
		poll.Until(t, 20*time.Second, "a host-network container resolves upstream.lab.test", func() (bool, string) {
			out, err := l.Docker(t, 1, "run", "--rm", "--network", "host", "vxovl/busybox",
				"nslookup", "-type=a", "upstream.lab.test")
			return err == nil && strings.Contains(out, "10.1.2.3"), out
		})
		var asked bool
		for _, q := range up.Queries() {
			asked = asked || (q.Name == "upstream.lab.test." && q.From.String() == l.Addr(1))
		}
		if !asked {
			t.Errorf("the fake upstream never heard host 1 (%s) ask for upstream.lab.test: %v", l.Addr(1), up.Queries())
		}
	})

	// Down with dockerd 26, a plugin and a container still running leaves nothing behind.
	t.Run("down leaves nothing", func(t *testing.T) {
		start := time.Now()
		if err := l.Down(); err != nil {
			t.Fatal(err)
		}
		t.Logf("lab down 2 (Docker 26): %v", time.Since(start).Round(10*time.Millisecond))
		if left, err := l.Leftovers(); err != nil || len(left) > 0 {
			t.Errorf("lab down left %v (%v)", left, err)
		}
	})
}

// pluginSeesLab checks host i's plugin: it resolves through the lab's DNS only (dockerd binds
// the host's resolv.conf into plugins with host networking) and reaches its own host's dockerd
// through the "docker" mount.
func pluginSeesLab(t *testing.T, l *Lab, i int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/etc/resolv.conf", l.pluginPID(t, i)))
	if err != nil {
		t.Fatalf("host %d: the plugin's resolv.conf: %v", i, err)
	}
	if got, want := nameservers(string(b)), []string{l.DNS()}; !slices.Equal(got, want) {
		t.Errorf("host %d: the plugin's nameservers %v, want only the lab's %v:\n%s", i, got, want, b)
	}
	if err := l.pluginSeesDockerd(i); err != nil {
		t.Error(err)
	}
}

// pluginSeesDockerd checks that host i's plugin finds host i's current API socket at
// /run/host/docker.sock (the "docker" mount).
func (l *Lab) pluginSeesDockerd(i int) error {
	pid, err := l.findPluginPID(i)
	if err != nil {
		return err
	}
	host, err := os.Stat(strings.TrimPrefix(l.DockerHost(i), "unix://"))
	if err != nil {
		return err
	}
	inPlugin, err := os.Stat(fmt.Sprintf("/proc/%d/root/run/host/docker.sock", pid))
	if err != nil {
		return fmt.Errorf("host %d: the plugin has no API socket: %w", i, err)
	}
	if !os.SameFile(host, inPlugin) {
		return fmt.Errorf("host %d: the plugin's /run/host/docker.sock is not dockerd's current socket %s", i, l.DockerHost(i))
	}
	return nil
}

// waitPluginPID is the pid of host i's plugin once it runs (just after a dockerd start it may not).
func (l *Lab) waitPluginPID(t testing.TB, i int) int {
	t.Helper()
	var pid int
	poll.Until(t, 15*time.Second, fmt.Sprintf("the plugin of host %d runs", i), func() (bool, string) {
		var err error
		pid, err = l.findPluginPID(i)
		return err == nil, fmt.Sprint(err)
	})
	return pid
}

// nameservers lists the nameserver lines of a resolv.conf.
func nameservers(resolvConf string) []string {
	var ns []string
	for _, line := range strings.Split(resolvConf, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "nameserver" {
			ns = append(ns, f[1])
		}
	}
	return ns
}
