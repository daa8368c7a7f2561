package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// The persistence and restart acceptance tests: drift repair, kill -9 of the plugin, dockerd
// restarts with and without --live-restore, a host reboot and a damaged state file.

// restartSettings make the timers short enough for a test: a reconcile every 2s and a restore
// grace of 3 x 3s.
var restartSettings = []string{"RECONCILE_INTERVAL=2s", "DEAD_TIMEOUT=3s"}

const (
	rsSubnet = "10.131.0.0/24"
	// rsGateway is the network's gateway on both hosts, and so its name server. Without
	// --gateway, Docker's IPAM takes each host's gateway from its --ip-range.
	rsGateway = "10.131.0.1"
	rsNet     = "rs"
)

// restartLab is a 2-host lab with vxovl on both, one network "rs" and a container on each host
// (c1 on host 1, c2 on host 2, both --restart=always).
func restartLab(t *testing.T) *Lab {
	t.Helper()
	l := Up(t, 2)
	for i := 1; i <= 2; i++ {
		l.InstallPlugin(t, i, append([]string{"PEERS=" + l.PeersExcept(i)}, restartSettings...)...)
	}
	for i := 1; i <= 2; i++ {
		l.MustDocker(t, i, "network", "create", "-d", Driver, "--subnet", rsSubnet, "--gateway", rsGateway,
			"--ip-range", fmt.Sprintf("10.131.0.%d/26", i*64), rsNet)
		l.MustDocker(t, i, "run", "-d", "--restart=always", "--stop-timeout=1", "--name", "c"+strconv.Itoa(i), "--network", rsNet,
			"--dns", rsGateway, "vxovl/busybox", "sleep", "100000")
	}
	l.waitPing(t, 1, "c1", l.ContainerIP(t, 2, "c2", rsNet), 30*time.Second)
	l.waitPing(t, 2, "c2", l.ContainerIP(t, 1, "c1", rsNet), 30*time.Second)
	return l
}

// waitName waits until container c on host i resolves name to ip through vxovl's name server.
func (l *Lab) waitName(t testing.TB, i int, c, name, ip string, timeout time.Duration) {
	t.Helper()
	poll.Until(t, timeout, fmt.Sprintf("%s on host %d resolves %s to %s", c, i, name, ip), func() (bool, string) {
		out, err := l.Docker(t, i, "exec", c, "nslookup", name)
		return err == nil && slices.Contains(nslookupAddrs(out), netip.MustParseAddr(ip)), out
	})
}

// waitPing waits until container c on host i gets a ping reply from ip.
func (l *Lab) waitPing(t testing.TB, i int, c, ip string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	poll.Until(t, timeout, fmt.Sprintf("%s on host %d pings %s", c, i, ip), func() (bool, string) {
		out, err := l.Docker(t, i, "exec", c, "ping", "-c1", "-W1", ip)
		return err == nil, out
	})
	return time.Since(start)
}

