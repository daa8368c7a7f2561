package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// Issue 9: a container that takes over an address from another host is reachable at once,
// even when it never sends anything. Host 2 runs a server at 10.61.0.70 (Docker's own IPAM,
// --ip); host 3 programs it as remote. The server moves to host 3 (docker rm -f, docker run --ip). The
// new server only listens, so the bridge on host 3 cannot learn where its MAC lives from its
// traffic: it must already know. Host 1's client must get the page in one try of 1 s once
// host 1's tables point at host 3.
func TestMovedAddress(t *testing.T) {
	l := Up(t, 3)
	for i := 1; i <= 3; i++ {
		l.InstallPlugin(t, i, "PEERS="+l.PeersExcept(i))
	}
	const mv, addr = "mv", "10.61.0.70"
	for i := 1; i <= 3; i++ {
		l.MustDocker(t, i, "network", "create", "-d", Driver, "--subnet", "10.61.0.0/24",
			"--ip-range", fmt.Sprintf("10.61.0.%d/26", (i-1)*64), mv)
	}
	// A server that only listens (ready once its socket listens: netstat reads /proc, it sends
	// nothing), and a client on host 1 that fetches its page in one try of at most 1 s.
	server := func(i int, name string) *mhContainer {
		t.Helper()
		l.MustDocker(t, i, "run", "-d", "--name", name, "--network", mv, "--ip", addr, "vxovl/busybox",
			"sh", "-c", "mkdir /www && echo "+name+" >/www/index.html && exec httpd -f -p 80 -h /www")
		poll.Until(t, 10*time.Second, name+" listens on port 80", func() (bool, string) {
			out, err := l.Docker(t, i, "exec", name, "netstat", "-ltn")
			return err == nil && strings.Contains(out, ":80 "), out
		})
		return l.mhContainer(t, i, name, mv)
	}
	fetch := func() (string, error) {
		return l.Docker(t, 1, "exec", "client", "timeout", "1", "wget", "-qO-", "http://"+addr+"/")
	}
	l.MustDocker(t, 1, "run", "-d", "--name", "client", "--network", mv, "vxovl/busybox", "sleep", "600")

	old := server(2, "old")
	poll.Until(t, 30*time.Second, "client on host 1 fetches the page of the server on host 2", func() (bool, string) {
		out, err := fetch()
		return err == nil && out == "old", out
	})
	ov3 := l.onlyOverlay(t, 3)
	poll.Until(t, 30*time.Second, "host 3 programs the server on host 2", func() (bool, string) {
		fdb := FDB(t, ov3)
		return mhLineWith(fdb, fmt.Sprintf("%s dev vxlan0 dst %s ", old.MAC, l.Addr(2))) != "", fdb
	})
	t.Logf("host 3 FDB entries for %s while it is on host 2:\n%s", old.MAC, bridgeLines(t, ov3, old.MAC))

	l.MustDocker(t, 2, "rm", "-f", "old")
	moved := server(3, "moved")
	if moved.MAC != old.MAC {
		t.Fatalf("the address came back with MAC %s, not %s: the test assumes vxovl's MAC derived from the address", moved.MAC, old.MAC)
	}
	ov1 := l.onlyOverlay(t, 1)
	poll.Until(t, 30*time.Second, "host 1 points the address at host 3", func() (bool, string) {
		fdb := FDB(t, ov1)
		return mhLineWith(fdb, fmt.Sprintf("%s dev vxlan0 dst %s ", moved.MAC, l.Addr(3))) != "", fdb
	})
	t.Logf("host 3 FDB entries for %s once it is on host 3:\n%s", moved.MAC, bridgeLines(t, ov3, moved.MAC))
	if sent := txPackets(t, l, 3, "moved"); sent != "0" {
		t.Fatalf("the new server sent %s packets before anyone talked to it: host 3's bridge could learn its MAC from them, so this test would prove nothing", sent)
	}

	start := time.Now()
	out, err := fetch()
	took := time.Since(start).Round(time.Millisecond)
	if err != nil || out != "moved" {
		t.Fatalf("client on host 1 got %q (%v) from %s in one try of 1 s after it moved to host 3 (took %v); host 3 FDB entries for %s:\n%s",
			out, err, addr, took, moved.MAC, bridgeLines(t, ov3, moved.MAC))
	}
	t.Logf("the moved server answered host 1 in %v (docker exec included)", took)
}

// bridgeLines are the lines of `bridge fdb` in an overlay that name mac.
func bridgeLines(t testing.TB, overlay, mac string) string {
	t.Helper()
	var lines []string
	for _, line := range strings.Split(FDB(t, overlay), "\n") {
		if strings.HasPrefix(line, mac+" ") {
			lines = append(lines, line)
		}
	}
	return strings.Join(lines, "\n")
}

// txPackets is how many packets container c on host i has sent on its overlay interface.
func txPackets(t testing.TB, l *Lab, i int, c string) string {
	t.Helper()
	return strings.TrimSpace(l.MustDocker(t, i, "exec", c, "cat", "/sys/class/net/eth0/statistics/tx_packets"))
}
