package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// TestIPAMConcurrentRuns: three lab hosts each start 20 containers at once
// on one overlay that uses the vxovl IPAM. All 60 get distinct addresses
// from the subnet, and every container reaches one container on each other
// host.
//
// Gate: VXOVL_E2E=1; needs root, dockerd and `make plugin`.
func TestIPAMConcurrentRuns(t *testing.T) {
	lab := ipamLab(t, 3)
	const perHost = 20
	hosts := []int{1, 2, 3}
	for _, h := range hosts {
		lab.MustDocker(t, h, "network", "create", "-d", "vxovl:latest", "--ipam-driver", "vxovl:latest",
			"--subnet", "10.50.0.0/24", "-o", "vni=5050", "ipamnet")
	}

	// 60 concurrent `docker run`, 20 per host.
	var wg sync.WaitGroup
	errs := make(chan error, len(hosts)*perHost)
	for _, h := range hosts {
		for j := range perHost {
			wg.Go(func() {
				name := fmt.Sprintf("ip-h%d-%02d", h, j)
				if out, err := lab.Docker(t, h, "run", "-d", "--net", "ipamnet", "--name", name, "vxovl/busybox", "sleep", "3600"); err != nil {
					errs <- fmt.Errorf("host %d %s: %w: %s", h, name, err, out)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	subnet := netip.MustParsePrefix("10.50.0.0/24")
	ips := map[int][]netip.Addr{}
	names := map[netip.Addr]string{}
	for _, h := range hosts {
		for j := range perHost {
			name := fmt.Sprintf("ip-h%d-%02d", h, j)
			out := lab.MustDocker(t, h, "inspect", "-f", `{{(index .NetworkSettings.Networks "ipamnet").IPAddress}}`, name)
			a, err := netip.ParseAddr(strings.TrimSpace(out))
			if err != nil || !subnet.Contains(a) || a == netip.MustParseAddr("10.50.0.1") {
				t.Fatalf("%s on host %d got address %q", name, h, out)
			}
			if other, dup := names[a]; dup {
				t.Errorf("DUPLICATE: %s on host %d and %s both have %s", name, h, other, a)
			}
			names[a] = fmt.Sprintf("%s(h%d)", name, h)
			ips[h] = append(ips[h], a)
		}
	}
	if len(names) != len(hosts)*perHost {
		t.Fatalf("%d distinct addresses for %d containers", len(names), len(hosts)*perHost)
	}
	t.Logf("%d containers, %d distinct addresses", len(hosts)*perHost, len(names))

	// Every container pings one container on each other host (120 pings),
	// at most 12 at a time; each ping is retried until the overlay has
	// converged or the deadline passes.
	type probe struct {
		host int
		name string
		dst  netip.Addr
	}
	var probes []probe
	for _, h := range hosts {
		for j := range perHost {
			for _, o := range hosts {
				if o != h {
					probes = append(probes, probe{h, fmt.Sprintf("ip-h%d-%02d", h, j), ips[o][(j+o)%perHost]})
				}
			}
		}
	}
	sem := make(chan struct{}, 12)
	var mu sync.Mutex
	var failed []string
	deadline := time.Now().Add(60 * time.Second)
	for _, p := range probes {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			for {
				_, err := lab.Docker(t, p.host, "exec", p.name, "ping", "-c1", "-W1", p.dst.String())
				if err == nil {
					return
				}
				if time.Now().After(deadline) {
					mu.Lock()
					failed = append(failed, fmt.Sprintf("%s(h%d) -> %s (%s): %v", p.name, p.host, p.dst, names[p.dst], err))
					mu.Unlock()
					return
				}
				time.Sleep(200 * time.Millisecond) // retry pacing, not synchronisation: the loop polls a condition
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of %d cross-host pings failed, e.g.:\n%s", len(failed), len(probes), strings.Join(failed[:min(len(failed), 10)], "\n"))
	}
	t.Logf("%d cross-host pings succeeded", len(probes))

	// Removing containers releases their addresses: a new container on
	// host 1 may reuse one, and the network can be removed afterwards.
	for j := range perHost {
		lab.MustDocker(t, 1, "rm", "-f", fmt.Sprintf("ip-h1-%02d", j))
	}
	lab.MustDocker(t, 1, "run", "-d", "--net", "ipamnet", "--name", "ip-h1-again", "vxovl/busybox", "sleep", "3600")
	out := lab.MustDocker(t, 1, "inspect", "-f", `{{(index .NetworkSettings.Networks "ipamnet").IPAddress}}`, "ip-h1-again")
	if a, err := netip.ParseAddr(strings.TrimSpace(out)); err != nil || names[a] != "" && !strings.HasSuffix(names[a], "(h1)") {
		t.Fatalf("new container on host 1 got %q, which belongs to %s", out, names[a])
	}
}

// ipamLab is a lab of n hosts with vxovl on each (node names h1..hn, a 3s
// dead timeout so partitions are noticed quickly).
func ipamLab(t *testing.T, n int) *Lab {
	t.Helper()
	l := Up(t, n)
	for i := 1; i <= n; i++ {
		l.InstallPlugin(t, i, "PEERS="+l.PeersExcept(i), fmt.Sprintf("NODE_NAME=h%d", i), "DEAD_TIMEOUT=3s")
	}
	return l
}

// ipamStats is the part of GET /vxovl/state the IPAM tests read.
type ipamStats struct {
	IPAM struct {
		Conflicts, ClaimsWon, ClaimsLost, BlocksReleased uint64
	} `json:"ipam"`
	Driver  struct{ IPConflicts uint64 } `json:"driver"`
	Cluster struct{ IPConflicts uint64 } `json:"cluster"`
	Members []struct{ Name string }      `json:"members"`
}

func (l *Lab) ipamState(t testing.TB, i int) ipamStats {
	t.Helper()
	var st ipamStats
	resp, err := pluginClient(l.pluginPID(t, i)).Get("http://vxovl/vxovl/state")
	if err != nil {
		t.Fatalf("host %d: GET /vxovl/state: %v", i, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("host %d: GET /vxovl/state: %s", i, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("host %d: decoding /vxovl/state: %v", i, err)
	}
	return st
}

// sees reports whether the host lists node name as a member: the cluster
// lists live members only.
func (st ipamStats) sees(name string) bool {
	return slices.ContainsFunc(st.Members, func(m struct{ Name string }) bool { return m.Name == name })
}

// runOn starts a sleeping container on net on host i and returns its
// address, or the error docker printed. A container whose start failed is
// removed.
func (l *Lab) runOn(t testing.TB, i int, name, net string, extra ...string) (netip.Addr, error) {
	t.Helper()
	args := append([]string{"run", "-d", "--net", net, "--name", name}, extra...)
	out, err := l.Docker(t, i, append(args, "vxovl/busybox", "sleep", "100000")...)
	if err != nil {
		_, _ = l.Docker(t, i, "rm", "-f", name)
		return netip.Addr{}, fmt.Errorf("%w: %s", err, out)
	}
	a, err := netip.ParseAddr(l.ContainerIP(t, i, name, net))
	if err != nil {
		t.Fatalf("host %d: %s: %v", i, name, err)
	}
	return a, nil
}

func (l *Lab) mustRunOn(t testing.TB, i int, name, net string, extra ...string) netip.Addr {
	t.Helper()
	a, err := l.runOn(t, i, name, net, extra...)
	if err != nil {
		t.Fatalf("host %d: run %s on %s: %v", i, name, net, err)
	}
	return a
}

// refused runs a container that must fail to start, with an error that
// mentions want.
func (l *Lab) refused(t testing.TB, i int, name, net, want string, extra ...string) {
	t.Helper()
	a, err := l.runOn(t, i, name, net, extra...)
	if err == nil {
		t.Fatalf("host %d: %s %v started with %s, want a refusal mentioning %q", i, name, extra, a, want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("host %d: %s %v refused, but the error does not say %q: %v", i, name, extra, want, err)
	}
	t.Logf("host %d: %s %v refused: %s", i, name, extra, lastLine(err.Error()))
}

func lastLine(s string) string {
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, "Error response") {
			return line
		}
	}
	return strings.TrimSpace(s)
}

func (l *Lab) networkOnAll(t testing.TB, name string, args ...string) {
	t.Helper()
	for i := 1; i <= l.N; i++ {
		l.MustDocker(t, i, append(append([]string{"network", "create", "-d", Driver, "--ipam-driver", Driver}, args...), name)...)
	}
}

// containerGateway is the gateway container c on host i got on net (network
// inspect shows only an explicit --gateway).
func (l *Lab) containerGateway(t testing.TB, i int, c, net string) string {
	t.Helper()
	return l.MustDocker(t, i, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).Gateway}}`, net), c)
}

// gatewayOn is the gateway docker network inspect shows on host i.
func (l *Lab) gatewayOn(t testing.TB, i int, net string) string {
	t.Helper()
	return l.MustDocker(t, i, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", net)
}

func addrs(lo, hi string, except ...string) []netip.Addr {
	var out []netip.Addr
	for a := netip.MustParseAddr(lo); a.Compare(netip.MustParseAddr(hi)) <= 0; a = a.Next() {
		if !slices.Contains(except, a.String()) {
			out = append(out, a)
		}
	}
	return out
}

func sortedAddrs(m map[netip.Addr]string) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

// TestIPAMDockerSemantics checks the vxovl IPAM against real dockerds for
// what its unit tests cannot prove: what Docker 20.10 really sends for
// --ip, --aux-address and --gateway, --ip-range, release and reuse of
// addresses and blocks, a kill -9 of the plugin, and a partition in which
// both sides pin the same --ip. One 3-host lab for all of it.
func TestIPAMDockerSemantics(t *testing.T) {
	l := ipamLab(t, 3)

	t.Run("explicit ip, aux addresses and gateway", func(t *testing.T) {
		// A /27 in blocks of 8: 30 host addresses, minus the gateway, two
		// aux addresses and one pinned --ip, leaves 26 for containers.
		l.networkOnAll(t, "ipx", "--subnet", "10.61.0.0/27", "--gateway", "10.61.0.30",
			"--aux-address", "a=10.61.0.2", "--aux-address", "b=10.61.0.17", "--ipam-opt", "block-size=3", "-o", "vni=6161")
		for i := 1; i <= l.N; i++ {
			if gw := l.gatewayOn(t, i, "ipx"); gw != "10.61.0.30" {
				t.Fatalf("host %d: gateway %q, want the explicit 10.61.0.30", i, gw)
			}
		}
		if a := l.mustRunOn(t, 1, "pin1", "ipx", "--ip", "10.61.0.20"); a.String() != "10.61.0.20" {
			t.Fatalf("pin1 got %s, want its --ip 10.61.0.20", a)
		}
		l.refused(t, 2, "pin2", "ipx", "already pinned by node h1", "--ip", "10.61.0.20")
		l.refused(t, 3, "pin3", "ipx", "already pinned by node h1", "--ip", "10.61.0.20")
		l.refused(t, 2, "gw2", "ipx", "gateway", "--ip", "10.61.0.30")
		l.refused(t, 3, "aux3", "ipx", "10.61.0.17", "--ip", "10.61.0.17")

		// Host 1 takes every block: exactly the 26 free addresses, then a
		// clear "no free address".
		got := map[netip.Addr]string{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		var failures []string
		sem := make(chan struct{}, 4)
		for j := range 27 {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				name := fmt.Sprintf("fill%02d", j)
				a, err := l.runOn(t, 1, name, "ipx")
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failures = append(failures, err.Error())
					return
				}
				if other, dup := got[a]; dup {
					t.Errorf("DUPLICATE %s: %s and %s", a, name, other)
				}
				got[a] = name
			})
		}
		wg.Wait()
		want := addrs("10.61.0.1", "10.61.0.29", "10.61.0.2", "10.61.0.17", "10.61.0.20")
		if !slices.Equal(sortedAddrs(got), want) {
			t.Fatalf("host 1 handed out %v\nwant every free address %v", sortedAddrs(got), want)
		}
		if len(failures) != 1 || !strings.Contains(failures[0], "no free address") {
			t.Fatalf("want exactly one run refused with \"no free address\", got %d: %v", len(failures), failures)
		}
		t.Logf("26 containers got exactly the free addresses; the 27th: %s", lastLine(failures[0]))
		// An --ip inside a block host 1 holds is refused on the others.
		l.refused(t, 2, "inblock2", "ipx", "held by node h1", "--ip", "10.61.0.5")
		for i := 1; i <= l.N; i++ {
			if gw := l.gatewayOn(t, i, "ipx"); gw != "10.61.0.30" {
				t.Fatalf("host %d: gateway changed to %q", i, gw)
			}
		}
	})

	rangeIPs := map[netip.Addr]string{}
	t.Run("ip-range", func(t *testing.T) {
		l.networkOnAll(t, "rng", "--subnet", "10.62.0.0/24", "--ip-range", "10.62.0.128/26", "--ipam-opt", "block-size=3", "-o", "vni=6262")
		rng := netip.MustParsePrefix("10.62.0.128/26")
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := 1; i <= l.N; i++ {
			for j := range 6 {
				wg.Go(func() {
					name := fmt.Sprintf("r%d-%d", i, j)
					a, err := l.runOn(t, i, name, "rng")
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						t.Errorf("host %d: %v", i, err)
						return
					}
					if !rng.Contains(a) {
						t.Errorf("host %d: %s got %s, outside --ip-range %s", i, name, a, rng)
					}
					if other, dup := rangeIPs[a]; dup {
						t.Errorf("DUPLICATE %s: %s(h%d) and %s", a, name, i, other)
					}
					rangeIPs[a] = fmt.Sprintf("%s(h%d)", name, i)
				})
			}
		}
		wg.Wait()
		for i := 1; i <= l.N; i++ {
			// vxovl's Join sets no gateway, so neither network nor container
			// inspect shows the default one; that it is never handed out is
			// what the address checks prove.
			if gw := l.containerGateway(t, i, fmt.Sprintf("r%d-0", i), "rng"); gw != "" && gw != "10.62.0.1" {
				t.Errorf("host %d: default gateway %q, want 10.62.0.1 on every host", i, gw)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
		t.Logf("18 containers on 3 hosts, all distinct and inside %s: %v", rng, sortedAddrs(rangeIPs))
	})

	t.Run("release and reuse", func(t *testing.T) {
		// A /28 in blocks of 4: 13 addresses besides the default gateway.
		l.networkOnAll(t, "gw", "--subnet", "10.63.0.0/28", "--ipam-opt", "block-size=2", "-o", "vni=6363")
		got := map[netip.Addr]string{}
		byHost := map[int][]netip.Addr{}
		anyName := map[int]string{}
		full := map[int]bool{}
		for k := 0; len(full) < l.N && k < 40; k++ {
			i := k%l.N + 1
			if full[i] {
				continue
			}
			name := fmt.Sprintf("g%d-%d", i, k)
			a, err := l.runOn(t, i, name, "gw")
			if err != nil {
				if !strings.Contains(err.Error(), "no free address") {
					t.Fatalf("host %d: %v", i, err)
				}
				full[i] = true
				continue
			}
			if other, dup := got[a]; dup {
				t.Fatalf("DUPLICATE %s: %s(h%d) and %s", a, name, i, other)
			}
			got[a] = name
			byHost[i] = append(byHost[i], a)
			anyName[i] = name
		}
		if want := addrs("10.63.0.2", "10.63.0.14"); !slices.Equal(sortedAddrs(got), want) {
			t.Fatalf("the cluster handed out %v, want every address but the gateway: %v", sortedAddrs(got), want)
		}
		for i := 1; i <= l.N; i++ {
			if gw := l.containerGateway(t, i, anyName[i], "gw"); anyName[i] != "" && gw != "" && gw != "10.63.0.1" {
				t.Errorf("host %d: default gateway %q, want 10.63.0.1", i, gw)
			}
		}
		h2Addrs := byHost[2]
		blocks := map[netip.Prefix]bool{}
		for _, a := range h2Addrs {
			p, _ := a.Prefix(30)
			blocks[p] = true
		}
		t.Logf("per host: %v; host 2 holds %d blocks", byHost, len(blocks))
		if len(h2Addrs) == 0 {
			t.Fatal("host 2 got no address: cannot test its release")
		}

		// Host 2 removes its containers: it keeps one block against churn
		// and gives the others back.
		before := l.ipamState(t, 2).IPAM.BlocksReleased
		var names []string
		for a, n := range got {
			if slices.Contains(h2Addrs, a) {
				names = append(names, n)
			}
		}
		l.MustDocker(t, 2, append([]string{"rm", "-f"}, names...)...)
		poll.Until(t, 10*time.Second, "host 2 gives back its empty blocks but one", func() (bool, string) {
			n := l.ipamState(t, 2).IPAM.BlocksReleased - before
			return n == uint64(len(blocks)-1), fmt.Sprintf("released %d, want %d", n, len(blocks)-1)
		})
		// Its addresses are reused: host 2 gets exactly them back.
		again := map[netip.Addr]string{}
		for j := range h2Addrs {
			a := l.mustRunOn(t, 2, fmt.Sprintf("g2again%d", j), "gw")
			again[a] = "x"
		}
		if !slices.Equal(sortedAddrs(again), sortedAddrs(sliceSet(h2Addrs))) {
			t.Fatalf("host 2 got %v after removing %v", sortedAddrs(again), h2Addrs)
		}
		// Leaving the network gives back every block.
		for j := range h2Addrs {
			l.MustDocker(t, 2, "rm", "-f", fmt.Sprintf("g2again%d", j))
		}
		before = l.ipamState(t, 2).IPAM.BlocksReleased
		l.MustDocker(t, 2, "network", "rm", "gw")
		if n := l.ipamState(t, 2).IPAM.BlocksReleased - before; n != 1 {
			t.Fatalf("network rm on host 2 released %d blocks, want 1", n)
		}
	})

	t.Run("kill -9 keeps allocations", func(t *testing.T) {
		if len(rangeIPs) == 0 {
			t.Skip("needs the ip-range containers")
		}
		old := l.pluginPID(t, 1)
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 30*time.Second, "dockerd restarts the plugin on host 1", func() (bool, string) {
			pid, err := l.findPluginPID(1)
			if err != nil || pid == old {
				return false, fmt.Sprintf("pid %d, %v", pid, err)
			}
			_, err = l.getState(pid)
			return err == nil, fmt.Sprint(err)
		})
		all := map[netip.Addr]string{}
		for a, n := range rangeIPs {
			all[a] = n
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := 1; i <= l.N; i++ {
			for j := range 3 {
				wg.Go(func() {
					name := fmt.Sprintf("k%d-%d", i, j)
					a, err := l.runOn(t, i, name, "rng")
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						t.Errorf("host %d after the kill: %v", i, err)
						return
					}
					if other, dup := all[a]; dup {
						t.Errorf("DUPLICATE after kill -9: %s(h%d) got %s, already %s", name, i, a, other)
					}
					all[a] = fmt.Sprintf("%s(h%d)", name, i)
				})
			}
		}
		wg.Wait()
		if !t.Failed() {
			t.Logf("9 new containers after kill -9 of host 1's plugin, %d distinct addresses in all", len(all))
		}
	})

	t.Run("partition and heal with the same --ip on both sides", func(t *testing.T) {
		l.networkOnAll(t, "part", "--subnet", "10.64.0.0/24", "-o", "vni=6464")
		var held []netip.Prefix
		for i := 1; i <= l.N; i++ {
			a := l.mustRunOn(t, i, fmt.Sprintf("p%d", i), "part")
			held = append(held, netip.PrefixFrom(a, 28).Masked())
		}
		// Blocks are picked at random and a partitioned host still honours
		// the blocks it knew of, so the address both sides pin must lie in
		// a block (a /28 of this /24) that no host holds.
		dup := freeAddressOutside(t, netip.MustParsePrefix("10.64.0.0/24"), 28, held)
		before := map[int]ipamStats{}
		for i := 1; i <= l.N; i++ {
			before[i] = l.ipamState(t, i)
		}
		wire := l.Name + "-wire"
		link := func(state string) {
			if out, err := exec.Command("ip", "-n", wire, "link", "set", "w-h3", state).CombinedOutput(); err != nil {
				t.Fatalf("ip link set w-h3 %s: %v: %s", state, err, out)
			}
		}
		link("down")
		t.Cleanup(func() { _ = exec.Command("ip", "-n", wire, "link", "set", "w-h3", "up").Run() })
		separated := func(i int, other string) (bool, string) {
			return !l.ipamState(t, i).sees(other), fmt.Sprintf("host %d still lists %s", i, other)
		}
		poll.Until(t, 30*time.Second, "the partition is noticed", func() (bool, string) {
			for _, c := range []struct {
				i int
				o string
			}{{1, "h3"}, {2, "h3"}, {3, "h1"}, {3, "h2"}} {
				if ok, why := separated(c.i, c.o); !ok {
					return false, why
				}
			}
			return true, ""
		})
		a1 := l.mustRunOn(t, 1, "dup1", "part", "--ip", dup.String())
		a3 := l.mustRunOn(t, 3, "dup3", "part", "--ip", dup.String())
		t.Logf("during the partition host 1 and host 3 both started --ip %s / %s", a1, a3)
		link("up")
		poll.Until(t, 60*time.Second, "the partition heals", func() (bool, string) {
			for i := 1; i <= l.N; i++ {
				for j := 1; j <= l.N; j++ {
					if !l.ipamState(t, i).sees(fmt.Sprintf("h%d", j)) {
						return false, fmt.Sprintf("host %d does not list h%d", i, j)
					}
				}
			}
			return true, ""
		})
		for _, i := range []int{1, 3} {
			poll.Until(t, 30*time.Second, fmt.Sprintf("host %d reports the IPAM conflict", i), func() (bool, string) {
				st := l.ipamState(t, i)
				// The driver counts a remote endpoint it refuses to program; when
				// the cluster already kept our own (newer) endpoint, it counts.
				return st.IPAM.Conflicts > before[i].IPAM.Conflicts &&
						st.Driver.IPConflicts+st.Cluster.IPConflicts > before[i].Driver.IPConflicts+before[i].Cluster.IPConflicts,
					fmt.Sprintf("ipam conflicts %d, driver ip conflicts %d, cluster ip conflicts %d", st.IPAM.Conflicts, st.Driver.IPConflicts, st.Cluster.IPConflicts)
			})
			if n := l.countLog(i, "ADDRESS CONFLICT"); n == 0 {
				t.Errorf("host %d: no ADDRESS CONFLICT line in its log", i)
			}
			// Not programmed: no permanent neighbor entry for the clashing address.
			ov := l.mhOverlay(t, i, 6464)
			if neigh := Neighbors(t, ov); strings.Contains(neigh, dup.String()+" ") {
				t.Errorf("host %d programmed the clashing remote %s:\n%s", i, dup, neigh)
			}
		}
		st2 := l.ipamState(t, 2)
		ov2 := l.mhOverlay(t, 2, 6464)
		t.Logf("host 2 (a bystander): cluster IP conflicts %d -> %d, neighbor entries for the address: %q",
			before[2].Cluster.IPConflicts, st2.Cluster.IPConflicts, mhLineWith(Neighbors(t, ov2)+"\n", dup.String()+" "))
		for _, i := range []int{1, 3} {
			st := l.ipamState(t, i)
			t.Logf("host %d: ipam conflicts %d -> %d, driver ip conflicts %d -> %d, cluster ip conflicts %d -> %d", i,
				before[i].IPAM.Conflicts, st.IPAM.Conflicts, before[i].Driver.IPConflicts, st.Driver.IPConflicts,
				before[i].Cluster.IPConflicts, st.Cluster.IPConflicts)
		}
	})
}

// TestIPAMRestartKeepsMAC: on the README's path (vxovl network and vxovl
// IPAM) a restarted container comes back with its address and its MAC, the
// one the driver derives from them, so containers that talk to it keep a
// right ARP entry. While the IPAM asked Docker for MACs, Docker gave every
// new endpoint a random one.
func TestIPAMRestartKeepsMAC(t *testing.T) {
	l := ipamLab(t, 2)
	l.networkOnAll(t, "macs", "--subnet", "10.65.0.0/24", "-o", "vni=6565")
	l.mustRunOn(t, 1, "m1", "macs")
	l.mustRunOn(t, 2, "m2", "macs", "--ip", "10.65.0.200")
	type identity struct{ ip, mac string }
	identityOf := func(i int, c string) identity {
		return identity{l.ContainerIP(t, i, c, "macs"),
			l.MustDocker(t, i, "inspect", "-f", `{{(index .NetworkSettings.Networks "macs").MacAddress}}`, c)}
	}
	before := []identity{identityOf(1, "m1"), identityOf(2, "m2")}
	l.MustDocker(t, 1, "restart", "-t", "0", "m1")
	l.MustDocker(t, 2, "restart", "-t", "0", "m2")
	after := []identity{identityOf(1, "m1"), identityOf(2, "m2")}
	for i, c := range []string{"m1", "m2"} {
		if after[i] != before[i] {
			t.Errorf("%s (host %d) came back as %+v, was %+v: want the same address and MAC", c, i+1, after[i], before[i])
		}
	}
	t.Logf("after docker restart: m1 %+v, m2 (--ip) %+v", after[0], after[1])
}

// freeAddressOutside is the middle address of the highest block of
// subnet (blocks are /blockLen prefixes) that none of held covers.
func freeAddressOutside(t testing.TB, subnet netip.Prefix, blockLen int, held []netip.Prefix) netip.Addr {
	t.Helper()
	var last netip.Addr
	for a := subnet.Addr(); subnet.Contains(a); a = a.Next() {
		block := netip.PrefixFrom(a, blockLen).Masked()
		if a == block.Addr() && !slices.Contains(held, block) {
			last = a
		}
	}
	if !last.IsValid() {
		t.Fatalf("every block of %s is held: %v", subnet, held)
	}
	for range 1 << (32 - blockLen) / 2 {
		last = last.Next()
	}
	return last
}

func sliceSet(as []netip.Addr) map[netip.Addr]string {
	m := map[netip.Addr]string{}
	for _, a := range as {
		m[a] = "x"
	}
	return m
}
