package dataplane

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// maxDumpAttempts bounds retries of netlink dumps that the kernel reports as
// interrupted (the table changed while it was being dumped).
const maxDumpAttempts = 5

// dump retries a netlink list call while the kernel reports the dump as
// interrupted, so callers only ever act on a consistent snapshot.
func dump[T any](list func() ([]T, error)) ([]T, error) {
	var (
		res []T
		err error
	)
	for range maxDumpAttempts {
		res, err = list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return res, err
		}
	}
	return nil, fmt.Errorf("netlink dump kept being interrupted by concurrent changes: %w", err)
}

// linkByName returns the named link, or (nil, nil) if there is none.
func linkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up link %q: %w", name, err)
	}
	return l, nil
}

// deleteLink removes the named link if it exists.
func deleteLink(h *netlink.Handle, name string) error {
	l, err := linkByName(h, name)
	if err != nil || l == nil {
		return err
	}
	if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %q: %w", name, err)
	}
	return nil
}

func setUp(h *netlink.Handle, l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set link %q up: %w", l.Attrs().Name, err)
	}
	return nil
}

func setMTU(h *netlink.Handle, l netlink.Link, mtu int) error {
	if mtu == 0 || l.Attrs().MTU == mtu {
		return nil
	}
	if err := h.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("set MTU %d on %q: %w", mtu, l.Attrs().Name, err)
	}
	return nil
}

func setMaster(h *netlink.Handle, l netlink.Link, master netlink.Link) error {
	if l.Attrs().MasterIndex == master.Attrs().Index {
		return nil
	}
	if err := h.LinkSetMasterByIndex(l, master.Attrs().Index); err != nil {
		return fmt.Errorf("attach %q to bridge %q: %w", l.Attrs().Name, master.Attrs().Name, err)
	}
	return nil
}

// ensureBridge makes sure a bridge called name exists, with mtu (0 = leave as
// is), and up. created reports whether this call made it.
func ensureBridge(h *netlink.Handle, name string, mtu int) (br netlink.Link, created bool, err error) {
	l, err := linkByName(h, name)
	if err != nil {
		return nil, false, err
	}
	if l != nil {
		if _, ok := l.(*netlink.Bridge); !ok {
			return nil, false, fmt.Errorf("link %q exists but is a %s, not a bridge; delete it and retry", name, l.Type())
		}
	} else {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return nil, false, fmt.Errorf("create bridge %q: %w", name, err)
		}
		created = true
		if l, err = h.LinkByName(name); err != nil {
			return nil, created, fmt.Errorf("look up new bridge %q: %w", name, err)
		}
	}
	// The MTU is set by a change request, not at creation: only then does the
	// bridge treat it as user-set and stop re-deriving it from its ports (it
	// would jump to 1500 whenever vxlan0 is detached).
	if err := setMTU(h, l, mtu); err != nil {
		return l, created, err
	}
	return l, created, setUp(h, l)
}

// ensureIPv4Addrs makes the link's global IPv4 addresses exactly want (nil =
// none). Other families and link-local addresses are left alone.
func ensureIPv4Addrs(h *netlink.Handle, l netlink.Link, want *net.IPNet) error {
	addrs, err := dump(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses of %q: %w", l.Attrs().Name, err)
	}
	have := false
	for _, a := range addrs {
		if want != nil && a.IPNet.IP.Equal(want.IP) && a.IPNet.Mask.String() == want.Mask.String() {
			have = true
			continue
		}
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		if err := h.AddrDel(l, &a); err != nil {
			return fmt.Errorf("remove stale address %s from %q: %w", a.IPNet, l.Attrs().Name, err)
		}
	}
	if want == nil || have {
		return nil
	}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: want}); err != nil {
		return fmt.Errorf("add address %s to %q: %w", want, l.Attrs().Name, err)
	}
	return nil
}

// vxlanConfig is what identifies a VXLAN device's tunnel. A device with any of
// these different must be recreated; the kernel cannot change them in place.
type vxlanConfig struct {
	VNI   uint32
	Port  int
	Local net.IP
}

func newVxlan(name string, c vxlanConfig, mtu int) *netlink.Vxlan {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.MTU = mtu
	return &netlink.Vxlan{
		LinkAttrs: attrs,
		VxlanId:   int(c.VNI),
		SrcAddr:   c.Local.To4(),
		Port:      c.Port,
		// Learning off: peers come from gossip as static entries, and a
		// learned entry would let any sender on the underlay claim a MAC.
		// (This is the device's own table; br0's learning on the vxlan0
		// port is a separate switch, see ensureTunnelPort.)
		Learning: false,
		// Proxy on: ARP for known peers is answered locally from the static
		// neighbor table instead of being flooded to every VTEP.
		Proxy: true,
	}
}

// vxlanMismatch describes how l differs from c (and the flags we rely on), or
// returns "" if it matches.
func vxlanMismatch(l netlink.Link, c vxlanConfig) string {
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		return fmt.Sprintf("is a %s, not a vxlan device", l.Type())
	}
	switch {
	case uint32(vx.VxlanId) != c.VNI:
		return fmt.Sprintf("has VNI %d, want %d", vx.VxlanId, c.VNI)
	case vx.Port != c.Port:
		return fmt.Sprintf("has UDP port %d, want %d", vx.Port, c.Port)
	case !vx.SrcAddr.Equal(c.Local):
		return fmt.Sprintf("has local address %v, want %v", vx.SrcAddr, c.Local)
	case vx.Learning:
		return "has learning enabled"
	case !vx.Proxy:
		return "has ARP proxy disabled"
	}
	return ""
}

