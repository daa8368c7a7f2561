package ipam

// The Docker side: the docker.ipamdriver/1.0 calls (the go-plugins-helpers
// ipam.Ipam methods). They check and parse what Docker sends and leave the
// addresses to alloc.go.

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"
)

// Docker protocol constants.
const (
	optAddressType     = "RequestAddressType"
	addressTypeGateway = "com.docker.network.gateway"
	optBlockSize       = "block-size"
	addressSpaceName   = "vxovl"
	poolIDPrefix       = "vxovl:"
)

// Capabilities is what the driver answers to GetCapabilities: it needs
// nothing from Docker, in particular not an endpoint's MAC address. Asking
// for it would make Docker give every endpoint a random MAC instead of
// letting the network driver derive a stable one.
func Capabilities() *ipam.CapabilitiesResponse { return &ipam.CapabilitiesResponse{} }

// GetCapabilities answers Capabilities.
func (d *Driver) GetCapabilities() (*ipam.CapabilitiesResponse, error) { return Capabilities(), nil }

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
	p := &pool{ID: id, Subnet: subnet, Range: rng, BlockBits: bits, Refs: 1, Creating: true}
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

// What an address request asks for.
type requestKind int

const (
	reqGateway  requestKind = iota
	reqAux                  // a network's --aux-address
	reqExplicit             // an endpoint's --ip
	reqDynamic              // an endpoint's address of our choice
)

func (k requestKind) String() string {
	return [...]string{reqGateway: "gateway", reqAux: "aux-address", reqExplicit: "ip", reqDynamic: "dynamic"}[k]
}

// classify tells what Docker asks for. Docker 20.10 sends a network's
// --aux-address and an endpoint's --ip alike (an address and no options);
// they differ in when. Docker requests a network's pool, its gateway and its
// aux addresses in a row, then asks the network driver to create the
// network (NetworkCreating), and requests endpoint addresses only after
// that. So an explicit address for a pool whose network is still being
// created is an aux address.
func classify(req *ipam.RequestAddressRequest, creating bool) requestKind {
	switch {
	case req.Options[optAddressType] == addressTypeGateway:
		return reqGateway
	case strings.TrimSpace(req.Address) == "":
		return reqDynamic
	case creating:
		return reqAux
	default:
		return reqExplicit
	}
}

// RequestAddress hands out the gateway, an explicit address (--aux-address,
// --ip) or a free address of one of this node's blocks.
func (d *Driver) RequestAddress(req *ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
	if req == nil {
		return nil, fmt.Errorf("empty RequestAddress request")
	}
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
	kind := classify(req, pc.Creating)
	// What Docker sends decides gateway vs --ip vs --aux-address: worth seeing.
	d.log.Debug("RequestAddress", "pool", req.PoolID, "address", req.Address, "options", req.Options, "kind", kind)
	var a netip.Addr
	switch kind {
	case reqGateway:
		a, err = d.gateway(&pc, req.Address)
	case reqAux, reqExplicit:
		a, err = d.explicit(&pc, req.Address, kind == reqAux)
	case reqDynamic:
		if pc.Creating {
			// Only an endpoint asks without an address: the network exists,
			// whatever network driver created it.
			err = d.created(pc.ID)
		}
		if err == nil {
			a, err = d.dynamic(&pc)
		}
	}
	if err != nil {
		return nil, err
	}
	return &ipam.RequestAddressResponse{Address: cidr(a, pc.Subnet), Data: map[string]string{}}, nil
}

// NetworkCreating must hear of every CreateNetwork call of the network
// protocol before the network driver handles it: from then on an explicit
// address requested for the network's pool is an endpoint's --ip (see
// classify). It ends the creation of the pool Docker made the network from:
// one that is still being created, of the network's subnet, with its gateway
// and aux addresses (several networks of one subnet may be created at once).
func (d *Driver) NetworkCreating(req *network.CreateNetworkRequest) error {
	if req == nil {
		return nil
	}
	for _, data := range req.IPv4Data {
		if data == nil || data.AddressSpace != addressSpaceName {
			continue // another IPAM's network
		}
		subnet, err := parseSubnet("pool", data.Pool)
		if err != nil {
			continue // the network driver refuses it
		}
		var gw netip.Addr
		if data.Gateway != "" {
			gw, _ = parseAddr(data.Gateway)
		}
		var aux []netip.Addr
		for _, v := range data.AuxAddresses {
			if s, ok := v.(string); ok {
				if a, err := parseAddr(s); err == nil {
					aux = append(aux, a)
				}
			}
		}
		d.mu.Lock()
		var cands []poolCandidate
		for _, p := range d.pools {
			if p.Creating && p.Subnet == subnet {
				cands = append(cands, poolCandidate{id: p.ID, gateway: p.Gateway, aux: d.auxOfLocked(p.ID)})
			}
		}
		d.mu.Unlock()
		if id, ok := networkPool(cands, gw, aux); ok {
			if err := d.created(id); err != nil {
				return err
			}
		}
	}
	return nil
}

// poolCandidate is what networkPool compares of a pool.
type poolCandidate struct {
	id      string
	gateway netip.Addr
	aux     []netip.Addr
}

// networkPool picks, among pools still being created with a network's
// subnet, the one the network was made from: the one with its gateway and
// aux addresses, else the first by ID (a network of this subnet exists, so
// one of them is done).
func networkPool(cands []poolCandidate, gw netip.Addr, aux []netip.Addr) (string, bool) {
	if len(cands) == 0 {
		return "", false
	}
	slices.SortFunc(cands, func(a, b poolCandidate) int { return strings.Compare(a.id, b.id) })
	want := slices.Clone(aux)
	slices.SortFunc(want, netip.Addr.Compare)
	for _, c := range cands {
		have := slices.Clone(c.aux)
		slices.SortFunc(have, netip.Addr.Compare)
		if c.gateway == gw && slices.Equal(have, want) {
			return c.id, true
		}
	}
	return cands[0].id, true
}

// auxOfLocked lists the aux addresses reserved for pool id.
func (d *Driver) auxOfLocked(id string) []netip.Addr {
	var out []netip.Addr
	for _, al := range d.allocs {
		if al.Kind == allocAux && al.Pool == id {
			out = append(out, al.Addr)
		}
	}
	return out
}

// created records that pool id's network exists.
func (d *Driver) created(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.pools[id]
	if p == nil || !p.Creating {
		return nil
	}
	next := *p
	next.Creating = false
	if err := d.st.Put(bucketPools, p.ID, next); err != nil {
		return fmt.Errorf("saving pool %s: %w", p.ID, err)
	}
	*p = next
	return nil
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