// TestReconcileRepairsDrift: entries and the VXLAN device deleted by hand come back within
// seconds, by the periodic reconciler, on demand (POST /vxovl/reconcile) and on SIGHUP, each with
// a log line and a counter.
func TestReconcileRepairsDrift(t *testing.T) {
	l := restartLab(t)
	ip2 := l.ContainerIP(t, 2, "c2", rsNet)
	ov := l.onlyOverlay(t, 1)

	repairs := func() uint64 { return l.pluginState(t, 1).Driver.DriftRepairs }
	waitBack := func(what string, present func() (bool, string)) time.Duration {
		t.Helper()
		start := time.Now()
		poll.Until(t, 15*time.Second, what+" is back", present)
		return time.Since(start)
	}
	neighPresent := func() (bool, string) {
		n := Neighbors(t, ov)
		return strings.Contains(n, ip2+" "), n
	}
	fdbPresent := func() (bool, string) {
		f := FDB(t, ov)
		return strings.Contains(f, "dst "+l.Addr(2)), f
	}

	t.Run("periodic", func(t *testing.T) {
		before, logBefore := repairs(), l.countLog(1, "repaired neighbor/FDB drift")
		mustNetns(t, ov, "ip", "neigh", "del", ip2, "dev", "vxlan0")
		if ok, n := neighPresent(); ok {
			t.Fatalf("neighbor %s still there after ip neigh del:\n%s", ip2, n)
		}
		t.Logf("neighbor back after %v", waitBack("neighbor "+ip2, neighPresent).Round(time.Millisecond))

		mac := fdbMACTowards(t, ov, l.Addr(2))
		mustNetns(t, ov, "bridge", "fdb", "del", mac, "dev", "vxlan0", "dst", l.Addr(2))
		if ok, f := fdbPresent(); ok {
			t.Fatalf("FDB entry towards %s still there after bridge fdb del:\n%s", l.Addr(2), f)
		}
		t.Logf("FDB entry back after %v", waitBack("FDB entry "+mac, fdbPresent).Round(time.Millisecond))

		poll.Until(t, 10*time.Second, "drift counter and log line", func() (bool, string) {
			now, lines := repairs(), l.countLog(1, "repaired neighbor/FDB drift")
			return now >= before+2 && lines >= logBefore+2,
				fmt.Sprintf("DriftRepairs %d -> %d, log lines %d -> %d", before, now, logBefore, lines)
		})

		before, logBefore = repairs(), l.countLog(1, "overlay damaged; rebuilding")
		mustNetns(t, ov, "ip", "link", "del", "vxlan0")
		took := waitBack("vxlan0 with its entries", func() (bool, string) {
			if ok, n := neighPresent(); !ok {
				return false, "neighbors: " + n
			}
			return fdbPresent()
		})
		t.Logf("vxlan0 and its tables back after %v", took.Round(time.Millisecond))
		// The pass adds its counts when it ends, after the tables are back.
		poll.Until(t, 10*time.Second, "drift counted after vxlan0 was deleted", func() (bool, string) {
			now := repairs()
			return now > before, fmt.Sprintf("DriftRepairs %d -> %d", before, now)
		})
		if n := l.countLog(1, "overlay damaged; rebuilding"); n <= logBefore {
			t.Errorf("no new \"overlay damaged; rebuilding\" log line (%d before, %d now)", logBefore, n)
		}
		l.waitPing(t, 1, "c1", ip2, 10*time.Second)

		// Deleting br0 also takes c1's port off the bridge: the rebuilt br0
		// must carry c1 again, not only vxlan0.
		before = repairs()
		mustNetns(t, ov, "ip", "link", "del", "br0")
		took = l.waitPing(t, 1, "c1", ip2, 15*time.Second)
		t.Logf("c1 reaches c2 again %v after br0 was deleted", took.Round(time.Millisecond))
		poll.Until(t, 10*time.Second, "drift counted after br0 was deleted", func() (bool, string) {
			now := repairs()
			return now > before, fmt.Sprintf("DriftRepairs %d -> %d", before, now)
		})
	})

	t.Run("on demand", func(t *testing.T) {
		before := repairs()
		mustNetns(t, ov, "ip", "neigh", "del", ip2, "dev", "vxlan0")
		st := l.pluginPost(t, 1, "/vxovl/reconcile")
		// The answer comes after a full pass: the entry must be back now, not eventually.
		if ok, n := neighPresent(); !ok {
			t.Errorf("neighbor %s not back when POST /vxovl/reconcile answered:\n%s", ip2, n)
		}
		if st.DriftRepairs <= before {
			t.Errorf("POST /vxovl/reconcile answered DriftRepairs %d, was %d", st.DriftRepairs, before)
		}

		hups := l.countLog(1, "SIGHUP: reconciling now")
		mustNetns(t, ov, "ip", "neigh", "del", ip2, "dev", "vxlan0")
		if err := syscall.Kill(l.pluginPID(t, 1), syscall.SIGHUP); err != nil {
			t.Fatalf("SIGHUP to the plugin: %v", err)
		}
		waitBack("neighbor after SIGHUP", neighPresent)
		poll.Until(t, 5*time.Second, "SIGHUP log line", func() (bool, string) {
			n := l.countLog(1, "SIGHUP: reconciling now")
			return n > hups, fmt.Sprintf("%d lines, %d before", n, hups)
		})
	})
}

