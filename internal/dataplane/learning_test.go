package dataplane

import (
	"bytes"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// attachContainer does what Docker does for a container on join: it makes the
// endpoint on host h, moves its container end into a fresh namespace, names it
// eth0, addresses it (ip/24) and brings it up. IPv6 is off in that namespace before
// the link arrives, so bringing eth0 up sends nothing (no DAD, no MLD): the
// container stays silent until it sends something itself.
func attachContainer(t *testing.T, h *testHost, vni uint32, id string, mac net.HardwareAddr, ip net.IP, mtu int) (ctr string) {
	t.Helper()
	ctr = newNS(t, "c"+id[len(id)-1:])
	in(t, ctr, func() error {
		for _, conf := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+conf+"/disable_ipv6", []byte("1"), 0); err != nil {
				return err
			}
		}
		return nil
	})
	var name string
	h.do(func() (err error) {
		name, err = h.ov.EnsureEndpoint(EndpointSpec{VNI: vni, ID: id, MAC: mac, MTU: mtu})
		return err
	})
	hostNL := h.host()
	if err := hostNL.LinkSetNsFd(mustLink(t, hostNL, name), nsFd(t, ctr)); err != nil {
		t.Fatal(err)
	}
	c := nsHandle(t, ctr)
	eth := mustLink(t, c, name)
	if err := c.LinkSetName(eth, "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := c.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := c.LinkSetUp(eth); err != nil {
		t.Fatal(err)
	}
	return ctr
}

// bridgeEntries lists br0's forwarding entries for mac as "port state"
// lines, e.g. "vxlan0 dynamic" or "vxe0123456789 static sticky".
func bridgeEntries(t *testing.T, ov *netlink.Handle, mac net.HardwareAddr) []string {
	t.Helper()
	names := map[int]string{}
	for name, idx := range linkIndexes(t, ov) {
		names[idx] = name
	}
	fdb, err := ov.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range fdb {
		if n.MasterIndex == 0 || !bytes.Equal(n.HardwareAddr, mac) {
			continue
		}
		state := "dynamic"
		switch {
		case n.State&netlink.NUD_PERMANENT != 0:
			state = "permanent"
		case n.State&netlink.NUD_NOARP != 0:
			state = "static"
		}
		if n.Flags&netlink.NTF_STICKY != 0 {
			state += " sticky"
		}
		out = append(out, names[n.LinkIndex]+" "+state)
	}
	return out
}

// sentBy is the number of packets the container's eth0 has sent.
func sentBy(t *testing.T, ctr string) uint64 {
	t.Helper()
	s := mustLink(t, nsHandle(t, ctr), "eth0").Attrs().Statistics
	if s == nil {
		t.Fatal("eth0 has no statistics")
	}
	return s.TxPackets
}