// veth ends need explicit -1 queue lengths: the zero value would ask the
// kernel for a txqueuelen of 0.
func newVeth(name, peer string, mac net.HardwareAddr, mtu int, peerNS int) *netlink.Veth {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.MTU = mtu
	attrs.HardwareAddr = mac
	v := netlink.NewVeth(attrs)
	v.PeerName = peer
	v.PeerNamespace = netlink.NsFd(peerNS)
	return v
}

// The two kinds of br0 port and their flags. vxovl knows every MAC in the
// overlay, so br0 needs to learn none of them:
//
//   - vxlan0, the tunnel port, has learning off. br0 sees remote MACs as
//     source there (their traffic, and vxlan0's ARP proxy answering with the
//     remote MAC). A learned entry outlived the MAC: when the address moved to
//     a container on this host, br0 kept sending frames for it that arrived on
//     vxlan0 back to vxlan0, that is nowhere, until the new container sent
//     something or the entry aged out (300 s); a container that only listens
//     was unreachable (issue 9). It also let any sender on the underlay take
//     a local container's MAC away from it. Remote MACs need no br0 entry:
//     vxlan0's own static table knows each one's host, and br0 floods unknown
//     unicast to vxlan0, so the port keeps flooding on.
//   - an endpoint's port has its container's MAC pinned (a static, sticky
//     entry) and takes no flooded unknown unicast: br0 always knows a local
//     MAC, so an unknown one is remote and goes to vxlan0 only instead of
//     being copied to every local container as well.
//
// A port put on a rebuilt br0 by attachPorts starts with the kernel's
// defaults (learning and flooding on, no pin): it is still reachable, through
// flooding.

// ensureTunnelPort sets vxlan0's br0 port flags (no learning, flooding) and
// forgets the entries br0 learned on it before: an overlay made by an older
// vxovl, or learning turned on by hand.
func ensureTunnelPort(h *netlink.Handle, vx netlink.Link) error {
	flags, err := portFlags(h, vx)
	if err != nil {
		return err
	}
	if flags.Learning {
		if err := h.LinkSetLearning(vx, false); err != nil {
			return fmt.Errorf("turn off learning on bridge port %q: %w", vx.Attrs().Name, err)
		}
	}
	if !flags.Flood {
		if err := h.LinkSetFlood(vx, true); err != nil {
			return fmt.Errorf("turn on unknown-unicast flooding to bridge port %q: %w", vx.Attrs().Name, err)
		}
	}
	return flushLearned(h, vx)
}

// tunnelPortMismatch describes how vxlan0's br0 port flags differ from what
// ensureTunnelPort sets, or returns "".
func tunnelPortMismatch(flags netlink.Protinfo) string {
	switch {
	case flags.Learning:
		return "br0 learns MACs on it (bridge port learning is on)"
	case !flags.Flood:
		return "br0 floods no unknown unicast to it (bridge port flooding is off)"
	}
	return ""
}

// portFlags reads l's bridge port flags.
func portFlags(h *netlink.Handle, l netlink.Link) (netlink.Protinfo, error) {
	flags, err := dump(func() ([]netlink.Protinfo, error) {
		f, err := h.LinkGetProtinfo(l)
		return []netlink.Protinfo{f}, err
	})
	if err != nil {
		return netlink.Protinfo{}, fmt.Errorf("read bridge port flags of %q: %w", l.Attrs().Name, err)
	}
	return flags[0], nil
}

// flushLearned deletes the entries br0 learned on port l; static and local
// entries stay.
func flushLearned(h *netlink.Handle, l netlink.Link) error {
	idx := l.Attrs().Index
	fdb, err := dump(func() ([]netlink.Neigh, error) { return h.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return fmt.Errorf("list forwarding entries on %q: %w", l.Attrs().Name, err)
	}
	for _, n := range fdb {
		// The bridge's entries carry its index (NDA_MASTER); vxlan0's own carry none.
		if n.MasterIndex == 0 || n.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0 {
			continue
		}
		err := h.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_MASTER,
			HardwareAddr: n.HardwareAddr, Vlan: n.Vlan})
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("forget learned entry %s on %q: %w", n.HardwareAddr, l.Attrs().Name, err)
		}
	}
	return nil
}

// pinEndpoint ties mac to the endpoint's br0 port and stops flooding unknown
// unicast to it. Replacing the entry moves it from wherever br0 had the MAC
// before (learned on vxlan0 while the address lived on another host, or
// pinned to an earlier endpoint's port), so the container is reachable before
// it sends anything. Sticky: a frame another port sends with this MAC as
// source does not move it (kernels before 5.5 ignore the flag; the entry is
// then static only).
func pinEndpoint(h *netlink.Handle, port netlink.Link, mac net.HardwareAddr) error {
	err := h.NeighSet(&netlink.Neigh{
		LinkIndex:    port.Attrs().Index,
		Family:       unix.AF_BRIDGE,
		Flags:        netlink.NTF_MASTER | netlink.NTF_STICKY,
		State:        netlink.NUD_NOARP, // static: never ages
		HardwareAddr: mac,
	})
	if err != nil {
		return fmt.Errorf("pin MAC %s to bridge port %q: %w", mac, port.Attrs().Name, err)
	}
	flags, err := portFlags(h, port)
	if err != nil {
		return err
	}
	if flags.Flood {
		if err := h.LinkSetFlood(port, false); err != nil {
			return fmt.Errorf("stop unknown-unicast flooding to bridge port %q: %w", port.Attrs().Name, err)
		}
	}
	return nil
}
