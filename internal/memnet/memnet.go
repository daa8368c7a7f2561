// Package memnet is an in-memory network for hashicorp/memberlist: a
// NodeAwareTransport per node, wired to the others through one Network
// value, with configurable latency and packet loss.
//
// It exists so that the real cluster code (memberlist plus vxovl's cluster
// package) can run as 1,000 instances in one test process on a 2-core
// machine: without sockets there are no port or file-descriptor limits, no
// kernel buffers to tune, and the network's behaviour (latency, loss, a host
// that crashes) is chosen by the test and reproducible from a seed.
//
// Packets (memberlist's UDP) are delivered after the one-way latency, or
// lost with the configured probability; a receiver whose queue is full
// drops them, as a full socket buffer would. Delayed packets wait in one
// time-ordered heap per Network served by a single goroutine, rather than a
// timer per packet. Streams (memberlist's TCP) are in-memory pipes: loss
// does not apply to them (TCP retransmits) but the connect takes one
// latency.
package memnet

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// packetQueueLen is how many packets a node holds unread before it drops
// new ones (a UDP socket buffer of a few hundred KiB holds about as many
// gossip packets).
const packetQueueLen = 1024

// Config sets a Network's behaviour; SetLatency and SetLoss change it later.
type Config struct {
	// Latency is the fixed one-way delay of a packet and of a connect.
	Latency time.Duration
	// Jitter, if set, adds a uniformly random delay in [0, Jitter) to each
	// packet, so packets may overtake each other as on a real network.
	Jitter time.Duration
	// Loss is the probability in [0, 1] that a packet is lost.
	Loss float64
	// Seed seeds the random numbers behind loss and jitter.
	Seed uint64
}

// ErrUnreachable is returned for a dial to an address nobody listens on.
var ErrUnreachable = errors.New("memnet: connection refused")

// Network connects the Transports made from it.
type Network struct {
	// nodesMu guards nodes apart from mu: every dial and packet looks a
	// node up, and one lock for both stalled 1,000 nodes' dials behind the
	// packets (thousands of goroutines queued on it).
	nodesMu sync.RWMutex
	nodes   map[string]*Transport
	latency atomic.Int64 // cfg.Latency, for dials without mu

	mu      sync.Mutex // guards everything below but the counters
	cfg     Config
	rng     *rand.Rand
	pending packetHeap
	seq     uint64
	closed  bool

	wake chan struct{} // a packet went to the front of the heap
	done chan struct{} // closed by Close
	wg   sync.WaitGroup
}

// New starts a Network; Close stops it.
func New(cfg Config) *Network {
	n := &Network{
		cfg:   cfg,
		rng:   rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		nodes: map[string]*Transport{},
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	n.latency.Store(int64(cfg.Latency))
	n.wg.Add(1)
	go n.deliverLoop()
	return n
}

// SetLatency changes the delay of packets sent from now on.
func (n *Network) SetLatency(fixed, jitter time.Duration) {
	n.mu.Lock()
	n.cfg.Latency, n.cfg.Jitter = fixed, jitter
	n.latency.Store(int64(fixed))
	n.mu.Unlock()
}

// SetLoss changes the loss probability of packets sent from now on.
func (n *Network) SetLoss(p float64) {
	n.mu.Lock()
	n.cfg.Loss = p
	n.mu.Unlock()
}

// Transport makes the transport of the node at addr, an "ip:port" that no
// other transport of this Network has.
func (n *Network) Transport(addr string) (*Transport, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("memnet: address %q: %w", addr, err)
	}
	key := ap.String()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errors.New("memnet: network closed")
	}
	n.nodesMu.Lock()
	defer n.nodesMu.Unlock()
	if _, ok := n.nodes[key]; ok {
		return nil, fmt.Errorf("memnet: address %s is taken", key)
	}
	t := &Transport{
		net:     n,
		addr:    ap,
		from:    net.UDPAddrFromAddrPort(ap),
		packets: make(chan *memberlist.Packet, packetQueueLen),
		streams: make(chan net.Conn),
		conns:   map[*conn]struct{}{},
		down:    make(chan struct{}),
	}
	n.nodes[key] = t
	return t, nil
}

