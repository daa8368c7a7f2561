package dnsserver

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vxovl/vxovl/internal/dataplane"
	"github.com/vxovl/vxovl/internal/testutil/kerneltest"
)

// TestForwardsFromTheProcessNamespace serves on sockets opened inside
// another network namespace, as the plugin does in an overlay namespace,
// and checks that forwarded queries leave from the process's own namespace:
// the only upstream listens on a loopback address there, which does not
// exist in the namespace the query came from.
func TestForwardsFromTheProcessNamespace(t *testing.T) {
	kerneltest.RequireRoot(t)
	ns := filepath.Join(t.TempDir(), "overlay")
	if err := dataplane.CreatePinned(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dataplane.Unpin(ns) })
	// The "gateway" 10.10.0.1 on lo of the throwaway namespace.
	h, err := netns.GetFromPath(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	lo, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	gw, _ := netlink.ParseAddr("10.10.0.1/32")
	if err := nl.AddrAdd(lo, gw); err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}

	ups, port := startUpstreams(t, answerA("10.99.0.7"))
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	writeResolvConf(t, rc, ups...)

	var pc net.PacketConn
	var ln net.Listener
	if err := dataplane.Do(ns, func() (err error) {
		if pc, err = net.ListenPacket("udp4", "10.10.0.1:53"); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", "10.10.0.1:53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s, err := Serve(Config{ResolvConf: rc, upstreamPort: port}, mustTable(t, "app", testRecords()), pc, ln)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	for _, netw := range []string{"udp", "tcp"} {
		for name, want := range map[string]string{"web.app.": "10.10.0.2", "example.com.": "10.99.0.7"} {
			var r *dns.Msg
			err := dataplane.Do(ns, func() (err error) {
				c := dns.Client{Net: netw, Timeout: 5 * time.Second}
				r, _, err = c.Exchange(new(dns.Msg).SetQuestion(name, dns.TypeA), "10.10.0.1:53")
				return err
			})
			if err != nil || len(aAddrs(r)) != 1 || aAddrs(r)[0] != want {
				t.Errorf("%s %s from inside the namespace: %v, %v; want %s", netw, name, r, err, want)
			}
		}
	}
	if n := ups[0].udp.Load(); n != 2 {
		t.Errorf("the upstream saw %d queries, want 2", n)
	}
}
