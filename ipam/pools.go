package ipam

import (
	"net/netip"
	"slices"
)

// PoolStatus is what this host holds of one pool's subnet (several pools
// may share a subnet, and its blocks and addresses with it).
type PoolStatus struct {
	Subnet netip.Prefix
	// Blocks are the address blocks this host owns in the subnet.
	Blocks int
	// Addresses are the addresses this host handed out in it: endpoints',
	// --ip and --aux-address (not the gateway).
	Addresses int
}

// Pools reports every subnet this host has a pool, a block or an address
// in, sorted by subnet. It holds the driver's lock only to count.
func (d *Driver) Pools() []PoolStatus {
	d.mu.Lock()
	by := map[netip.Prefix]*PoolStatus{}
	get := func(s netip.Prefix) *PoolStatus {
		if by[s] == nil {
			by[s] = &PoolStatus{Subnet: s}
		}
		return by[s]
	}
	for _, p := range d.pools {
		get(p.Subnet)
	}
	for _, c := range d.owned {
		if c.isBlock() {
			get(c.Subnet).Blocks++
		}
	}
	for _, a := range d.allocs {
		get(a.Subnet).Addresses++
	}
	d.mu.Unlock()

	out := make([]PoolStatus, 0, len(by))
	for _, p := range by {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b PoolStatus) int { return a.Subnet.Addr().Compare(b.Subnet.Addr()) })
	return out
}
