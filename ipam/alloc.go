package ipam

// Allocation: gateways, explicit addresses, dynamic addresses from this
// node's blocks, release and give-back of blocks. Claims of blocks and pins
// go through claim.go.

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"
)

func (d *Driver) gatewaysLocked(subnet netip.Prefix) map[netip.Addr]bool {
	gws := map[netip.Addr]bool{}
	for _, p := range d.pools {
		if p.Subnet == subnet && p.Gateway.IsValid() {
			gws[p.Gateway] = true
		}
	}
	return gws
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

// explicit reserves an address Docker asked for by name: a network's
// --aux-address (aux) or an endpoint's --ip.
func (d *Driver) explicit(p *pool, want string, aux bool) (netip.Addr, error) {
	a, err := parseAddr(want)
	if err != nil {
		return netip.Addr{}, err
	}
	if !hostAddr(p.Subnet, a) {
		return netip.Addr{}, fmt.Errorf("address %s is not a host address of subnet %s", a, p.Subnet)
	}
	d.mu.Lock()
	if err := d.checkExplicitLocked(p, a, aux); err != nil {
		d.mu.Unlock()
		return netip.Addr{}, err
	}
	if aux {
		// --aux-address: every host reserves it for itself; never handed out.
		defer d.mu.Unlock()
		return a, d.reserveAuxLocked(p, a)
	}
	if c := d.ownerBlockLocked(a); c != nil {
		defer d.mu.Unlock()
		return a, d.allocLocked(p, a, allocExplicit)
	}
	d.mu.Unlock()

	pin := netip.PrefixFrom(a, 32)
	if err := d.claim(p.Subnet, pin, true); err != nil {
		return netip.Addr{}, fmt.Errorf("cannot reserve %s for this container: %w", a, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.allocLocked(p, a, allocPin); err != nil {
		d.dropClaimLocked(pin)
		return netip.Addr{}, err
	}
	return a, nil
}

// checkExplicitLocked refuses an explicit address that is in use here or
// that another node holds. Aux addresses are exempt from the latter: every
// host reserves the same ones for the same network. An address in one of
// this node's blocks is still refused when another node pinned it: a block
// claimed after the pin holds it carved out (the claim's ACKs name it).
func (d *Driver) checkExplicitLocked(p *pool, a netip.Addr, aux bool) error {
	if d.allocs[a] != nil {
		return fmt.Errorf("address %s is already in use on this host", a)
	}
	if d.gatewaysLocked(p.Subnet)[a] {
		return fmt.Errorf("address %s is the gateway of subnet %s", a, p.Subnet)
	}
	if aux {
		return nil
	}
	ownBlock := d.ownerBlockLocked(a) != nil
	q := netip.PrefixFrom(a, 32)
	for _, r := range d.sortedKnownLocked() {
		if r.Prefix.Contains(a) && !r.Aux {
			if r.isBlock() {
				if ownBlock {
					continue // an overlap of blocks is a conflict, reported as one
				}
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
	if err := d.allocLocked(p, a, allocAux); err != nil {
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
func (d *Driver) allocLocked(p *pool, a netip.Addr, kind string) error {
	al := &allocation{Addr: a, Subnet: p.Subnet, Pool: p.ID, Kind: kind}
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
func (d *Driver) dynamic(p *pool) (netip.Addr, error) {
	if a, ok, err := d.tryAlloc(p); ok || err != nil {
		return a, err
	}
	lk := d.subnetLock(p.Subnet)
	lk.Lock()
	defer lk.Unlock()
	deadline := time.Now().Add(d.cfg.AllocateTimeout)
	var lastErr error // of the last failed claim round
	for attempt := 0; ; attempt++ {
		// Another request may have claimed a block while we waited for lk.
		if a, ok, err := d.tryAlloc(p); ok || err != nil {
			return a, err
		}
		b, ok := d.pickBlock(p)
		if !ok {
			err := fmt.Errorf("%w in %s for this host: its blocks are full and no free block is left "+
				"(blocks held by unreachable hosts stay reserved for %s); remove containers or use a larger --subnet/--ip-range",
				ErrExhausted, p.Range, d.cfg.OrphanTimeout)
			if lastErr != nil {
				err = fmt.Errorf("%w; last claim error: %w", err, lastErr)
			}
			return netip.Addr{}, err
		}
		err := d.claim(p.Subnet, b, false)
		if err == nil {
			continue
		}
		lastErr = err
		if time.Now().After(deadline) {
			return netip.Addr{}, fmt.Errorf("%w in %s for this host: its blocks are full and claiming a new block failed for %s "+
				"(is part of the cluster unreachable?); last error: %w", ErrExhausted, p.Range, d.cfg.AllocateTimeout, err)
		}
		// Jittered backoff: two hosts that refused each other should not collide again.
		back := time.Duration(10<<min(attempt, 5)) * time.Millisecond
		time.Sleep(back/2 + rand.N(back))
	}
}

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
func (d *Driver) tryAlloc(p *pool) (netip.Addr, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.poolLocked(p.ID); err != nil {
		return netip.Addr{}, false, err
	}
	a, ok := d.findFreeLocked(p.Subnet, p.Range)
	if !ok {
		return netip.Addr{}, false, nil
	}
	if err := d.allocLocked(p, a, allocDynamic); err != nil {
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
		if a, ok := d.firstFreeLocked(subnet, c.Prefix, rng, skip); ok {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// firstFreeLocked is the lowest address of block b inside rng that an
// endpoint may get: a host address of subnet, not in skip (skipLocked) and
// not allocated on this host. It is the one scan for free addresses.
func (d *Driver) firstFreeLocked(subnet, b, rng netip.Prefix, skip map[netip.Addr]bool) (netip.Addr, bool) {
	lo, hi := max(first(b), first(rng)), min(last(b), last(rng))
	for v := uint64(lo); v <= uint64(hi); v++ {
		a := fromU32(uint32(v))
		if hostAddr(subnet, a) && !skip[a] && d.allocs[a] == nil {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// pickBlock chooses a random block of the pool's range that no one is
// known to hold; random so that hosts starting together rarely collide.
func (d *Driver) pickBlock(p *pool) (netip.Prefix, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	skip := d.skipLocked(p.Subnet)
	var free []netip.Prefix
	for _, b := range blocks(p.Subnet, p.Range, p.BlockBits) {
		if d.localConflictLocked(b, false) != "" {
			continue
		}
		// A block made only of the network address, gateways and pins is
		// not worth claiming.
		if _, ok := d.firstFreeLocked(p.Subnet, b, p.Range, skip); ok {
			free = append(free, b)
		}
	}
	if len(free) == 0 {
		return netip.Prefix{}, false
	}
	return free[rand.N(len(free))], true
}

// releaseLocked frees a; an owned block left empty is given back when this
// node holds another block of the subnet with free space.
func (d *Driver) releaseLocked(p *pool, a netip.Addr) error {
	al := d.allocs[a]
	if al == nil {
		if p.Gateway == a {
			return nil // the gateway is not an allocation
		}
		return fmt.Errorf("address %s is not allocated on this host in pool %s", a, p.ID)
	}
	d.freeLocked(a)
	switch al.Kind {
	case allocPin, allocAux:
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
	skip := d.skipLocked(subnet)
	var empty []*claim
	keep := 0
	for _, c := range d.owned {
		if !c.isBlock() || c.Prefix.Bits() < subnet.Bits() || !subnet.Contains(c.Prefix.Addr()) {
			continue
		}
		switch {
		case used[c.Prefix] && !c.Conflicted:
			if _, ok := d.firstFreeLocked(subnet, c.Prefix, subnet, skip); ok {
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