// Kill makes the node at addr a crashed host: from now on it sends and
// receives nothing, its connections break, and a dial to it gets no answer
// until it times out. Its memberlist keeps running until shut down.
func (n *Network) Kill(addr string) {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		addr = ap.String()
	}
	n.nodesMu.RLock()
	t := n.nodes[addr]
	n.nodesMu.RUnlock()
	if t != nil {
		t.stop(true)
	}
}

// Totals sums the counters of every transport, shut down ones included.
func (n *Network) Totals() Counters {
	n.nodesMu.RLock()
	defer n.nodesMu.RUnlock()
	var c Counters
	for _, t := range n.nodes {
		c.add(t.Counters())
	}
	return c
}

// Close drops the packets in flight, breaks every connection and stops the
// delivery goroutine. Memberlist instances should be shut down first.
func (n *Network) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	n.pending = nil
	n.mu.Unlock()
	n.nodesMu.RLock()
	nodes := make([]*Transport, 0, len(n.nodes))
	for _, t := range n.nodes {
		nodes = append(nodes, t)
	}
	n.nodesMu.RUnlock()
	for _, t := range nodes {
		t.stop(false)
	}
	close(n.done)
	n.wg.Wait()
}

// send queues one packet from src to the node at addr, or loses it.
func (n *Network) send(src *Transport, b []byte, addr string) {
	n.nodesMu.RLock()
	dst := n.nodes[addr]
	n.nodesMu.RUnlock()
	n.mu.Lock()
	if n.closed || dst == nil || dst.isDown() || dst.detached.Load() || n.cfg.Loss > 0 && n.rng.Float64() < n.cfg.Loss {
		n.mu.Unlock()
		src.c.packetsLost.Add(1)
		return
	}
	delay := n.cfg.Latency
	if n.cfg.Jitter > 0 {
		delay += time.Duration(n.rng.Int64N(int64(n.cfg.Jitter)))
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: src.from}
	if delay <= 0 {
		n.mu.Unlock()
		dst.receive(p)
		return
	}
	n.seq++
	heap.Push(&n.pending, delayed{due: time.Now().Add(delay), seq: n.seq, to: dst, p: p})
	front := n.pending[0].seq == n.seq
	n.mu.Unlock()
	if front {
		select {
		case n.wake <- struct{}{}:
		default:
		}
	}
}

// deliverLoop hands each delayed packet to its receiver when it is due.
func (n *Network) deliverLoop() {
	defer n.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []delayed
	for {
		n.mu.Lock()
		now := time.Now()
		for len(n.pending) > 0 && !n.pending[0].due.After(now) {
			due = append(due, heap.Pop(&n.pending).(delayed))
		}
		wait := time.Hour
		if len(n.pending) > 0 {
			wait = n.pending[0].due.Sub(now)
		}
		n.mu.Unlock()
		for i, d := range due {
			d.to.receive(d.p)
			due[i] = delayed{}
		}
		due = due[:0]
		timer.Reset(wait)
		select {
		case <-n.done:
			return
		case <-n.wake:
		case <-timer.C:
		}
	}
}

// delayed is a packet waiting for its delivery time.
type delayed struct {
	due time.Time
	seq uint64 // keeps packets with one due time in send order
	to  *Transport
	p   *memberlist.Packet
}

type packetHeap []delayed