// TestKillPluginKeepsDataPlane: kill -9 of both plugins while containers ping each other across
// hosts at 10 packets a second loses at most one packet; after dockerd restarted the plugins a
// new container joins and reaches the old ones.
func TestKillPluginKeepsDataPlane(t *testing.T) {
	l := restartLab(t)
	ip2 := l.ContainerIP(t, 2, "c2", rsNet)
	const count = 80 // 8 s at 10/s

	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := l.Docker(t, 1, "exec", "c1", "ping", "-i", "0.1", "-c", strconv.Itoa(count), "-W", "1", ip2)
		done <- result{out, err}
	}()
	poll.Until(t, 10*time.Second, "ping running in c1", func() (bool, string) {
		out, _ := l.Docker(t, 1, "top", "c1")
		return strings.Contains(out, "ping"), out
	})

	old := []int{l.pluginPID(t, 1), l.pluginPID(t, 2)}
	killed := time.Now()
	for i, pid := range old {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 plugin of host %d (pid %d): %v", i+1, pid, err)
		}
	}
	for i := 1; i <= 2; i++ {
		poll.Until(t, 30*time.Second, fmt.Sprintf("host %d plugin restarted and serving", i), func() (bool, string) {
			pid, err := l.findPluginPID(i)
			if err != nil || pid == old[i-1] {
				return false, fmt.Sprintf("pid %d (%v)", pid, err)
			}
			_, err = l.getState(pid)
			return err == nil, fmt.Sprint(err)
		})
		t.Logf("host %d plugin serving again %v after kill -9", i, time.Since(killed).Round(time.Millisecond))
	}

	var r result
	select {
	case r = <-done:
	case <-time.After(time.Duration(count)*100*time.Millisecond + 30*time.Second):
		t.Fatal("ping did not finish")
	}
	sent, recv, ok := pingCounts(r.out)
	if !ok {
		t.Fatalf("ping c1 -> c2 across the restarts: %v\n%s", r.err, r.out)
	}
	t.Logf("ping at 10/s across kill -9 of both plugins: %d sent, %d received, %d lost", sent, recv, sent-recv)
	if sent-recv > 1 {
		t.Errorf("lost %d of %d packets while the plugins restarted, want at most 1", sent-recv, sent)
	}

	start := time.Now()
	l.MustDocker(t, 1, "run", "-d", "--name", "c3", "--network", rsNet, "vxovl/busybox", "sleep", "100000")
	t.Logf("docker run c3 after the restart: %v", time.Since(start).Round(time.Millisecond))
	ip3 := l.ContainerIP(t, 1, "c3", rsNet)
	t.Logf("c3 reaches c2 after %v", l.waitPing(t, 1, "c3", ip2, 20*time.Second).Round(time.Millisecond))
	t.Logf("c2 reaches c3 after %v", l.waitPing(t, 2, "c2", ip3, 20*time.Second).Round(time.Millisecond))
	l.waitPing(t, 1, "c3", l.ContainerIP(t, 1, "c1", rsNet), 10*time.Second)
	l.checkNoLeftovers(t)
}

