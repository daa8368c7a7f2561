package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/dataplane"
	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// injectedEcho is a VXLAN packet carrying an Ethernet frame with an ICMP
// echo request to dstMAC/dstIP in VNI vni, as anyone who can reach a
// host's VXLAN port can craft one.
func injectedEcho(vni uint32, dstMAC net.HardwareAddr, srcIP, dstIP net.IP, seq uint16) []byte {
	vx := make([]byte, 8)
	vx[0] = 0x08 // VNI present
	binary.BigEndian.PutUint32(vx[4:], vni<<8)
	eth := append(append(append([]byte{}, dstMAC...), 0x02, 0, 0, 0xee, 0xee, 0x01), 0x08, 0x00)
	icmp := []byte{8, 0, 0, 0, 0x12, 0x34, byte(seq >> 8), byte(seq)}
	icmp = append(icmp, []byte("vxovl injected")...)
	binary.BigEndian.PutUint16(icmp[2:], inetChecksum(icmp))
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(icmp)))
	copy(ip[12:], srcIP.To4())
	copy(ip[16:], dstIP.To4())
	binary.BigEndian.PutUint16(ip[10:], inetChecksum(ip))
	return append(append(append(vx, eth...), ip...), icmp...)
}

func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// inEchos is the ICMP echo requests container c on host i has received.
func (l *Lab) inEchos(t testing.TB, i int, c string) uint64 {
	t.Helper()
	snmp := l.MustDocker(t, i, "exec", c, "cat", "/proc/net/snmp")
	var names []string
	for _, line := range strings.Split(snmp, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "Icmp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for k, n := range names {
			if n == "InEchos" && k < len(f) {
				v, err := strconv.ParseUint(f[k], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	t.Fatalf("no Icmp InEchos in %s's /proc/net/snmp:\n%s", c, snmp)
	return 0
}

// sendFrom sends payload to host to's port from inside lab host from's
// namespace.
func (l *Lab) sendFrom(t testing.TB, from, to, port int, payload []byte) {
	t.Helper()
	err := dataplane.Do("/run/netns/"+l.Netns(from), func() error {
		c, err := net.Dial("udp4", net.JoinHostPort(l.Addr(to), strconv.Itoa(port)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(payload)
		return err
	})
	if err != nil {
		t.Fatalf("send from host %d: %v", from, err)
	}
}

// xfrmDrops is host i's count of inbound packets its IPsec policies
// dropped for want of ESP.
func (l *Lab) xfrmDrops(t testing.TB, i int) uint64 {
	t.Helper()
	out, err := l.Exec(t, i, "cat", "/proc/net/xfrm_stat")
	if err != nil {
		t.Fatalf("host %d: xfrm_stat: %v\n%s", i, err, out)
	}
	var n uint64
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && (f[0] == "XfrmInTmplMismatch" || f[0] == "XfrmInNoPols") {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			n += v
		}
	}
	return n
}

// A cleartext VXLAN frame crafted on another lab host reaches a container
// on an unencrypted network (the threat, and the proof that the check can
// fail), and never one on an encrypted network: the kernel drops it. The
// encrypted half skips on a kernel without ESP.
func TestCleartextInjection(t *testing.T) {
	l := Up(t, 2)
	for i := 1; i <= 2; i++ {
		l.InstallPlugin(t, i, "PEERS="+l.PeersExcept(i), "GOSSIP_KEY="+mhGossipKey(11))
	}
	inject := func(t *testing.T, network string, vni uint32, port int, c string) (before uint64, sent int) {
		t.Helper()
		mac, err := net.ParseMAC(l.MustDocker(t, 1, "inspect", "-f",
			fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).MacAddress}}`, network), c))
		if err != nil {
			t.Fatal(err)
		}
		ip := net.ParseIP(l.ContainerIP(t, 1, c, network))
		src := append(net.IP{}, ip.To4()...)
		src[3] = 250
		before = l.inEchos(t, 1, c)
		for seq := range 20 {
			l.sendFrom(t, 2, 1, port, injectedEcho(vni, mac, src, ip, uint16(seq)))
		}
		return before, 20
	}

	t.Run("Unencrypted", func(t *testing.T) {
		l.MustDocker(t, 1, "network", "create", "-d", Driver, "--subnet", "10.143.0.0/24", "-o", "vni=4401", "clear")
		l.MustDocker(t, 1, "run", "-d", "--name", "pc", "--network", "clear", "vxovl/busybox", "sleep", "600")
		before, _ := inject(t, "clear", 4401, 4789, "pc")
		poll.Until(t, 10*time.Second, "the injected echo requests reach the container", func() (bool, string) {
			n := l.inEchos(t, 1, "pc")
			return n > before, fmt.Sprintf("InEchos %d, before %d", n, before)
		})
	})

	t.Run("Encrypted", func(t *testing.T) {
		out, err := l.Docker(t, 1, "network", "create", "-d", Driver, "--subnet", "10.144.0.0/24", "-o", "vni=4402", "-o", "encrypted=true", "secret")
		if err != nil && strings.Contains(out, "no ESP") {
			t.Skipf("skipping: this kernel cannot run encrypted networks: %s", strings.TrimSpace(out))
		}
		if err != nil {
			t.Fatalf("create: %v\n%s", err, out)
		}
		l.MustDocker(t, 1, "run", "-d", "--name", "ec", "--network", "secret", "vxovl/busybox", "sleep", "600")
		drops := l.xfrmDrops(t, 1)
		before, sent := inject(t, "secret", 4402, 4800, "ec")
		// Wait for the kernel to account for every frame, then check that
		// none reached the container.
		poll.Until(t, 10*time.Second, "the kernel's policy drops the injected frames", func() (bool, string) {
			n := l.xfrmDrops(t, 1)
			return n >= drops+uint64(sent), fmt.Sprintf("policy drops %d, before %d", n, drops)
		})
		if n := l.inEchos(t, 1, "ec"); n != before {
			t.Fatalf("%d injected echo requests reached the container on the encrypted network", n-before)
		}
	})
}
