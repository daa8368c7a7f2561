package ipam

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/vxovl/vxovl/cluster"
)

// fakeNet is an in-memory cluster: owned versioned records, direct messages
// delivered with random delay (so they reorder) by one dispatcher per node,
// and partitions, either detected (members vanish) or not (members stay
// listed but messages are lost, like a suspect node).
type fakeNet struct {
	mu       sync.Mutex
	nodes    map[string]*fakeNode
	group    map[string]int // same group: reachable
	detected bool           // unreachable nodes are no longer listed
	records  map[string]map[string]cluster.Record
	version  uint64
	maxDelay time.Duration
	stop     chan struct{}
	wg       sync.WaitGroup
}

type fakeNode struct {
	wg      sync.WaitGroup
	n       *fakeNet
	name    string
	mu      sync.Mutex
	kinds   map[string]cluster.KindOptions
	inbox   chan func()
	changed chan struct{}
	done    chan struct{}
}

func newFakeNet(t testing.TB) *fakeNet {
	n := &fakeNet{nodes: map[string]*fakeNode{}, group: map[string]int{}, records: map[string]map[string]cluster.Record{},
		maxDelay: 3 * time.Millisecond, stop: make(chan struct{})}
	t.Cleanup(func() { close(n.stop); n.wg.Wait() })
	return n
}

// node adds (or, for a restart, replaces) a node.
func (n *fakeNet) node(name string) *fakeNode {
	fn := &fakeNode{n: n, name: name, kinds: map[string]cluster.KindOptions{},
		inbox: make(chan func(), 4096), changed: make(chan struct{}, 1), done: make(chan struct{})}
	n.mu.Lock()
	if old := n.nodes[name]; old != nil {
		old.shut()
	}
	n.nodes[name] = fn
	n.mu.Unlock()
	n.wg.Add(1)
	fn.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer fn.wg.Done()
		for {
			select {
			case <-n.stop:
				return
			case <-fn.done:
				return
			case f := <-fn.inbox:
				f()
			case <-fn.changed:
				fn.mu.Lock()
				var cbs []func(string)
				var kinds []string
				for k, o := range fn.kinds {
					if o.Changed != nil {
						cbs, kinds = append(cbs, o.Changed), append(kinds, k)
					}
				}
				fn.mu.Unlock()
				for i, cb := range cbs {
					cb(kinds[i])
				}
			}
		}
	}()
	n.notifyAll()
	return fn
}

func (n *fakeNet) reachableLocked(a, b string) bool { return n.group[a] == n.group[b] }

// split partitions the cluster; nodes not named stay in group 0.
func (n *fakeNet) split(detected bool, groups ...[]string) {
	n.mu.Lock()
	for i, g := range groups {
		for _, name := range g {
			n.group[name] = i + 1
		}
	}
	n.detected = detected
	n.mu.Unlock()
	n.notifyAll()
}

func (n *fakeNet) heal() {
	n.mu.Lock()
	n.group = map[string]int{}
	n.detected = false
	n.mu.Unlock()
	n.notifyAll()
}

func (n *fakeNet) notifyAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, fn := range n.nodes {
		fn.kick()
	}
}

// shut stops the node's dispatcher (idempotent) without waiting for it.
func (fn *fakeNode) shut() {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	select {
	case <-fn.done:
	default:
		close(fn.done)
	}
}

// stop stops the dispatcher and waits, so no callback runs afterwards.
func (fn *fakeNode) stop() {
	fn.shut()
	fn.wg.Wait()
}

func (fn *fakeNode) kick() {
	select {
	case fn.changed <- struct{}{}:
	default:
	}
}

func (fn *fakeNode) Members() []cluster.Member {
	n := fn.n
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []cluster.Member
	for name := range n.nodes {
		if n.detected && !n.reachableLocked(fn.name, name) {
			continue
		}
		out = append(out, cluster.Member{Name: name})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (fn *fakeNode) PutRecord(kind, key string, value []byte) error {
	return fn.set(kind, key, append([]byte(nil), value...), false)
}

func (fn *fakeNode) DeleteRecord(kind, key string) error { return fn.set(kind, key, nil, true) }

func (fn *fakeNode) set(kind, key string, value []byte, del bool) error {
	n := fn.n
	fn.mu.Lock()
	opts := fn.kinds[kind]
	fn.mu.Unlock()
	if !del && opts.Validate != nil {
		if err := opts.Validate(key, value); err != nil {
			return err
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	recs := n.records[fn.name]
	if recs == nil {
		recs = map[string]cluster.Record{}
		n.records[fn.name] = recs
	}
	if del {
		delete(recs, kind+"\x00"+key)
	} else {
		n.version++
		recs[kind+"\x00"+key] = cluster.Record{Kind: kind, Key: key, Owner: fn.name, Version: n.version, Value: value}
	}
	for name, o := range n.nodes {
		if n.reachableLocked(fn.name, name) {
			o.kick()
		}
	}
	return nil
}

func (fn *fakeNode) Records(kind string) []cluster.Record {
	n := fn.n
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []cluster.Record
	for owner, recs := range n.records {
		if n.nodes[owner] == nil || !n.reachableLocked(fn.name, owner) {
			continue
		}
		for _, r := range recs {
			if r.Kind == kind {
				out = append(out, r)
			}
		}
	}
	return out
}

func (fn *fakeNode) RegisterKind(kind string, opts cluster.KindOptions) error {
	fn.mu.Lock()
	fn.kinds[kind] = opts
	fn.mu.Unlock()
	return nil
}

func (fn *fakeNode) SendTo(node, kind string, payload []byte) error {
	n := fn.n
	n.mu.Lock()
	to := n.nodes[node]
	reach := to != nil && n.reachableLocked(fn.name, node)
	detected := n.detected
	delay := time.Duration(rand.Int64N(int64(n.maxDelay) + 1))
	n.mu.Unlock()
	if to == nil || (!reach && detected) {
		return fmt.Errorf("%s is not a live member", node)
	}
	if !reach {
		return nil // lost, like a packet to a suspect node
	}
	from := fn.name
	payload = append([]byte(nil), payload...)
	time.AfterFunc(delay, func() {
		select {
		case to.inbox <- func() {
			to.mu.Lock()
			o := to.kinds[kind]
			to.mu.Unlock()
			if o.Message != nil {
				o.Message(from, payload)
			}
		}:
		default:
		}
	})
	return nil
}
