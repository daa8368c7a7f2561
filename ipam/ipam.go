package ipam

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
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
