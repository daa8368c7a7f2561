package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// The scale lab of issue 13: 8 hosts, 4 networks each on its own set of 3-5 hosts, 10 containers
// per host spread over the host's networks. Host scaleX has neither of the burst networks (sa,
// sb), host scaleY has both; the burst starts containers on those networks on the other hosts
// that have them.
const (
	scaleHosts   = 8
	scalePerHost = 10
	scaleX       = 8
	scaleY       = 1
	// scaleQuiet is the window of the quiet baseline of underlay traffic.
	scaleQuiet = 10 * time.Second
	// scaleMaxShare is the most of host Y's gossip bytes by UDP during the burst that host X
	// may receive: X has none of the burst's networks, so it should hear little more than
	// failure detection.
	scaleMaxShare = 0.25
	// scaleDeadTimeout spaces failure detection's probes (DEAD_TIMEOUT/10 apart, some 125 bytes
	// a second per host at the default 10s): they reach every host alike and, over a burst
	// that takes 10-20 s on this machine, would be as large as what a host that has the burst's
	// networks should receive. No host dies in this test.
	scaleDeadTimeout = "60s"
	// scaleParallel bounds the docker commands the test runs at once on the 2-core machine.
	scaleParallel = 8
)

type scaleNet struct {
	Name  string
	VNI   uint32
	Third int // the subnet is 10.141.Third.0/24; host i's containers get .(i-1)*32/27
	Hosts []int
}

var scaleNets = []scaleNet{
	{"sa", 9301, 1, []int{1, 2, 3, 4}},
	{"sb", 9302, 2, []int{1, 2, 5}},
	{"sc", 9303, 3, []int{6, 7, 8}},
	{"sd", 9304, 4, []int{3, 5, 6, 7, 8}},
}

// scaleBurst is where the burst's 40 containers start: hosts of sa and sb other than X and Y.
var scaleBurst = []struct {
	Host int
	Nets []string // round robin over these, 10 containers per host
}{
	{2, []string{"sa", "sb"}}, {3, []string{"sa"}}, {4, []string{"sa"}}, {5, []string{"sb"}},
}

// scaleContainer is a container of the scale lab as Docker reports it.
type scaleContainer struct {
	Name, Net string
	Host      int
	IP, MAC   string
}

