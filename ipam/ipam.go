package ipam

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/internal/store"
)

// Cluster is the part of the gossip layer the IPAM driver uses;
// *cluster.Cluster implements it.
type Cluster interface {
	// Members lists the live nodes, this one included.
	Members() []cluster.Member
	PutRecord(kind, key string, value []byte) error
	DeleteRecord(kind, key string) error
	// Records returns the live records of kind from alive owners, ours included.
	Records(kind string) []cluster.Record
	RegisterKind(kind string, opts cluster.KindOptions) error
	SendTo(node, kind string, payload []byte) error
}

// Config configures the driver. Zero fields take the documented defaults.
type Config struct {
	// NodeName is this node's cluster name (the same as cluster.Config.NodeName). Required.
	NodeName string
	// ClaimTimeout bounds one claim round: how long every member has to
	// answer. Default 2s.
	ClaimTimeout time.Duration
	// AllocateTimeout bounds the time RequestAddress spends claiming a new
	// block (several rounds when claims collide). Default 20s, below
	// Docker's 30s plugin call timeout.
	AllocateTimeout time.Duration
	// OrphanTimeout is how long claims of an unreachable node are still
	// respected. It protects a partitioned or restarting host's addresses;
	// after it, the blocks of a host that never came back are reused.
	// Default 24h.
	OrphanTimeout time.Duration
	// ReleaseGrace is how long a claim of a live node is still respected
	// after its record disappeared from our view; it covers gossip lag of
	// claims we learned from an ACK before their record. Default 30s.
	ReleaseGrace time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultClaimTimeout    = 2 * time.Second
	DefaultAllocateTimeout = 20 * time.Second
	DefaultOrphanTimeout   = 24 * time.Hour
	DefaultReleaseGrace    = 30 * time.Second
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

// ErrExhausted is returned (wrapped) when no address can be handed out.
var ErrExhausted = errors.New("no free address")

// Stats are cumulative counters since New.
type Stats struct {
	Conflicts      uint64 // overlapping claims seen between this node and another (each pair once)
	ClaimsWon      uint64
	ClaimsLost     uint64 // refused, timed out or unreachable claim rounds
	BlocksReleased uint64
}

// Driver implements ipam.Ipam for one node.
type Driver struct {
	cfg  Config
	self string
	cl   Cluster
	st   *store.Store
	log  *slog.Logger

	mu          sync.Mutex
	pools       map[string]*pool
	owned       map[netip.Prefix]*claim
	pending     map[netip.Prefix]*pendingClaim
	allocs      map[netip.Addr]*allocation
	known       map[knownKey]*remoteClaim
	reported    map[string]bool
	waiters     map[uint64]*waiter
	nextID      uint64
	subnetLocks map[netip.Prefix]*sync.Mutex
	// refreshTimer runs Refresh when the earliest remembered claim expires
	// (refreshAt; zero when none is scheduled).
	refreshTimer *time.Timer
	closed       bool // Close was called: schedule no more refreshes
	refreshAt    time.Time

	conflicts, claimsWon, claimsLost, released atomic.Uint64
}

var (
	_ ipam.Ipam = (*Driver)(nil)
	_ Cluster   = (*cluster.Cluster)(nil)
)

// New loads the persisted state, registers the record kinds with the
// cluster and republishes this node's claims.
func New(cfg Config, cl Cluster, st *store.Store) (*Driver, error) {
	if cfg.NodeName == "" {
		return nil, fmt.Errorf("ipam: NodeName is required")
	}
	if cl == nil || st == nil {
		return nil, fmt.Errorf("ipam: cluster and store are required")
	}
	if cfg.ClaimTimeout <= 0 {
		cfg.ClaimTimeout = DefaultClaimTimeout
	}
	if cfg.AllocateTimeout <= 0 {
		cfg.AllocateTimeout = DefaultAllocateTimeout
	}
	if cfg.OrphanTimeout <= 0 {
		cfg.OrphanTimeout = DefaultOrphanTimeout
	}
	if cfg.ReleaseGrace <= 0 {
		cfg.ReleaseGrace = DefaultReleaseGrace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Driver{
		cfg: cfg, self: cfg.NodeName, cl: cl, st: st, log: cfg.Logger,
		pools:       map[string]*pool{},
		owned:       map[netip.Prefix]*claim{},
		pending:     map[netip.Prefix]*pendingClaim{},
		allocs:      map[netip.Addr]*allocation{},
		known:       map[knownKey]*remoteClaim{},
		reported:    map[string]bool{},
		waiters:     map[uint64]*waiter{},
		nextID:      rand.Uint64() >> 1, // a restarted node must not match replies meant for its predecessor
		subnetLocks: map[netip.Prefix]*sync.Mutex{},
	}
	if err := d.load(); err != nil {
		return nil, err
	}
	validate := func(kind string) func(string, []byte) error {
		return func(key string, value []byte) error { _, err := decodeRecord(kind, key, value); return err }
	}
	for _, kind := range []string{KindBlock, KindPin} {
		if err := cl.RegisterKind(kind, cluster.KindOptions{Validate: validate(kind), Changed: func(string) { d.Refresh() }}); err != nil {
			return nil, fmt.Errorf("ipam: %w", err)
		}
	}
	if err := cl.RegisterKind(KindClaim, cluster.KindOptions{Message: d.onMessage}); err != nil {
		return nil, fmt.Errorf("ipam: %w", err)
	}
	d.mu.Lock()
	for _, c := range d.owned {
		d.publish(c)
	}
	d.mu.Unlock()
	d.Refresh()
	return d, nil
}

func (d *Driver) load() error {
	pools, err := store.ListJSON[pool](d.st, bucketPools)
	if err != nil {
		return fmt.Errorf("ipam: loading pools: %w", err)
	}
	for id, p := range pools {
		d.pools[id] = &p
	}
	owned, err := store.ListJSON[claim](d.st, bucketOwned)
	if err != nil {
		return fmt.Errorf("ipam: loading owned blocks: %w", err)
	}
	for _, c := range owned {
		d.owned[c.Prefix] = &c
	}
	allocs, err := store.ListJSON[allocation](d.st, bucketAllocs)
	if err != nil {
		return fmt.Errorf("ipam: loading allocations: %w", err)
	}
	for _, a := range allocs {
		d.allocs[a.Addr] = &a
	}
	known, err := store.ListJSON[remoteClaim](d.st, bucketKnown)
	if err != nil {
		return fmt.Errorf("ipam: loading remembered claims: %w", err)
	}
	now := time.Now()
	for _, r := range known {
		r.lastSeen = now
		d.known[knownKey{r.Owner, r.Prefix}] = &r
	}
	if len(d.pools)+len(d.owned)+len(d.allocs) > 0 {
		d.log.Info("ipam state restored", "pools", len(d.pools), "claims", len(d.owned), "addresses", len(d.allocs), "remembered_remote_claims", len(d.known))
	}
	return nil
}

// Stats returns the counters.
func (d *Driver) Stats() Stats {
	return Stats{
		Conflicts:      d.conflicts.Load(),
		ClaimsWon:      d.claimsWon.Load(),
		ClaimsLost:     d.claimsLost.Load(),
		BlocksReleased: d.released.Load(),
	}
}

// GetCapabilities asks Docker for endpoint MACs: their presence is what
// distinguishes an endpoint's --ip from a network's --aux-address.
func (d *Driver) GetCapabilities() (*ipam.CapabilitiesResponse, error) {
	return &ipam.CapabilitiesResponse{RequiresMACAddress: true}, nil
}

// GetDefaultAddressSpaces names vxovl's single address space.
func (d *Driver) GetDefaultAddressSpaces() (*ipam.AddressSpacesResponse, error) {
	return &ipam.AddressSpacesResponse{LocalDefaultAddressSpace: addressSpaceName, GlobalDefaultAddressSpace: addressSpaceName}, nil
}

// poolID is a pure function of the pool's definition, so every host
// derives the same one.
func poolID(subnet, rng netip.Prefix, blockBits int) string {
	id := poolIDPrefix + subnet.String()
	if rng != subnet {
		id += ";range=" + rng.String()
	}
	if blockBits != defaultBlockBits(subnet) {
		id += ";block=" + strconv.Itoa(blockBits)
	}
	return id
}

// RequestPool registers a pool for --subnet (required) and --ip-range.
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
	id := poolID(subnet, rng, bits)

	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.pools[id]
	if p == nil {
		p = &pool{ID: id, Subnet: subnet, Range: rng, BlockBits: bits}
	}
	next := *p
	next.Refs++
	if err := d.st.Put(bucketPools, id, next); err != nil {
		return nil, fmt.Errorf("saving pool %s: %w", id, err)
	}
	*p = next
	d.pools[id] = p
	d.log.Info("pool requested", "pool", id, "refs", p.Refs)
	return &ipam.RequestPoolResponse{PoolID: id, Pool: subnet.String(), Data: map[string]string{}}, nil
}

// ReleasePool drops one reference; the last one forgets the pool and gives
// back this node's empty blocks of the subnet.
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

func (d *Driver) gatewaysLocked(subnet netip.Prefix) map[netip.Addr]bool {
	gws := map[netip.Addr]bool{}
	for _, p := range d.pools {
		if p.Subnet == subnet && p.Gateway.IsValid() {
			gws[p.Gateway] = true
		}
	}
	return gws
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

func (d *Driver) gateway(p *pool, want string) (netip.Addr, error) {
	gw := fromU32(first(p.Subnet) + 1)
	if strings.TrimSpace(want) != "" {
		a, err := parseAddr(want)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("--gateway: %w", err)
		}
		if !hostAddr(p.Subnet, a) {
			return netip.Addr{}, fmt.Errorf("--gateway %s is not a host address of subnet %s", a, p.Subnet)
		}
		gw = a
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, err := d.poolLocked(p.ID)
	if err != nil {
		return netip.Addr{}, err
	}
	if al := d.allocs[gw]; al != nil {
		return netip.Addr{}, fmt.Errorf("gateway %s is already used by an endpoint on this host; pick another --gateway", gw)
	}
	if cur.Gateway != gw {
		next := *cur
		next.Gateway = gw
		if err := d.st.Put(bucketPools, cur.ID, next); err != nil {
			return netip.Addr{}, fmt.Errorf("saving pool %s: %w", cur.ID, err)
		}
		*cur = next
	}
	return gw, nil
}

func (d *Driver) explicit(p *pool, want, mac string) (netip.Addr, error) {
	a, err := parseAddr(want)
	if err != nil {
		return netip.Addr{}, err
	}
	if !hostAddr(p.Subnet, a) {
		return netip.Addr{}, fmt.Errorf("address %s is not a host address of subnet %s", a, p.Subnet)
	}
	d.mu.Lock()
	if err := d.checkExplicitLocked(p, a, mac == ""); err != nil {
		d.mu.Unlock()
		return netip.Addr{}, err
	}
	if mac == "" {
		// --aux-address: every host reserves it for itself; never handed out.
		defer d.mu.Unlock()
		return a, d.reserveAuxLocked(p, a)
	}
	if c := d.ownerBlockLocked(a); c != nil {
		defer d.mu.Unlock()
		return a, d.allocLocked(p, a, allocExplicit, mac)
	}
	d.mu.Unlock()

	pin := netip.PrefixFrom(a, 32)
	if err := d.claim(p.Subnet, pin, true); err != nil {
		return netip.Addr{}, fmt.Errorf("cannot reserve %s for this container: %w", a, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.allocLocked(p, a, allocPin, mac); err != nil {
		d.dropClaimLocked(pin)
		return netip.Addr{}, err
	}
	return a, nil
}

// checkExplicitLocked refuses an explicit address that is in use here or
// that another node holds. Aux addresses are exempt from the latter: every
// host reserves the same ones for the same network.
func (d *Driver) checkExplicitLocked(p *pool, a netip.Addr, aux bool) error {
	if d.allocs[a] != nil {
		return fmt.Errorf("address %s is already in use on this host", a)
	}
	if d.gatewaysLocked(p.Subnet)[a] {
		return fmt.Errorf("address %s is the gateway of subnet %s", a, p.Subnet)
	}
	if aux || d.ownerBlockLocked(a) != nil {
		return nil
	}
	q := netip.PrefixFrom(a, 32)
	for _, r := range d.sortedKnownLocked() {
		if r.Prefix.Contains(a) && !r.Aux {
			if r.isBlock() {
				return fmt.Errorf("address %s lies in address block %s held by node %s; pick an address outside the blocks other hosts hold, "+
					"or omit --ip to let vxovl choose", a, r.Prefix, r.Owner)
			}
			return fmt.Errorf("address %s is already pinned by node %s (a container there was started with this --ip)", a, r.Owner)
		}
		if r.Aux && r.Prefix == q {
			return fmt.Errorf("address %s is reserved with --aux-address on node %s", a, r.Owner)
		}
	}
	return nil
}

// ownerBlockLocked is this node's usable block containing a, or nil.
func (d *Driver) ownerBlockLocked(a netip.Addr) *claim {
	for _, c := range d.owned {
		if c.isBlock() && c.Prefix.Contains(a) {
			return c
		}
	}
	return nil
}

func (d *Driver) reserveAuxLocked(p *pool, a netip.Addr) error {
	if err := d.allocLocked(p, a, allocAux, ""); err != nil {
		return err
	}
	pin := netip.PrefixFrom(a, 32)
	if _, ok := d.owned[pin]; ok {
		return nil
	}
	c := &claim{Prefix: pin, Subnet: p.Subnet, Aux: true, ClaimedAt: time.Now().UnixNano()}
	if err := d.st.Put(bucketOwned, pin.String(), c); err != nil {
		d.freeLocked(a)
		return fmt.Errorf("saving aux address %s: %w", a, err)
	}
	d.owned[pin] = c
	d.publish(c)
	return nil
}

// allocLocked records a as in use, durably.
func (d *Driver) allocLocked(p *pool, a netip.Addr, kind, mac string) error {
	al := &allocation{Addr: a, Subnet: p.Subnet, Pool: p.ID, Kind: kind, MAC: mac}
	if err := d.st.Put(bucketAllocs, a.String(), al); err != nil {
		return fmt.Errorf("saving address %s: %w", a, err)
	}
	d.allocs[a] = al
	return nil
}

func (d *Driver) freeLocked(a netip.Addr) {
	if err := d.st.Delete(bucketAllocs, a.String()); err != nil {
		d.log.Error("forgetting a released address failed; it stays reserved after a restart", "addr", a, "err", err)
	}
	delete(d.allocs, a)
}

// dynamic allocates from an owned block, claiming a new one when all are full.
func (d *Driver) dynamic(p *pool, mac string) (netip.Addr, error) {
	if a, ok, err := d.tryAlloc(p, mac); ok || err != nil {
		return a, err
	}
	lk := d.subnetLock(p.Subnet)
	lk.Lock()
	defer lk.Unlock()
	deadline := time.Now().Add(d.cfg.AllocateTimeout)
	var tried []string
	for attempt := 0; ; attempt++ {
		// Another request may have claimed a block while we waited for lk.
		if a, ok, err := d.tryAlloc(p, mac); ok || err != nil {
			return a, err
		}
		b, ok := d.pickBlock(p)
		if !ok {
			msg := fmt.Sprintf("%v in %s for this host: its blocks are full and no free block is left "+
				"(blocks held by unreachable hosts stay reserved for %s); remove containers or use a larger --subnet/--ip-range",
				ErrExhausted, p.Range, d.cfg.OrphanTimeout)
			if len(tried) > 0 {
				msg += "; last claim error: " + tried[len(tried)-1]
			}
			return netip.Addr{}, fmt.Errorf("%w", &exhaustedError{msg})
		}
		err := d.claim(p.Subnet, b, false)
		if err == nil {
			continue
		}
		tried = append(tried, err.Error())
		if time.Now().After(deadline) {
			return netip.Addr{}, fmt.Errorf("%w in %s for this host: its blocks are full and claiming a new block failed for %s "+
				"(is part of the cluster unreachable?); last error: %v", ErrExhausted, p.Range, d.cfg.AllocateTimeout, err)
		}
		// Jittered backoff: two hosts that refused each other should not collide again.
		back := time.Duration(10<<min(attempt, 5)) * time.Millisecond
		time.Sleep(back/2 + rand.N(back))
	}
}

type exhaustedError struct{ msg string }

func (e *exhaustedError) Error() string { return e.msg }
func (e *exhaustedError) Unwrap() error { return ErrExhausted }

func (d *Driver) subnetLock(s netip.Prefix) *sync.Mutex {
	d.mu.Lock()
	defer d.mu.Unlock()
	lk := d.subnetLocks[s]
	if lk == nil {
		lk = &sync.Mutex{}
		d.subnetLocks[s] = lk
	}
	return lk
}

// tryAlloc takes the lowest free address of this node's usable blocks.
func (d *Driver) tryAlloc(p *pool, mac string) (netip.Addr, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.poolLocked(p.ID); err != nil {
		return netip.Addr{}, false, err
	}
	a, ok := d.findFreeLocked(p.Subnet, p.Range)
	if !ok {
		return netip.Addr{}, false, nil
	}
	if err := d.allocLocked(p, a, allocDynamic, mac); err != nil {
		return netip.Addr{}, false, err
	}
	return a, true, nil
}

// skipLocked is the set of addresses of subnet nobody may allocate
// dynamically: gateways and every known pin or aux address.
func (d *Driver) skipLocked(subnet netip.Prefix) map[netip.Addr]bool {
	skip := d.gatewaysLocked(subnet)
	for _, r := range d.known {
		if !r.isBlock() && subnet.Contains(r.Prefix.Addr()) {
			skip[r.Prefix.Addr()] = true
		}
	}
	for _, c := range d.owned {
		if !c.isBlock() && subnet.Contains(c.Prefix.Addr()) {
			skip[c.Prefix.Addr()] = true
		}
	}
	return skip
}

func (d *Driver) findFreeLocked(subnet, rng netip.Prefix) (netip.Addr, bool) {
	var mine []*claim
	for _, c := range d.owned {
		if c.isBlock() && !c.Conflicted && c.Prefix.Overlaps(rng) && subnet.Contains(c.Prefix.Addr()) {
			mine = append(mine, c)
		}
	}
	sort.Slice(mine, func(i, j int) bool { return first(mine[i].Prefix) < first(mine[j].Prefix) })
	if len(mine) == 0 {
		return netip.Addr{}, false
	}
	skip := d.skipLocked(subnet)
	for _, c := range mine {
		lo, hi := max(first(c.Prefix), first(rng)), min(last(c.Prefix), last(rng))
		for v := uint64(lo); v <= uint64(hi); v++ {
			a := fromU32(uint32(v))
			if hostAddr(subnet, a) && !skip[a] && d.allocs[a] == nil {
				return a, true
			}
		}
	}
	return netip.Addr{}, false
}

// pickBlock chooses a random block of the pool's range that no one is
// known to hold; random so that hosts starting together rarely collide.
func (d *Driver) pickBlock(p *pool) (netip.Prefix, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var free []netip.Prefix
	for _, b := range blocks(p.Subnet, p.Range, p.BlockBits) {
		if d.localConflictLocked(b, false) == "" && d.hasFreeHostLocked(p, b) {
			free = append(free, b)
		}
	}
	if len(free) == 0 {
		return netip.Prefix{}, false
	}
	return free[rand.N(len(free))], true
}

// hasFreeHostLocked: a block made only of the network address, the gateway
// and pins is not worth claiming.
func (d *Driver) hasFreeHostLocked(p *pool, b netip.Prefix) bool {
	skip := d.skipLocked(p.Subnet)
	lo, hi := max(first(b), first(p.Range)), min(last(b), last(p.Range))
	for v := uint64(lo); v <= uint64(hi); v++ {
		a := fromU32(uint32(v))
		if hostAddr(p.Subnet, a) && !skip[a] && d.allocs[a] == nil {
			return true
		}
	}
	return false
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
	al := d.allocs[a]
	if al == nil {
		if p.Gateway == a {
			return nil // the gateway is not an allocation
		}
		return fmt.Errorf("address %s is not allocated on this host in pool %s", a, p.ID)
	}
	d.freeLocked(a)
	switch al.Kind {
	case allocPin:
		d.dropClaimLocked(netip.PrefixFrom(a, 32))
	case allocAux:
		d.dropClaimLocked(netip.PrefixFrom(a, 32))
	default:
		d.releaseEmptyBlocksLocked(al.Subnet)
	}
	return nil
}

// releaseEmptyBlocksLocked gives back empty blocks of subnet: conflicted
// ones always, all of them when no pool uses the subnet any more, and
// otherwise all but one with free space (keeping one avoids churn).
func (d *Driver) releaseEmptyBlocksLocked(subnet netip.Prefix) {
	used := map[netip.Prefix]bool{}
	for _, al := range d.allocs {
		for _, c := range d.owned {
			if c.isBlock() && c.Prefix.Contains(al.Addr) {
				used[c.Prefix] = true
			}
		}
	}
	inUse := false
	for _, p := range d.pools {
		if p.Subnet == subnet {
			inUse = true
		}
	}
	var empty []*claim
	keep := 0
	for _, c := range d.owned {
		if !c.isBlock() || c.Prefix.Bits() < subnet.Bits() || !subnet.Contains(c.Prefix.Addr()) {
			continue
		}
		switch {
		case used[c.Prefix] && !c.Conflicted:
			if d.blockHasFreeLocked(subnet, c.Prefix) {
				keep++
			}
		case !used[c.Prefix]:
			empty = append(empty, c)
		}
	}
	sort.Slice(empty, func(i, j int) bool { return first(empty[i].Prefix) < first(empty[j].Prefix) })
	for _, c := range empty {
		if inUse && !c.Conflicted && keep == 0 {
			keep++ // the one block we keep
			continue
		}
		d.dropClaimLocked(c.Prefix)
		d.released.Add(1)
		d.log.Info("gave back an empty address block", "block", c.Prefix, "conflicted", c.Conflicted)
	}
}

func (d *Driver) blockHasFreeLocked(subnet, b netip.Prefix) bool {
	skip := d.skipLocked(subnet)
	for v := uint64(first(b)); v <= uint64(last(b)); v++ {
		a := fromU32(uint32(v))
		if hostAddr(subnet, a) && !skip[a] && d.allocs[a] == nil {
			return true
		}
	}
	return false
}

// dropClaimLocked forgets an owned claim and withdraws its record.
func (d *Driver) dropClaimLocked(p netip.Prefix) {
	c := d.owned[p]
	if c == nil {
		return
	}
	if err := d.st.Delete(bucketOwned, p.String()); err != nil {
		d.log.Error("forgetting a released claim failed; it will be republished after a restart", "prefix", p, "err", err)
	}
	delete(d.owned, p)
	if err := d.cl.DeleteRecord(recordKind(c), p.String()); err != nil {
		d.log.Error("withdrawing a released claim failed; peers keep avoiding it until this node restarts", "prefix", p, "err", err)
	}
}

// publish (re)announces an owned claim. Failures are logged: the claim is
// durable locally and the owner refuses conflicting claims regardless.
func (d *Driver) publish(c *claim) {
	v, err := encodeRecord(c)
	if err == nil {
		err = d.cl.PutRecord(recordKind(c), c.Prefix.String(), v)
	}
	if err != nil {
		d.log.Error("publishing an address claim failed; peers learn it only through claim refusals", "prefix", c.Prefix, "err", err)
	}
}
