package cluster

import (
	"github.com/hashicorp/memberlist"
)

// delegate implements memberlist.Delegate for a Cluster.
type delegate Cluster

func (d *delegate) NodeMeta(limit int) []byte { return nil }

// NotifyMsg handles user messages from UDP (pushed records, acks) and TCP
// (full states, direct messages). buf is not retained: decoders copy.
func (d *delegate) NotifyMsg(buf []byte) {
	c := (*Cluster)(d)
	if len(buf) == 0 {
		c.malformedMsgs.Add(1)
		return
	}
	switch buf[0] {
	case msgRecord:
		c.handleRecord(buf[1:])
	case msgState:
		c.handleState(buf[1:])
	case msgAck:
		c.handleAck(buf[1:])
	case msgDirect:
		m, err := decodeDirect(buf[1:])
		if err == nil {
			err = validNodeName(m.From)
		}
		if err == nil {
			err = validKind(m.Kind)
		}
		if err != nil {
			c.malformedMsgs.Add(1)
			c.log.Warn("dropped malformed direct message", "err", err)
			return
		}
		c.directRecv.Add(1)
		select {
		case c.direct <- m:
		default:
			c.directDropped.Add(1)
		}
	default:
		c.malformedMsgs.Add(1)
		c.log.Warn("dropped message of unknown type", "type", buf[0])
	}
}

// GetBroadcasts gives memberlist nothing to gossip: records go straight to
// the nodes that need them (fanout.go), not to random members.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState is our side of push/pull: every alive owner's records of no
// network (network definitions, IPAM), which every node holds, so a joiner
// learns them from whichever node it contacts. Endpoints are exchanged per
// network, between the nodes that have it (sync.go).
func (d *delegate) LocalState(join bool) []byte {
	c := (*Cluster)(d)
	c.mu.Lock()
	defer c.mu.Unlock()
	return encodeState(c.t.snapshot(c.nextVersion(), 0, cover{cluster: true}, false))
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	c := (*Cluster)(d)
	if len(buf) == 0 || buf[0] != msgState {
		c.malformedMsgs.Add(1)
		return
	}
	c.handleState(buf[1:])
}

// events implements memberlist.EventDelegate. memberlist calls it with its
// node lock held, so it only updates our table and queues work.
type events Cluster

func (e *events) NotifyJoin(n *memberlist.Node) {
	c := (*Cluster)(e)
	if n.Name == c.self {
		return
	}
	c.setMember(n, true)
	c.mu.Lock()
	was := c.t.isAlive(n.Name)
	c.t.setAlive(n.Name, true, nil)
	c.mu.Unlock()
	if !was {
		c.alive.Add(1)
	}
	c.log.Info("node joined", "peer", n.Name, "addr", n.Addr)
	// Exchange own records with the newcomer right away rather than
	// waiting for a random push/pull to pair us.
	c.states.add(stateReq{node: n.Name, join: true, ask: true})
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	c := (*Cluster)(e)
	if n.Name == c.self {
		return
	}
	c.setMember(n, false)
	var ch changes
	c.mu.Lock()
	was := c.t.isAlive(n.Name)
	c.t.setAlive(n.Name, false, &ch)
	delete(c.heard, n.Name) // its records are gone: when it is back, its states must come again
	c.mu.Unlock()
	if was {
		c.alive.Add(-1)
	}
	// No state attribute: memberlist never updates Node.State (it keeps the
	// real one privately), so it would always say "alive".
	c.log.Info("node left or failed; dropped its records", "peer", n.Name)
	c.notify.add(ch)
}

func (e *events) NotifyUpdate(n *memberlist.Node) {
	if c := (*Cluster)(e); n.Name != c.self {
		c.setMember(n, true)
	}
}
