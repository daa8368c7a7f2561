package dataplane

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// ErrNoAddress is returned (wrapped) when no suitable underlay address exists.
var ErrNoAddress = errors.New("no usable IPv4 address")

// UnderlayMTU returns the MTU of the interface holding ip in the calling
// thread's namespace. The overlay default is this minus VXLAN's 50 bytes of
// IPv4 encapsulation.
func UnderlayMTU(ip net.IP) (int, error) {
	if ip == nil {
		return 0, fmt.Errorf("underlay MTU: no address given")
	}
	addrs, err := dump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return 0, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if !a.IP.Equal(ip) {
			continue
		}
		l, err := netlink.LinkByIndex(a.LinkIndex)
		if err != nil {
			return 0, fmt.Errorf("look up interface of %s: %w", ip, err)
		}
		return l.Attrs().MTU, nil
	}
	return 0, fmt.Errorf("%s is not assigned to any interface on this host; set the advertise address to a local IP: %w", ip, ErrNoAddress)
}

// DefaultRouteIPv4 guesses this host's underlay address: the preferred source
// of the IPv4 default route, else the first global IPv4 address of its
// interface, else the first global IPv4 address of any up interface.
func DefaultRouteIPv4() (net.IP, error) {
	routes, err := dump(func() ([]netlink.Route, error) { return netlink.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil && !isDefaultDst(r.Dst) {
			continue
		}
		if r.Src != nil && r.Src.To4() != nil {
			return r.Src.To4(), nil
		}
		idx := r.LinkIndex
		if idx == 0 && len(r.MultiPath) > 0 {
			idx = r.MultiPath[0].LinkIndex
		}
		if idx == 0 {
			continue
		}
		l, err := netlink.LinkByIndex(idx)
		if err != nil {
			continue
		}
		if ip, err := firstGlobalIPv4(l); err == nil && ip != nil {
			return ip, nil
		}
	}
	links, err := dump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if l.Attrs().Flags&net.FlagUp == 0 || l.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		if ip, err := firstGlobalIPv4(l); err == nil && ip != nil {
			return ip, nil
		}
	}
	return nil, fmt.Errorf("autodetect underlay address (no default route, no global IPv4 on any up interface); set it explicitly: %w", ErrNoAddress)
}

func isDefaultDst(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

func firstGlobalIPv4(l netlink.Link) (net.IP, error) {
	addrs, err := dump(func() ([]netlink.Addr, error) { return netlink.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if a.IP.IsGlobalUnicast() {
			return a.IP.To4(), nil
		}
	}
	return nil, nil
}
