package dataplane

import (
	"bytes"
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// lab is two "hosts" joined by an underlay veth (10.231.0.1/24 <-> .2), each
// running an Overlay for the same VNI, with one container attached on each.
type lab struct {
	hosts [2]*testHost
	ctrs  [2]string // container namespace pins
	macs  [2]net.HardwareAddr
	ips   [2]net.IP // container addresses
	vteps [2]net.IP
}

const labVNI = 4242

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{
		hosts: [2]*testHost{newTestHost(t, "a"), newTestHost(t, "b")},
		ctrs:  [2]string{newNS(t, "ca"), newNS(t, "cb")},
		macs:  [2]net.HardwareAddr{mustMAC(t, "02:42:0a:e8:00:01"), mustMAC(t, "02:42:0a:e8:00:02")},
		ips:   [2]net.IP{net.ParseIP("10.232.0.1").To4(), net.ParseIP("10.232.0.2").To4()},
		vteps: [2]net.IP{net.ParseIP("10.231.0.1").To4(), net.ParseIP("10.231.0.2").To4()},
	}
	a, b := nsHandle(t, l.hosts[0].ns), nsHandle(t, l.hosts[1].ns)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "u0"
	underlay := netlink.NewVeth(attrs)
	underlay.PeerName = "u0"
	underlay.PeerNamespace = netlink.NsFd(nsFd(t, l.hosts[1].ns))
	if err := a.LinkAdd(underlay); err != nil {
		t.Fatalf("create underlay veth: %v", err)
	}
	for i, nl := range []*netlink.Handle{a, b} {
		u := mustLink(t, nl, "u0")
		if err := nl.AddrAdd(u, &netlink.Addr{IPNet: &net.IPNet{IP: l.vteps[i], Mask: net.CIDRMask(24, 32)}}); err != nil {
			t.Fatal(err)
		}
		if err := nl.LinkSetUp(u); err != nil {
			t.Fatal(err)
		}
	}

	for i, h := range l.hosts {
		var mtu int
		h.do(func() (err error) { mtu, err = UnderlayMTU(l.vteps[i]); return err })
		h.ensureNetwork(NetworkSpec{VNI: labVNI, VTEP: l.vteps[i], MTU: mtu - 50})
		var name string
		h.do(func() (err error) {
			name, err = h.ov.EnsureEndpoint(EndpointSpec{VNI: labVNI, ID: "c0ffee000000000" + string(rune('a'+i)), MAC: l.macs[i], MTU: mtu - 50})
			return err
		})
		// Do what Docker does on join: move the end into the container, rename, address it.
		hostNL := h.host()
		if err := hostNL.LinkSetNsFd(mustLink(t, hostNL, name), nsFd(t, l.ctrs[i])); err != nil {
			t.Fatal(err)
		}
		c := nsHandle(t, l.ctrs[i])
		eth := mustLink(t, c, name)
		if err := c.LinkSetName(eth, "eth0"); err != nil {
			t.Fatal(err)
		}
		if err := c.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: l.ips[i], Mask: net.CIDRMask(24, 32)}}); err != nil {
			t.Fatal(err)
		}
		if err := c.LinkSetUp(eth); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// syncBoth tells each host about the other's container; flood enables the
// head-end replication list.
func (l *lab) syncBoth(t *testing.T, flood bool) {
	t.Helper()
	for i, h := range l.hosts {
		o := 1 - i
		var fl []net.IP
		if flood {
			fl = []net.IP{l.vteps[o]}
		}
		h.do(func() error {
			_, err := h.ov.SyncPeers(labVNI, []Peer{{IP: l.ips[o], MAC: l.macs[o], VTEP: l.vteps[o]}}, fl)
			return err
		})
	}
}

// listenUDP opens a UDP socket inside the namespace pinned at ns; the socket
// stays in that namespace for its whole life.
func listenUDP(t *testing.T, ns, addr string, broadcast bool) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	err := Do(ns, func() (err error) {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				if broadcast {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
				}
			}); err != nil {
				return err
			}
			return serr
		}}
		pc, err = lc.ListenPacket(context.Background(), "udp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// exchange sends payload from src to dst until rcv reads it or the deadline
// passes. Resending covers the first datagram being dropped while ARP resolves.
func exchange(src net.PacketConn, dst net.Addr, rcv net.PacketConn, payload []byte, deadline time.Duration) error {
	end := time.Now().Add(deadline)
	buf := make([]byte, 1500)
	var lastErr error
	for time.Now().Before(end) {
		if _, err := src.WriteTo(payload, dst); err != nil {
			lastErr = err
		}
		_ = rcv.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, err := rcv.ReadFrom(buf)
		if err == nil && bytes.Equal(buf[:n], payload) {
			return nil
		}
		if err != nil {
			lastErr = err
		}
	}
	return lastErr
}

func TestDataPathAcrossHosts(t *testing.T) {
	requireRoot(t)
	l := newLab(t)
	l.syncBoth(t, false)

	// Unicast, both ways: ARP is answered by the proxy from the static
	// neighbors, frames are tunnelled to the VTEP from the FDB.
	a := listenUDP(t, l.ctrs[0], "10.232.0.1:7000", false)
	b := listenUDP(t, l.ctrs[1], "10.232.0.2:7000", false)
	if err := exchange(a, b.LocalAddr(), b, []byte("a->b"), 5*time.Second); err != nil {
		t.Fatalf("unicast a->b across the overlay failed: %v", err)
	}
	if err := exchange(b, a.LocalAddr(), a, []byte("b->a"), 5*time.Second); err != nil {
		t.Fatalf("unicast b->a across the overlay failed: %v", err)
	}

	// Broadcast goes out only through the all-zeros FDB entries (head-end
	// replication): absent without a flood list, delivered with one.
	bc := listenUDP(t, l.ctrs[0], "10.232.0.1:7001", true)
	bl := listenUDP(t, l.ctrs[1], "0.0.0.0:7001", false)
	if err := exchange(bc, &net.UDPAddr{IP: net.IPv4(10, 232, 0, 255), Port: 7001}, bl, []byte("bcast"), 500*time.Millisecond); err == nil {
		t.Fatalf("broadcast reached host b without a flood list")
	}
	l.syncBoth(t, true)
	if err := exchange(bc, &net.UDPAddr{IP: net.IPv4(10, 232, 0, 255), Port: 7001}, bl, []byte("bcast"), 5*time.Second); err != nil {
		t.Fatalf("broadcast a->b via the flood list failed: %v", err)
	}

	// The traffic really went through the VXLAN device.
	vx := mustLink(t, l.hosts[0].overlay(labVNI), VxlanName)
	if s := vx.Attrs().Statistics; s == nil || s.TxPackets == 0 || s.RxPackets == 0 {
		t.Errorf("vxlan0 on host a shows no traffic: %+v", s)
	}
}