func (h packetHeap) Len() int { return len(h) }
func (h packetHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].seq < h[j].seq
}
func (h packetHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *packetHeap) Push(x any)   { *h = append(*h, x.(delayed)) }
func (h *packetHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Counters are what one node sent and received. A stream counts once, at
// the side that opened it (StreamsOut) and the side that accepted it
// (StreamsIn); its bytes count in the direction they went.
type Counters struct {
	PacketsOut, PacketsIn uint64
	// PacketsLost were sent but lost on the way (loss, or no such node).
	PacketsLost uint64
	// PacketsDropped arrived at this node while its queue was full.
	PacketsDropped                uint64
	StreamsOut, StreamsIn         uint64
	BytesOut, BytesIn             uint64 // packets and streams
	StreamBytesOut, StreamBytesIn uint64
}

func (c *Counters) add(o Counters) {
	c.PacketsOut += o.PacketsOut
	c.PacketsIn += o.PacketsIn
	c.PacketsLost += o.PacketsLost
	c.PacketsDropped += o.PacketsDropped
	c.StreamsOut += o.StreamsOut
	c.StreamsIn += o.StreamsIn
	c.BytesOut += o.BytesOut
	c.BytesIn += o.BytesIn
	c.StreamBytesOut += o.StreamBytesOut
	c.StreamBytesIn += o.StreamBytesIn
}

type counters struct {
	packetsOut, packetsIn, packetsLost, packetsDropped atomic.Uint64
	streamsOut, streamsIn                              atomic.Uint64
	bytesOut, bytesIn                                  atomic.Uint64
	streamBytesOut, streamBytesIn                      atomic.Uint64
}

// Transport is one node's memberlist.NodeAwareTransport on a Network.
type Transport struct {
	net     *Network
	addr    netip.AddrPort
	from    *net.UDPAddr
	packets chan *memberlist.Packet
	streams chan net.Conn
	c       counters

	mu     sync.Mutex // guards conns and the closing of down
	conns  map[*conn]struct{}
	down   chan struct{} // closed when killed or shut down
	killed atomic.Bool   // down by Kill: dials to it time out
	// detached: the node's link is down for now (see Detach).
	detached atomic.Bool
}

// Detach takes the node's link down until Attach: it sends and receives no
// packets and dials from and to it are refused. A simulation uses it to let
// a node set up its state before anyone can reach it.
func (t *Transport) Detach() { t.detached.Store(true) }

// Attach brings the node's link back up.
func (t *Transport) Attach() { t.detached.Store(false) }

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// Addr is the node's "ip:port".
func (t *Transport) Addr() string { return t.addr.String() }

// Counters returns what this node sent and received so far.
func (t *Transport) Counters() Counters {
	return Counters{
		PacketsOut: t.c.packetsOut.Load(), PacketsIn: t.c.packetsIn.Load(),
		PacketsLost: t.c.packetsLost.Load(), PacketsDropped: t.c.packetsDropped.Load(),
		StreamsOut: t.c.streamsOut.Load(), StreamsIn: t.c.streamsIn.Load(),
		BytesOut: t.c.bytesOut.Load(), BytesIn: t.c.bytesIn.Load(),
		StreamBytesOut: t.c.streamBytesOut.Load(), StreamBytesIn: t.c.streamBytesIn.Load(),
	}
}

// FinalAdvertiseAddr returns the transport's own address; a configured
// advertise address must be that one.
func (t *Transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	own := net.IP(t.addr.Addr().AsSlice())
	if ip != "" && !net.ParseIP(ip).Equal(own) || port != 0 && port != int(t.addr.Port()) {
		return nil, 0, fmt.Errorf("memnet: transport is %s, config advertises %s", t.addr,
			net.JoinHostPort(ip, fmt.Sprint(port)))
	}
	return own, int(t.addr.Port()), nil
}

// WriteTo sends a packet. Like UDP it reports no error for a packet that is
// lost or that nobody receives.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	now := time.Now()
	if t.isDown() {
		return now, nil // a crashed host sends nothing
	}
	if t.detached.Load() {
		t.c.packetsLost.Add(1)
		return now, nil
	}
	t.c.packetsOut.Add(1)
	t.c.bytesOut.Add(uint64(len(b)))
	t.net.send(t, b, addr)
	return now, nil
}

// WriteToAddress sends a packet to addr.Addr.
func (t *Transport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, addr.Addr)
}

// PacketCh delivers the packets sent to this node.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// StreamCh delivers the connections opened to this node.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streams }

// receive queues a packet for memberlist, or drops it if the queue is full
// or this node is down.
func (t *Transport) receive(p *memberlist.Packet) {
	if t.isDown() || t.detached.Load() {
		return
	}
	p.Timestamp = time.Now()
	select {
	case t.packets <- p:
		t.c.packetsIn.Add(1)
		t.c.bytesIn.Add(uint64(len(p.Buf)))
	default:
		t.c.packetsDropped.Add(1)
	}
}

