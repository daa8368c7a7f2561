package cluster

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// Fan-out: how a change reaches the nodes that need it.
//
// The owner sends each record it publishes at once, one UDP packet per
// node, to the record's audience: the live nodes that have its network
// (endpoints), or every live node for records of no network (network
// definitions, IPAM). Each receiver acks. A send not acked in time is
// repeated with backoff, and one still unacked after pushTries sends is
// left to the per-network sync (sync.go). So an endpoint change costs two
// packets per node that has the network, whatever the size of the cluster;
// memberlist's gossip would reach random members instead, most of which do
// not have the network.
const (
	pushRetryFirst = 250 * time.Millisecond // then doubling: 0.25+0.5+1+2+4 s
	pushTries      = 6                      // the first send and five repeats
	// maxPending bounds the sends awaiting an ack (a burst of changes to
	// many nodes); beyond it a send is not repeated.
	maxPending = 1 << 17
)

// outgoing is a record this node just stored, to be sent to its audience:
// the nodes named in to, or every live member when all is set.
type outgoing struct {
	kind, key string
	version   uint64
	msg       []byte
	to        []string
	all       bool
}

type pushKey struct{ node, kind, key string }

type pendingPush struct {
	version uint64
	msg     []byte
	sends   int
	due     time.Time
}

// audienceLocked returns who receives a record of this node: the remote
// nodes that have its network, or (all) every member. Needs c.mu.
func (c *Cluster) audienceLocked(kind, key string) (to []string, all bool) {
	if vni := c.kinds.get(kind).networkOf(key); vni != 0 {
		return c.nets.holders(vni), false
	}
	return nil, true
}

// push sends a record to its audience and waits for their acks (see
// retryDue). Call it without c.mu.
func (c *Cluster) push(o outgoing) {
	var nodes []*memberlist.Node
	if o.all {
		nodes = c.peerNodes()
	} else {
		for _, name := range o.to {
			if n := c.member(name); n != nil {
				nodes = append(nodes, n)
			}
		}
	}
	due := time.Now().Add(pushRetryFirst)
	c.pushMu.Lock()
	for _, n := range nodes {
		k := pushKey{n.Name, o.kind, o.key}
		if p := c.pending[k]; p != nil && p.version > o.version {
			continue // a newer version went out first and is awaited
		}
		if len(c.pending) < maxPending {
			c.pending[k] = &pendingPush{version: o.version, msg: o.msg, sends: 1, due: due}
		}
	}
	c.pushMu.Unlock()
	select {
	case c.pushWake <- struct{}{}:
	default:
	}
	for _, n := range nodes {
		c.sendPacket(n, o.msg)
	}
	c.pushesSent.Add(uint64(len(nodes)))
}

func (c *Cluster) sendPacket(n *memberlist.Node, msg []byte) {
	if err := c.ml.SendBestEffort(n, msg); err != nil {
		c.log.Debug("sending a record failed; it will be repeated", "to", n.Name, "err", err)
	}
}

// retryLoop repeats the sends whose ack is overdue. It sleeps while no
// send awaits an ack, so an idle node pays nothing for it.
func (c *Cluster) retryLoop() {
	for {
		select {
		case <-c.stop:
			return
		case <-c.pushWake:
		}
		for c.awaitingAcks() {
			select {
			case <-c.stop:
				return
			case now := <-time.After(pushRetryFirst / 5):
				c.retryDue(now)
			}
		}
	}
}

func (c *Cluster) awaitingAcks() bool {
	c.pushMu.Lock()
	defer c.pushMu.Unlock()
	return len(c.pending) > 0
}

// retryDue repeats every send whose ack is overdue at now, unless its node
// has left or given the record's network up since, and gives up on those
// sent pushTries times.
func (c *Cluster) retryDue(now time.Time) {
	type resend struct {
		k   pushKey
		msg []byte
	}
	var due []resend
	c.pushMu.Lock()
	for k, p := range c.pending {
		if now.Before(p.due) {
			continue
		}
		if p.sends >= pushTries {
			delete(c.pending, k)
			c.pushesAbandoned.Add(1)
			continue
		}
		p.due = now.Add(pushRetryFirst << p.sends)
		p.sends++
		due = append(due, resend{k, p.msg})
	}
	c.pushMu.Unlock()
	for _, r := range due {
		n := c.member(r.k.node)
		if n != nil {
			if vni := c.kinds.get(r.k.kind).networkOf(r.k.key); vni != 0 {
				c.mu.Lock()
				holds := c.nets.holds(r.k.node, vni)
				c.mu.Unlock()
				if !holds {
					n = nil
				}
			}
		}
		if n == nil {
			c.pushMu.Lock()
			delete(c.pending, r.k)
			c.pushMu.Unlock()
			continue
		}
		c.pushesRetried.Add(1)
		c.sendPacket(n, r.msg)
	}
}

// ack tells a record's owner that this node received it, whatever it made
// of it, so that the owner stops repeating it.
func (c *Cluster) ack(owner string, w wireRecord) {
	n := c.member(owner)
	if n == nil {
		return
	}
	if err := c.ml.SendBestEffort(n, encodeAck(ackMsg{From: c.self, Kind: w.Kind, Key: w.Key, Version: w.Version})); err != nil {
		c.log.Debug("acking a record failed; its owner will repeat it", "to", owner, "err", err)
	}
}

func (c *Cluster) handleAck(body []byte) {
	m, err := decodeAck(body)
	if err != nil {
		c.malformedMsgs.Add(1)
		c.log.Warn("dropped undecodable ack", "err", err)
		return
	}
	k := pushKey{m.From, m.Kind, m.Key}
	c.pushMu.Lock()
	if p := c.pending[k]; p != nil && m.Version >= p.version {
		delete(c.pending, k)
	}
	c.pushMu.Unlock()
}
