package dataplane

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vxovl/vxovl/internal/ipsec"
	"golang.org/x/sys/unix"
)

const testEncPort = 4801

var testSecret = []byte("xfrm-test-secret-0123456789abcdef")

// xfrmPair is two throwaway hosts joined by a veth, each with a bare VXLAN
// device on testEncPort pointing at the other: the underlay and overlay of
// an encrypted network, without the Overlay machinery around them.
type xfrmPair struct {
	ns    [2]string
	node  [2]ipsec.Node
	inner [2]net.IP
}

func newXfrmPair(t *testing.T) *xfrmPair {
	t.Helper()
	requireRoot(t)
	p := &xfrmPair{
		ns:    [2]string{newNS(t, "xa"), newNS(t, "xb")},
		node:  [2]ipsec.Node{{Name: "host-a", IP: net.IPv4(10, 79, 0, 1)}, {Name: "host-b", IP: net.IPv4(10, 79, 0, 2)}},
		inner: [2]net.IP{net.IPv4(10, 79, 1, 1), net.IPv4(10, 79, 1, 2)},
	}
	peerNS, err := netnsFD(p.ns[1])
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(peerNS)
	in(t, p.ns[0], func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul0"}, PeerName: "ul0", PeerNamespace: netlink.NsFd(peerNS)})
	})
	for i := range 2 {
		i := i
		in(t, p.ns[i], func() error {
			ul, err := netlink.LinkByName("ul0")
			if err != nil {
				return err
			}
			if err := netlink.AddrAdd(ul, &netlink.Addr{IPNet: &net.IPNet{IP: p.node[i].IP, Mask: net.CIDRMask(24, 32)}}); err != nil {
				return err
			}
			if err := netlink.LinkSetUp(ul); err != nil {
				return err
			}
			vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vxt0", MTU: 1400}, VxlanId: 4242,
				Port: testEncPort, SrcAddr: p.node[i].IP, Group: p.node[1-i].IP}
			if err := netlink.LinkAdd(vx); err != nil {
				return err
			}
			if err := netlink.AddrAdd(vx, &netlink.Addr{IPNet: &net.IPNet{IP: p.inner[i], Mask: net.CIDRMask(24, 32)}}); err != nil {
				return err
			}
			return netlink.LinkSetUp(vx)
		})
	}
	return p
}

func netnsFD(path string) (int, error) { return unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0) }

// encrypt installs host i's SAs (toward the other host, generation gen)
// and the policies of testEncPort.
func (p *xfrmPair) encrypt(t *testing.T, i int, gen uint64) XfrmResult {
	t.Helper()
	sas, err := ipsec.SAs(testSecret, ipsec.Want{Self: p.node[i], Peers: []ipsec.Node{p.node[1-i]}, Send: gen, Receive: []uint64{gen}})
	if err != nil {
		t.Fatal(err)
	}
	var res XfrmResult
	in(t, p.ns[i], func() (err error) {
		res, err = EnsureXfrm([]int{testEncPort}, sas, true)
		return err
	})
	return res
}

func (p *xfrmPair) states(t *testing.T, i int) []netlink.XfrmState {
	t.Helper()
	var st []netlink.XfrmState
	in(t, p.ns[i], func() (err error) {
		st, err = XfrmStates()
		return err
	})
	return st
}

// packets sums the packets counted by host i's SAs of one direction:
// inbound (to host i) or outbound.
func (p *xfrmPair) packets(t *testing.T, i int, inbound bool) uint64 {
	var n uint64
	for _, s := range p.states(t, i) {
		if s.Dst.Equal(p.node[i].IP) == inbound {
			n += s.Statistics.Packets
		}
	}
	return n
}

func (p *xfrmPair) talk(t *testing.T, deadline time.Duration) error {
	t.Helper()
	a := listenUDP(t, p.ns[0], p.inner[0].String()+":0", false)
	b := listenUDP(t, p.ns[1], p.inner[1].String()+":0", false)
	return exchange(a, b.LocalAddr(), b, []byte("over the encrypted overlay"), deadline)
}

