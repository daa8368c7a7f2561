package ipam

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strings"
	"time"
)

// claimMsg is the direct message of the claim protocol.
type claimMsg struct {
	Op     string   `json:"op"` // opRequest, opAck, opNack
	ID     uint64   `json:"id"`
	Ticket uint64   `json:"t,omitempty"` // request: random priority among concurrent claims
	Prefix string   `json:"p"`
	Pin    bool     `json:"pin,omitempty"`
	Reason string   `json:"r,omitempty"`  // nack
	Pins   []string `json:"ps,omitempty"` // ack: the acker's pins and aux addresses inside Prefix
}

const (
	opRequest = "req"
	opAck     = "ack"
	opNack    = "nack"
)

type reply struct {
	from string
	msg  claimMsg
	err  error // sending the request failed
}

// pendingClaim is a claim round in flight. A round that ACKed a conflicting
// claim of higher priority is doomed: it can no longer succeed, which is
// what makes yielding safe (see the package doc).
type pendingClaim struct {
	pin    bool
	ticket uint64
	doomed string // who we yielded to
}

// outranks orders concurrent conflicting claims: higher (ticket, node) wins.
func outranks(ticket uint64, node string, other uint64, otherNode string) bool {
	if ticket != other {
		return ticket > other
	}
	return node > otherNode
}

type waiter struct {
	prefix netip.Prefix
	ch     chan reply
}

// claimError is a claim round that did not succeed.
type claimError struct{ reason string }

func (e *claimError) Error() string { return e.reason }

// peers are the members whose ACK a claim needs: everyone else we see that
// is not known dead or gone.
func (d *Driver) peers() map[string]bool {
	out := map[string]bool{}
	for _, m := range d.cl.Members() {
		if m.Name != d.self {
			out[m.Name] = true
		}
	}
	return out
}

