package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"
)

// Record kinds gossiped through the cluster and the direct-message kind of
// the claim protocol.
const (
	KindBlock = "ipam-block"
	KindPin   = "ipam-pin"
	KindClaim = "ipam-claim"
)

// Store buckets.
const (
	bucketPools  = "ipam-pools"
	bucketOwned  = "ipam-owned"
	bucketAllocs = "ipam-allocs"
	bucketKnown  = "ipam-known"
)

// pool is one RequestPool result: one Docker network's address
// configuration on this host. Its allocations and blocks belong to the
// subnet, which several pools may share.
type pool struct {
	ID        string       `json:"id"`
	Subnet    netip.Prefix `json:"subnet"`
	Range     netip.Prefix `json:"range"`
	BlockBits int          `json:"block_bits"`
	// Refs is the number of networks using the pool: 1, except for a pool
	// an older vxovl shared among the networks of one definition.
	Refs    int        `json:"refs"`
	Gateway netip.Addr `json:"gateway,omitzero"`
	// Creating: Docker has not yet asked the network driver to create the
	// pool's network, so an explicit address requested now is one of the
	// network's --aux-address, not an endpoint's --ip (see classify).
	Creating bool `json:"creating,omitempty"`
}

// claim is a prefix this node owns: a block, a pin (--ip) or an aux
// reservation (--aux-address, shared by every host).
type claim struct {
	Prefix     netip.Prefix `json:"prefix"`
	Subnet     netip.Prefix `json:"subnet"`
	Pin        bool         `json:"pin,omitempty"`
	Aux        bool         `json:"aux,omitempty"`
	ClaimedAt  int64        `json:"claimed_at"`
	Conflicted bool         `json:"conflicted,omitempty"`
}

func (c *claim) isBlock() bool { return !c.Pin && !c.Aux }

// Allocation kinds.
const (
	allocDynamic  = "dynamic"  // chosen by us inside an owned block
	allocExplicit = "explicit" // --ip inside an owned block
	allocPin      = "pin"      // --ip outside our blocks, claimed as a /32
	allocAux      = "aux"      // --aux-address
)

type allocation struct {
	Addr   netip.Addr   `json:"addr"`
	Subnet netip.Prefix `json:"subnet"`
	Pool   string       `json:"pool"`
	Kind   string       `json:"kind"`
}

// remoteClaim is another node's claim as learned from its records (or from
// its ACK), remembered while its owner is unreachable. It is stored with the
// claim's fields inline, as before they were shared.
type remoteClaim struct {
	Owner string `json:"owner"`
	claim
	lastSeen time.Time
}

type knownKey struct {
	owner  string
	prefix netip.Prefix
}

func (k knownKey) String() string { return k.owner + "|" + k.prefix.String() }

// recordValue is the gossiped value of KindBlock and KindPin records; the
// key is the claimed prefix.
type recordValue struct {
	Subnet    string `json:"s"`
	ClaimedAt int64  `json:"t"`
	Aux       bool   `json:"a,omitempty"`
}

func encodeRecord(c *claim) ([]byte, error) {
	return json.Marshal(recordValue{Subnet: c.Subnet.String(), ClaimedAt: c.ClaimedAt, Aux: c.Aux})
}

// decodeRecord validates a received record; it is also the cluster-side
// validator, so malformed records never enter the table.
func decodeRecord(kind, key string, value []byte) (remoteClaim, error) {
	p, err := netip.ParsePrefix(key)
	if err != nil || !p.Addr().Is4() || p != p.Masked() {
		return remoteClaim{}, fmt.Errorf("key %q is not a canonical IPv4 prefix", key)
	}
	var v recordValue
	if err := json.Unmarshal(value, &v); err != nil {
		return remoteClaim{}, fmt.Errorf("value: %w", err)
	}
	s, err := netip.ParsePrefix(v.Subnet)
	if err != nil || !s.Addr().Is4() || s != s.Masked() {
		return remoteClaim{}, fmt.Errorf("subnet %q is not a canonical IPv4 prefix", v.Subnet)
	}
	if !s.Contains(p.Addr()) || p.Bits() < s.Bits() {
		return remoteClaim{}, fmt.Errorf("prefix %s is not inside subnet %s", p, s)
	}
	rc := remoteClaim{claim: claim{Prefix: p, Subnet: s, ClaimedAt: v.ClaimedAt, Aux: v.Aux}}
	switch kind {
	case KindPin:
		if p.Bits() != 32 {
			return remoteClaim{}, fmt.Errorf("pin %s is not a single address", p)
		}
		rc.Pin = !v.Aux
	case KindBlock:
		if v.Aux {
			return remoteClaim{}, fmt.Errorf("block %s marked aux", p)
		}
	default:
		return remoteClaim{}, fmt.Errorf("unknown kind %q", kind)
	}
	return rc, nil
}

func recordKind(c *claim) string {
	if c.isBlock() {
		return KindBlock
	}
	return KindPin
}

// shape is what the conflict rule needs to know about a claim.
type shape struct {
	prefix  netip.Prefix
	pin     bool // exclusive single address
	aux     bool // shared reservation
	pending bool
}

// clash reports whether claim q (a block, or a pin when qPin) cannot be
// granted next to existing claim e of another node. See the package doc.
func clash(e shape, q netip.Prefix, qPin bool) bool {
	switch {
	case e.aux:
		return qPin && e.prefix == q
	case !e.pin && !qPin:
		return e.prefix.Overlaps(q)
	case !e.pin && qPin:
		return e.prefix.Contains(q.Addr())
	case e.pin && qPin:
		return e.prefix == q
	default: // e pin, q block: fine once the pin is owned (the ACK lists it)
		return e.pending && q.Contains(e.prefix.Addr())
	}
}

func (c *claim) shape() shape {
	return shape{prefix: c.Prefix, pin: c.Pin, aux: c.Aux}
}
