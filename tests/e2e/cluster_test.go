package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// Settings of the cluster acceptance lab. The VXLAN port is not the default so that the
// setting is really exercised; the dead timeout is short to keep the kill test fast.
const (
	mhVXLANPort   = 4790
	mhDeadTimeout = 3 * time.Second
	// deadMargin covers what DEAD_TIMEOUT does not: the driver's sync after the cluster
	// dropped the node, and this test's polling.
	deadMargin = 3 * time.Second
)

// TestCluster is the multi-host acceptance of the gossip control plane: three lab hosts,
// each with its own dockerd and vxovl, one overlay created on all three.
func TestCluster(t *testing.T) {
	l := Up(t, 3)
	settings := func(i int, extra ...string) []string {
		return append([]string{"PEERS=" + l.PeersExcept(i), "VXLAN_PORT=" + strconv.Itoa(mhVXLANPort),
			"DEAD_TIMEOUT=" + mhDeadTimeout.String(), "LOG_LEVEL=debug"}, extra...)
	}
	for i := 1; i <= 3; i++ {
		l.InstallPlugin(t, i, settings(i)...)
	}

	// One overlay on every host; per-host ranges keep Docker's own IPAM from handing out one
	// address twice. Containers accept broadcast pings, for the flood check.
	const mh, mhVNI = "mh", 4242
	for i := 1; i <= 3; i++ {
		l.MustDocker(t, i, "network", "create", "-d", Driver, "--subnet", "10.131.0.0/24",
			"--ip-range", fmt.Sprintf("10.131.0.%d/26", (i-1)*64), "-o", fmt.Sprint("vni=", mhVNI), mh)
	}
	c := []*mhContainer{nil}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("c%d", i)
		l.MustDocker(t, i, append([]string{"run", "-d", "--name", name, "--network", mh, "--restart", "always"},
			append(mhBroadcastSysctl, "vxovl/busybox", "sleep", "3600")...)...)
		c = append(c, l.mhContainer(t, i, name, mh))
	}

	t.Run("DistinctAddressesAndFullMesh", func(t *testing.T) {
		seen := map[string]string{}
		for i := 1; i <= 3; i++ {
			if other, dup := seen[c[i].IP]; dup {
				t.Errorf("%s and %s share the address %s", c[i].Name, other, c[i].IP)
			}
			seen[c[i].IP] = c[i].Name
		}
		for a := 1; a <= 3; a++ {
			for b := 1; b <= 3; b++ {
				if a != b {
					l.mhPing(t, a, c[a].Name, c[b].IP, 15*time.Second)
				}
			}
		}
	})

	t.Run("StaticTables", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			ov := l.mhOverlay(t, i, mhVNI)
			dev := mhVXLANDetails(t, ov)
			if !strings.Contains(dev, fmt.Sprintf(" id %d ", mhVNI)) || !strings.Contains(dev, fmt.Sprintf(" dstport %d ", mhVXLANPort)) ||
				!strings.Contains(dev, " local "+l.Addr(i)+" ") {
				t.Errorf("host %d: vxlan device is not VNI %d, dstport %d, local %s:\n%s", i, mhVNI, mhVXLANPort, l.Addr(i), dev)
			}
			neigh, fdb := Neighbors(t, ov), FDB(t, ov)
			for j := 1; j <= 3; j++ {
				if j == i {
					continue
				}
				want := fmt.Sprintf("%s dev vxlan0 lladdr %s PERMANENT", c[j].IP, c[j].MAC)
				if !mhHasLine(neigh, want) {
					t.Errorf("host %d: no permanent neighbor %q for %s on host %d:\n%s", i, want, c[j].Name, j, neigh)
				}
				wantFDB := fmt.Sprintf("%s dev vxlan0 dst %s ", c[j].MAC, l.Addr(j))
				if line := mhLineWith(fdb, wantFDB); line == "" || !strings.Contains(line, " self permanent") {
					t.Errorf("host %d: no permanent FDB entry %q for %s:\n%s", i, wantFDB, c[j].Name, fdb)
				}
				// The VXLAN port is the device's: an entry with its own port would override it.
				if line := mhLineWith(fdb, wantFDB); strings.Contains(line, " port ") && !strings.Contains(line, fmt.Sprintf(" port %d ", mhVXLANPort)) {
					t.Errorf("host %d: FDB entry for %s has another port: %s", i, c[j].Name, line)
				}
			}
			if strings.Contains(fdb, "00:00:00:00:00:00 dev vxlan0") {
				t.Errorf("host %d: a network without -o flood has flood entries:\n%s", i, fdb)
			}
		}
	})

	t.Run("Flood", func(t *testing.T) {
		const fl, flVNI = "fl", 4545
		for i := 1; i <= 3; i++ {
			l.MustDocker(t, i, "network", "create", "-d", Driver, "--subnet", "10.135.0.0/24",
				"--ip-range", fmt.Sprintf("10.135.0.%d/26", (i-1)*64), "-o", fmt.Sprint("vni=", flVNI), "-o", "flood=true", fl)
		}
		f := []*mhContainer{nil}
		for i := 1; i <= 3; i++ {
			name := fmt.Sprintf("f%d", i)
			l.MustDocker(t, i, append([]string{"run", "-d", "--name", name, "--network", fl},
				append(mhBroadcastSysctl, "vxovl/busybox", "sleep", "3600")...)...)
			f = append(f, l.mhContainer(t, i, name, fl))
		}
		t.Cleanup(func() {
			for i := 1; i <= 3; i++ {
				_, _ = l.Docker(t, i, "rm", "-f", f[i].Name)
				_, _ = l.Docker(t, i, "network", "rm", fl)
			}
		})
		for i := 1; i <= 3; i++ {
			ov := l.mhOverlay(t, i, flVNI)
			poll.Until(t, 10*time.Second, fmt.Sprintf("host %d has one flood entry per remote VTEP", i), func() (bool, string) {
				fdb := FDB(t, ov)
				for j := 1; j <= 3; j++ {
					line := mhLineWith(fdb, "00:00:00:00:00:00 dev vxlan0 dst "+l.Addr(j)+" ")
					if (j == i) != (line == "") || (line != "" && !strings.Contains(line, " self permanent")) {
						return false, fdb
					}
				}
				return true, ""
			})
		}
		// Busybox ping sets SO_BROADCAST; the receivers answer (icmp_echo_ignore_broadcasts=0),
		// so a reply from each remote container proves the broadcast reached its host.
		out, _ := l.Docker(t, 1, "exec", f[1].Name, "ping", "-c", "3", "-W", "2", "10.135.0.255")
		for j := 2; j <= 3; j++ {
			if !strings.Contains(out, "bytes from "+f[j].IP+":") {
				t.Errorf("broadcast from host 1 on a flood network got no reply from %s on host %d:\n%s", f[j].Name, j, out)
			}
		}
		// Control: the same broadcast on the network without flooding stays on host 1.
		out, _ = l.Docker(t, 1, "exec", c[1].Name, "ping", "-c", "2", "-W", "1", "10.131.0.255")
		for j := 2; j <= 3; j++ {
			if strings.Contains(out, "bytes from "+c[j].IP+":") {
				t.Errorf("broadcast on network %s (no flood) reached %s on host %d:\n%s", mh, c[j].Name, j, out)
			}
		}
	})

	t.Run("ConflictingDefinition", func(t *testing.T) {
		// A VNI defined on host 1 only, so that host 2 may pick the same subnet under Docker's IPAM.
		const cf, cfVNI = "cf", 4343
		l.MustDocker(t, 1, "network", "create", "-d", Driver, "--subnet", "10.133.0.0/24", "-o", fmt.Sprint("vni=", cfVNI), cf)
		t.Cleanup(func() { _, _ = l.Docker(t, 1, "network", "rm", cf) })
		for _, tc := range []struct{ what, subnet, mtu, want string }{
			{"another subnet", "10.134.0.0/24", "", "10.134.0.0/24"},
			{"another MTU", "10.133.0.0/24", "1400", "MTU 1400"},
		} {
			args := []string{"network", "create", "-d", Driver, "--subnet", tc.subnet, "-o", fmt.Sprint("vni=", cfVNI)}
			if tc.mtu != "" {
				args = append(args, "-o", "mtu="+tc.mtu)
			}
			out, err := l.Docker(t, 2, append(args, "cf2")...)
			if err == nil {
				_, _ = l.Docker(t, 2, "network", "rm", "cf2")
				t.Errorf("%s: docker network create with VNI %d as defined on host 1 but %s succeeded", tc.what, cfVNI, tc.what)
				continue
			}
			t.Logf("%s: docker network create says: %s", tc.what, out)
			for _, want := range []string{fmt.Sprint("VNI ", cfVNI), "10.133.0.0/24", tc.want} {
				if !strings.Contains(out, want) {
					t.Errorf("%s: error %q does not mention %q", tc.what, out, want)
				}
			}
			if ls := l.MustDocker(t, 2, "network", "ls", "--format", "{{.Name}}"); slices.Contains(strings.Fields(ls), "cf2") {
				t.Errorf("%s: refused network cf2 is listed on host 2", tc.what)
			}
			if ov := l.mhOverlayPath(2, cfVNI); ov != "" {
				if _, err := os.Stat(ov); err == nil {
					t.Errorf("%s: refused network left overlay namespace %s on host 2", tc.what, ov)
				}
			}
		}
	})

	t.Run("Convergence", func(t *testing.T) {
		// How long after `docker run -d` returns on host 2 the container answers a ping from
		// host 1, and when host 1's neighbor entry appeared (negative: before run returned).
		// Docker's native overlay: first reply 4-6 ms after run returned (LAB.md).
		ov1 := l.mhOverlay(t, 1, mhVNI)
		execStart := time.Now()
		l.MustDocker(t, 1, "exec", c[1].Name, "true")
		execCost := time.Since(execStart)
		var toPing, toNeigh, runTook []time.Duration
		for k := range 3 {
			name, ip := fmt.Sprintf("conv%d", k), fmt.Sprintf("10.131.0.%d", 100+k)
			neighAt := make(chan time.Time, 1)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() { mhPollNeighbor(ov1, ip, neighAt, stop) })
			start := time.Now()
			l.MustDocker(t, 2, "run", "-d", "--name", name, "--network", mh, "--ip", ip, "vxovl/busybox", "sleep", "3600")
			returned := time.Now()
			var pinged time.Time
			poll.Until(t, 15*time.Second, fmt.Sprintf("%s on host 1 pings %s on host 2", c[1].Name, name), func() (bool, string) {
				out, err := l.Docker(t, 1, "exec", c[1].Name, "ping", "-c1", "-W1", ip)
				pinged = time.Now()
				return err == nil, out
			})
			close(stop)
			wg.Wait()
			runTook = append(runTook, returned.Sub(start))
			toPing = append(toPing, pinged.Sub(returned))
			select {
			case at := <-neighAt:
				toNeigh = append(toNeigh, at.Sub(returned))
			default:
				t.Errorf("%s: host 1 never had a neighbor entry for %s", name, ip)
			}
			l.MustDocker(t, 2, "rm", "-f", name)
		}
		t.Logf("convergence over %d runs (median): docker run -d on host 2 took %v; host 1 neighbor entry at %v relative to run returning; "+
			"first successful ping from host 1 %v after run returned, of which one `docker exec` costs ~%v. All runs: run %v, neighbor %v, ping %v",
			len(toPing), mhMedian(runTook), mhMedian(toNeigh), mhMedian(toPing), execCost.Round(time.Millisecond), runTook, toNeigh, toPing)
	})

	t.Run("StoppedContainerWithdrawn", func(t *testing.T) {
		start := time.Now()
		l.MustDocker(t, 2, "stop", "-t", "1", c[2].Name)
		stopped := time.Now()
		for _, i := range []int{1, 3} {
			l.mhEntries(t, i, mhVNI, c[2], false, 10*time.Second)
		}
		t.Logf("docker stop took %v; %s's entries gone on hosts 1 and 3 %v after it returned",
			stopped.Sub(start).Round(time.Millisecond), c[2].Name, time.Since(stopped).Round(time.Millisecond))

		l.MustDocker(t, 2, "start", c[2].Name)
		c[2] = l.mhContainer(t, 2, c[2].Name, mh) // a new endpoint: new MAC, maybe a new address
		for _, i := range []int{1, 3} {
			l.mhEntries(t, i, mhVNI, c[2], true, 10*time.Second)
			l.mhPing(t, i, c[i].Name, c[2].IP, 10*time.Second)
		}
	})

	t.Run("DeadHost", func(t *testing.T) {
		// A crash of host 3: its plugin and dockerd die without a word to anyone.
		dockerd := l.mhDockerdPID(t, 3)
		plugin := l.mhPluginPID(t, 3)
		if err := syscall.Kill(dockerd, syscall.SIGKILL); err != nil {
			t.Fatalf("kill dockerd of host 3 (pid %d): %v", dockerd, err)
		}
		if err := syscall.Kill(plugin, syscall.SIGKILL); err != nil {
			t.Fatalf("kill plugin of host 3 (pid %d): %v", plugin, err)
		}
		killed := time.Now()
		for _, i := range []int{1, 2} {
			l.mhEntries(t, i, mhVNI, c[3], false, mhDeadTimeout+deadMargin-time.Since(killed))
		}
		t.Logf("host 3 killed: its entries gone on hosts 1 and 2 after %v (DEAD_TIMEOUT %v)",
			time.Since(killed).Round(time.Millisecond), mhDeadTimeout)
		for _, i := range []int{1, 2} {
			if fdb := FDB(t, l.mhOverlay(t, i, mhVNI)); strings.Contains(fdb, "dst "+l.Addr(3)+" ") {
				t.Errorf("host %d still forwards to dead host 3:\n%s", i, fdb)
			}
		}

		// The rest of the host (containerd, shims, containers) died with it. A dockerd started
		// next to a surviving containerd cannot restore its plugin (its fifos lived in the dead
		// dockerd's mount namespace) and Docker 20.10 then panics: that is the lab, not vxovl.
		l.mhKillHost(t, 3)
		// The killed dockerd can take a moment to finish exiting (its PID still holds the pid
		// file, and the next dockerd refuses to start while it does).
		poll.Until(t, 20*time.Second, "host 3's killed dockerd gone", func() (bool, string) {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", dockerd))
			if err != nil {
				return true, ""
			}
			f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
			return len(f) > 0 && f[0] == "Z", string(b)
		})
		start := time.Now()
		if out, err := l.run(nil, "start-host", "3"); err != nil {
			log, _ := exec.Command("tail", "-4", filepath.Join(l.Dir, "h3", "dockerd.log")).CombinedOutput()
			t.Fatalf("lab start-host 3: %v\n%s\ndockerd.log:\n%s", err, out, log)
		}
		t.Logf("host 3 dockerd back in %v", time.Since(start).Round(time.Millisecond))
		poll.Until(t, 30*time.Second, "c3 restarted by its restart policy", func() (bool, string) {
			out, err := l.Docker(t, 3, "inspect", "-f", "{{.State.Running}}", c[3].Name)
			return err == nil && out == "true", out
		})
		c[3] = l.mhContainer(t, 3, c[3].Name, mh)
		for _, i := range []int{1, 2} {
			l.mhEntries(t, i, mhVNI, c[3], true, 20*time.Second)
			l.mhPing(t, i, c[i].Name, c[3].IP, 10*time.Second)
			l.mhPing(t, 3, c[3].Name, c[i].IP, 10*time.Second)
		}
		t.Logf("host 3's entries back and reachable %v after its dockerd started", time.Since(start).Round(time.Millisecond))
	})

	t.Run("WrongGossipKey", func(t *testing.T) {
		// Fresh plugins: hosts 1 and 2 share a key, host 3 has another one.
		for i := 1; i <= 3; i++ {
			for _, id := range strings.Fields(l.MustDocker(t, i, "ps", "-aq")) {
				l.MustDocker(t, i, "rm", "-f", id)
			}
			l.MustDocker(t, i, "network", "rm", mh)
		}
		good, bad := mhGossipKey(1), mhGossipKey(2)
		for i := 1; i <= 3; i++ {
			key := good
			if i == 3 {
				key = bad
			}
			l.InstallPlugin(t, i, settings(i, "GOSSIP_KEY="+key)...)
		}
		const kn, knVNI = "kn", 4646
		k := []*mhContainer{nil}
		for i := 1; i <= 3; i++ {
			l.MustDocker(t, i, "network", "create", "-d", Driver, "--subnet", "10.136.0.0/24",
				"--ip-range", fmt.Sprintf("10.136.0.%d/26", (i-1)*64), "-o", fmt.Sprint("vni=", knVNI), kn)
			name := fmt.Sprintf("k%d", i)
			l.MustDocker(t, i, "run", "-d", "--name", name, "--network", kn, "vxovl/busybox", "sleep", "3600")
			k = append(k, l.mhContainer(t, i, name, kn))
		}
		// Hosts 1 and 2 talk; host 3 has tried to talk to them and been refused, and they to it.
		l.mhEntries(t, 1, knVNI, k[2], true, 15*time.Second)
		l.mhPing(t, 1, k[1].Name, k[2].IP, 10*time.Second)
		for _, i := range []int{1, 3} {
			poll.Until(t, 20*time.Second, fmt.Sprintf("host %d rejected gossip with the wrong key", i), func() (bool, string) {
				st := l.mhPluginState(t, i)
				return st.Cluster.DecryptFailures > 0, fmt.Sprintf("state: %+v", st)
			})
		}

		st3 := l.mhPluginState(t, 3)
		if len(st3.Members) != 1 {
			t.Errorf("host 3 (wrong key) has members %v, want only itself", st3.Members)
		}
		if neigh := Neighbors(t, l.mhOverlay(t, 3, knVNI)); neigh != "" {
			t.Errorf("host 3 (wrong key) learned neighbors:\n%s", neigh)
		}
		if fdb := FDB(t, l.mhOverlay(t, 3, knVNI)); strings.Contains(fdb, " dst ") {
			t.Errorf("host 3 (wrong key) learned forwarding entries:\n%s", fdb)
		}
		for _, i := range []int{1, 2} {
			st := l.mhPluginState(t, i)
			for _, m := range st.Members {
				if m.Addr == l.Addr(3) {
					t.Errorf("host %d counts host 3 (wrong key) as a member: %v", i, st.Members)
				}
			}
			ov := l.mhOverlay(t, i, knVNI)
			if neigh := Neighbors(t, ov); strings.Contains(neigh, k[3].IP+" ") {
				t.Errorf("host %d learned %s from host 3 (wrong key):\n%s", i, k[3].IP, neigh)
			}
			if fdb := FDB(t, ov); strings.Contains(fdb, "dst "+l.Addr(3)+" ") {
				t.Errorf("host %d forwards to host 3 (wrong key):\n%s", i, fdb)
			}
		}
		if out, err := l.Docker(t, 1, "exec", k[1].Name, "ping", "-c1", "-W1", k[3].IP); err == nil {
			t.Errorf("host 1 reaches %s on host 3 despite the wrong key:\n%s", k[3].Name, out)
		}
	})
}

