package cluster

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Full states: how nodes catch up with each other.
//
// A change is pushed to its audience (fanout.go); what a node missed, or
// what changed while it was away, comes in full states, each authoritative
// for its sender's records in what it covers (see cover):
//   - join: when two nodes first see each other, each sends the other its
//     own records of no network and of the networks both have, over TCP,
//     asking for the same back unless it has them already. A joiner or a
//     restarted node is up to date after one round trip with each member.
//   - interest: when a node learns that another took up a network it has
//     (the other's network definition arrived), it sends that node its own
//     records of the network. That is how a host that creates a network
//     catches up on it at once, and how a joiner learns the endpoints of
//     its networks: every owner sends its own, directly.
//   - network sync: every NetworkSyncInterval, for each network it has, a
//     node sends a random other node of the network every owner's records
//     of it, and gets that node's back: anti-entropy per network, between
//     nodes that have it only, in messages the size of one network.
//   - memberlist's push/pull carries the records of no network (network
//     definitions, IPAM): what every node holds.
//
// No state carries the endpoints of every network, so none grows with the
// cluster: at 100,000 endpoints over 500 networks a network sync is about
// 200 endpoints (~18 KiB, 91 bytes each on the wire without names), and push/pull holds ~10,000 network definitions
// (~350 KiB) rather than ~9 MiB of endpoints (memberlist caps push/pull
// at 20 MiB).

// stateReq is a full state this node owes another. Requests for one node
// and purpose coalesce: the networks of several interest pushes travel in
// one state.
type stateReq struct {
	node string
	// join is the join exchange: our records of no network and of every
	// network both nodes have. Otherwise the state covers nets only.
	join bool
	nets map[uint32]struct{}
	view bool // every owner's records, not only ours (network sync)
	ask  bool // ask for the same in return
}

func (r stateReq) key() stateKey { return stateKey{r.node, r.join, r.view, r.ask} }

type stateKey struct {
	node            string
	join, view, ask bool
}

// stateQueue coalesces the states owed and sends them with bounded
// concurrency, so an unreachable node (TCP timeout) does not hold up the
// others.
type stateQueue struct {
	mu      sync.Mutex
	pending map[stateKey]*stateReq
	wake    chan struct{}
}

func newStateQueue() *stateQueue {
	return &stateQueue{pending: map[stateKey]*stateReq{}, wake: make(chan struct{}, 1)}
}

// add queues r, or merges its networks into the same request pending.
func (q *stateQueue) add(r stateReq) {
	q.mu.Lock()
	if p := q.pending[r.key()]; p != nil {
		for vni := range r.nets {
			p.nets[vni] = struct{}{}
		}
	} else {
		nets := make(map[uint32]struct{}, len(r.nets))
		for vni := range r.nets {
			nets[vni] = struct{}{}
		}
		r.nets = nets
		q.pending[r.key()] = &r
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *stateQueue) run(stop <-chan struct{}, send func(stateReq)) {
	const parallel = 8
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-stop:
			return
		case <-q.wake:
		}
		q.mu.Lock()
		batch := q.pending
		q.pending = map[stateKey]*stateReq{}
		q.mu.Unlock()
		for _, r := range batch {
			select {
			case <-stop:
				return
			case sem <- struct{}{}:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				send(*r)
			}()
		}
	}
}

// netsOf is a set of one network, for a request.
func netsOf(vni uint32) map[uint32]struct{} { return map[uint32]struct{}{vni: {}} }

// heardFrom is what full states of one node's own records this node has
// applied since it started.
type heardFrom struct {
	cluster bool                // its records of no network
	nets    map[uint32]struct{} // its records of these networks
}

// sendState sends one owed state over the reliable channel.
func (c *Cluster) sendState(r stateReq) {
	n := c.member(r.node)
	if n == nil {
		return
	}
	c.mu.Lock()
	cv, ok := c.coverForLocked(r)
	var msg []byte
	if ok {
		// Both nodes send their join state when they see each other: one
		// that has the other's already need not ask for it, which halves
		// the exchanges of a cluster forming.
		var flags byte
		if r.ask && (!r.join || !c.heardAllLocked(r.node)) {
			flags = stateHello
		}
		// A fresh version as the snapshot clock: every later record is newer.
		msg = encodeState(c.t.snapshot(c.nextVersion(), flags, cv, !r.view))
	}
	c.mu.Unlock()
	if !ok {
		return
	}
	if r.view {
		c.networkSyncs.Add(1)
	}
	if err := c.ml.SendReliable(n, msg); err != nil {
		c.log.Debug("sending a full state failed; the next sync will catch up", "to", r.node, "err", err)
	}
}