// Issue 9: a container that takes over an address from another host. Host b
// knew the address as remote, and a frame with its MAC as source came out of
// vxlan0 into br0 (here: the old container's traffic; in the wild also
// vxlan0's ARP proxy answering the gratuitous ARP SyncPeers sends). Then the
// address moves to a new container on host b that only listens. A frame for
// it from host a must reach it at once, although the new container never
// sent anything the bridge could learn from.
func TestMovedAddressReachesSilentLocalEndpoint(t *testing.T) {
	requireRoot(t)
	l := newLab(t)
	a, b := l.hosts[0], l.hosts[1]
	mtu := mustLink(t, b.overlay(labVNI), BridgeName).Attrs().MTU
	movedIP := net.ParseIP("10.232.0.3").To4()
	movedMAC := mustMAC(t, "02:42:0a:e8:00:03")

	// The address on host a, talking to cb on host b.
	old := attachContainer(t, a, labVNI, "01d0000000000001", movedMAC, movedIP, mtu)
	moved := Peer{IP: movedIP, MAC: movedMAC}
	sync := func(h *testHost, peers ...Peer) {
		t.Helper()
		h.do(func() error { _, err := h.ov.SyncPeers(labVNI, peers, nil); return err })
	}
	atA := func(p Peer) Peer { p.VTEP = l.vteps[0]; return p }
	atB := func(p Peer) Peer { p.VTEP = l.vteps[1]; return p }
	ca := Peer{IP: l.ips[0], MAC: l.macs[0]}
	cb := Peer{IP: l.ips[1], MAC: l.macs[1]}
	sync(a, atB(cb))
	sync(b, atA(ca), atA(moved))
	ovB := b.overlay(labVNI)
	t.Logf("host b br0 entries for %s once host b programmed it as remote: %q", movedMAC, bridgeEntries(t, ovB, movedMAC))
	src := listenUDP(t, old, "10.232.0.3:7000", false)
	dst := listenUDP(t, l.ctrs[1], "10.232.0.2:7000", false)
	if err := exchange(src, dst.LocalAddr(), dst, []byte("from the old place"), 5*time.Second); err != nil {
		t.Fatalf("old container on host a -> cb on host b: %v", err)
	}
	t.Logf("host b br0 entries for %s after it sent to host b: %q", movedMAC, bridgeEntries(t, ovB, movedMAC))

	// docker rm -f on host a; docker run --ip on host b (before host b even
	// heard that the old one is gone); then the cluster catches up.
	a.do(func() error { return a.ov.DeleteEndpoint(labVNI, "01d0000000000001") })
	ctr := attachContainer(t, b, labVNI, "7e70000000000002", movedMAC, movedIP, mtu)
	t.Logf("host b br0 entries for %s after the new endpoint was made: %q", movedMAC, bridgeEntries(t, ovB, movedMAC))
	sync(b, atA(ca))
	sync(a, atB(cb), atB(moved))

	srv := listenUDP(t, ctr, "10.232.0.3:7000", false)
	cli := listenUDP(t, l.ctrs[0], "10.232.0.1:7001", false)
	start := time.Now()
	if err := exchange(cli, srv.LocalAddr(), srv, []byte("to the new place"), 2*time.Second); err != nil {
		t.Errorf("ca on host a -> the moved address, now a silent container on host b: %v\nhost b br0 entries for %s: %q",
			err, movedMAC, bridgeEntries(t, ovB, movedMAC))
	} else {
		t.Logf("first datagram arrived %v after sending started", time.Since(start).Round(time.Millisecond))
	}
	if n := sentBy(t, ctr); n != 0 {
		t.Errorf("the new container sent %d packets: the bridge could have learned its MAC from them, so this test proves nothing", n)
	}
	got := bridgeEntries(t, ovB, movedMAC)
	if want := []string{overlayIfName("7e70000000000002") + " static sticky"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("host b br0 entries for %s = %q, want only %q", movedMAC, got, want)
	}
}

// sniffer counts the frames eth0 of the container ctr receives for dst (as
// destination MAC), without sending anything.
type sniffer struct{ fd int }

func sniff(t *testing.T, ctr string) *sniffer {
	t.Helper()
	var s sniffer
	in(t, ctr, func() (err error) {
		s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		eth, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		return unix.Bind(s.fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: eth.Index})
	})
	t.Cleanup(func() { unix.Close(s.fd) })
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return &s
}

// count reads what arrived until nothing came for 100 ms and returns how
// many frames were addressed to dst.
func (s *sniffer) count(t *testing.T, dst net.HardwareAddr) int {
	t.Helper()
	buf := make([]byte, 2048)
	n := 0
	for {
		m, _, err := unix.Recvfrom(s.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) {
			return n
		}
		if err != nil {
			t.Fatalf("sniffer: %v", err)
		}
		if m >= 12 && bytes.Equal(buf[:6], dst) {
			n++
		}
	}
}

