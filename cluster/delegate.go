package cluster

import (
	"sync"

	"github.com/hashicorp/memberlist"
)

// delegate implements memberlist.Delegate for a Cluster.
type delegate Cluster

func (d *delegate) NodeMeta(limit int) []byte { return nil }

// NotifyMsg handles user messages from UDP (immediate sends, gossip) and
// TCP (hello states, direct messages). buf is not retained: decoders copy.
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

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.q.GetBroadcasts(overhead, limit)
}

// LocalState is our side of push/pull: every alive owner's records, so a
// joiner learns the whole cluster from whichever node it contacts.
func (d *delegate) LocalState(join bool) []byte {
	return (*Cluster)(d).ownState(0, false)
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
	c.hello.add(n.Name, true)
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

// helloQueue coalesces "send our own state to node X" requests and runs
// them with bounded concurrency, so an unreachable node (TCP timeout)
// does not hold up the others.
type helloQueue struct {
	mu      sync.Mutex
	pending map[string]bool // node -> ask for a reply
	wake    chan struct{}
}

func newHelloQueue() *helloQueue {
	return &helloQueue{pending: map[string]bool{}, wake: make(chan struct{}, 1)}
}

func (q *helloQueue) add(node string, hello bool) {
	q.mu.Lock()
	q.pending[node] = q.pending[node] || hello
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *helloQueue) run(stop <-chan struct{}, send func(node string, hello bool)) {
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
		q.pending = map[string]bool{}
		q.mu.Unlock()
		for node, hello := range batch {
			select {
			case <-stop:
				return
			case sem <- struct{}{}:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				send(node, hello)
			}()
		}
	}
}
