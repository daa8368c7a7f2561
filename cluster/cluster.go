// Package cluster is vxovl's gossip control plane: every node publishes its
// endpoints and network definitions as owned, versioned records over
// hashicorp/memberlist, and learns the records it needs of everyone else's.
//
// Membership and failure detection are cluster-wide (memberlist). Records
// are not: an endpoint belongs to one overlay network, and only the nodes
// that have that network (that published its definition) hold, receive and
// exchange its records, as Docker's networkdb scopes its tables. Network
// definitions and IPAM records are held by every node, so that conflicting
// definitions are refused and addresses never handed out twice across hosts
// that share no network.
//
// A change is pushed by its owner straight to the nodes that need it, and
// acked (fanout.go); full states between pairs of nodes, per network, repair
// what a lost packet or an absence missed (sync.go). The cost of an endpoint
// change grows with the nodes of its network, not with the cluster; see
// BenchmarkSimulation for the figures at 1,000 nodes.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/vxovl/vxovl/internal/vxlan"
)

// Cluster is one node's membership in the control plane.
type Cluster struct {
	cfg  Config
	log  *slog.Logger
	ml   *memberlist.Memberlist
	self string

	kinds *registry

	mu    sync.Mutex // guards t, eps, nets, clock and heard
	t     *table
	eps   *endpointIndex
	nets  *networkIndex
	clock uint64
	// heard holds what full states of their own records other nodes sent
	// since they joined (see CaughtUp).
	heard map[string]*heardFrom

	notify *notifier
	direct chan directMsg
	states *stateQueue

	// pending holds the sends of our records awaiting an ack (fanout.go).
	pushMu   sync.Mutex
	pending  map[pushKey]*pendingPush
	pushWake chan struct{} // a send now awaits an ack

	alive atomic.Int32 // alive members including us (the join loop backs off while alone)

	// memberlist's Members() hands out nodes it keeps mutating, so we keep
	// our own copies, taken in the event callbacks under memberlist's lock.
	membersMu sync.Mutex
	members   map[string]Member

	received, malformedRecs, malformedMsgs, decrypts         atomic.Uint64
	directSent, directRecv, directDropped                    atomic.Uint64
	pushesSent, pushesRetried, pushesAbandoned, networkSyncs atomic.Uint64
	traffic                                                  traffic

	stop     chan struct{}
	wg       sync.WaitGroup
	shutOnce sync.Once
	shutErr  error
}

// New starts memberlist and the background loops. It returns without
// waiting for peers; they are joined in the background.
func New(cfg Config, h Handler) (*Cluster, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := newCluster(cfg, h)
	mc := cfg.memberlistConfig()
	mc.Delegate = (*delegate)(c)
	mc.Events = (*events)(c)
	mc.Logger = log.New(&logBridge{log: c.log, decrypts: &c.decrypts}, "", 0)
	if len(cfg.SecretKey) == 0 {
		c.log.Warn("control plane is UNAUTHENTICATED: anyone who can reach the gossip port can inject endpoints; set a SecretKey",
			"port", cfg.BindPort)
	}
	ml, err := c.createMemberlist(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s:%d: %w (is the port in use?)", cfg.BindAddr, cfg.BindPort, err)
	}
	c.ml = ml

	c.wg.Add(6)
	go func() { defer c.wg.Done(); c.notify.run(c.stop, c.deliver) }()
	go func() { defer c.wg.Done(); c.dispatchDirect() }()
	go func() { defer c.wg.Done(); c.states.run(c.stop, c.sendState) }()
	go func() { defer c.wg.Done(); c.gcLoop() }()
	go func() { defer c.wg.Done(); c.retryLoop() }()
	go func() { defer c.wg.Done(); c.syncLoop() }()
	if len(cfg.Peers) > 0 {
		c.wg.Add(1)
		go func() { defer c.wg.Done(); c.joinLoop() }()
	}
	return c, nil
}