// DialTimeout opens a stream to addr after one latency. A dial to a killed
// node waits out the timeout, as to a host that does not answer; to an
// address without a transport it is refused at once.
func (t *Transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.isDown() {
		return nil, fmt.Errorf("memnet: dial %s from %s: %w", addr, t.addr, net.ErrClosed)
	}
	t.net.nodesMu.RLock()
	dst := t.net.nodes[addr]
	t.net.nodesMu.RUnlock()
	latency := time.Duration(t.net.latency.Load())
	if dst == nil || dst.detached.Load() || t.detached.Load() {
		return nil, fmt.Errorf("memnet: dial %s: %w", addr, ErrUnreachable)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	if latency > 0 {
		connect := time.NewTimer(latency)
		defer connect.Stop()
		select {
		case <-connect.C:
		case <-deadline.C:
			return nil, fmt.Errorf("memnet: dial %s: %w", addr, errTimeout)
		case <-t.down:
			return nil, fmt.Errorf("memnet: dial %s: %w", addr, net.ErrClosed)
		}
	}
	local, remote := net.Pipe()
	lc := &conn{Conn: local, owner: t, out: &t.c.streamBytesOut, in: &t.c.streamBytesIn, all: &t.c}
	rc := &conn{Conn: remote, owner: dst, out: &dst.c.streamBytesOut, in: &dst.c.streamBytesIn, all: &dst.c}
	if !t.track(lc) {
		return nil, fmt.Errorf("memnet: dial %s: %w", addr, net.ErrClosed)
	}
	if !dst.track(rc) {
		_ = lc.Close()
		if dst.killed.Load() {
			<-deadline.C // nobody answers
			return nil, fmt.Errorf("memnet: dial %s: %w", addr, errTimeout)
		}
		return nil, fmt.Errorf("memnet: dial %s: %w", addr, ErrUnreachable)
	}
	select {
	case dst.streams <- rc:
		t.c.streamsOut.Add(1)
		dst.c.streamsIn.Add(1)
		return lc, nil
	case <-deadline.C:
	case <-dst.down:
	case <-t.down:
	}
	_ = lc.Close()
	return nil, fmt.Errorf("memnet: dial %s: %w", addr, errTimeout)
}

// DialAddressTimeout dials addr.Addr.
func (t *Transport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(addr.Addr, timeout)
}

// Shutdown stops the node: it sends and receives nothing more and its
// connections are closed.
func (t *Transport) Shutdown() error {
	t.stop(false)
	return nil
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

var errTimeout net.Error = timeoutError{}

// stop takes the node down and breaks its connections; killed marks a
// crash (dials to it time out) rather than a shutdown (dials are refused).
func (t *Transport) stop(killed bool) {
	t.mu.Lock()
	if killed {
		t.killed.Store(true)
	}
	select {
	case <-t.down:
	default:
		close(t.down)
	}
	conns := t.conns
	t.conns = map[*conn]struct{}{}
	t.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
}

func (t *Transport) isDown() bool {
	select {
	case <-t.down:
		return true
	default:
		return false
	}
}

// track registers a connection end so that stop can break it; false if
// the node is already down.
func (t *Transport) track(c *conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.isDown() {
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *Transport) untrack(c *conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// conn is one end of a stream. Closing it also fails the other end's reads
// and writes (net.Pipe), as a reset would, so a node that goes down leaves
// no peer blocked on it.
type conn struct {
	net.Conn
	owner   *Transport
	out, in *atomic.Uint64
	all     *counters
	once    sync.Once
}

func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.in.Add(uint64(n))
	c.all.bytesIn.Add(uint64(n))
	return n, err
}

func (c *conn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.out.Add(uint64(n))
	c.all.bytesOut.Add(uint64(n))
	return n, err
}

func (c *conn) Close() error {
	c.once.Do(func() {
		c.owner.untrack(c)
		_ = c.Conn.Close()
	})
	return nil
}