// TestScale is the lab acceptance of issue 13 (each host pays only for the networks it has):
// every pair of containers that share a network pings; each host's overlay namespaces are
// exactly its own networks', holding exactly the static entries of the other hosts' containers
// on them; and during a burst of 40 container starts on networks sa and sb, host X, which has
// neither, receives on its underlay interface a small fraction of what host Y, which has both,
// receives. A cluster that sends every endpoint to every member fails the last: X then hears
// about as much as Y. About 2 minutes on the loaded 2-core machine, lab up and down included.
func TestScale(t *testing.T) {
	start := time.Now()
	l := Up(t, scaleHosts)
	byName := map[string]scaleNet{}
	netsOf := map[int][]string{}
	for _, n := range scaleNets {
		byName[n.Name] = n
		for _, i := range n.Hosts {
			netsOf[i] = append(netsOf[i], n.Name)
		}
	}
	if errs := eachParallel(scaleHosts, scaleParallel, func(k int) error {
		i := k + 1
		if out, err := l.run(nil, "install-plugin", strconv.Itoa(i), "PEERS="+l.PeersExcept(i),
			fmt.Sprintf("NODE_NAME=s%d", i), "DEAD_TIMEOUT="+scaleDeadTimeout); err != nil {
			return fmt.Errorf("host %d: install plugin: %w\n%s\n%s", i, err, out, l.PluginLog(i))
		}
		for _, name := range netsOf[i] {
			n := byName[name]
			if out, err := l.Docker(t, i, "network", "create", "-d", Driver,
				"--subnet", fmt.Sprintf("10.141.%d.0/24", n.Third), "--ip-range", fmt.Sprintf("10.141.%d.%d/27", n.Third, (i-1)*32),
				"-o", fmt.Sprint("vni=", n.VNI), n.Name); err != nil {
				return fmt.Errorf("host %d: network create %s: %w\n%s", i, n.Name, err, out)
			}
		}
		return nil
	}); len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	t.Logf("plugins and networks on %d hosts after %v", scaleHosts, time.Since(start).Round(time.Second))

	// 10 containers per host, round robin over its networks; the hosts start theirs in parallel.
	if errs := eachParallel(scaleHosts, scaleParallel, func(k int) error {
		i := k + 1
		for c := range scalePerHost {
			net := netsOf[i][c%len(netsOf[i])]
			if out, err := l.Docker(t, i, "run", "-d", "--name", fmt.Sprintf("s%d-%02d", i, c), "--network", net,
				"vxovl/busybox", "sleep", "3600"); err != nil {
				return fmt.Errorf("host %d: run on %s: %w\n%s", i, net, err, out)
			}
		}
		return nil
	}); len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	cs := l.scaleContainers(t, netsOf)
	if len(cs) != scaleHosts*scalePerHost {
		t.Fatalf("%d containers on the scale networks, want %d", len(cs), scaleHosts*scalePerHost)
	}
	t.Logf("%d containers running after %v", len(cs), time.Since(start).Round(time.Second))

	t.Run("ExactTables", func(t *testing.T) {
		took := poll.Until(t, time.Minute, "every host's overlays hold exactly its networks' remote containers", func() (bool, string) {
			why := l.scaleTablesMismatch(t, netsOf, cs)
			return why == "", why
		})
		t.Logf("tables exact %v after the containers were listed", took.Round(time.Millisecond))
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("AllPairsPing", func(t *testing.T) {
		begin := time.Now()
		pings, retried, failed := l.scalePingAll(t, cs)
		if len(failed) > 0 {
			t.Errorf("%d of %d pings between containers sharing a network failed twice:\n%s", len(failed), pings,
				strings.Join(failed[:min(len(failed), 20)], "\n"))
		}
		t.Logf("%d pings (every ordered pair of containers sharing a network) in %v; %d unanswered at first, tried again",
			pings, time.Since(begin).Round(time.Millisecond), retried)
	})

	t.Run("GossipScoped", func(t *testing.T) {
		l.scaleBurstTraffic(t, netsOf, cs)
	})
	t.Logf("TestScale body took %v", time.Since(start).Round(time.Second))
}

// scaleContainers lists the containers of the scale networks on every host, from Docker.
func (l *Lab) scaleContainers(t testing.TB, netsOf map[int][]string) []scaleContainer {
	t.Helper()
	var cs []scaleContainer
	for i := 1; i <= l.N; i++ {
		for _, net := range netsOf[i] {
			out := l.MustDocker(t, i, "network", "inspect", "-f",
				`{{range .Containers}}{{.Name}} {{.IPv4Address}} {{.MacAddress}}{{"\n"}}{{end}}`, net)
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				if len(f) == 0 {
					continue
				}
				ip, _, _ := strings.Cut(f[1], "/")
				if len(f) != 3 || ip == "" {
					t.Fatalf("host %d: network %s: container line %q", i, net, line)
				}
				cs = append(cs, scaleContainer{Name: f[0], Net: net, Host: i, IP: ip, MAC: f[2]})
			}
		}
	}
	return cs
}

// scaleTablesMismatch says how the hosts' overlays differ from what the containers call for, or
// "" when they match: host i has one overlay namespace per network it has and no other, and each
// holds as static (permanent) neighbor entries on vxlan0 exactly IP -> MAC of that network's
// containers on other hosts, and as static FDB entries on vxlan0 exactly MAC -> the underlay
// address of the container's host.
func (l *Lab) scaleTablesMismatch(t testing.TB, netsOf map[int][]string, cs []scaleContainer) string {
	t.Helper()
	var why []string
	for i := 1; i <= l.N; i++ {
		want := map[string]bool{}
		for _, net := range netsOf[i] {
			want[fmt.Sprintf("vni-%d", scaleVNI(net))] = true
		}
		have := map[string]bool{}
		for _, ov := range l.Overlays(t, i) {
			have[filepath.Base(ov)] = true
		}
		if !maps.Equal(want, have) {
			why = append(why, fmt.Sprintf("host %d: overlay namespaces %v, want %v", i, slices.Sorted(maps.Keys(have)), slices.Sorted(maps.Keys(want))))
			continue
		}
		for _, net := range netsOf[i] {
			wantNeigh, wantFDB := map[string]bool{}, map[string]bool{}
			for _, c := range cs {
				if c.Net == net && c.Host != i {
					wantNeigh[c.IP+" "+c.MAC] = true
					wantFDB[c.MAC+" "+l.Addr(c.Host)] = true
				}
			}
			ov := filepath.Join(l.NetnsDir(i), fmt.Sprintf("vni-%d", scaleVNI(net)))
			neigh, fdb := staticVXLANEntries(t, ov)
			if d := setDiff(neigh, wantNeigh); d != "" {
				why = append(why, fmt.Sprintf("host %d network %s: neighbor entries (IP MAC) %s", i, net, d))
			}
			if d := setDiff(fdb, wantFDB); d != "" {
				why = append(why, fmt.Sprintf("host %d network %s: FDB entries (MAC VTEP) %s", i, net, d))
			}
		}
	}
	return strings.Join(why, "\n")
}

func scaleVNI(net string) uint32 {
	for _, n := range scaleNets {
		if n.Name == net {
			return n.VNI
		}
	}
	panic("scale network " + net + " is not in scaleNets")
}

// staticVXLANEntries reads the overlay's permanent entries on vxlan0: neighbors as "IP MAC" and
// FDB entries as "MAC VTEP" (the all-zeros flood entries included; a MAC with two destinations
// is two entries).
func staticVXLANEntries(t testing.TB, overlay string) (neigh, fdb map[string]bool) {
	t.Helper()
	neigh, fdb = map[string]bool{}, map[string]bool{}
	out, err := InNetns(t, overlay, "ip", "neigh", "show", "dev", "vxlan0", "nud", "permanent")
	if err != nil {
		t.Fatalf("ip neigh in %s: %v\n%s", overlay, err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		// "10.141.1.34 lladdr 02:42:0a:8d:01:22 PERMANENT"
		if f := strings.Fields(line); len(f) >= 3 && f[1] == "lladdr" {
			neigh[f[0]+" "+f[2]] = true
		}
	}
	out, err = InNetns(t, overlay, "bridge", "fdb", "show", "dev", "vxlan0")
	if err != nil {
		t.Fatalf("bridge fdb in %s: %v\n%s", overlay, err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		// "02:42:0a:8d:01:22 dst 10.93.0.2 self permanent"; learned entries are not permanent.
		if f := strings.Fields(line); len(f) >= 3 && f[1] == "dst" && slices.Contains(f, "permanent") {
			fdb[f[0]+" "+f[2]] = true
		}
	}
	return neigh, fdb
}

// setDiff describes how have differs from want ("" when equal), naming a few of each kind.
func setDiff(have, want map[string]bool) string {
	var missing, extra []string
	for k := range want {
		if !have[k] {
			missing = append(missing, k)
		}
	}
	for k := range have {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	if len(missing)+len(extra) == 0 {
		return ""
	}
	few := func(s []string) string {
		slices.Sort(s)
		if len(s) > 5 {
			return fmt.Sprintf("%s ... (%d)", strings.Join(s[:5], ", "), len(s))
		}
		return strings.Join(s, ", ")
	}
	return fmt.Sprintf("%d, want %d: missing [%s] extra [%s]", len(have), len(want), few(missing), few(extra))
}

// scalePingAll has every container ping every other container of its network, in one docker
// exec per container that runs the pings in parallel (busybox ping -c1 -W2). A ping that gets no
// answer is tried once more, after all the others, so that one lost on this loaded machine does
// not fail the test while a missing entry still does. It returns the number of pings, those
// that failed the first time, and those that failed twice.
func (l *Lab) scalePingAll(t testing.TB, cs []scaleContainer) (pings, retried int, failed []string) {
	t.Helper()
	pids := l.scalePIDs(t, cs)
	todo := map[string][]string{}
	for _, c := range cs {
		for _, p := range cs {
			if p.Net == c.Net && p.Name != c.Name {
				todo[c.Name] = append(todo[c.Name], p.IP)
				pings++
			}
		}
	}
	again, errs := l.scalePing(t, cs, pids, todo)
	for _, ips := range again {
		retried += len(ips)
	}
	lost, errs2 := l.scalePing(t, cs, pids, again)
	for _, err := range append(errs, errs2...) {
		failed = append(failed, err.Error())
	}
	for _, c := range cs {
		for _, ip := range lost[c.Name] {
			failed = append(failed, fmt.Sprintf("%s (host %d, %s %s) -> %s", c.Name, c.Host, c.Net, c.IP, ip))
		}
	}
	return pings, retried, failed
}

// scalePing has each container named in todo ping the addresses todo gives it, and returns
// those that did not answer, by container.
//
// The lab's hosts share one kernel, and with it one ARP table for all their namespaces, which
// holds 1,024 entries that are not permanent (gc_thresh3) and frees none younger than 5 s: the
// 1,620 entries of every pair at once overflow it, and every new resolution fails ("neighbor
// table overflow"), in whichever lab of the machine asks next. So the pings go network by
// network, scaleParallel containers at a time, and every container of the network forgets its
// neighbors after each group: a few hundred entries at a time.
func (l *Lab) scalePing(t testing.TB, cs []scaleContainer, pids map[string]int, todo map[string][]string) (lost map[string][]string, errs []error) {
	t.Helper()
	lost = map[string][]string{}
	var mu sync.Mutex
	for _, n := range scaleNets {
		var members, pingers []scaleContainer
		for _, c := range cs {
			if c.Net == n.Name {
				members = append(members, c)
				if len(todo[c.Name]) > 0 {
					pingers = append(pingers, c)
				}
			}
		}
		for g := 0; g < len(pingers); g += scaleParallel {
			group := pingers[g:min(g+scaleParallel, len(pingers))]
			errs = append(errs, eachParallel(len(group), len(group), func(k int) error {
				c := group[k]
				// Each ping that fails prints its peer; "done" proves the script ran to the end.
				script := `for ip in "$@"; do (ping -c1 -W2 "$ip" >/dev/null 2>&1 || echo "FAIL $ip") & done; wait; echo done`
				out, err := l.Docker(t, c.Host, append([]string{"exec", c.Name, "sh", "-c", script, "sh"}, todo[c.Name]...)...)
				if err != nil || !strings.HasSuffix(out, "done") {
					return fmt.Errorf("%s (host %d, %s): docker exec: %v: %s", c.Name, c.Host, c.Net, err, out)
				}
				mu.Lock()
				defer mu.Unlock()
				for _, line := range strings.Split(out, "\n") {
					if ip, ok := strings.CutPrefix(line, "FAIL "); ok {
						lost[c.Name] = append(lost[c.Name], ip)
					}
				}
				return nil
			})...)
			errs = append(errs, eachParallel(len(members), scaleParallel, func(k int) error {
				pid := pids[members[k].Name]
				if out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", "ip", "neigh", "flush", "all").CombinedOutput(); err != nil {
					return fmt.Errorf("%s: flushing its neighbors: %w: %s", members[k].Name, err, out)
				}
				return nil
			})...)
		}
	}
	return lost, errs
}

// scalePIDs maps each container's name to its init's pid on this machine (one docker inspect
// per host).
func (l *Lab) scalePIDs(t testing.TB, cs []scaleContainer) map[string]int {
	t.Helper()
	names := map[int][]string{}
	for _, c := range cs {
		names[c.Host] = append(names[c.Host], c.Name)
	}
	pids := map[string]int{}
	for i, ns := range names {
		out := l.MustDocker(t, i, append([]string{"inspect", "-f", "{{.Name}} {{.State.Pid}}"}, ns...)...)
		for _, line := range strings.Split(out, "\n") {
			name, pid, _ := strings.Cut(strings.TrimPrefix(line, "/"), " ")
			n, err := strconv.Atoi(pid)
			if err != nil || n <= 1 {
				t.Fatalf("host %d: pid of %q: %q", i, name, pid)
			}
			pids[name] = n
		}
	}
	return pids
}

// scaleBurstTraffic counts what hosts X and Y receive on their underlay interfaces during a
// quiet window and during a burst of 40 container starts on networks only Y of the two has,
// until Y has programmed all of them and the gossip about them has died down. X's gossip must
// be a small fraction of Y's.
//
// The assertion is on the gossip that arrives by UDP: every change travels that way the moment
// it happens (vxovl's direct sends and memberlist's gossip), as does failure detection, at a
// steady rate. Anti-entropy (memberlist's push/pull and any per-network sync) runs over TCP on
// timers of its own, whatever the burst: one exchange that happens to fall in the window
// outweighs the burst on either host, so its bytes are reported beside the interface's totals
// but not compared.
func (l *Lab) scaleBurstTraffic(t *testing.T, netsOf map[int][]string, cs []scaleContainer) {
	for _, n := range []string{"sa", "sb"} {
		if slices.Contains(netsOf[scaleX], n) || !slices.Contains(netsOf[scaleY], n) {
			t.Fatalf("the lab layout is wrong: host X (%d) must lack %s and host Y (%d) have it", scaleX, n, scaleY)
		}
	}
	// How many entries Y's overlays of sa and sb must hold once it knows every started container.
	wantNeigh := map[string]int{}
	for _, c := range cs {
		if c.Host != scaleY {
			wantNeigh[c.Net]++
		}
	}
	// The burst's containers exist before the window (docker create makes no endpoint: Docker
	// joins the network at start), so that the window holds the starts only.
	type burstContainer struct {
		Host      int
		Name, Net string
	}
	var burst []burstContainer
	for _, b := range scaleBurst {
		for k := range scalePerHost {
			burst = append(burst, burstContainer{b.Host, fmt.Sprintf("b%d-%02d", b.Host, k), b.Nets[k%len(b.Nets)]})
			wantNeigh[b.Nets[k%len(b.Nets)]]++
		}
	}
	if errs := eachParallel(len(burst), scaleParallel, func(k int) error {
		b := burst[k]
		if out, err := l.Docker(t, b.Host, "create", "--name", b.Name, "--network", b.Net, "vxovl/busybox", "sleep", "3600"); err != nil {
			return fmt.Errorf("host %d: create %s on %s: %w\n%s", b.Host, b.Name, b.Net, err, out)
		}
		return nil
	}); len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	pidX, pidY := l.pluginPID(t, scaleX), l.pluginPID(t, scaleY)
	for _, i := range []int{scaleX, scaleY} {
		l.countUnderlay(t, i)
	}

	x0, y0 := l.underlayRx(t, scaleX), l.underlayRx(t, scaleY)
	time.Sleep(scaleQuiet) // a measurement window, not a wait for anything
	xq, yq := l.underlayRx(t, scaleX).Sub(x0), l.underlayRx(t, scaleY).Sub(y0)

	x0, y0 = l.underlayRx(t, scaleX), l.underlayRx(t, scaleY)
	begin := time.Now()
	// A few at a time, spread over the hosts.
	if errs := eachParallel(len(burst), scaleParallel, func(k int) error {
		b := burst[k]
		if out, err := l.Docker(t, b.Host, "start", b.Name); err != nil {
			return fmt.Errorf("host %d: start %s on %s: %w\n%s", b.Host, b.Name, b.Net, err, out)
		}
		return nil
	}); len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	started := time.Since(begin)
	poll.Until(t, time.Minute, fmt.Sprintf("host Y (%d) programs the %d burst containers", scaleY, len(burst)), func() (bool, string) {
		var got []string
		ok := true
		for _, net := range []string{"sa", "sb"} {
			neigh, _ := staticVXLANEntries(t, filepath.Join(l.NetnsDir(scaleY), fmt.Sprintf("vni-%d", scaleVNI(net))))
			ok = ok && len(neigh) == wantNeigh[net]
			got = append(got, fmt.Sprintf("%s %d of %d", net, len(neigh), wantNeigh[net]))
		}
		return ok, strings.Join(got, ", ")
	})
	known := time.Since(begin)
	// Settle: until neither X nor Y has received a record for a second (the gossip's retransmits
	// of the burst are over).
	var last [2]uint64
	stableSince := time.Now()
	poll.Until(t, 20*time.Second, "gossip on hosts X and Y quiet for a second", func() (bool, string) {
		now := [2]uint64{l.scaleRecordsReceived(t, pidX), l.scaleRecordsReceived(t, pidY)}
		if now != last {
			last, stableSince = now, time.Now()
		}
		return time.Since(stableSince) >= time.Second, fmt.Sprintf("records received by X, Y: %v", now)
	})
	window := time.Since(begin)
	xb, yb := l.underlayRx(t, scaleX).Sub(x0), l.underlayRx(t, scaleY).Sub(y0)

	share := float64(xb.GossipUDP.Bytes) / float64(max(yb.GossipUDP.Bytes, 1))
	t.Logf("burst of %d container starts on sa/sb (hosts 2-5): docker start took %v, all programmed on Y after %v, window %v with settling",
		len(burst), started.Round(time.Millisecond), known.Round(time.Millisecond), window.Round(time.Millisecond))
	t.Logf("underlay rx during the burst (%v):\n  host X (%d, no sa/sb): %s\n  host Y (%d, sa+sb):    %s\n  X/Y gossip UDP bytes %.3f (limit %.2f)",
		window.Round(time.Millisecond), scaleX, xb, scaleY, yb, share, scaleMaxShare)
	t.Logf("underlay rx quiet (%v, before the burst):\n  host X: %s\n  host Y: %s", scaleQuiet, xq, yq)
	if share >= scaleMaxShare {
		t.Errorf("host X (%d), which has neither sa nor sb, received %d bytes of gossip by UDP during the burst on them, %.0f%% of host Y's %d (limit %.0f%%): "+
			"gossip about a network reaches hosts that do not have it", scaleX, xb.GossipUDP.Bytes, 100*share, yb.GossipUDP.Bytes, 100*scaleMaxShare)
	}

	// The burst's containers are in the tables exactly where they belong.
	all := l.scaleContainers(t, netsOf)
	if len(all) != len(cs)+len(burst) {
		t.Fatalf("%d containers on the scale networks after the burst, want %d", len(all), len(cs)+len(burst))
	}
	poll.Until(t, time.Minute, "every host's overlays hold exactly its networks' remote containers, burst included", func() (bool, string) {
		why := l.scaleTablesMismatch(t, netsOf, all)
		return why == "", why
	})
}

// scaleRecordsReceived is the cluster's count of records received by the plugin whose pid is
// given (GET /vxovl/state on its socket: no underlay traffic).
func (l *Lab) scaleRecordsReceived(t testing.TB, pid int) uint64 {
	t.Helper()
	resp, err := pluginClient(pid).Get("http://vxovl/vxovl/state")
	if err != nil {
		t.Fatalf("plugin pid %d: GET /vxovl/state: %v", pid, err)
	}
	defer resp.Body.Close()
	var st struct {
		Cluster struct{ RecordsReceived uint64 } `json:"cluster"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("plugin pid %d: decoding /vxovl/state: %v", pid, err)
	}
	return st.Cluster.RecordsReceived
}

// rxCount is what was received: packets and bytes.
type rxCount struct{ Packets, Bytes uint64 }

func (a rxCount) Sub(b rxCount) rxCount { return rxCount{a.Packets - b.Packets, a.Bytes - b.Bytes} }

// underlayCount is what a host's underlay interface (eth0 in its namespace) has received: all of
// it (the interface's counters, Ethernet headers included) and the gossip port's traffic by
// protocol (iptables counters, from the IP header on).
type underlayCount struct{ All, GossipUDP, GossipTCP rxCount }

func (a underlayCount) Sub(b underlayCount) underlayCount {
	return underlayCount{a.All.Sub(b.All), a.GossipUDP.Sub(b.GossipUDP), a.GossipTCP.Sub(b.GossipTCP)}
}

func (a underlayCount) String() string {
	return fmt.Sprintf("gossip UDP %d packets %d bytes, gossip TCP %d packets %d bytes; interface %d packets %d bytes",
		a.GossipUDP.Packets, a.GossipUDP.Bytes, a.GossipTCP.Packets, a.GossipTCP.Bytes, a.All.Packets, a.All.Bytes)
}

// Comments of the counting rules countUnderlay adds.
const (
	gossipUDPRule = "vxovl-e2e-gossip-udp"
	gossipTCPRule = "vxovl-e2e-gossip-tcp"
)

// countUnderlay adds iptables rules that count the gossip arriving on host i's underlay
// interface (rules without a target, in the raw table of the host's own namespace: they only
// count). They go with the namespace at lab down.
func (l *Lab) countUnderlay(t testing.TB, i int) {
	t.Helper()
	requireTools(t, "iptables", "iptables-save")
	port := strconv.Itoa(cluster.DefaultBindPort) // GOSSIP_PORT, which the lab leaves alone
	for _, rule := range [][]string{
		{"-p", "udp", "--dport", port, "-m", "comment", "--comment", gossipUDPRule},
		{"-p", "tcp", "-m", "multiport", "--ports", port, "-m", "comment", "--comment", gossipTCPRule},
	} {
		if out, err := l.Exec(t, i, append([]string{"iptables", "-w", "-t", "raw", "-A", "PREROUTING", "-i", "eth0"}, rule...)...); err != nil {
			t.Fatalf("host %d: iptables rule counting gossip: %v\n%s", i, err, out)
		}
	}
}

// underlayRx reads what host i's underlay interface has received (countUnderlay first).
func (l *Lab) underlayRx(t testing.TB, i int) underlayCount {
	t.Helper()
	var c underlayCount
	out, err := l.Exec(t, i, "ip", "-s", "-j", "link", "show", "dev", "eth0")
	if err != nil {
		t.Fatalf("host %d: ip -s link show eth0: %v\n%s", i, err, out)
	}
	var links []struct {
		Stats64 struct {
			RX struct{ Bytes, Packets uint64 } `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("host %d: ip -s -j link show eth0: %v\n%s", i, err, out)
	}
	c.All = rxCount{Packets: links[0].Stats64.RX.Packets, Bytes: links[0].Stats64.RX.Bytes}

	out, err = l.Exec(t, i, "iptables-save", "-c", "-t", "raw")
	if err != nil {
		t.Fatalf("host %d: iptables-save: %v\n%s", i, err, out)
	}
	found := 0
	for _, line := range strings.Split(out, "\n") {
		// "[12:3456] -A PREROUTING -i eth0 -p udp ... --comment vxovl-e2e-gossip-udp"
		var dst *rxCount
		switch {
		case strings.HasSuffix(line, " "+gossipUDPRule):
			dst = &c.GossipUDP
		case strings.HasSuffix(line, " "+gossipTCPRule):
			dst = &c.GossipTCP
		default:
			continue
		}
		if _, err := fmt.Sscanf(line, "[%d:%d]", &dst.Packets, &dst.Bytes); err != nil {
			t.Fatalf("host %d: iptables-save line %q: %v", i, line, err)
		}
		found++
	}
	if found != 2 {
		t.Fatalf("host %d: the gossip counting rules are not in place:\n%s", i, out)
	}
	return c
}

// eachParallel calls f(k) for every k in [0, n), at most limit at a time, and returns the
// errors it returned. f must not fail the test itself (it runs off the test's goroutine).
func eachParallel(n, limit int, f func(k int) error) []error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, limit)
	for k := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := f(k); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errs
}