// claim runs one round of the claim protocol for prefix (a block, or a
// pin when pin is set). See the package doc for the rule.
func (d *Driver) claim(subnet, prefix netip.Prefix, pin bool) error {
	d.mu.Lock()
	if reason := d.localConflictLocked(prefix, pin); reason != "" {
		d.mu.Unlock()
		d.claimsLost.Add(1)
		return &claimError{reason}
	}
	ticket := rand.Uint64()
	d.pending[prefix] = &pendingClaim{pin: pin, ticket: ticket}
	d.nextID++
	id := d.nextID
	required := d.peers()
	w := &waiter{prefix: prefix, ch: make(chan reply, 2*len(required)+1)}
	d.waiters[id] = w
	d.mu.Unlock()
	won := false
	defer func() {
		d.mu.Lock()
		delete(d.waiters, id)
		if !won {
			delete(d.pending, prefix)
		}
		d.mu.Unlock()
		if won {
			d.claimsWon.Add(1)
		} else {
			d.claimsLost.Add(1)
		}
	}()

	payload, err := json.Marshal(claimMsg{Op: opRequest, ID: id, Ticket: ticket, Prefix: prefix.String(), Pin: pin})
	if err != nil {
		return fmt.Errorf("encoding claim request: %w", err)
	}
	for n := range required {
		go func() {
			if err := d.cl.SendTo(n, KindClaim, payload); err != nil {
				select {
				case w.ch <- reply{from: n, err: err}:
				default:
				}
			}
		}()
	}
	var acked []reply
	timer := time.NewTimer(d.cfg.ClaimTimeout)
	defer timer.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for len(required) > 0 {
		select {
		case r := <-w.ch:
			if !required[r.from] {
				continue
			}
			switch {
			case r.err != nil:
				if !d.peers()[r.from] {
					delete(required, r.from) // it left: no longer a member to ask
					continue
				}
				return &claimError{fmt.Sprintf("claim of %s: cannot reach node %s: %v", prefix, r.from, r.err)}
			case r.msg.Op == opNack:
				return &claimError{fmt.Sprintf("claim of %s refused by node %s: %s", prefix, r.from, r.msg.Reason)}
			case r.msg.Op == opAck:
				acked = append(acked, r)
				delete(required, r.from)
			}
		case <-tick.C:
			now := d.peers()
			for n := range required {
				if !now[n] {
					delete(required, n)
				}
			}
		case <-timer.C:
			var names []string
			for n := range required {
				names = append(names, n)
			}
			sort.Strings(names)
			return &claimError{fmt.Sprintf("claim of %s: no answer within %s from %s (unreachable or partitioned?)",
				prefix, d.cfg.ClaimTimeout, strings.Join(names, ", "))}
		}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if pc := d.pending[prefix]; pc != nil && pc.doomed != "" {
		return &claimError{fmt.Sprintf("claim of %s yielded to a concurrent claim by node %s", prefix, pc.doomed)}
	}
	now := time.Now()
	for _, r := range acked {
		for _, s := range r.msg.Pins {
			a, err := netip.ParsePrefix(s)
			if err != nil || a.Bits() != 32 || !prefix.Contains(a.Addr()) {
				continue
			}
			k := knownKey{r.from, a}
			if d.known[k] == nil {
				// Kind unknown until its record arrives; treat as a pin,
				// which only matters for skipping it.
				d.known[k] = &remoteClaim{Owner: r.from, claim: claim{Prefix: a, Subnet: subnet, Pin: true}, lastSeen: now}
			}
		}
	}
	c := &claim{Prefix: prefix, Subnet: subnet, Pin: pin, ClaimedAt: now.UnixNano()}
	if err := d.st.Put(bucketOwned, prefix.String(), c); err != nil {
		return fmt.Errorf("saving claim of %s: %w", prefix, err)
	}
	d.owned[prefix] = c
	delete(d.pending, prefix)
	won = true
	d.publish(c)
	d.log.Info("claimed", "prefix", prefix, "pin", pin, "acks", len(acked))
	return nil
}

// localConflictLocked is the reason this node itself cannot claim prefix,
// or "".
func (d *Driver) localConflictLocked(q netip.Prefix, pin bool) string {
	for _, c := range d.owned {
		if c.isBlock() && c.Prefix.Overlaps(q) {
			return fmt.Sprintf("this node already holds %s", c.Prefix)
		}
		if c.Prefix == q {
			return fmt.Sprintf("this node already holds %s", c.Prefix)
		}
	}
	for p := range d.pending {
		if p.Overlaps(q) {
			return fmt.Sprintf("this node is already claiming %s", p)
		}
	}
	for _, r := range d.known {
		if clash(r.shape(), q, pin) {
			return fmt.Sprintf("node %s holds %s", r.Owner, r.Prefix)
		}
	}
	return ""
}

// refusalLocked is why we refuse from's claim of q, or "". A conflicting
// round of ours in flight is refused if it outranks the request, and
// otherwise doomed (it yields) when we ACK.
func (d *Driver) refusalLocked(from string, q netip.Prefix, pin bool, ticket uint64) string {
	for _, c := range d.owned {
		if clash(c.shape(), q, pin) {
			return fmt.Sprintf("it holds %s", c.Prefix)
		}
	}
	for _, r := range d.known {
		if r.Owner != from && clash(r.shape(), q, pin) {
			return fmt.Sprintf("node %s holds %s", r.Owner, r.Prefix)
		}
	}
	var yield []*pendingClaim
	for p, pc := range d.pending {
		if clash(shape{prefix: p, pin: pc.pin, pending: true}, q, pin) || clash(shape{prefix: q, pin: pin, pending: true}, p, pc.pin) {
			if pc.doomed == "" && outranks(pc.ticket, d.self, ticket, from) {
				return fmt.Sprintf("it is claiming %s itself", p)
			}
			yield = append(yield, pc)
		}
	}
	for _, pc := range yield {
		if pc.doomed == "" {
			pc.doomed = from
		}
	}
	return ""
}

// onMessage receives claim requests and answers. It runs on the cluster's
// single dispatcher goroutine, so it never blocks on the network.
func (d *Driver) onMessage(from string, payload []byte) {
	var m claimMsg
	if err := json.Unmarshal(payload, &m); err != nil {
		d.log.Warn("dropped undecodable claim message", "from", from, "err", err)
		return
	}
	q, err := netip.ParsePrefix(m.Prefix)
	if err != nil || !q.Addr().Is4() || q != q.Masked() || (m.Pin && q.Bits() != 32) {
		d.log.Warn("dropped claim message with a bad prefix", "from", from, "prefix", m.Prefix)
		return
	}
	switch m.Op {
	case opRequest:
		ans := claimMsg{Op: opAck, ID: m.ID, Prefix: m.Prefix}
		d.mu.Lock()
		if reason := d.refusalLocked(from, q, m.Pin, m.Ticket); reason != "" {
			ans.Op, ans.Reason = opNack, reason
		} else if !m.Pin {
			for _, c := range d.owned {
				if !c.isBlock() && q.Contains(c.Prefix.Addr()) {
					ans.Pins = append(ans.Pins, c.Prefix.String())
				}
			}
		}
		d.mu.Unlock()
		b, err := json.Marshal(ans)
		if err != nil {
			return
		}
		go func() {
			if err := d.cl.SendTo(from, KindClaim, b); err != nil {
				d.log.Debug("answering a claim failed; the claimant will time out", "to", from, "err", err)
			}
		}()
	case opAck, opNack:
		d.mu.Lock()
		w := d.waiters[m.ID]
		d.mu.Unlock()
		if w == nil || w.prefix != q {
			return // a late answer to a finished round
		}
		select {
		case w.ch <- reply{from: from, msg: m}:
		default:
		}
	default:
		d.log.Warn("dropped claim message with unknown op", "from", from, "op", m.Op)
	}
}
