package ipam

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

const (
	// maxPrefixLen leaves at least a network, one host and a broadcast address.
	maxPrefixLen = 30
	// maxBlocksBits bounds the number of blocks per subnet (2^16) so a
	// search for a free block stays cheap.
	maxBlocksBits = 16
	// maxDefaultBlockBits caps a default block at 256 addresses so large
	// subnets are shared among many hosts without tuning.
	maxDefaultBlockBits = 8
)

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func fromU32(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// first and last address of p.
func first(p netip.Prefix) uint32 { return u32(p.Masked().Addr()) }
func last(p netip.Prefix) uint32 {
	return first(p) | uint32(uint64(1)<<(32-p.Bits())-1)
}

// parseSubnet accepts an IPv4 CIDR and returns its canonical form.
func parseSubnet(what, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s %q is not a CIDR like 10.50.0.0/24: %w", what, s, err)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%s %q is not IPv4: vxovl overlays are IPv4 only", what, s)
	}
	return p.Masked(), nil
}

// parseAddr accepts "10.50.0.7" or "10.50.0.7/24".
func parseAddr(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("address %q is not an IP address: %w", s, err)
	}
	a = a.Unmap()
	if !a.Is4() {
		return netip.Addr{}, fmt.Errorf("address %s is not IPv4: vxovl overlays are IPv4 only", a)
	}
	return a, nil
}

// defaultBlockBits chooses 16 blocks per subnet, at most 256 addresses each.
func defaultBlockBits(subnet netip.Prefix) int {
	host := 32 - subnet.Bits()
	return min(max(host-4, 0), maxDefaultBlockBits)
}

func parseBlockBits(subnet netip.Prefix, opt string) (int, error) {
	host := 32 - subnet.Bits()
	if opt == "" {
		return defaultBlockBits(subnet), nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(opt))
	lo := max(host-maxBlocksBits, 0)
	if err != nil || n < lo || n > host {
		return 0, fmt.Errorf("--ipam-opt block-size=%q: want the host bits of an address block, %d-%d for subnet %s "+
			"(e.g. 4 means blocks of 16 addresses)", opt, lo, host, subnet)
	}
	return n, nil
}

// blockOf is the block of the given size containing a.
func blockOf(a netip.Addr, blockBits int) netip.Prefix {
	p, _ := a.Prefix(32 - blockBits)
	return p
}

// blocks lists the blocks of subnet that intersect rng, in address order.
func blocks(subnet, rng netip.Prefix, blockBits int) []netip.Prefix {
	var out []netip.Prefix
	step := uint64(1) << blockBits
	for b := uint64(first(subnet)); b <= uint64(last(subnet)); b += step {
		p := netip.PrefixFrom(fromU32(uint32(b)), 32-blockBits)
		if p.Overlaps(rng) {
			out = append(out, p)
		}
	}
	return out
}

// hostAddr reports whether a is usable by an endpoint: inside subnet and
// neither its network nor its broadcast address.
func hostAddr(subnet netip.Prefix, a netip.Addr) bool {
	if !subnet.Contains(a) {
		return false
	}
	v := u32(a)
	return v != first(subnet) && v != last(subnet)
}

// overlaps is Overlaps for prefixes that are both valid.
func overlaps(a, b netip.Prefix) bool { return a.Overlaps(b) }