// newCluster builds a Cluster without starting memberlist or any loop: the
// record table with its built-in kinds, and the queues.
func newCluster(cfg Config, h Handler) *Cluster {
	c := &Cluster{
		cfg:      cfg,
		log:      cfg.Logger.With("node", cfg.NodeName),
		self:     cfg.NodeName,
		kinds:    newRegistry(),
		eps:      newEndpointIndex(cfg.NodeName),
		nets:     newNetworkIndex(cfg.NodeName),
		heard:    map[string]*heardFrom{},
		clock:    cfg.MinVersion,
		notify:   newNotifier(),
		direct:   make(chan directMsg, 1024),
		states:   newStateQueue(),
		pending:  map[pushKey]*pendingPush{},
		pushWake: make(chan struct{}, 1),
		stop:     make(chan struct{}),
		members: map[string]Member{cfg.NodeName: {
			Name: cfg.NodeName, Addr: cfg.AdvertiseAddr, Port: cfg.BindPort}},
	}
	c.t = newTable(cfg.NodeName, cfg.TombstoneTTL, c.kinds, c.nets.has)
	// Registering into an empty registry cannot fail.
	_ = c.kinds.set(kindEndpoint, endpointKind(c.eps, h))
	_ = c.kinds.set(kindNetwork, networkKind(c.nets))
	c.alive.Store(1)
	c.eps.onConflict = func(newer, older Endpoint) {
		c.log.Info("two endpoints claim one IP; the newer claim wins",
			"vni", newer.VNI, "ip", newer.IP, "winner_node", newer.Node, "winner_id", newer.ID,
			"loser_node", older.Node, "loser_id", older.ID)
	}
	c.nets.onConflict = func(ours, theirs Network) {
		c.log.Error("remote node defines this VNI differently; the overlay will not work between us until the definitions agree",
			"vni", ours.VNI, "our_subnet", ours.Subnet, "our_mtu", ours.MTU,
			"node", theirs.Node, "their_subnet", theirs.Subnet, "their_mtu", theirs.MTU)
	}
	c.nets.onHolder = func(owner string, vni uint32) {
		c.states.add(stateReq{node: owner, nets: netsOf(vni)})
	}
	return c
}

// Version returns the highest version this node has issued; persist it and
// pass it back as Config.MinVersion on restart.
func (c *Cluster) Version() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clock
}

// nextVersion is the hybrid clock: max(last+1, now). Needs c.mu.
func (c *Cluster) nextVersion() uint64 {
	v := uint64(time.Now().UnixNano())
	if v <= c.clock {
		v = c.clock + 1
	}
	c.clock = v
	return v
}

// maxClockLead bounds how far ahead of the wall clock a version this node
// learns about may move its clock, so that a corrupt stamp cannot push the
// clock to the end of its range.
const maxClockLead = 24 * time.Hour

// raiseClockLocked moves the clock up to v, a version this node issued in an
// earlier life and learns about again (a persisted claim stamp, a copy of
// its own record): what it issues from now on must be above it. It refuses
// (false) a v far ahead of the wall clock. Needs c.mu.
func (c *Cluster) raiseClockLocked(v uint64) bool {
	if v > uint64(time.Now().Add(maxClockLead).UnixNano()) {
		return false
	}
	c.clock = max(c.clock, v)
	return true
}

// PublishEndpoint publishes (or republishes) a local endpoint with a new
// version, sends it at once to the members that have its network, and
// returns it as published
// (Node, VTEP, Version and Created filled in, Names normalised). Names must
// pass dnsname.Normalize and take at most MaxNamesLen bytes together.
//
// ep.Created is zero for a new endpoint: its claim is stamped with this
// publish's version. To republish an endpoint (after a restart, or to change
// it), pass the Created of its first publish, which the caller persists with
// the endpoint: the claim then keeps its age, and a restart cannot turn a
// claim that lost a duplicate-IP conflict into the winner.
func (c *Cluster) PublishEndpoint(ep Endpoint) (Endpoint, error) {
	names, err := checkEndpoint(ep)
	if err != nil {
		return Endpoint{}, fmt.Errorf("publish endpoint: %w", err)
	}
	ep = copyEndpoint(ep)
	ep.Names = names
	ep.IP = ep.IP.To4()
	ep.VTEP = c.cfg.AdvertiseAddr
	c.mu.Lock()
	ok := c.raiseClockLocked(ep.Created)
	c.mu.Unlock()
	if !ok {
		return Endpoint{}, fmt.Errorf("publish endpoint: claim stamp %d is far in the future (wall clock now %d): pass the Created this node returned",
			ep.Created, time.Now().UnixNano())
	}
	it, err := c.publish(kindEndpoint, endpointKey(ep.VNI, ep.ID), func(v uint64) []byte {
		if ep.Created == 0 {
			ep.Created = v
		}
		return encodeEndpointValue(ep)
	}, nil)
	if err != nil {
		return Endpoint{}, fmt.Errorf("publish endpoint: %w", err)
	}
	return copyEndpoint(*it.val.(*Endpoint)), nil
}

