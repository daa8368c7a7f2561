package dataplane

import (
	"fmt"
	"net"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tables returns vxlan0's permanent neighbors ("ip mac") and self FDB entries
// ("mac dst"), sorted, plus the number of bridge-owned (master) FDB entries.
func tables(t testing.TB, ov *netlink.Handle) (neighs, fdb []string, master int) {
	t.Helper()
	vx := mustLink(t, ov, VxlanName)
	ns, err := ov.NeighList(vx.Attrs().Index, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n.State&netlink.NUD_PERMANENT != 0 {
			neighs = append(neighs, n.IP.String()+" "+n.HardwareAddr.String())
		}
	}
	fs, err := ov.NeighList(vx.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range fs {
		switch {
		case n.MasterIndex != 0: // the bridge's entries come with NDA_MASTER, not NTF_MASTER
			master++
		case n.Flags&netlink.NTF_SELF != 0:
			fdb = append(fdb, n.HardwareAddr.String()+" "+n.IP.String())
		}
	}
	slices.Sort(neighs)
	slices.Sort(fdb)
	return neighs, fdb, master
}

func TestSyncPeers(t *testing.T) {
	h := newTestHost(t, "sync")
	h.ensureNetwork(testSpec(t, 105))
	ov := h.overlay(105)
	ip := net.ParseIP
	mac1, mac2, mac3 := mustMAC(t, "02:42:0a:0a:00:02"), mustMAC(t, "02:42:0a:0a:00:03"), mustMAC(t, "02:42:0a:0a:00:04")
	sync := func(peers []Peer, flood []net.IP) SyncResult {
		t.Helper()
		var res SyncResult
		h.do(func() (err error) { res, err = h.ov.SyncPeers(105, peers, flood); return err })
		return res
	}
	check := func(step string, wantN, wantF []string) {
		t.Helper()
		n, f, _ := tables(t, ov)
		if !slices.Equal(n, wantN) || !slices.Equal(f, wantF) {
			t.Errorf("%s: neighbors %q fdb %q; want %q %q", step, n, f, wantN, wantF)
		}
	}
	_, _, master := tables(t, ov)

	peers := []Peer{
		{IP: ip("10.10.0.2"), MAC: mac1, VTEP: ip("10.231.0.2")},
		{IP: ip("10.10.0.3"), MAC: mac2, VTEP: ip("10.231.0.3")},
	}
	flood := []net.IP{ip("10.231.0.2"), ip("10.231.0.3")}
	if got, want := sync(peers, flood), (SyncResult{NeighAdded: 2, FDBAdded: 4}); got != want {
		t.Errorf("initial sync = %+v, want %+v", got, want)
	}
	check("initial",
		[]string{"10.10.0.2 02:42:0a:0a:00:02", "10.10.0.3 02:42:0a:0a:00:03"},
		[]string{"00:00:00:00:00:00 10.231.0.2", "00:00:00:00:00:00 10.231.0.3", "02:42:0a:0a:00:02 10.231.0.2", "02:42:0a:0a:00:03 10.231.0.3"})
	if got := sync(peers, flood); got.Changed() {
		t.Errorf("second sync changed %+v, want nothing", got)
	}

	// IP reuse: 10.10.0.2 now belongs to a new container (mac3) on another host.
	peers[0] = Peer{IP: ip("10.10.0.2"), MAC: mac3, VTEP: ip("10.231.0.3")}
	if got, want := sync(peers, flood), (SyncResult{NeighAdded: 1, NeighRemoved: 1, FDBAdded: 1, FDBRemoved: 1}); got != want {
		t.Errorf("IP reuse sync = %+v, want %+v", got, want)
	}
	check("ip reuse",
		[]string{"10.10.0.2 02:42:0a:0a:00:04", "10.10.0.3 02:42:0a:0a:00:03"},
		[]string{"00:00:00:00:00:00 10.231.0.2", "00:00:00:00:00:00 10.231.0.3", "02:42:0a:0a:00:03 10.231.0.3", "02:42:0a:0a:00:04 10.231.0.3"})

	// A MAC that moved hosts keeps a single destination.
	peers[1].VTEP = ip("10.231.0.4")
	if got, want := sync(peers, flood), (SyncResult{FDBAdded: 1, FDBRemoved: 1}); got != want {
		t.Errorf("moved MAC sync = %+v, want %+v", got, want)
	}

	// Entries someone else added by hand are stale and go away; kernel ones stay.
	vx := mustLink(t, ov, VxlanName)
	stale := []*netlink.Neigh{
		{LinkIndex: vx.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, IP: ip("10.10.0.99"), HardwareAddr: mustMAC(t, "02:00:00:00:00:99")},
		{LinkIndex: vx.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, IP: ip("10.231.0.99"), HardwareAddr: mustMAC(t, "02:00:00:00:00:99")},
	}
	for _, n := range stale {
		if err := ov.NeighAppend(n); err != nil {
			t.Fatal(err)
		}
	}
	peers = peers[:1]
	flood = flood[1:]
	if got, want := sync(peers, flood), (SyncResult{NeighRemoved: 2, FDBRemoved: 3}); got != want {
		t.Errorf("stale removal sync = %+v, want %+v", got, want)
	}
	check("stale removed",
		[]string{"10.10.0.2 02:42:0a:0a:00:04"},
		[]string{"00:00:00:00:00:00 10.231.0.3", "02:42:0a:0a:00:04 10.231.0.3"})
	if _, _, m := tables(t, ov); m != master {
		t.Errorf("bridge-owned FDB entries changed from %d to %d", master, m)
	}

	if got, want := sync(nil, nil), (SyncResult{NeighRemoved: 1, FDBRemoved: 2}); got != want {
		t.Errorf("empty sync = %+v, want %+v", got, want)
	}
	check("empty", nil, nil)
}

// benchPeers returns n peers spread over 50 VTEPs, and those VTEPs.
func benchPeers(n int) ([]Peer, []net.IP) {
	peers := make([]Peer, n)
	for i := range peers {
		peers[i] = Peer{
			IP:   net.IPv4(10, 10, byte(i>>8), byte(i)),
			MAC:  net.HardwareAddr{2, 0x42, 0, 0, byte(i >> 8), byte(i)},
			VTEP: net.IPv4(10, 231, 0, byte(2+i%50)),
		}
	}
	flood := make([]net.IP, 50)
	for i := range flood {
		flood[i] = net.IPv4(10, 231, 0, byte(2+i))
	}
	return peers, flood
}

func BenchmarkSyncPeers(b *testing.B) {
	h := newTestHost(b, "bench")
	h.ensureNetwork(testSpec(b, 106))
	for _, n := range []int{100, 1000} {
		peers, flood := benchPeers(n)
		sync := func(p []Peer, f []net.IP) {
			h.do(func() error { _, err := h.ov.SyncPeers(106, p, f); return err })
		}
		b.Run(fmt.Sprintf("initial/%d", n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				sync(nil, nil)
				b.StartTimer()
				sync(peers, flood)
			}
		})
		b.Run(fmt.Sprintf("resync-noop/%d", n), func(b *testing.B) {
			sync(peers, flood)
			for b.Loop() {
				sync(peers, flood)
			}
		})
	}
}
