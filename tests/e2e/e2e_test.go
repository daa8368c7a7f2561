package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// TestMain clears a lab left by an interrupted run before the tests and after them.
func TestMain(m *testing.M) {
	if Enabled() && Prerequisites() == nil {
		if err := NewLab().Down(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: clearing an old lab:", err)
		}
	}
	code := m.Run()
	if Enabled() && Prerequisites() == nil {
		if err := NewLab().Down(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: lab down:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// The lab itself: up 3 with a plugin and a container running, then down, must leave no
// process, mount, namespace or directory behind.
func TestLabLeavesNothing(t *testing.T) {
	Require(t)
	l := NewLab()
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Down() })

	start := time.Now()
	if out, err := l.run(nil, "up", "3"); err != nil {
		t.Fatalf("lab up 3: %v\n%s", err, out)
	}
	l.N = 3
	t.Logf("lab up 3: %v", time.Since(start).Round(10*time.Millisecond))
	l.InstallPlugin(t, 2)
	l.MustDocker(t, 3, "run", "-d", "--name", "idle", "vxovl/busybox", "sleep", "600")
	l.StartRegistry(t)
	if pids, _ := l.run(nil, "pids"); pids == "" {
		t.Fatal("lab.sh pids sees no process of a running lab: down could not find them either")
	}

	start = time.Now()
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	t.Logf("lab down 3: %v", time.Since(start).Round(10*time.Millisecond))

	if left, err := l.Leftovers(); err != nil || len(left) > 0 {
		t.Errorf("lab down left %v (%v)", left, err)
	}
}

// (a) One host: two containers on a vxovl network reach each other, and removing the network
// leaves no overlay namespace and no link behind.
func TestSingleHost(t *testing.T) {
	l := Up(t, 1)
	l.InstallPlugin(t, 1)
	linksBefore := l.Links(t, 1)

	l.MustDocker(t, 1, "network", "create", "-d", Driver, "--subnet", "10.123.0.0/24", "n1")
	l.MustDocker(t, 1, "run", "-d", "--name", "ca", "--network", "n1", "vxovl/busybox", "sleep", "600")
	l.MustDocker(t, 1, "run", "-d", "--name", "cb", "--network", "n1", "vxovl/busybox", "sleep", "600")
	ipB := l.ContainerIP(t, 1, "cb", "n1")
	ipA := l.ContainerIP(t, 1, "ca", "n1")

	poll.Until(t, 10*time.Second, "ca pings cb", func() (bool, string) {
		out, err := l.Docker(t, 1, "exec", "ca", "ping", "-c1", "-W1", ipB)
		return err == nil, out
	})
	if out, err := l.Docker(t, 1, "exec", "cb", "ping", "-c1", "-W1", ipA); err != nil {
		t.Errorf("cb pings ca: %v\n%s", err, out)
	}
	if len(l.Overlays(t, 1)) == 0 {
		t.Errorf("no overlay namespace pinned under the propagated mount of host 1")
	}
	// The default MTU follows the underlay (the lab's veth: 1500) minus VXLAN's 50 bytes;
	// -o mtu overrides it for one network.
	if got := containerMTU(t, l, 1, "ca"); got != "1450" {
		t.Errorf("container MTU on the default network = %s, want 1450", got)
	}
	l.MustDocker(t, 1, "network", "create", "-d", Driver, "--subnet", "10.124.0.0/24", "-o", "mtu=1400", "n2")
	l.MustDocker(t, 1, "run", "-d", "--name", "cc", "--network", "n2", "vxovl/busybox", "sleep", "600")
	if got := containerMTU(t, l, 1, "cc"); got != "1400" {
		t.Errorf("container MTU with -o mtu=1400 = %s, want 1400", got)
	}
	if out, err := l.Docker(t, 1, "network", "create", "-d", Driver, "--subnet", "10.125.0.0/24", "-o", "mtu=100", "n3"); err == nil ||
		!strings.Contains(out, "bad -o mtu") {
		t.Errorf("mtu=100 accepted or unclear: %v\n%s", err, out)
	}

	l.MustDocker(t, 1, "rm", "-f", "ca", "cb", "cc")
	l.MustDocker(t, 1, "network", "rm", "n1", "n2")
	poll.Until(t, 10*time.Second, "overlay gone after network rm", func() (bool, string) {
		if o := l.Overlays(t, 1); len(o) > 0 {
			return false, fmt.Sprintf("overlay namespaces left: %v", o)
		}
		if after := withoutGwbridge(l.Links(t, 1)); !slices.Equal(sorted(after), sorted(withoutGwbridge(linksBefore))) {
			return false, fmt.Sprintf("host links %v, before the network %v", after, linksBefore)
		}
		return true, ""
	})
}

// (b) Packaging: the plugin pushed to a registry installs and enables on another host.
// containerMTU is the MTU of the container's first overlay interface.
func containerMTU(t *testing.T, l *Lab, host int, container string) string {
	t.Helper()
	return strings.TrimSpace(l.MustDocker(t, host, "exec", container, "cat", "/sys/class/net/eth0/mtu"))
}

func TestPluginPushInstall(t *testing.T) {
	l := Up(t, 2)
	l.StartRegistry(t)
	ref := l.Registry() + "/vxovl:e2e"

	l.MustDocker(t, 1, "plugin", "create", ref, RepoRoot()+"/build/plugin")
	l.MustDocker(t, 1, "plugin", "push", ref)

	l.InstallPluginFrom(t, 2, ref, "PEERS="+l.Addr(1), "LOG_LEVEL=debug")
	got := l.MustDocker(t, 2, "plugin", "inspect", "-f", "{{.Enabled}} {{.PluginReference}} {{.Settings.Env}}", PluginName)
	if !strings.HasPrefix(got, "true "+ref+" ") {
		t.Errorf("installed plugin: got %q, want enabled and from %s", got, ref)
	}
	for _, want := range []string{"PEERS=" + l.Addr(1), "ADVERTISE_ADDR=" + l.Addr(2), "LOG_LEVEL=debug"} {
		if !strings.Contains(got, want) {
			t.Errorf("installed plugin settings %q lack %s", got, want)
		}
	}
	// The driver answers: Docker lists it once the plugin is enabled.
	if info := l.MustDocker(t, 2, "info", "-f", "{{.Plugins.Network}}"); !strings.Contains(info, Driver) {
		t.Errorf("docker info network plugins %q lack %s", info, Driver)
	}
}

// Two hosts: containers on one vxovl network reach each other across the underlay, and each
// host's overlay has the other's endpoint in its neighbor and FDB tables.
func TestCrossHost(t *testing.T) {
	l := Up(t, 2)
	for i := 1; i <= 2; i++ {
		l.InstallPlugin(t, i, "PEERS="+l.PeersExcept(i))
	}
	crossHost(t, l)
	pluginSeesLab(t, l, 2)
}

// crossHost is TestCrossHost's scenario in a 2-host lab with vxovl installed and peered.
func crossHost(t *testing.T, l *Lab) {
	t.Helper()
	for i := 1; i <= 2; i++ {
		l.MustDocker(t, i, "network", "create", "-d", Driver, "--subnet", "10.124.0.0/24",
			"--ip-range", fmt.Sprintf("10.124.0.%d/26", (i-1)*64), "xn")
	}
	l.MustDocker(t, 1, "run", "-d", "--name", "c1", "--network", "xn", "vxovl/busybox", "sleep", "600")
	start := time.Now()
	l.MustDocker(t, 2, "run", "-d", "--name", "c2", "--network", "xn", "vxovl/busybox", "sleep", "600")
	t.Logf("docker run on host 2: %v", time.Since(start).Round(time.Millisecond))
	ip2 := l.ContainerIP(t, 2, "c2", "xn")

	start = time.Now()
	poll.Until(t, 30*time.Second, "c1 on host 1 pings c2 on host 2", func() (bool, string) {
		out, err := l.Docker(t, 1, "exec", "c1", "ping", "-c1", "-W1", ip2)
		return err == nil, out
	})
	t.Logf("first cross-host ping reply %v after c2 started", time.Since(start).Round(time.Millisecond))

	overlays := l.Overlays(t, 1)
	if len(overlays) != 1 {
		t.Fatalf("host 1 overlay namespaces: %v, want one", overlays)
	}
	if neigh := Neighbors(t, overlays[0]); !strings.Contains(neigh, ip2+" ") {
		t.Errorf("host 1 neighbor table lacks c2 (%s):\n%s", ip2, neigh)
	}
	if fdb := FDB(t, overlays[0]); !strings.Contains(fdb, "dst "+l.Addr(2)) {
		t.Errorf("host 1 FDB has no entry towards host 2 (%s):\n%s", l.Addr(2), fdb)
	}
}

// withoutGwbridge drops docker_gwbridge: Docker itself creates it for the first container whose
// network gives no gateway, and keeps it after the network is gone.
func withoutGwbridge(links []string) []string {
	return slices.DeleteFunc(slices.Clone(links), func(s string) bool { return s == "docker_gwbridge" })
}

func sorted(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// examples/compose works as documented: docker-compose 1.29 on two hosts, one profile each;
// the client on host 2 reaches web on host 1 by its service name, and "echo" names the echo
// containers of both hosts.
func TestComposeExample(t *testing.T) {
	l := Up(t, 2)
	for i := 1; i <= 2; i++ {
		l.InstallPlugin(t, i, "PEERS="+l.PeersExcept(i))
	}
	composeExample(t, l)
}

// composeExample is TestComposeExample's scenario in a 2-host lab with vxovl installed and
// peered, with the lab's compose (v1 on Docker 20, v2 on Docker 26): host 1 runs profile a (web,
// echo), host 2 profile b (echo, client). Compose down on both hosts leaves no container,
// network or overlay of the example.
func composeExample(t *testing.T, l *Lab) {
	t.Helper()
	const project, network = "vxdemo", "vxapp"
	file := RepoRoot() + "/examples/compose/docker-compose.yml"
	profiles := map[int]string{1: "a", 2: "b"}
	overlays := map[int]int{}
	for i := 1; i <= 2; i++ {
		overlays[i] = len(l.Overlays(t, i))
	}
	up := map[int]bool{}
	t.Cleanup(func() { // after a failure: the next scenario in this lab must not trip over the example
		for i := 2; i >= 1; i-- {
			if up[i] {
				_, _ = l.Compose(t, i, "-f", file, "-p", project, "--profile", profiles[i], "down")
			}
		}
	})
	for i := 1; i <= 2; i++ {
		up[i] = true
		l.MustCompose(t, i, "-f", file, "-p", project, "--profile", profiles[i], "up", "-d")
	}

	client := l.ComposeContainer(t, 2, project, "client")
	took := poll.Until(t, 30*time.Second, "the compose client on host 2 fetches http://web/ (host 1)", func() (bool, string) {
		out, err := l.Docker(t, 2, "exec", client, "timeout", "3", "wget", "-qO-", "http://web/")
		return err == nil && strings.HasPrefix(out, "hello from web on "), fmt.Sprintf("%v: %q", err, out)
	})
	t.Logf("client on host 2 fetched http://web/ from host 1 after %v", took.Round(time.Millisecond))

	var echoes []netip.Addr
	for i := 1; i <= 2; i++ {
		echoes = append(echoes, netip.MustParseAddr(l.ContainerIP(t, i, l.ComposeContainer(t, i, project, "echo"), network)))
	}
	slices.SortFunc(echoes, netip.Addr.Compare)
	// Docker's embedded DNS answers a name its own host has by itself, with this host's echo
	// only; tasks.echo, as the example's client asks, reaches vxovl's name server and names
	// both.
	poll.Until(t, 15*time.Second, "nslookup tasks.echo from host 2 names both hosts' echo", func() (bool, string) {
		out, err := l.Docker(t, 2, "exec", client, "nslookup", "tasks.echo")
		got := nslookupAddrs(out)
		return err == nil && slices.Equal(got, echoes), fmt.Sprintf("%v, want %v (%v):\n%s", got, echoes, err, out)
	})
	out, err := l.Docker(t, 2, "exec", client, "nslookup", "echo")
	t.Logf("nslookup echo from host 2 through Docker's embedded DNS: %v (%v); both echo: %v", nslookupAddrs(out), err, echoes)

	for i := 2; i >= 1; i-- {
		start := time.Now()
		l.MustCompose(t, i, "-f", file, "-p", project, "--profile", profiles[i], "down")
		up[i] = false
		t.Logf("compose down on host %d: %v", i, time.Since(start).Round(10*time.Millisecond))
	}
	for i := 1; i <= 2; i++ {
		if left := l.MustDocker(t, i, "ps", "-aq", "--filter", "label=com.docker.compose.project="+project); left != "" {
			t.Errorf("host %d: compose down left containers %s", i, left)
		}
		if left := l.MustDocker(t, i, "network", "ls", "-q", "--filter", "name=^"+network+"$"); left != "" {
			t.Errorf("host %d: compose down left network %s (%s)", i, network, left)
		}
		poll.Until(t, 10*time.Second, fmt.Sprintf("host %d: the example's overlay gone", i), func() (bool, string) {
			o := l.Overlays(t, i)
			return len(o) == overlays[i], fmt.Sprintf("overlay namespaces %v, %d before the example", o, overlays[i])
		})
	}
}