// TestDockerdRestartAndReboot: a plain dockerd restart, a restart with --live-restore (containers
// run on while dockerd is down) and a simulated reboot of host 1 each end with working overlays
// across hosts and nothing left behind.
func TestDockerdRestartAndReboot(t *testing.T) {
	l := restartLab(t)
	ip2 := l.ContainerIP(t, 2, "c2", rsNet)

	t.Run("dockerd restart", func(t *testing.T) {
		start := time.Now()
		l.lab(t, "stop-host", "1")
		t.Logf("stop-host %v", time.Since(start).Round(time.Millisecond))
		l.lab(t, "start-host", "1")
		t.Logf("start-host done %v after the restart began", time.Since(start).Round(time.Millisecond))
		l.waitRunning(t, 1, "c1")
		t.Logf("c1 running %v after the restart began", time.Since(start).Round(time.Millisecond))
		l.waitPing(t, 1, "c1", ip2, 60*time.Second)
		t.Logf("c1 reaches c2 %v after the restart began", time.Since(start).Round(time.Millisecond))
		l.waitPing(t, 2, "c2", l.ContainerIP(t, 1, "c1", rsNet), 30*time.Second)
		// The name server is back with the overlay, and knows the other host's container.
		l.waitName(t, 1, "c1", "c2", ip2, 30*time.Second)
		l.checkNoLeftovers(t)
	})

	t.Run("live restore", func(t *testing.T) {
		// Switch host 1 to --live-restore first (one plain restart), then restart it under test.
		l.lab(t, "stop-host", "1")
		l.lab(t, "start-host", "1", "--live-restore")
		l.waitRunning(t, 1, "c1")
		l.waitPing(t, 1, "c1", ip2, 60*time.Second)
		pid := l.MustDocker(t, 1, "inspect", "-f", "{{.State.Pid}}", "c1")

		// 10 pings a second from c1 to c2 while dockerd stops and starts again.
		stop := pingFrom(t, pid, ip2)
		l.lab(t, "stop-host", "1")
		// dockerd is down: the container and its overlay keep working.
		if out, err := exec1(t, pid, "ping", "-c1", "-W2", ip2); err != nil {
			t.Errorf("c1 cannot reach c2 while dockerd is down with --live-restore: %v\n%s", err, out)
		}
		l.lab(t, "start-host", "1", "--live-restore")
		if now := l.MustDocker(t, 1, "inspect", "-f", "{{.State.Pid}}", "c1"); now != pid {
			t.Errorf("c1 was restarted (pid %s, was %s): live restore should keep it", now, pid)
		}
		l.waitPing(t, 1, "c1", ip2, 30*time.Second)
		sent, recv := stop()
		t.Logf("ping at 10/s across the dockerd restart: %d sent, %d received, %d lost", sent, recv, sent-recv)
		if sent-recv > 1 {
			t.Errorf("lost %d of %d packets while dockerd restarted with --live-restore, want at most 1", sent-recv, sent)
		}
		l.waitPing(t, 2, "c2", l.ContainerIP(t, 1, "c1", rsNet), 30*time.Second)
		l.checkNoLeftovers(t)
	})

	t.Run("reboot", func(t *testing.T) {
		start := time.Now()
		l.lab(t, "reboot-host", "1")
		t.Logf("reboot-host took %v", time.Since(start).Round(time.Millisecond))
		l.waitRunning(t, 1, "c1")
		l.waitPing(t, 1, "c1", ip2, 60*time.Second)
		l.waitPing(t, 2, "c2", l.ContainerIP(t, 1, "c1", rsNet), 30*time.Second)
		t.Logf("overlay works again %v after the reboot began", time.Since(start).Round(time.Millisecond))
		l.waitName(t, 1, "c1", "c2", ip2, 30*time.Second)
		l.waitName(t, 2, "c2", "c1", l.ContainerIP(t, 1, "c1", rsNet), 30*time.Second)
		t.Logf("names resolve again %v after the reboot began", time.Since(start).Round(time.Millisecond))
		l.checkNoLeftovers(t)
		// A new container after the reboot joins normally too.
		l.MustDocker(t, 1, "run", "-d", "--name", "c4", "--network", rsNet, "vxovl/busybox", "sleep", "100000")
		l.waitPing(t, 2, "c2", l.ContainerIP(t, 1, "c4", rsNet), 20*time.Second)
	})

	t.Run("network rm leaves nothing", func(t *testing.T) {
		for i := 1; i <= 2; i++ {
			ids := strings.Fields(l.MustDocker(t, i, "ps", "-aq"))
			l.MustDocker(t, i, append([]string{"rm", "-f"}, ids...)...)
			l.MustDocker(t, i, "network", "rm", rsNet)
			poll.Until(t, 10*time.Second, fmt.Sprintf("host %d clean", i), func() (bool, string) {
				if o := l.Overlays(t, i); len(o) > 0 {
					return false, fmt.Sprintf("overlay namespaces left: %v", o)
				}
				if s := l.pluginState(t, i).Driver; s.Networks != 0 || s.LocalEndpoints != 0 {
					return false, fmt.Sprintf("plugin still has %d networks, %d endpoints", s.Networks, s.LocalEndpoints)
				}
				return true, ""
			})
		}
	})
}

