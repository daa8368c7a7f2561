package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
)

const dnsVNI = 4343

// serveTestDNS answers every question on pc and ln with one A record.
func serveTestDNS(t *testing.T, pc net.PacketConn, ln net.Listener) {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1},
			A: net.IPv4(10, 10, 0, 42)}}
		_ = w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go func() { _ = srv.ActivateAndServe() }()
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
}

// queryIn asks for web. over netw from inside the namespace pinned at ns.
func queryIn(ns, netw, server string) (*dns.Msg, error) {
	var r *dns.Msg
	err := Do(ns, func() (err error) {
		c := dns.Client{Net: netw, Timeout: 2 * time.Second}
		r, _, err = c.Exchange(new(dns.Msg).SetQuestion("web.", dns.TypeA), server)
		return err
	})
	return r, err
}

func TestListenDNS(t *testing.T) {
	h := newTestHost(t, "dns")
	h.ensureNetwork(testSpec(t, dnsVNI)) // gateway 10.10.0.1/24 on br0
	gw := netip.MustParseAddr("10.10.0.1")
	pc, ln, err := h.ov.ListenDNS(dnsVNI, gw, 53)
	if err != nil {
		t.Fatalf("ListenDNS: %v", err)
	}
	// Served from ordinary goroutines: the sockets stay in the overlay namespace.
	serveTestDNS(t, pc, ln)

	ctr := attachContainer(t, h, dnsVNI, "d0c0000000000001", mustMAC(t, "02:42:0a:0a:00:05"), net.ParseIP("10.10.0.5").To4(), 0)
	for _, netw := range []string{"udp", "tcp"} {
		r, err := queryIn(ctr, netw, "10.10.0.1:53")
		if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.10.0.42" {
			t.Errorf("%s query from a container on the network: %v, %v", netw, r, err)
		}
	}

	// The host namespace has the gateway address too (on lo), so a query
	// there has a route and reaches the address; it is refused because the
	// sockets are not in that namespace.
	host := h.host()
	if err := host.AddrAdd(mustLink(t, host, "lo"), &netlink.Addr{IPNet: mustCIDR(t, "10.10.0.1/32")}); err != nil {
		t.Fatal(err)
	}
	for _, netw := range []string{"udp", "tcp"} {
		r, err := queryIn(h.ns, netw, "10.10.0.1:53")
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("%s query from the host namespace: %v, %v; want connection refused", netw, r, err)
		}
	}
}

func TestListenDNSBadInput(t *testing.T) {
	h := newTestHost(t, "dnsbad")
	h.ensureNetwork(testSpec(t, dnsVNI))
	gw := netip.MustParseAddr("10.10.0.1")
	for _, c := range []struct {
		vni    uint32
		addr   netip.Addr
		port   int
		errHas string
	}{
		{0, gw, 53, "VNI 0"},
		{dnsVNI, netip.Addr{}, 53, "is missing"},
		{dnsVNI, netip.MustParseAddr("fd00::1"), 53, "not an IPv4"},
		{dnsVNI, netip.MustParseAddr("0.0.0.0"), 53, "unicast"},
		{dnsVNI, gw, 0, "port 0"},
		{dnsVNI, gw, 65536, "port 65536"},
		{dnsVNI + 1, gw, 53, ErrNoNetwork.Error()},
		{dnsVNI, netip.MustParseAddr("10.10.0.99"), 53, "not an address of VNI"},
	} {
		pc, ln, err := h.ov.ListenDNS(c.vni, c.addr, c.port)
		if err == nil || !strings.Contains(err.Error(), c.errHas) || pc != nil || ln != nil {
			t.Errorf("ListenDNS(%d, %v, %d) = %v, %v, %v; want only an error containing %q", c.vni, c.addr, c.port, pc, ln, err, c.errHas)
		}
	}

	// The TCP port is taken: the call fails and leaves the UDP port free.
	ns := h.ov.NamespacePath(dnsVNI)
	in(t, ns, func() error {
		l, err := net.Listen("tcp4", "10.10.0.1:53")
		if err == nil {
			t.Cleanup(func() { l.Close() })
		}
		return err
	})
	if _, _, err := h.ov.ListenDNS(dnsVNI, gw, 53); err == nil || !strings.Contains(err.Error(), "TCP") {
		t.Fatalf("ListenDNS with its TCP port taken: %v", err)
	}
	in(t, ns, func() error {
		pc, err := net.ListenPacket("udp4", "10.10.0.1:53")
		if err != nil {
			return errors.New("the failed ListenDNS left its UDP socket open: " + err.Error())
		}
		return pc.Close()
	})
}
