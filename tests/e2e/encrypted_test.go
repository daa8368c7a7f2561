package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// encReqID is dataplane.XfrmReqID as `ip xfrm` prints it.
const encReqID = "reqid 1987575809"

// xfrmOf lists host i's vxovl SAs and policies (`ip xfrm state` and
// `policy`), one entry per line group.
func (l *Lab) xfrmOf(t testing.TB, i int) (states, policies string) {
	t.Helper()
	st, err := l.Exec(t, i, "ip", "xfrm", "state")
	if err != nil {
		t.Fatalf("host %d: ip xfrm state: %v\n%s", i, err, st)
	}
	pol, err := l.Exec(t, i, "ip", "xfrm", "policy")
	if err != nil {
		t.Fatalf("host %d: ip xfrm policy: %v\n%s", i, err, pol)
	}
	return st, pol
}

// Without GOSSIP_KEY an encrypted network is refused with the reason, and
// with it on a kernel without ESP too; neither leaves a network or any
// IPsec state behind. On a kernel with ESP the network is created and then
// removed, and that too leaves nothing.
func TestEncryptedRefusals(t *testing.T) {
	l := Up(t, 1)
	l.InstallPlugin(t, 1)
	out, err := l.Docker(t, 1, "network", "create", "-d", Driver, "--subnet", "10.141.0.0/24", "-o", "encrypted=true", "en")
	if err == nil || !strings.Contains(out, "GOSSIP_KEY") {
		t.Fatalf("encrypted network without GOSSIP_KEY: err %v, output %q; want a refusal naming GOSSIP_KEY", err, out)
	}
	t.Logf("refused: %s", strings.TrimSpace(out))
	l.RemovePlugin(t, 1)
	l.InstallPlugin(t, 1, "GOSSIP_KEY="+mhGossipKey(7))
	out, err = l.Docker(t, 1, "network", "create", "-d", Driver, "--subnet", "10.141.0.0/24", "-o", "encrypted=true", "en")
	switch {
	case err != nil && strings.Contains(out, "no ESP"):
		t.Logf("this kernel has no ESP; refused: %s", strings.TrimSpace(out))
	case err != nil:
		t.Fatalf("encrypted network with GOSSIP_KEY: %v\n%s", err, out)
	default:
		l.MustDocker(t, 1, "network", "rm", "en")
	}
	if nets := l.MustDocker(t, 1, "network", "ls", "-q", "-f", "name=^en$"); strings.TrimSpace(nets) != "" {
		t.Errorf("a network is left: %s", nets)
	}
	poll.Until(t, 15*time.Second, "no vxovl IPsec state left", func() (bool, string) {
		st, pol := l.xfrmOf(t, 1)
		return !strings.Contains(st, encReqID) && !strings.Contains(pol, encReqID), st + pol
	})
}

// Two hosts on an encrypted network ping each other through ESP, and
// `docker network rm` on both leaves no XFRM state or policy. Skips on a
// kernel without ESP.
func TestEncryptedCrossHost(t *testing.T) {
	l := Up(t, 2)
	for i := 1; i <= 2; i++ {
		l.InstallPlugin(t, i, "PEERS="+l.PeersExcept(i), "GOSSIP_KEY="+mhGossipKey(9))
	}
	for i := 1; i <= 2; i++ {
		out, err := l.Docker(t, i, "network", "create", "-d", Driver, "--subnet", "10.142.0.0/24",
			"--ip-range", fmt.Sprintf("10.142.0.%d/26", (i-1)*64), "-o", "encrypted=true", "-o", "vni=4343", "en")
		if err != nil && strings.Contains(out, "no ESP") {
			t.Skipf("skipping: this kernel cannot run encrypted networks: %s", strings.TrimSpace(out))
		}
		if err != nil {
			t.Fatalf("host %d: create: %v\n%s", i, err, out)
		}
	}
	l.MustDocker(t, 1, "run", "-d", "--name", "e1", "--network", "en", "vxovl/busybox", "sleep", "600")
	l.MustDocker(t, 2, "run", "-d", "--name", "e2", "--network", "en", "vxovl/busybox", "sleep", "600")
	ip2 := l.ContainerIP(t, 2, "e2", "en")
	poll.Until(t, 30*time.Second, "e1 pings e2 over the encrypted network", func() (bool, string) {
		out, err := l.Docker(t, 1, "exec", "e1", "ping", "-c1", "-W1", ip2)
		return err == nil, out
	})
	// A large ping: the MTU leaves room for ESP, so it passes unfragmented.
	if out, err := l.Docker(t, 1, "exec", "e1", "ping", "-c1", "-W2", "-s", "1382", ip2); err != nil {
		t.Errorf("full-size ping: %v\n%s", err, out)
	}
	st, pol := l.xfrmOf(t, 1)
	if strings.Count(st, encReqID) < 2 || !strings.Contains(pol, "dport 4800") {
		t.Fatalf("host 1 lacks its SAs or policies:\n%s\n%s", st, pol)
	}
	for i := 1; i <= 2; i++ {
		l.MustDocker(t, i, "rm", "-f", fmt.Sprintf("e%d", i))
		l.MustDocker(t, i, "network", "rm", "en")
	}
	for i := 1; i <= 2; i++ {
		poll.Until(t, 15*time.Second, fmt.Sprintf("host %d: no vxovl IPsec state after network rm", i), func() (bool, string) {
			st, pol := l.xfrmOf(t, i)
			return !strings.Contains(st, encReqID) && !strings.Contains(pol, encReqID), st + pol
		})
	}
}
