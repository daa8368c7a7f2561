package cluster

import (
	"errors"
	"net"
)

// ErrConflict is returned (wrapped, naming the other node and its values) by
// PublishNetwork when a live remote node defines the same VNI differently.
var ErrConflict = errors.New("conflicting network definition")

// Endpoint is a container interface attached to an overlay, as gossiped
// between nodes. The cluster fills Node, VTEP and Version on publish, and
// Created on a new endpoint's first publish.
type Endpoint struct {
	VNI     uint32
	ID      string // Docker endpoint ID, unique per node
	IP      net.IP // IPv4 address of the container
	MAC     net.HardwareAddr
	Node    string // owner node
	VTEP    net.IP // owner's underlay address (its AdvertiseAddr)
	Version uint64 // owner's hybrid clock when it last published this endpoint
	// Created is the version of the endpoint's first publish: the age of its
	// claim on IP. Republishing (after a restart, with new names) gives the
	// record a new Version but keeps Created, so that the endpoint keeps its
	// place against other claims on the same IP.
	Created uint64
	// Names are the container's DNS names on this network, normalised
	// (dnsname.Normalize: lower case, sorted, no duplicates). They are part
	// of the record: they change only when the owner republishes the
	// endpoint, and an older copy never brings back a removed name.
	Names []string
}

// NewerThan orders two claims on one IP (or one MAC): the later claim, by
// Created, wins (an older claim may be a leftover whose withdrawal was
// lost); ties break deterministically so every node picks the same winner.
func (e *Endpoint) NewerThan(o *Endpoint) bool {
	if e.Created != o.Created {
		return e.Created > o.Created
	}
	if e.Node != o.Node {
		return e.Node > o.Node
	}
	return e.ID > o.ID
}

// Network is one node's definition of an overlay. It is gossiped so that
// nodes which disagree about a VNI's subnet or MTU are caught early instead
// of producing a silently broken overlay.
type Network struct {
	VNI    uint32
	Subnet string // IPv4 CIDR, e.g. "10.10.0.0/24"; stored in canonical (masked) form
	MTU    int
	// Encrypted networks carry their VXLAN over IPsec; every host of a
	// VNI must agree on it, as on the subnet and MTU.
	Encrypted bool
	Node      string // set by the cluster
}

// Handler receives change notifications. Calls come from a single goroutine,
// never concurrently, and are coalesced per VNI; they must not block long.
type Handler interface {
	// EndpointsChanged says the result of Endpoints(vni) may have changed
	// (add, remove, owner death or rejoin).
	EndpointsChanged(vni uint32)
}

// Member is a live node: memberlist lists a node from its join until it is
// declared dead or leaves. A node under suspicion is still listed (memberlist
// keeps suspicion to itself), so there is no state to report.
type Member struct {
	Name string
	Addr net.IP
	Port int
}

// Record is a generic owned, versioned record (see PutRecord).
type Record struct {
	Kind    string
	Owner   string
	Key     string
	Version uint64
	Value   []byte
}

// KindOptions configures a record kind registered with RegisterKind.
// Every field is optional.
type KindOptions struct {
	// Validate checks the key and value of every live record of this kind,
	// received (a non-nil error drops it and counts it as malformed) or put
	// by this node (PutRecord fails). Records held before the kind was
	// registered are checked by RegisterKind.
	Validate func(key string, value []byte) error
	// Changed is called, coalesced, from the notifier goroutine (the same
	// one that calls Handler) when Records(kind) may have changed.
	Changed func(kind string)
	// Message receives direct messages of this kind sent with SendTo. Calls
	// come from one dispatcher goroutine; if it falls behind, messages are
	// dropped and counted in Stats.DirectDropped.
	Message func(from string, payload []byte)
}

// Stats are cumulative counters since New.
type Stats struct {
	RecordsReceived  uint64 // records decoded from the network (single and in full states)
	RecordsApplied   uint64 // records that changed the table
	RecordsStale     uint64 // duplicates, older versions, below an owner's authoritative floor
	RecordsDeadOwner uint64 // ignored: owner not alive in our view, or a copy of our own records
	// RecordsUninterested were ignored: endpoints of networks this node does not have.
	RecordsUninterested uint64
	RecordsMalformed    uint64 // failed validation
	MessagesMalformed   uint64 // undecodable messages
	SnapshotsApplied    uint64 // authoritative full states from their owners
	RecordsExpired      uint64 // removed because the owner's full state no longer held them
	TombstonesGCed      uint64
	IPConflicts         uint64 // two live owners claimed one IP in one VNI; newest won
	NetworkConflicts    uint64 // a remote network definition disagrees with ours
	DecryptFailures     uint64 // packets/streams dropped because they were not encrypted with our key
	DirectSent          uint64
	DirectReceived      uint64
	DirectDropped       uint64 // direct messages dropped: unknown kind or slow receiver
	OwnersDropped       uint64 // owners whose records were dropped on death/leave
	PushesSent          uint64 // our records sent to a node at once, each awaiting its ack
	PushesRetried       uint64 // sends repeated because no ack came in time
	PushesAbandoned     uint64 // sends never acked after every repeat (the network sync catches up)
	NetworkSyncs        uint64 // per-network full states sent (anti-entropy, and replies)
}