// requireESP skips a test that needs real SAs on a kernel without ESP (the
// development machine's kernel has XFRM but neither ESP nor GCM).
func (p *xfrmPair) requireESP(t *testing.T) {
	t.Helper()
	err := Do(p.ns[0], CheckESP)
	if errors.Is(err, ErrNoESP) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// xfrmStat reads one counter of /proc/net/xfrm_stat in namespace ns.
func xfrmStat(t *testing.T, ns, name string) uint64 {
	t.Helper()
	var n uint64
	in(t, ns, func() error {
		// thread-self: /proc/self/net would show the process's
		// namespace, not this locked thread's.
		b, err := os.ReadFile("/proc/thread-self/net/xfrm_stat")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && f[0] == name {
				n, err = strconv.ParseUint(f[1], 10, 64)
				return err
			}
		}
		return fmt.Errorf("no %s in xfrm_stat", name)
	})
	return n
}

// The inbound policy alone must drop cleartext VXLAN on the encrypted
// port; this runs on any kernel with XFRM, ESP or not.
func TestXfrmPolicyDropsCleartext(t *testing.T) {
	p := newXfrmPair(t)
	if err := p.talk(t, 5*time.Second); err != nil {
		t.Fatalf("cleartext overlay does not work before IPsec: %v", err)
	}
	// Someone else's policy (Docker's overlay uses reqid 13): never touched.
	foreign := netlink.XfrmPolicy{Dir: netlink.XFRM_DIR_IN, Proto: unix.IPPROTO_UDP, DstPort: 4789,
		Tmpls: []netlink.XfrmPolicyTmpl{{Src: net.IPv4zero, Dst: net.IPv4zero, Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT, Reqid: 13}}}
	in(t, p.ns[1], func() error { return netlink.XfrmPolicyAdd(&foreign) })
	var res XfrmResult
	in(t, p.ns[1], func() (err error) { res, err = EnsureXfrm([]int{testEncPort}, nil, true); return err })
	if res.PoliciesAdded != 2 {
		t.Fatalf("%+v, want 2 policies added", res)
	}
	in(t, p.ns[1], func() (err error) { res, err = EnsureXfrm([]int{testEncPort}, nil, true); return err })
	if res.Changed() {
		t.Fatalf("second EnsureXfrm changed %+v", res)
	}
	// Without prune (a restart that does not know its peers yet) nothing
	// is removed.
	in(t, p.ns[1], func() (err error) { res, err = EnsureXfrm(nil, nil, false); return err })
	if res.Changed() {
		t.Fatalf("EnsureXfrm without prune changed %+v", res)
	}
	before := xfrmStat(t, p.ns[1], "XfrmInNoPols") + xfrmStat(t, p.ns[1], "XfrmInTmplMismatch")
	if err := p.talk(t, time.Second); err == nil {
		t.Fatal("cleartext VXLAN to the encrypted port reached the overlay")
	}
	if after := xfrmStat(t, p.ns[1], "XfrmInNoPols") + xfrmStat(t, p.ns[1], "XfrmInTmplMismatch"); after == before {
		t.Fatal("the kernel counted no policy drop: the cleartext was lost for another reason")
	}
	in(t, p.ns[1], RemoveXfrm)
	if err := p.talk(t, 5*time.Second); err != nil {
		t.Fatalf("cleartext overlay does not work after RemoveXfrm: %v", err)
	}
	in(t, p.ns[1], func() error {
		pols, err := netlink.XfrmPolicyList(netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(pols) != 1 || pols[0].Tmpls[0].Reqid != 13 {
			t.Errorf("after RemoveXfrm the policies are %v, want only the foreign one", pols)
		}
		return nil
	})
}

func TestXfrmEncryptsVxlanAndDropsCleartext(t *testing.T) {
	p := newXfrmPair(t)
	p.requireESP(t)
	// Control: without IPsec the overlay works, so a failure below is
	// IPsec's doing, not the lab's.
	if err := p.talk(t, 5*time.Second); err != nil {
		t.Fatalf("cleartext overlay does not work before IPsec: %v", err)
	}
	for i := range 2 {
		res := p.encrypt(t, i, 1)
		if res.StatesAdded != 2 || res.PoliciesAdded != 2 {
			t.Fatalf("host %d: %+v, want 2 states and 2 policies added", i, res)
		}
		if again := p.encrypt(t, i, 1); again.Changed() {
			t.Fatalf("host %d: second EnsureXfrm changed %+v", i, again)
		}
	}
	if err := p.talk(t, 5*time.Second); err != nil {
		t.Fatalf("encrypted overlay does not carry traffic: %v", err)
	}
	// talk sends from a to b (ARP was resolved by the cleartext control).
	if out, in := p.packets(t, 0, false), p.packets(t, 1, true); out == 0 || in == 0 {
		t.Fatalf("a's outbound SA counted %d packets, b's inbound %d: the traffic did not go through ESP", out, in)
	}

	// Host a stops encrypting: its VXLAN now arrives in clear at b, whose
	// inbound policy must drop it.
	in(t, p.ns[0], RemoveXfrm)
	if st := p.states(t, 0); len(st) != 0 {
		t.Fatalf("RemoveXfrm left %d states", len(st))
	}
	before := p.packets(t, 1, true)
	if err := p.talk(t, time.Second); err == nil {
		t.Fatal("cleartext VXLAN to the encrypted port reached the overlay")
	}
	if after := p.packets(t, 1, true); after != before {
		t.Fatalf("b's inbound SAs counted %d packets though a sent none through ESP", after-before)
	}
	// And the same cleartext passes once b stops requiring ESP: the drop
	// above was the policy's.
	in(t, p.ns[1], RemoveXfrm)
	if err := p.talk(t, 5*time.Second); err != nil {
		t.Fatalf("cleartext overlay does not work after removing IPsec: %v", err)
	}
}

func TestXfrmRepairsAndRotates(t *testing.T) {
	p := newXfrmPair(t)
	p.requireESP(t)
	for i := range 2 {
		p.encrypt(t, i, 1)
	}
	// Someone else's SA on the host: vxovl must never touch it.
	foreign := &netlink.XfrmState{Src: p.node[0].IP, Dst: p.node[1].IP, Proto: netlink.XFRM_PROTO_ESP,
		Mode: netlink.XFRM_MODE_TRANSPORT, Spi: 0x1234, Reqid: 13,
		Aead: &netlink.XfrmStateAlgo{Name: ipsec.Algorithm, Key: make([]byte, ipsec.KeyBytes), ICVLen: ipsec.ICVBits}}
	in(t, p.ns[0], func() error { return netlink.XfrmStateAdd(foreign) })

	// A state and a policy deleted by hand come back.
	st := p.states(t, 0)
	in(t, p.ns[0], func() error {
		if err := netlink.XfrmStateDel(&st[0]); err != nil {
			return err
		}
		pol := XfrmPolicies(testEncPort)[1]
		return netlink.XfrmPolicyDel(&pol)
	})
	if res := p.encrypt(t, 0, 1); res.StatesAdded != 1 || res.PoliciesAdded != 1 || res.StatesRemoved != 0 {
		t.Fatalf("repair: %+v, want 1 state and 1 policy added, nothing removed", res)
	}
	if err := p.talk(t, 5*time.Second); err != nil {
		t.Fatalf("after repair: %v", err)
	}

	// Rotation: both hosts first accept generations 1 and 2, then switch
	// sending to 2, then drop 1. Traffic flows at every step.
	rotate := func(send uint64, recv ...uint64) {
		t.Helper()
		for i := range 2 {
			sas, err := ipsec.SAs(testSecret, ipsec.Want{Self: p.node[i], Peers: []ipsec.Node{p.node[1-i]}, Send: send, Receive: recv})
			if err != nil {
				t.Fatal(err)
			}
			in(t, p.ns[i], func() error { _, err := EnsureXfrm([]int{testEncPort}, sas, true); return err })
		}
		if err := p.talk(t, 5*time.Second); err != nil {
			t.Fatalf("send %d receive %v: %v", send, recv, err)
		}
	}
	rotate(1, 1, 2)
	rotate(2, 1, 2)
	rotate(2, 2)
	if n := len(p.states(t, 0)); n != 2 {
		t.Fatalf("after rotation host a has %d SAs, want 2", n)
	}

	in(t, p.ns[0], RemoveXfrm)
	in(t, p.ns[0], func() error {
		if _, err := netlink.XfrmStateGet(foreign); err != nil {
			t.Errorf("RemoveXfrm removed a state that is not vxovl's: %v", err)
		}
		pols, err := netlink.XfrmPolicyList(netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(pols) != 0 {
			t.Errorf("RemoveXfrm left policies: %v", pols)
		}
		return nil
	})
}