// sendFrame sends one raw Ethernet frame out of eth0 of the container ctr.
func sendFrame(t *testing.T, ctr string, dst, src net.HardwareAddr) {
	t.Helper()
	in(t, ctr, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		eth, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		f := make([]byte, 60)
		copy(f[0:6], dst)
		copy(f[6:12], src)
		f[12], f[13] = 0x88, 0xb5 // local experimental EtherType
		to := &unix.SockaddrLinklayer{Ifindex: eth.Index, Halen: 6}
		copy(to.Addr[:], dst)
		return unix.Sendto(fd, f, 0, to)
	})
}

// What each br0 port is for: vxlan0 learns nothing and takes unknown unicast
// (the remote MACs, which br0 no longer learns); an endpoint port has its
// MAC pinned, keeps it against a spoofing neighbour, and gets no copy of the
// unicast its neighbours send to remote containers.
func TestBridgePortRoles(t *testing.T) {
	requireRoot(t)
	l := newLab(t)
	l.syncBoth(t, false)
	a := l.hosts[0]
	ovA := a.overlay(labVNI)
	mtu := mustLink(t, ovA, BridgeName).Attrs().MTU

	vx := mustLink(t, ovA, VxlanName)
	flags, err := ovA.LinkGetProtinfo(vx)
	if err != nil {
		t.Fatal(err)
	}
	if flags.Learning || !flags.Flood {
		t.Errorf("vxlan0 port flags %s: want learning off, flooding on", flags.String())
	}

	// A silent third container next to ca.
	ccMAC := mustMAC(t, "02:42:0a:e8:00:0c")
	cc := attachContainer(t, a, labVNI, "cc00000000000003", ccMAC, net.ParseIP("10.232.0.12").To4(), mtu)
	port := mustLink(t, ovA, overlayIfName("cc00000000000003"))
	if flags, err := ovA.LinkGetProtinfo(port); err != nil || flags.Flood {
		t.Errorf("endpoint port flags %s (%v): want flooding off", flags.String(), err)
	}
	pinned := []string{port.Attrs().Name + " static sticky"}
	if got := bridgeEntries(t, ovA, ccMAC); strings.Join(got, ",") != strings.Join(pinned, ",") {
		t.Errorf("br0 entries for cc's MAC = %q, want %q", got, pinned)
	}

	// ca talks to cb on host b: br0 knows no entry for cb's MAC, and the
	// frames must go to vxlan0 only.
	s := sniff(t, cc)
	src := listenUDP(t, l.ctrs[0], "10.232.0.1:7000", false)
	dst := listenUDP(t, l.ctrs[1], "10.232.0.2:7000", false)
	for i := range 20 {
		if err := exchange(src, dst.LocalAddr(), dst, []byte{byte(i)}, 5*time.Second); err != nil {
			t.Fatalf("ca -> cb datagram %d: %v", i, err)
		}
	}
	if n := s.count(t, l.macs[1]); n != 0 {
		t.Errorf("cc received %d of the frames ca sent to cb on the other host", n)
	}
	if got := bridgeEntries(t, ovA, l.macs[1]); len(got) != 0 {
		t.Errorf("br0 has entries for cb's MAC %q: it learned on vxlan0", got)
	}

	// ca claims cc's MAC: the pin stays.
	sendFrame(t, l.ctrs[0], l.macs[1], ccMAC)
	if got := bridgeEntries(t, ovA, ccMAC); strings.Join(got, ",") != strings.Join(pinned, ",") {
		t.Errorf("after ca sent a frame with cc's MAC, br0 entries for it = %q, want %q", got, pinned)
	}
	if n := sentBy(t, cc); n != 0 {
		t.Errorf("cc sent %d packets, want none", n)
	}

	// The pin goes with the endpoint.
	a.do(func() error { return a.ov.DeleteEndpoint(labVNI, "cc00000000000003") })
	if got := bridgeEntries(t, ovA, ccMAC); len(got) != 0 {
		t.Errorf("br0 entries for cc's MAC after DeleteEndpoint = %q, want none", got)
	}
}