// TestCorruptState: a state file vxovl cannot read or trust stops it with an error that names the
// file and the way out, and the file is left as it was; following the way out makes vxovl work
// again.
func TestCorruptState(t *testing.T) {
	l := Up(t, 1)
	l.InstallPlugin(t, 1, restartSettings...)
	l.MustDocker(t, 1, "network", "create", "-d", Driver, "--subnet", rsSubnet, rsNet)
	db := filepath.Join(l.HostDir(1), "state", "state.db")
	const inPlugin = "/var/lib/vxovl/state.db"

	// createFails: network create fails, naming the file and each of wants.
	createFails := func(t *testing.T, wants ...string) {
		t.Helper()
		out, err := l.Docker(t, 1, "network", "create", "-d", Driver, "--subnet", "10.132.0.0/24", "after")
		if err == nil {
			t.Fatalf("network create succeeded on a state file vxovl cannot use:\n%s", out)
		}
		t.Logf("network create: %s", out)
		for _, want := range append([]string{inPlugin}, wants...) {
			if !strings.Contains(out, want) {
				t.Errorf("error %q does not contain %q", out, want)
			}
		}
	}

	t.Run("truncated", func(t *testing.T) {
		l.MustDocker(t, 1, "plugin", "disable", "-f", PluginName)
		good, err := os.ReadFile(db)
		if err != nil {
			t.Fatal(err)
		}
		// A half-copied file: shorter than bbolt's two meta pages.
		if err := os.WriteFile(db, good[:100], 0o600); err != nil {
			t.Fatal(err)
		}
		l.MustDocker(t, 1, "plugin", "enable", PluginName)
		createFails(t, "mv "+inPlugin+" "+inPlugin+".broken")
		if now, err := os.ReadFile(db); err != nil || !bytes.Equal(now, good[:100]) {
			t.Errorf("the truncated state file was changed or removed (%v)", err)
		}
		// Putting the good copy back (from a backup) brings the state back.
		l.MustDocker(t, 1, "plugin", "disable", "-f", PluginName)
		if err := os.WriteFile(db, good, 0o600); err != nil {
			t.Fatal(err)
		}
		l.MustDocker(t, 1, "plugin", "enable", PluginName)
		l.MustDocker(t, 1, "run", "-d", "--name", "c0", "--network", rsNet, "vxovl/busybox", "sleep", "100000")
		l.MustDocker(t, 1, "rm", "-f", "c0")
	})

	t.Run("corrupt", func(t *testing.T) {
		l.MustDocker(t, 1, "plugin", "disable", "-f", PluginName)
		raw, err := os.ReadFile(db)
		if err != nil {
			t.Fatal(err)
		}
		// Both bbolt meta pages (the first two pages) overwritten: nothing in it can be trusted.
		for i := 0; i < 8192 && i < len(raw); i++ {
			raw[i] = 0xA5
		}
		if err := os.WriteFile(db, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(raw)
		l.MustDocker(t, 1, "plugin", "enable", PluginName)
		createFails(t, "mv "+inPlugin+" "+inPlugin+".broken")
		if now, err := os.ReadFile(db); err != nil || sha256.Sum256(now) != sum {
			t.Errorf("the damaged state file was changed or removed (%v)", err)
		}

		// The way out, as the message says (the state mount's source is the host's view of it).
		l.MustDocker(t, 1, "plugin", "disable", "-f", PluginName)
		if err := os.Rename(db, db+".broken"); err != nil {
			t.Fatal(err)
		}
		l.MustDocker(t, 1, "plugin", "enable", PluginName)
		l.MustDocker(t, 1, "network", "create", "-d", Driver, "--subnet", "10.132.0.0/24", "after")
		l.MustDocker(t, 1, "run", "-d", "--name", "c1", "--network", "after", "vxovl/busybox", "sleep", "100000")
		if _, err := os.Stat(db + ".broken"); err != nil {
			t.Errorf("the moved-aside file is gone: %v", err)
		}
		// "then recreate the vxovl networks on this host": the old one goes and comes back.
		l.MustDocker(t, 1, "network", "rm", rsNet)
		l.MustDocker(t, 1, "network", "create", "-d", Driver, "--subnet", rsSubnet, rsNet)
		l.MustDocker(t, 1, "run", "-d", "--name", "c2", "--network", rsNet, "vxovl/busybox", "sleep", "100000")
		l.MustDocker(t, 1, "run", "-d", "--name", "c3", "--network", rsNet, "vxovl/busybox", "sleep", "100000")
		l.waitPing(t, 1, "c2", l.ContainerIP(t, 1, "c3", rsNet), 10*time.Second)
	})
}

// ----------------------------------------------------------------------------------------------
// helpers

func (l *Lab) lab(t testing.TB, args ...string) {
	t.Helper()
	if out, err := l.run(nil, args...); err != nil {
		t.Fatalf("lab.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func mustNetns(t testing.TB, path string, cmd ...string) {
	t.Helper()
	if out, err := InNetns(t, path, cmd...); err != nil {
		t.Fatalf("%s in %s: %v\n%s", strings.Join(cmd, " "), path, err, out)
	}
}

// pingFrom starts pinging ip 10 times a second from the container whose init is pid; the
// returned stop ends it and reports packets sent and received.
func pingFrom(t testing.TB, pid, ip string) (stop func() (sent, recv int)) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command("nsenter", "-t", pid, "-n", "-m", "--", "ping", "-i", "0.1", "-W", "1", ip)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("ping from pid %s: %v", pid, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return func() (int, int) {
		t.Helper()
		stopped = true
		// nsenter without --pid execs ping itself: SIGINT makes ping print its summary.
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		sent, recv, ok := pingCounts(out.String())
		if !ok {
			t.Fatalf("ping from pid %s to %s: no summary:\n%s", pid, ip, out.String())
		}
		return sent, recv
	}
}

// exec1 runs cmd in the container whose init is pid, without dockerd.
func exec1(t testing.TB, pid string, cmd ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"-t", pid, "-n", "-m", "--"}, cmd...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (l *Lab) onlyOverlay(t testing.TB, i int) string {
	t.Helper()
	o := l.Overlays(t, i)
	if len(o) != 1 {
		t.Fatalf("host %d overlay namespaces: %v, want one", i, o)
	}
	return o[0]
}

var fdbLine = regexp.MustCompile(`^([0-9a-f:]{17}) dev vxlan0 dst (\S+)`)

// fdbMACTowards is the MAC of a unicast FDB entry of the overlay pointing at vtep.
func fdbMACTowards(t testing.TB, ov, vtep string) string {
	t.Helper()
	fdb := FDB(t, ov)
	for _, line := range strings.Split(fdb, "\n") {
		if m := fdbLine.FindStringSubmatch(line); m != nil && m[2] == vtep && m[1] != "00:00:00:00:00:00" {
			return m[1]
		}
	}
	t.Fatalf("no FDB entry towards %s:\n%s", vtep, fdb)
	return ""
}

func (l *Lab) countLog(i int, msg string) int {
	b, _ := os.ReadFile(filepath.Join(l.HostDir(i), "dockerd.log"))
	return bytes.Count(b, []byte(msg))
}

func (l *Lab) waitRunning(t testing.TB, i int, c string) {
	t.Helper()
	poll.Until(t, 60*time.Second, fmt.Sprintf("%s running on host %d", c, i), func() (bool, string) {
		out, err := l.Docker(t, i, "inspect", "-f", "{{.State.Running}} {{.State.Error}}", c)
		return err == nil && strings.HasPrefix(out, "true"), out
	})
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`)

func pingCounts(out string) (sent, recv int, ok bool) {
	m := pingSummary.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, false
	}
	sent, _ = strconv.Atoi(m[1])
	recv, _ = strconv.Atoi(m[2])
	return sent, recv, true
}

// findPluginPID is the pid of the vxovl process in host i's network namespace.
func (l *Lab) findPluginPID(i int) (int, error) {
	var want syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+l.Netns(i), &want); err != nil {
		return 0, err
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cmd, err := os.ReadFile(p + "/cmdline")
		if err != nil || !bytes.HasPrefix(cmd, []byte("/usr/bin/vxovl\x00")) {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(p+"/ns/net", &st) != nil || st.Ino != want.Ino || st.Dev != want.Dev {
			continue
		}
		return strconv.Atoi(filepath.Base(p))
	}
	return 0, fmt.Errorf("no vxovl process in %s", l.Netns(i))
}

func (l *Lab) pluginPID(t testing.TB, i int) int {
	t.Helper()
	pid, err := l.findPluginPID(i)
	if err != nil {
		t.Fatalf("host %d: %v", i, err)
	}
	return pid
}

// pluginStats is the part of GET /vxovl/state (and POST /vxovl/reconcile) the tests read.
type pluginStats struct {
	DriftRepairs   uint64
	SyncErrors     uint64
	Reconciles     uint64
	Networks       int
	LocalEndpoints int
}

type pluginStateDoc struct {
	Driver pluginStats `json:"driver"`
}

// pluginClient talks HTTP to the plugin's socket through its process root: the socket lives in
// the plugin's own mount namespace (/run/docker/plugins/vxovl.sock there).
func pluginClient(pid int) *http.Client {
	sock := fmt.Sprintf("/proc/%d/root/run/docker/plugins/vxovl.sock", pid)
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
}

func (l *Lab) getState(pid int) (pluginStateDoc, error) {
	var doc pluginStateDoc
	resp, err := pluginClient(pid).Get("http://vxovl/vxovl/state")
	if err != nil {
		return doc, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return doc, fmt.Errorf("GET /vxovl/state: %s", resp.Status)
	}
	return doc, json.NewDecoder(resp.Body).Decode(&doc)
}

func (l *Lab) pluginState(t testing.TB, i int) pluginStateDoc {
	t.Helper()
	doc, err := l.getState(l.pluginPID(t, i))
	if err != nil {
		t.Fatalf("host %d: %v", i, err)
	}
	return doc
}

func (l *Lab) pluginPost(t testing.TB, i int, path string) pluginStats {
	t.Helper()
	resp, err := pluginClient(l.pluginPID(t, i)).Post("http://vxovl"+path, "application/json", nil)
	if err != nil {
		t.Fatalf("host %d: POST %s: %v", i, path, err)
	}
	defer resp.Body.Close()
	var st pluginStats
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("host %d: POST %s: %s", i, path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("host %d: POST %s: %v", i, path, err)
	}
	return st
}

// checkNoLeftovers: on every host, exactly one overlay namespace (the network's), no veth or
// temporary VXLAN device in the host namespace, one overlay port and one stored endpoint per
// container on the network, and the other hosts' neighbor tables hold exactly the containers
// that exist.
func (l *Lab) checkNoLeftovers(t testing.TB) {
	t.Helper()
	poll.Until(t, 30*time.Second, "no leftovers", func() (bool, string) {
		ips := map[int][]string{}
		for i := 1; i <= l.N; i++ {
			out, err := l.Docker(t, i, "network", "inspect", "-f",
				`{{range .Containers}}{{.IPv4Address}} {{end}}`, rsNet)
			if err != nil {
				return false, out
			}
			for _, a := range strings.Fields(out) {
				ip, _, _ := strings.Cut(a, "/")
				ips[i] = append(ips[i], ip)
			}
		}
		for i := 1; i <= l.N; i++ {
			ovs := l.Overlays(t, i)
			if len(ovs) != 1 {
				return false, fmt.Sprintf("host %d overlay namespaces %v, want one", i, ovs)
			}
			for _, name := range l.Links(t, i) {
				if strings.HasPrefix(name, "vxc") || strings.HasPrefix(name, "vxo") || strings.HasPrefix(name, "vxe") {
					return false, fmt.Sprintf("host %d: leftover link %s in the host namespace", i, name)
				}
			}
			links, err := InNetns(t, ovs[0], "ip", "-o", "link", "show")
			if err != nil {
				return false, links
			}
			if ports := strings.Count(links, ": vxe"); ports != len(ips[i]) {
				return false, fmt.Sprintf("host %d: %d container ports in the overlay, %d containers:\n%s", i, ports, len(ips[i]), links)
			}
			st, err := l.getState(l.pluginPID(t, i))
			if err != nil {
				return false, err.Error()
			}
			if st.Driver.LocalEndpoints != len(ips[i]) {
				return false, fmt.Sprintf("host %d: plugin keeps %d endpoints, %d containers", i, st.Driver.LocalEndpoints, len(ips[i]))
			}
			var remote []string
			for j, list := range ips {
				if j != i {
					remote = append(remote, list...)
				}
			}
			var neigh []string
			for _, line := range strings.Split(Neighbors(t, ovs[0]), "\n") {
				if f := strings.Fields(line); len(f) > 0 {
					neigh = append(neigh, f[0])
				}
			}
			slices.Sort(remote)
			slices.Sort(neigh)
			if !slices.Equal(remote, neigh) {
				return false, fmt.Sprintf("host %d neighbors %v, remote containers %v", i, neigh, remote)
			}
		}
		return true, ""
	})
}