// mhBroadcastSysctl lets a container answer pings to its subnet's broadcast address.
var mhBroadcastSysctl = []string{"--sysctl", "net.ipv4.icmp_echo_ignore_broadcasts=0"}

type mhContainer struct {
	Host     int
	Name, IP string
	MAC      string
}

func (l *Lab) mhContainer(t testing.TB, i int, name, network string) *mhContainer {
	t.Helper()
	mac := l.MustDocker(t, i, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).MacAddress}}`, network), name)
	if _, err := net.ParseMAC(mac); err != nil {
		t.Fatalf("container %s on host %d: MAC %q: %v", name, i, mac, err)
	}
	return &mhContainer{Host: i, Name: name, IP: l.ContainerIP(t, i, name, network), MAC: mac}
}

// waitPing waits until container name on host i gets a reply from ip.
func (l *Lab) mhPing(t testing.TB, i int, name, ip string, timeout time.Duration) {
	t.Helper()
	poll.Until(t, timeout, fmt.Sprintf("%s on host %d pings %s", name, i, ip), func() (bool, string) {
		out, err := l.Docker(t, i, "exec", name, "ping", "-c1", "-W1", ip)
		return err == nil, out
	})
}

// waitEntries waits until host i's overlay vni has (present) or lacks (!present) the
// neighbor and FDB entries of container c.
func (l *Lab) mhEntries(t testing.TB, i int, vni uint32, c *mhContainer, present bool, timeout time.Duration) {
	t.Helper()
	ov := l.mhOverlay(t, i, vni)
	what := fmt.Sprintf("host %d has no entries of %s (%s %s) left", i, c.Name, c.IP, c.MAC)
	if present {
		what = fmt.Sprintf("host %d has the entries of %s (%s %s via %s)", i, c.Name, c.IP, c.MAC, l.Addr(c.Host))
	}
	poll.Until(t, max(timeout, 0), what, func() (bool, string) {
		neigh, fdb := Neighbors(t, ov), FDB(t, ov)
		hasNeigh := mhHasLine(neigh, fmt.Sprintf("%s dev vxlan0 lladdr %s PERMANENT", c.IP, c.MAC))
		hasFDB := mhLineWith(fdb, fmt.Sprintf("%s dev vxlan0 dst %s ", c.MAC, l.Addr(c.Host))) != ""
		anyNeigh := strings.Contains(neigh+"\n", c.IP+" ")
		anyFDB := strings.Contains(fdb, c.MAC+" dev vxlan0 dst ")
		ok := hasNeigh && hasFDB
		if !present {
			ok = !anyNeigh && !anyFDB
		}
		return ok, fmt.Sprintf("neighbors:\n%s\nfdb:\n%s", neigh, fdb)
	})
}

// overlayPath is where host i's plugin pins the namespace of vni.
func (l *Lab) mhOverlayPath(i int, vni uint32) string {
	return filepath.Join(l.NetnsDir(i), fmt.Sprintf("vni-%d", vni))
}

// overlay is host i's overlay namespace of vni; it fails the test when there is none.
func (l *Lab) mhOverlay(t testing.TB, i int, vni uint32) string {
	t.Helper()
	var path string
	poll.Until(t, 10*time.Second, fmt.Sprintf("host %d has an overlay namespace for VNI %d", i, vni), func() (bool, string) {
		path = l.mhOverlayPath(i, vni)
		_, err := os.Stat(path)
		return err == nil, fmt.Sprint(err, "; pinned: ", l.Overlays(t, i))
	})
	return path
}

func mhVXLANDetails(t testing.TB, overlay string) string {
	t.Helper()
	out, err := InNetns(t, overlay, "ip", "-d", "link", "show", "type", "vxlan")
	if err != nil {
		t.Fatalf("ip -d link in %s: %v\n%s", overlay, err, out)
	}
	return strings.Join(strings.Fields(out), " ") + " "
}

// mhPollNeighbor reports on at the first time ip is in the overlay's neighbor table.
func mhPollNeighbor(overlay, ip string, at chan<- time.Time, stop <-chan struct{}) {
	for {
		out, err := exec.Command("nsenter", "--net="+overlay, "ip", "neigh", "show", ip, "nud", "permanent").Output()
		if err == nil && strings.Contains(string(out), ip+" ") {
			at <- time.Now()
			return
		}
		select {
		case <-stop:
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func mhMedian(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2].Round(time.Millisecond)
}

func mhHasLine(out, line string) bool { return mhLineWith(out+"\n", line) != "" }

// mhLineWith is the first line of out containing s.
func mhLineWith(out, s string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line+" ", s) {
			return line
		}
	}
	return ""
}

// mhGossipKey is a fixed test key (base64 of 32 bytes), distinct per seed.
func mhGossipKey(seed byte) string {
	k := make([]byte, 32)
	for i := range k {
		k[i] = seed*31 + byte(i)
	}
	return base64.StdEncoding.EncodeToString(k)
}

// dockerdPID is host i's dockerd, from its pidfile.
func (l *Lab) mhDockerdPID(t testing.TB, i int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.HostDir(i), "pid"))
	if err != nil {
		t.Fatalf("dockerd pidfile of host %d: %v", i, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		t.Fatalf("dockerd pidfile of host %d: %q", i, b)
	}
	return pid
}

// pluginPID is the vxovl process of host i: the init of the plugin's containerd task, checked
// to run the vxovl binary in host i's network namespace.
func (l *Lab) mhPluginPID(t testing.TB, i int) int {
	t.Helper()
	id := l.MustDocker(t, i, "plugin", "inspect", "-f", "{{.Id}}", PluginName)
	b, err := os.ReadFile(filepath.Join(l.HostDir(i), "exec", "containerd", "daemon", "io.containerd.runtime.v2.task", "plugins.moby", id, "init.pid"))
	if err != nil {
		t.Fatalf("host %d: pid of plugin %s: %v", i, id, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		t.Fatalf("host %d: plugin init.pid %q", i, b)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || filepath.Base(exe) != "vxovl" {
		t.Fatalf("host %d: plugin pid %d runs %q (%v), not vxovl", i, pid, exe, err)
	}
	if l.mhNetnsInode(t, fmt.Sprintf("/proc/%d/ns/net", pid)) != l.mhNetnsInode(t, "/run/netns/"+l.Netns(i)) {
		t.Fatalf("host %d: plugin pid %d is not in the host's network namespace", i, pid)
	}
	return pid
}

func (l *Lab) mhNetnsInode(t testing.TB, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}

// killHost kills every process left in host i's network namespace and their descendants
// (containerd, shims, containers): all of them were started by this lab's dockerd.
func (l *Lab) mhKillHost(t testing.TB, i int) {
	t.Helper()
	want := l.mhNetnsInode(t, "/run/netns/"+l.Netns(i))
	procs, _ := filepath.Glob("/proc/[0-9]*")
	parent := map[int]int{}
	roots := map[int]bool{}
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil {
			continue
		}
		if stat, err := os.ReadFile(p + "/stat"); err == nil {
			// "pid (comm) state ppid ...": comm may hold spaces, so cut after the last ')'.
			if f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); len(f) > 1 {
				parent[pid], _ = strconv.Atoi(f[1])
			}
		}
		var st syscall.Stat_t
		if syscall.Stat(p+"/ns/net", &st) == nil && st.Ino == want {
			roots[pid] = true
		}
	}
	for changed := true; changed; {
		changed = false
		for pid, pp := range parent {
			if !roots[pid] && roots[pp] {
				roots[pid], changed = true, true
			}
		}
	}
	delete(roots, os.Getpid())
	var pids []int
	for pid := range roots {
		pids = append(pids, pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	poll.Until(t, 10*time.Second, fmt.Sprintf("processes of host %d gone", i), func() (bool, string) {
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil {
				if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(b), ") Z ") {
					return false, fmt.Sprintf("pid %d still alive", pid)
				}
			}
		}
		return true, ""
	})
}

// mhPluginStatus is what GET /vxovl/state on the plugin socket says.
type mhPluginStatus struct {
	Node    string
	Cluster struct {
		DecryptFailures uint64
		RecordsApplied  uint64
	}
	Members []struct {
		Name, Addr, State string
	}
}

// pluginState asks host i's plugin for its debug state. Its socket lives in dockerd's private
// mount namespace, reached through /proc/PID/root; a directory fd keeps the path short enough
// for a unix socket address.
func (l *Lab) mhPluginState(t testing.TB, i int) mhPluginStatus {
	t.Helper()
	id := l.MustDocker(t, i, "plugin", "inspect", "-f", "{{.Id}}", PluginName)
	dir, err := os.Open(fmt.Sprintf("/proc/%d/root/run/docker/plugins/%s", l.mhDockerdPID(t, i), id))
	if err != nil {
		t.Fatalf("host %d: plugin socket directory: %v", i, err)
	}
	defer dir.Close()
	sock := fmt.Sprintf("/proc/self/fd/%d/vxovl.sock", dir.Fd())
	client := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	resp, err := client.Get("http://plugin/vxovl/state")
	if err != nil {
		t.Fatalf("host %d: GET /vxovl/state: %v", i, err)
	}
	defer resp.Body.Close()
	var st mhPluginStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("host %d: decoding /vxovl/state: %v", i, err)
	}
	return st
}
