package cluster

import (
	"fmt"
	"sync"
	"sync/atomic"
	"unicode"
)

// A kind is how the cluster treats the records of one kind. Every record,
// built-in (endpoints, networks) or registered with RegisterKind, is stored,
// versioned, merged, gossiped and expired the same way; a kind only adds
// hooks around that: a check on receipt and on publish, an index for typed
// reads, how change notifications are grouped and who receives them, and
// who receives direct messages of the kind.
type kind struct {
	// builtin kinds are published only through their typed calls
	// (PublishEndpoint, PublishNetwork) and cannot be registered over.
	builtin bool
	// decode checks a live record's key and value and returns the form the
	// index keeps (nil for kinds without an index). An error drops the
	// record as malformed. Nil accepts any value up to MaxValueLen.
	decode func(owner string, w wireRecord) (any, error)
	// checkKey checks a tombstone's key. Nil accepts any key.
	checkKey func(key string) error
	// scope maps a key to the unit its change notifications are coalesced
	// by (endpoints: the VNI). Nil: the whole kind is one unit.
	scope func(key string) string
	// network, when set, scopes the kind's records to an overlay network
	// (the VNI of a checked key): only the nodes that have the network hold,
	// receive and exchange them. Nil: every node holds every record.
	network func(key string) uint32
	// changed receives the scopes that may have changed, from the notifier
	// goroutine, never concurrently.
	changed func(scopes []string)
	// message receives direct messages of this kind (SendTo).
	message func(from string, payload []byte)
	// index, when set, sees every live record enter and leave the table.
	index index
}

// index is a view of one kind's live records kept beside the table, for
// typed reads and for checks across owners (two endpoints on one IP). The
// table calls it under the cluster lock.
type index interface {
	add(owner string, val any)
	remove(owner string, val any)
}

func (k *kind) scopeOf(key string) string {
	if k == nil || k.scope == nil {
		return ""
	}
	return k.scope(key)
}

// networkOf returns the network a record of this kind is scoped to, or 0.
func (k *kind) networkOf(key string) uint32 {
	if k == nil || k.network == nil {
		return 0
	}
	return k.network(key)
}

// registry maps kind names to kinds. Reads are lock-free (it is consulted
// for every received record, outside the cluster lock); writes copy.
type registry struct {
	mu    sync.Mutex // serialises writers
	kinds atomic.Pointer[map[string]*kind]
}

func newRegistry() *registry {
	r := &registry{}
	r.kinds.Store(&map[string]*kind{})
	return r
}

// get returns the kind, or nil for a kind nobody registered on this node
// (its records are still stored and relayed: another node may use it).
func (r *registry) get(name string) *kind { return (*r.kinds.Load())[name] }

func (r *registry) set(name string, k *kind) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.kinds.Load()
	if o := old[name]; o != nil && o.builtin {
		return fmt.Errorf("kind %q is built in", name)
	}
	m := make(map[string]*kind, len(old)+1)
	for n, k := range old {
		m[n] = k
	}
	m[name] = k
	r.kinds.Store(&m)
	return nil
}

// genericKind turns the options of RegisterKind into a kind.
func genericKind(name string, opts KindOptions) *kind {
	k := &kind{message: opts.Message}
	if v := opts.Validate; v != nil {
		k.decode = func(_ string, w wireRecord) (any, error) { return nil, v(w.Key, w.Value) }
	}
	if f := opts.Changed; f != nil {
		k.changed = func([]string) { f(name) }
	}
	return k
}

func validKind(k string) error {
	if k == "" || len(k) > maxKindLen {
		return fmt.Errorf("kind %q must be 1-%d bytes", k, maxKindLen)
	}
	for _, r := range k {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fmt.Errorf("kind %q contains a space or non-printable character", k)
		}
	}
	return nil
}

// validRecord checks what every record must satisfy regardless of kind.
func validRecord(owner string, w wireRecord) error {
	if err := validNodeName(owner); err != nil {
		return fmt.Errorf("owner: %w", err)
	}
	if err := validKind(w.Kind); err != nil {
		return err
	}
	if w.Key == "" || len(w.Key) > maxKeyLen {
		return fmt.Errorf("key must be 1-%d bytes", maxKeyLen)
	}
	if w.Version == 0 {
		return fmt.Errorf("version 0")
	}
	if w.Deleted && len(w.Value) != 0 {
		return fmt.Errorf("tombstone carries a value")
	}
	return nil
}

// prepare checks a record, received or about to be published, with the
// rules of every record and those of its kind, and decodes it for the
// kind's index.
func prepare(kinds *registry, owner string, w wireRecord) (item, error) {
	it := item{w: w}
	if err := validRecord(owner, w); err != nil {
		return it, err
	}
	k := kinds.get(w.Kind)
	if (k == nil || !k.builtin) && len(w.Value) > MaxValueLen {
		return it, fmt.Errorf("value is %d bytes, limit %d", len(w.Value), MaxValueLen)
	}
	switch {
	case k == nil:
	case w.Deleted:
		if k.checkKey != nil {
			return it, k.checkKey(w.Key)
		}
	case k.decode != nil:
		v, err := k.decode(owner, w)
		it.val = v
		return it, err
	}
	return it, nil
}