// WithdrawEndpoint replaces a local endpoint by a tombstone and sends it at
// once. Withdrawing an unknown endpoint still records the tombstone.
func (c *Cluster) WithdrawEndpoint(vni uint32, id string) error {
	if err := vxlan.CheckVNI(vni); err != nil {
		return fmt.Errorf("withdraw endpoint: %w", err)
	}
	if err := validEndpointID(id); err != nil {
		return fmt.Errorf("withdraw endpoint: %w", err)
	}
	if _, err := c.publish(kindEndpoint, endpointKey(vni, id), nil, nil); err != nil {
		return fmt.Errorf("withdraw endpoint: %w", err)
	}
	return nil
}

// PublishNetwork publishes this node's definition of an overlay, which is
// also what makes this node hold the network's endpoints: every node that
// has the network sends this one its own endpoints of it once the
// definition reaches it. It fails with ErrConflict if a live remote node
// defines the VNI with a different subnet or MTU, and the node then does
// not have the network.
func (c *Cluster) PublishNetwork(n Network) error {
	n, err := checkNetwork(n)
	if err != nil {
		return fmt.Errorf("publish network: %w", err)
	}
	_, err = c.publish(kindNetwork, networkKey(n.VNI), func(uint64) []byte { return encodeNetworkValue(n) }, func() error {
		for _, o := range c.nets.remote(n.VNI) {
			if !sameNetwork(o, n) {
				return fmt.Errorf("VNI %d: node %q defines %s, this node wants %s; "+
					"use the same subnet, MTU and encrypted option on every host or pick another VNI: %w",
					n.VNI, o.Node, o.definition(), n.definition(), ErrConflict)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrConflict) {
		err = fmt.Errorf("publish network: %w", err)
	}
	return err
}

// WithdrawNetwork removes this node's definition of an overlay, and with
// it the other nodes' endpoints of it that this node held.
func (c *Cluster) WithdrawNetwork(vni uint32) error {
	if err := vxlan.CheckVNI(vni); err != nil {
		return fmt.Errorf("withdraw network: %w", err)
	}
	if _, err := c.publish(kindNetwork, networkKey(vni), nil, nil); err != nil {
		return fmt.Errorf("withdraw network: %w", err)
	}
	var ch changes
	c.mu.Lock()
	c.t.dropNetwork(vni, &ch)
	c.mu.Unlock()
	c.notify.add(ch)
	return nil
}

// PutRecord publishes a record of a registered or unregistered kind owned
// by this node. The built-in kinds "ep" and "net" go through their typed
// calls; values are at most MaxValueLen bytes (records travel in single UDP
// packets) and pass the kind's Validate.
func (c *Cluster) PutRecord(kind, key string, value []byte) error {
	if err := c.checkGeneric(kind); err != nil {
		return fmt.Errorf("put record: %w", err)
	}
	value = append([]byte(nil), value...)
	if _, err := c.publish(kind, key, func(uint64) []byte { return value }, nil); err != nil {
		return fmt.Errorf("put record %s/%s: %w", kind, key, err)
	}
	return nil
}

// DeleteRecord replaces a record of this node by a tombstone.
func (c *Cluster) DeleteRecord(kind, key string) error {
	if err := c.checkGeneric(kind); err != nil {
		return fmt.Errorf("delete record: %w", err)
	}
	if _, err := c.publish(kind, key, nil, nil); err != nil {
		return fmt.Errorf("delete record %s/%s: %w", kind, key, err)
	}
	return nil
}

func (c *Cluster) checkGeneric(kind string) error {
	if k := c.kinds.get(kind); k != nil && k.builtin {
		return fmt.Errorf("kind %q is built in: use its own calls", kind)
	}
	return nil
}

// publish versions, checks and stores a record of this node under the lock,
// then pushes it to its audience. A nil value makes a tombstone.
// The record passes the same checks (prepare) as one received from a peer,
// so nothing is published that peers would drop. check, if set, runs first
// under the lock and can refuse.
func (c *Cluster) publish(kind, key string, value func(version uint64) []byte, check func() error) (item, error) {
	c.mu.Lock()
	if check != nil {
		if err := check(); err != nil {
			c.mu.Unlock()
			return item{}, err
		}
	}
	w := wireRecord{Kind: kind, Key: key, Version: c.nextVersion(), Deleted: value == nil}
	if value != nil {
		w.Value = value(w.Version)
	}
	it, err := prepare(c.kinds, c.self, w)
	if err != nil {
		c.mu.Unlock()
		return item{}, err
	}
	var ch changes
	out := c.storeOwnLocked(it, &ch)
	c.mu.Unlock()
	c.notify.add(ch)
	c.push(out)
	return it, nil
}

// storeOwnLocked stores a record of this node; the caller pushes the
// returned message once it has unlocked. Needs c.mu.
func (c *Cluster) storeOwnLocked(it item, ch *changes) outgoing {
	c.t.put(c.self, it, srcLocal, ch)
	to, all := c.audienceLocked(it.w.Kind, it.w.Key)
	return outgoing{kind: it.w.Kind, key: it.w.Key, version: it.w.Version, msg: encodeRecord(c.self, it.w), to: to, all: all}
}

// ownCopiesLocked handles copies of this node's records that came back from
// the network (push/pull carries everyone's records). Normally they are no
// newer than what we hold and change nothing. A newer one means this node
// issued it in an earlier life and its clock went back since (a restart that
// lost the saved version floor, with the wall clock behind): the clock moves
// past it, and a record we hold at a lower version is republished above it,
// so that our current value wins everywhere. One we no longer hold needs
// nothing: our next full state, whose clock is now above it, expires it.
// Needs c.mu; returns the records to push once unlocked.
func (c *Cluster) ownCopiesLocked(copies []item, ch *changes) (resend []outgoing) {
	for _, cp := range copies {
		c.t.st.deadOwner++
		if !c.raiseClockLocked(cp.w.Version) {
			c.log.Warn("ignoring a copy of our own record stamped far in the future", "kind", cp.w.Kind, "key", cp.w.Key, "version", cp.w.Version)
			continue
		}
		k := recKey{cp.w.Kind, cp.w.Key}
		e := c.t.ownEntry(k)
		if e == nil || e.version >= cp.w.Version {
			continue
		}
		w := wireRecord{Kind: k.kind, Key: k.key, Version: c.nextVersion(), Deleted: e.deleted, Value: e.value}
		it, err := prepare(c.kinds, c.self, w)
		if err != nil {
			continue // cannot happen: the same record passed when we published it
		}
		c.log.Warn("the network holds a newer version of one of our records, issued before our clock went back; republishing ours above it",
			"kind", k.kind, "key", k.key, "ours", e.version, "theirs", cp.w.Version)
		resend = append(resend, c.storeOwnLocked(it, ch))
	}
	return resend
}

// Endpoints returns the remote endpoints of a VNI: owners alive, never
// tombstoned, one per IP (the newest claim wins, see NewerThan), sorted by
// IP, node, ID. None is returned for an IP whose winning claim is ours.
func (c *Cluster) Endpoints(vni uint32) []Endpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.eps.endpoints(vni)
}

// Networks returns all live network definitions, ours included, sorted by
// VNI then node.
func (c *Cluster) Networks() []Network {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nets.networks()
}

// Records returns the live records of one kind from all alive owners, ours
// included, sorted by owner then key.
func (c *Cluster) Records(kind string) []Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t.records(kind)
}

// RegisterKind sets the validator, change callback and message receiver for
// a record kind (not a built-in one). Held records of the kind that fail the
// new validator are dropped and counted as malformed.
func (c *Cluster) RegisterKind(kind string, opts KindOptions) error {
	if err := validKind(kind); err != nil {
		return fmt.Errorf("register kind: %w", err)
	}
	k := genericKind(kind, opts)
	if err := c.kinds.set(kind, k); err != nil {
		return fmt.Errorf("register kind: %w", err)
	}
	if k.decode == nil {
		return nil
	}
	var ch changes
	c.mu.Lock()
	n := c.t.revalidate(kind, func(owner string, w wireRecord) error { _, err := k.decode(owner, w); return err }, &ch)
	c.mu.Unlock()
	c.malformedRecs.Add(uint64(n))
	c.notify.add(ch)
	return nil
}

// SendTo sends a direct message to one live node over the reliable (TCP,
// encrypted when a key is set) channel. The receiver gets it through the
// Message callback registered for kind.
func (c *Cluster) SendTo(node, kind string, payload []byte) error {
	if err := validKind(kind); err != nil {
		return fmt.Errorf("send to %s: %w", node, err)
	}
	if len(payload) > MaxDirectLen {
		return fmt.Errorf("send to %s: payload %d bytes exceeds %d", node, len(payload), MaxDirectLen)
	}
	n := c.member(node)
	if n == nil {
		return fmt.Errorf("send to %s: not a live member", node)
	}
	if err := c.ml.SendReliable(n, encodeDirect(directMsg{From: c.self, Kind: kind, Payload: payload})); err != nil {
		return fmt.Errorf("send to %s: %w", node, err)
	}
	c.directSent.Add(1)
	return nil
}

func (c *Cluster) member(name string) *memberlist.Node {
	c.membersMu.Lock()
	defer c.membersMu.Unlock()
	m, ok := c.members[name]
	if !ok || name == c.self {
		return nil
	}
	return &memberlist.Node{Name: m.Name, Addr: m.Addr, Port: uint16(m.Port)}
}

func (c *Cluster) peerNodes() []*memberlist.Node {
	c.membersMu.Lock()
	defer c.membersMu.Unlock()
	out := make([]*memberlist.Node, 0, len(c.members))
	for _, m := range c.members {
		if m.Name != c.self {
			out = append(out, &memberlist.Node{Name: m.Name, Addr: m.Addr, Port: uint16(m.Port)})
		}
	}
	return out
}

func (c *Cluster) setMember(n *memberlist.Node, present bool) {
	c.membersMu.Lock()
	defer c.membersMu.Unlock()
	if !present {
		delete(c.members, n.Name)
		return
	}
	c.members[n.Name] = Member{Name: n.Name, Addr: append(net.IP(nil), n.Addr...), Port: int(n.Port)}
}

// Members lists the live nodes, this one included, sorted by name: from
// their join until memberlist declares them dead or they leave (a node under
// suspicion is still listed).
func (c *Cluster) Members() []Member {
	c.membersMu.Lock()
	defer c.membersMu.Unlock()
	out := make([]Member, 0, len(c.members))
	for _, m := range c.members {
		m.Addr = append(net.IP(nil), m.Addr...)
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Stats returns the counters.
func (c *Cluster) Stats() Stats {
	c.mu.Lock()
	ts := c.t.st
	c.mu.Unlock()
	return Stats{
		RecordsReceived:     c.received.Load(),
		RecordsApplied:      ts.applied,
		RecordsStale:        ts.stale,
		RecordsDeadOwner:    ts.deadOwner,
		RecordsUninterested: ts.uninterested,
		RecordsMalformed:    c.malformedRecs.Load(),
		MessagesMalformed:   c.malformedMsgs.Load(),
		SnapshotsApplied:    ts.snapshots,
		RecordsExpired:      ts.expired,
		TombstonesGCed:      ts.tombstonesGCed,
		IPConflicts:         c.eps.conflicts,
		NetworkConflicts:    c.nets.conflicts,
		DecryptFailures:     c.decrypts.Load(),
		DirectSent:          c.directSent.Load(),
		DirectReceived:      c.directRecv.Load(),
		DirectDropped:       c.directDropped.Load(),
		OwnersDropped:       ts.ownersDropped,
		PushesSent:          c.pushesSent.Load(),
		PushesRetried:       c.pushesRetried.Load(),
		PushesAbandoned:     c.pushesAbandoned.Load(),
		NetworkSyncs:        c.networkSyncs.Load(),
	}
}

// Shutdown stops gossip and the background loops without announcing
// anything; peers will detect us as dead within DeadTimeout. Idempotent.
func (c *Cluster) Shutdown() error {
	c.shutOnce.Do(func() {
		close(c.stop)
		if err := c.ml.Shutdown(); err != nil {
			c.shutErr = fmt.Errorf("shutdown gossip: %w", err)
		}
		c.wg.Wait()
	})
	return c.shutErr
}

func (c *Cluster) deliver(ch changes) {
	for _, name := range slices.Sorted(maps.Keys(ch)) {
		if k := c.kinds.get(name); k != nil && k.changed != nil {
			k.changed(slices.Sorted(maps.Keys(ch[name])))
		}
	}
}

func (c *Cluster) dispatchDirect() {
	for {
		select {
		case <-c.stop:
			return
		case m := <-c.direct:
			if k := c.kinds.get(m.Kind); k != nil && k.message != nil {
				k.message(m.From, m.Payload)
			} else {
				c.directDropped.Add(1)
			}
		}
	}
}

func (c *Cluster) gcLoop() {
	every := min(max(c.cfg.TombstoneTTL/10, time.Second), time.Minute)
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tk.C:
			var ch changes
			c.mu.Lock()
			c.t.gc(&ch)
			c.mu.Unlock()
			c.notify.add(ch)
		}
	}
}

// joinLoop joins configured peers that are not members, with exponential
// backoff while none answers, and re-checks every RejoinInterval to heal
// partitions.
func (c *Cluster) joinLoop() {
	const first, most = 500 * time.Millisecond, 30 * time.Second
	backoff := first
	for {
		wait := c.cfg.RejoinInterval
		if missing := c.missingPeers(); len(missing) > 0 {
			n, err := c.ml.Join(missing)
			switch {
			case n > 0:
				c.log.Info("joined peers", "contacted", n, "tried", missing)
				backoff = first
			case c.alive.Load() <= 1:
				c.log.Warn("no peer reachable yet; retrying", "peers", missing, "in", backoff, "err", err)
				wait = backoff
				backoff = min(backoff*2, most)
			default:
				c.log.Debug("some configured peers unreachable", "peers", missing, "err", err)
			}
		}
		select {
		case <-c.stop:
			return
		case <-time.After(wait):
		}
	}
}

func (c *Cluster) missingPeers() []string {
	have := map[string]bool{}
	for _, m := range c.Members() {
		have[net.JoinHostPort(m.Addr.String(), strconv.Itoa(m.Port))] = true
	}
	var out []string
	for _, p := range c.cfg.Peers {
		hp := p
		if _, _, err := net.SplitHostPort(p); err != nil {
			hp = net.JoinHostPort(p, strconv.Itoa(c.cfg.BindPort))
		}
		if !slices.ContainsFunc(resolvePeer(hp), func(a string) bool { return have[a] }) {
			out = append(out, hp)
		}
	}
	return out
}

// resolvePeer turns a configured host:port into the ip:port forms members
// are known by, so that a peer given by name is not joined again and again.
// A name that does not resolve now stays as it is (memberlist's join will
// say why).
func resolvePeer(hostPort string) []string {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil || net.ParseIP(host) != nil {
		return []string{hostPort}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return []string{hostPort}
	}
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, net.JoinHostPort(a.IP.String(), port))
	}
	return out
}

func (c *Cluster) dropMalformed(owner string, w wireRecord, err error) {
	c.malformedRecs.Add(1)
	c.log.Warn("dropped malformed record", "owner", owner, "kind", w.Kind, "key", w.Key, "err", err)
}

func (c *Cluster) handleRecord(body []byte) {
	owner, w, err := decodeRecord(body)
	if err != nil {
		c.malformedMsgs.Add(1)
		c.log.Warn("dropped undecodable record message", "err", err)
		return
	}
	c.received.Add(1)
	it, err := prepare(c.kinds, owner, w)
	if err != nil {
		c.dropMalformed(owner, w, err)
		c.ack(owner, w) // repeating it would not help
		return
	}
	var ch changes
	var resend []outgoing
	res := resDeadOwner
	c.mu.Lock()
	if owner == c.self {
		resend = c.ownCopiesLocked([]item{it}, &ch)
	} else {
		res = c.t.put(owner, it, srcRelay, &ch)
	}
	c.mu.Unlock()
	c.notify.add(ch)
	for _, o := range resend {
		c.push(o)
	}
	// No ack for a record whose owner this node does not know as alive
	// yet (it joined a moment ago): the repeat will find it a member.
	if res != resDeadOwner {
		c.ack(owner, w)
	}
}