// coverForLocked says what the state r covers; false if there is nothing
// to send (networks this node gave up since). Needs c.mu.
func (c *Cluster) coverForLocked(r stateReq) (cover, bool) {
	cv := cover{cluster: r.join, nets: map[uint32]struct{}{}}
	if r.join {
		for _, vni := range c.nets.shared(r.node) {
			cv.nets[vni] = struct{}{}
		}
		return cv, true
	}
	for vni := range r.nets {
		if c.nets.has(vni) {
			cv.nets[vni] = struct{}{}
		}
	}
	return cv, len(cv.nets) > 0
}

func (c *Cluster) handleState(body []byte) {
	m, err := decodeState(body)
	if err != nil {
		c.malformedMsgs.Add(1)
		c.log.Warn("dropped undecodable state message", "err", err)
		return
	}
	if err := validNodeName(m.Sender); err != nil {
		c.malformedMsgs.Add(1)
		c.log.Warn("dropped state message with bad sender", "err", err)
		return
	}
	cv := cover{cluster: m.Flags&stateNoCluster == 0, nets: make(map[uint32]struct{}, len(m.Networks))}
	for _, vni := range m.Networks {
		cv.nets[vni] = struct{}{}
	}
	groups := make(map[string][]item, len(m.Owners))
	for _, o := range m.Owners {
		items := make([]item, 0, len(o.Recs))
		for _, w := range o.Recs {
			c.received.Add(1)
			it, err := prepare(c.kinds, o.Owner, w)
			if err != nil {
				c.dropMalformed(o.Owner, w, err)
				continue
			}
			items = append(items, it)
		}
		groups[o.Owner] = append(groups[o.Owner], items...)
	}
	own := groups[c.self]
	delete(groups, c.self)
	var ch changes
	c.mu.Lock()
	resend := c.ownCopiesLocked(own, &ch)
	c.t.applyState(m.Sender, m.Clock, cv, groups, &ch)
	// A state from a node not yet alive here was ignored (see table.put);
	// its join, which is on its way, brings a new one.
	if m.Sender != c.self && c.t.isAlive(m.Sender) {
		h := c.heard[m.Sender]
		if h == nil {
			h = &heardFrom{nets: map[uint32]struct{}{}}
			c.heard[m.Sender] = h
		}
		h.cluster = h.cluster || cv.cluster
		for vni := range cv.nets {
			h.nets[vni] = struct{}{}
		}
	}
	c.mu.Unlock()
	c.notify.add(ch)
	for _, o := range resend {
		c.push(o)
	}
	if m.Flags&stateHello == 0 {
		return
	}
	if cv.cluster {
		c.states.add(stateReq{node: m.Sender, join: true})
		return
	}
	c.states.add(stateReq{node: m.Sender, nets: cv.nets, view: true})
}

// CaughtUp reports whether this node has, since it started, received the
// full own state of every other live member: its records of no network
// and of each network both nodes have, so that its view of their records
// is complete. It is false while this node is alone. The driver keeps the
// entries it had programmed before a restart until this is true.
func (c *Cluster) CaughtUp() bool {
	members := c.Members()
	others := 0
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range members {
		if m.Name == c.self {
			continue
		}
		others++
		if !c.heardAllLocked(m.Name) {
			return false
		}
	}
	return others > 0
}

// heardAllLocked reports whether node's own records of no network, and of
// each network both nodes have, came in full states since it joined.
// Needs c.mu.
func (c *Cluster) heardAllLocked(node string) bool {
	h := c.heard[node]
	if h == nil || !h.cluster {
		return false
	}
	for _, vni := range c.nets.shared(node) {
		if _, ok := h.nets[vni]; !ok {
			return false
		}
	}
	return true
}

// syncLoop runs the per-network anti-entropy: every NetworkSyncInterval
// (jittered, so that nodes started together do not sync in step), each
// network this node has is exchanged with one random other node of it.
func (c *Cluster) syncLoop() {
	for {
		wait := c.cfg.NetworkSyncInterval/2 + rand.N(c.cfg.NetworkSyncInterval)
		select {
		case <-c.stop:
			return
		case <-time.After(wait):
		}
		var reqs []stateReq
		c.mu.Lock()
		for _, vni := range c.nets.ours() {
			if hs := c.nets.holders(vni); len(hs) > 0 {
				reqs = append(reqs, stateReq{node: hs[rand.IntN(len(hs))], nets: netsOf(vni), view: true, ask: true})
			}
		}
		c.mu.Unlock()
		for _, r := range reqs {
			c.states.add(r)
		}
	}
}
