package ipam

// The Docker side: the docker.ipamdriver/1.0 calls (the go-plugins-helpers
// ipam.Ipam methods). They check and parse what Docker sends and leave the
// addresses to alloc.go.

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/docker/go-plugins-helpers/ipam"
)

// Docker protocol constants.
const (
	optAddressType     = "RequestAddressType"
	addressTypeGateway = "com.docker.network.gateway"
	optMAC             = "com.docker.network.endpoint.macaddress"
	optBlockSize       = "block-size"
	addressSpaceName   = "vxovl"
	poolIDPrefix       = "vxovl:"
)

// GetCapabilities asks Docker for endpoint MACs: their presence is what
// distinguishes an endpoint's --ip from a network's --aux-address.
func (d *Driver) GetCapabilities() (*ipam.CapabilitiesResponse, error) {
	return &ipam.CapabilitiesResponse{RequiresMACAddress: true}, nil
}

// GetDefaultAddressSpaces names vxovl's single address space.
func (d *Driver) GetDefaultAddressSpaces() (*ipam.AddressSpacesResponse, error) {
	return &ipam.AddressSpacesResponse{LocalDefaultAddressSpace: addressSpaceName, GlobalDefaultAddressSpace: addressSpaceName}, nil
}

// poolID names a new pool: its definition (subnet, --ip-range, block size),
// so that the first network of a definition has the same pool ID on every
// host, and "#2", "#3"... for further networks of the same definition on
// this host, which are not in taken.
func poolID(subnet, rng netip.Prefix, blockBits int, taken map[string]*pool) string {
	base := poolIDPrefix + subnet.String()
	if rng != subnet {
		base += ";range=" + rng.String()
	}
	if blockBits != defaultBlockBits(subnet) {
		base += ";block=" + strconv.Itoa(blockBits)
	}
	id := base
	for n := 2; taken[id] != nil; n++ {
		id = base + "#" + strconv.Itoa(n)
	}
	return id
}

// RequestPool registers a pool for --subnet (required) and --ip-range.
// Docker requests one per network, and each network gets a pool of its own
// even when another network on this host has the same subnet: each has its
// own gateway (Docker's default IPAM refuses the second network instead;
// vxovl's networks of one subnet share the subnet's addresses and blocks).
func (d *Driver) RequestPool(req *ipam.RequestPoolRequest) (*ipam.RequestPoolResponse, error) {
	if req == nil {
		return nil, fmt.Errorf("empty RequestPool request")
	}
	if req.V6 {
		return nil, fmt.Errorf("vxovl IPAM is IPv4 only: create the network without --ipv6, or use another IPAM driver for IPv6")
	}
	if strings.TrimSpace(req.Pool) == "" {
		return nil, fmt.Errorf("vxovl IPAM needs an explicit subnet: pass --subnet (e.g. --subnet 10.50.0.0/24) and the same one on every host; " +
			"without a central server, subnets cannot be handed out safely")
	}
	subnet, err := parseSubnet("subnet", req.Pool)
	if err != nil {
		return nil, err
	}
	if subnet.Bits() > maxPrefixLen {
		return nil, fmt.Errorf("subnet %s is too small: use /%d or larger", subnet, maxPrefixLen)
	}
	rng := subnet
	if strings.TrimSpace(req.SubPool) != "" {
		if rng, err = parseSubnet("--ip-range", req.SubPool); err != nil {
			return nil, err
		}
		if rng.Bits() < subnet.Bits() || !subnet.Contains(rng.Addr()) {
			return nil, fmt.Errorf("--ip-range %s is not inside --subnet %s", rng, subnet)
		}
	}
	for k := range req.Options {
		if k != optBlockSize {
			d.log.Warn("ignoring unknown IPAM option", "option", k)
		}
	}
	bits, err := parseBlockBits(subnet, req.Options[optBlockSize])
	if err != nil {
		return nil, err
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	id := poolID(subnet, rng, bits, d.pools)
	p := &pool{ID: id, Subnet: subnet, Range: rng, BlockBits: bits, Refs: 1}
	if err := d.st.Put(bucketPools, id, p); err != nil {
		return nil, fmt.Errorf("saving pool %s: %w", id, err)
	}
	d.pools[id] = p
	d.log.Info("pool requested", "pool", id)
	return &ipam.RequestPoolResponse{PoolID: id, Pool: subnet.String(), Data: map[string]string{}}, nil
}

// ReleasePool forgets the pool and gives back this node's empty blocks of
// the subnet. A pool stored by an older vxovl may be shared by several
// networks: it is forgotten with the last of them.
func (d *Driver) ReleasePool(req *ipam.ReleasePoolRequest) error {
	if req == nil {
		return fmt.Errorf("empty ReleasePool request")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.poolLocked(req.PoolID)
	if err != nil {
		return err
	}
	if p.Refs > 1 {
		next := *p
		next.Refs--
		if err := d.st.Put(bucketPools, p.ID, next); err != nil {
			return fmt.Errorf("saving pool %s: %w", p.ID, err)
		}
		*p = next
		return nil
	}
	if err := d.st.Delete(bucketPools, p.ID); err != nil {
		return fmt.Errorf("deleting pool %s: %w", p.ID, err)
	}
	delete(d.pools, p.ID)
	d.log.Info("pool released", "pool", p.ID)
	d.releaseEmptyBlocksLocked(p.Subnet)
	return nil
}

func (d *Driver) poolLocked(id string) (*pool, error) {
	p := d.pools[id]
	if p == nil {
		return nil, fmt.Errorf("unknown vxovl pool %q: the network was not created through this host's vxovl IPAM "+
			"(or its state was lost); remove and recreate the network", id)
	}
	return p, nil
}

func cidr(a netip.Addr, subnet netip.Prefix) string {
	return netip.PrefixFrom(a, subnet.Bits()).String()
}

// RequestAddress hands out the gateway, an explicit address (--ip,
// --aux-address) or a free address of one of this node's blocks.
func (d *Driver) RequestAddress(req *ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
	if req == nil {
		return nil, fmt.Errorf("empty RequestAddress request")
	}
	// What Docker sends decides gateway vs --ip vs --aux-address: worth seeing.
	d.log.Debug("RequestAddress", "pool", req.PoolID, "address", req.Address, "options", req.Options)
	d.mu.Lock()
	p, err := d.poolLocked(req.PoolID)
	var pc pool
	if err == nil {
		pc = *p
	}
	d.mu.Unlock()
	if err != nil {
		return nil, err
	}
	var a netip.Addr
	switch {
	case req.Options[optAddressType] == addressTypeGateway:
		a, err = d.gateway(&pc, req.Address)
	case strings.TrimSpace(req.Address) != "":
		a, err = d.explicit(&pc, req.Address, req.Options[optMAC])
	default:
		a, err = d.dynamic(&pc, req.Options[optMAC])
	}
	if err != nil {
		return nil, err
	}
	return &ipam.RequestAddressResponse{Address: cidr(a, pc.Subnet), Data: map[string]string{}}, nil
}

// ReleaseAddress frees an address; an owned block left empty is given
// back when this node holds another block of the subnet with free space.
func (d *Driver) ReleaseAddress(req *ipam.ReleaseAddressRequest) error {
	if req == nil {
		return fmt.Errorf("empty ReleaseAddress request")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.poolLocked(req.PoolID)
	if err != nil {
		return err
	}
	a, err := parseAddr(req.Address)
	if err != nil {
		return err
	}
	return d.releaseLocked(p, a)
}
