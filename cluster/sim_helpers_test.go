package cluster

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/vxovl/vxovl/internal/memnet"
	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// The simulation runs real Cluster instances on a memnet network and
// drives them only through the public API (New with Config.Tune setting the
// transport, PublishNetwork, PublishEndpoint, Endpoints, Members, Shutdown)
// and memnet's counters, so that it measures whatever the cluster core is.

// simParams sizes one simulation run.
type simParams struct {
	nodes       int
	networks    int // VNIs in the cluster; each node has netsPerNode of them
	netsPerNode int
	epsPerNode  int // spread round-robin over the node's networks
	dead        time.Duration
	latency     time.Duration // one-way, plus up to jitter
	jitter      time.Duration
	loss        float64 // packet loss of the loss phase

	batch      int           // nodes started before waiting for the seeds to see them
	samples    int           // endpoint adds timed, with and without loss
	burst      int           // publishes of the message-count burst
	burstSpan  time.Duration // window over which the burst's messages are counted
	idle       time.Duration // idle window for CPU and background messages
	settle     time.Duration // quiet time after formation and between phases
	formBound  time.Duration // bound of formation
	waitBound  time.Duration // bound of each propagation wait
	lossBound  time.Duration // wait for an add under loss before it counts as late
	repairWait time.Duration // bound for every record to arrive after the loss phase
}

// simEP names one endpoint cluster-wide.
type simEP struct{ node, id string }

type simNode struct {
	name string
	addr string // "ip:port" on the memnet network
	tr   *memnet.Transport
	c    *Cluster
	h    *simHandler
	vnis []uint32
	dead bool
}

type sim struct {
	tb     testing.TB
	p      simParams
	net    *memnet.Network
	nodes  []*simNode
	seeds  []string
	rng    *rand.Rand
	nextEP uint32
	// want holds, per VNI, the live endpoints that every node having the VNI
	// must list (less its own); has holds the nodes that have the VNI.
	want map[uint32]map[simEP]struct{}
	has  map[uint32][]*simNode
}

const simPort = 7947

func newSim(tb testing.TB, p simParams) *sim {
	if p.networks < p.netsPerNode {
		tb.Fatalf("simulation: %d networks, fewer than %d per node", p.networks, p.netsPerNode)
	}
	s := &sim{
		tb: tb, p: p,
		net:  memnet.New(memnet.Config{Latency: p.latency, Jitter: p.jitter, Seed: 1}),
		rng:  rand.New(rand.NewPCG(2, 3)),
		want: map[uint32]map[simEP]struct{}{},
		has:  map[uint32][]*simNode{},
	}
	tb.Cleanup(s.shutdown)
	return s
}

// networksOf is node i's VNIs: i, i+stride, i+2*stride, ... (mod networks),
// which puts nodes*netsPerNode/networks nodes in every network (20 at 1,000
// nodes and 500 networks) and gives neighbouring nodes overlapping sets.
func (s *sim) networksOf(i int) []uint32 {
	stride := s.p.networks / s.p.netsPerNode
	out := make([]uint32, s.p.netsPerNode)
	for j := range out {
		out[j] = uint32(100 + (i+j*stride)%s.p.networks)
	}
	return out
}

func simAddr(i int) (net.IP, string) {
	ip := net.IPv4(172, 16, byte(i/250), byte(i%250+1)).To4()
	return ip, net.JoinHostPort(ip.String(), strconv.Itoa(simPort))
}

// newEndpoint is a fresh endpoint of vni with a cluster-wide unique IP and
// MAC and a 64-character ID, as Docker's.
func (s *sim) newEndpoint(vni uint32) Endpoint {
	s.nextEP++
	n := s.nextEP
	return Endpoint{
		VNI: vni, ID: fmt.Sprintf("%064x", n),
		IP:  net.IPv4(10, byte(n>>16), byte(n>>8), byte(n)),
		MAC: net.HardwareAddr{2, 0x42, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)},
	}
}

// publish publishes a new endpoint of vni on n and records it as wanted.
func (s *sim) publish(n *simNode, vni uint32) simEP {
	s.tb.Helper()
	ep, err := n.c.PublishEndpoint(s.newEndpoint(vni))
	if err != nil {
		s.tb.Fatalf("%s: %v", n.name, err)
	}
	r := simEP{n.name, ep.ID}
	s.want[vni][r] = struct{}{}
	return r
}

// start makes node i (i == len(s.nodes)), publishes its networks and its
// endpoints right after New, as the driver does on restore, and only then
// lets it reach the seeds, which it joins in the background (New's first
// join attempt may fail and be retried after 500ms).
func (s *sim) start(eps int) *simNode {
	s.tb.Helper()
	i := len(s.nodes)
	ip, addr := simAddr(i)
	tr, err := s.net.Transport(addr)
	if err != nil {
		s.tb.Fatal(err)
	}
	// Unreachable until its records are in place, so that it publishes to
	// nobody and its joins carry them.
	tr.Detach()
	defer tr.Attach()
	n := &simNode{name: fmt.Sprintf("n%04d", i), addr: addr, tr: tr, h: &simHandler{}, vnis: s.networksOf(i)}
	var peers []string
	for _, a := range s.seeds {
		if a != addr {
			peers = append(peers, a)
		}
	}
	cfg := Config{
		NodeName: n.name, BindAddr: ip.String(), BindPort: simPort, AdvertiseAddr: ip,
		Peers: peers, DeadTimeout: s.p.dead, Logger: discardLogger(),
		Tune: func(mc *memberlist.Config) { mc.Transport = tr },
	}
	c, err := New(cfg, n.h)
	if err != nil {
		s.tb.Fatalf("start %s: %v", n.name, err)
	}
	n.c = c
	n.h.c.Store(c)
	s.nodes = append(s.nodes, n)
	for _, v := range n.vnis {
		if err := c.PublishNetwork(Network{VNI: v, Subnet: "10.0.0.0/8", MTU: 1450}); err != nil {
			s.tb.Fatalf("%s: %v", n.name, err)
		}
		if s.want[v] == nil {
			s.want[v] = map[simEP]struct{}{}
		}
		s.has[v] = append(s.has[v], n)
	}
	for e := range eps {
		s.publish(n, n.vnis[e%len(n.vnis)])
	}
	return n
}

func (s *sim) shutdown() {
	var wg sync.WaitGroup
	for _, n := range s.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); _ = n.c.Shutdown() }()
	}
	wg.Wait()
	s.net.Close()
}

func (s *sim) alive() []*simNode {
	var out []*simNode
	for _, n := range s.nodes {
		if !n.dead {
			out = append(out, n)
		}
	}
	return out
}

// complete reports whether n lists every wanted endpoint of vni and no
// other, and if not, what differs.
func (s *sim) complete(n *simNode, vni uint32) (bool, string) {
	got := n.c.Endpoints(vni)
	want := 0
	for r := range s.want[vni] {
		if r.node != n.name {
			want++
		}
	}
	extra := 0
	for _, e := range got {
		if _, ok := s.want[vni][simEP{e.Node, e.ID}]; !ok {
			extra++
		}
	}
	if len(got)-extra == want && extra == 0 {
		return true, ""
	}
	return false, fmt.Sprintf("%s VNI %d lists %d of %d endpoints and %d unwanted", n.name, vni, len(got)-extra, want, extra)
}

// converge waits until every live node has every other live node as a
// member and lists exactly the wanted endpoints of each of its networks.
// Nodes found complete are not checked again, so a poll costs about one
// node's check.
func (s *sim) converge(bound time.Duration, what string) time.Duration {
	s.tb.Helper()
	nodes := s.alive()
	next := 0
	start, logged := time.Now(), time.Now()
	return poll.Until(s.tb, bound, what, func() (bool, string) {
		why := func() string {
			for ; next < len(nodes); next++ {
				n := nodes[next]
				if m := len(n.c.Members()); m != len(nodes) {
					return fmt.Sprintf("%d of %d nodes done; %s has %d of %d members", next, len(nodes), n.name, m, len(nodes))
				}
				for _, v := range n.vnis {
					if ok, why := s.complete(n, v); !ok {
						return fmt.Sprintf("%d of %d nodes done; %s", next, len(nodes), why)
					}
				}
			}
			return ""
		}()
		if why != "" && time.Since(logged) > 30*time.Second {
			s.tb.Logf("%s: after %v: %s", what, time.Since(start).Round(time.Second), why)
			logged = time.Now()
		}
		return why == "", why
	})
}

// simHandler times, for the watches placed on its node, when Endpoints
// first satisfied them: on each EndpointsChanged of a watched VNI it reads
// Endpoints (the call may be for an unrelated change).
type simHandler struct {
	c       atomic.Pointer[Cluster]
	mu      sync.Mutex
	watches map[uint32][]*watch
}

type watch struct {
	node *simNode
	vni  uint32
	cond func([]Endpoint) bool
	mu   sync.Mutex
	at   time.Time // zero until cond held
}

func (w *watch) check(eps []Endpoint, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.at.IsZero() && w.cond(eps) {
		w.at = now
	}
	return !w.at.IsZero()
}

func (w *watch) done() (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.at, !w.at.IsZero()
}

func (h *simHandler) add(w *watch) {
	h.mu.Lock()
	if h.watches == nil {
		h.watches = map[uint32][]*watch{}
	}
	h.watches[w.vni] = append(h.watches[w.vni], w)
	h.mu.Unlock()
}

func (h *simHandler) EndpointsChanged(vni uint32) {
	h.mu.Lock()
	ws := slices.Clone(h.watches[vni])
	h.mu.Unlock()
	c := h.c.Load()
	if len(ws) == 0 || c == nil {
		return
	}
	eps, now := c.Endpoints(vni), time.Now()
	for _, w := range ws {
		w.check(eps, now)
	}
	h.mu.Lock()
	h.watches[vni] = slices.DeleteFunc(h.watches[vni], func(w *watch) bool { _, ok := w.done(); return ok })
	h.mu.Unlock()
}

// watchAll places a watch for cond on vni on every live node having vni
// but except.
func (s *sim) watchAll(vni uint32, except string, cond func([]Endpoint) bool) []*watch {
	var ws []*watch
	for _, n := range s.has[vni] {
		if n.dead || n.name == except {
			continue
		}
		w := &watch{node: n, vni: vni, cond: cond}
		n.h.add(w)
		ws = append(ws, w)
	}
	return ws
}

// await waits until every watch held. Watches the handler missed are
// checked by polling (they get the poll's time).
func (s *sim) await(ws []*watch, bound time.Duration, what string) {
	s.tb.Helper()
	poll.Until(s.tb, bound, what, s.held(ws))
}

// held is the condition that every watch held.
func (s *sim) held(ws []*watch) func() (bool, string) {
	return func() (bool, string) {
		pending := 0
		var first *watch
		for _, w := range ws {
			if _, ok := w.done(); ok {
				continue
			}
			if !w.check(w.node.c.Endpoints(w.vni), time.Now()) {
				pending++
				first = w
			}
		}
		if pending == 0 {
			return true, ""
		}
		return false, fmt.Sprintf("%d of %d nodes still waiting, e.g. %s on VNI %d", pending, len(ws), first.node.name, first.vni)
	}
}

func listed(r simEP) func([]Endpoint) bool {
	return func(eps []Endpoint) bool {
		return slices.ContainsFunc(eps, func(e Endpoint) bool { return e.Node == r.node && e.ID == r.id })
	}
}

// addLatencies publishes samples endpoints, one at a time on a random live
// node in one of its networks, and returns for each the time until every
// node having the network listed it (all) and the times of each node. With
// soft set, a sample not complete within the wait bound counts as taking
// the bound (late counts them) and anti-entropy is left to bring it.
func (s *sim) addLatencies(samples int, soft bool) (all, each []time.Duration, late int) {
	s.tb.Helper()
	nodes := s.alive()
	for range samples {
		n := nodes[s.rng.IntN(len(nodes))]
		v := n.vnis[s.rng.IntN(len(n.vnis))]
		ep := s.newEndpoint(v)
		ws := s.watchAll(v, n.name, listed(simEP{n.name, ep.ID}))
		start := time.Now()
		pub, err := n.c.PublishEndpoint(ep)
		if err != nil {
			s.tb.Fatalf("%s: %v", n.name, err)
		}
		s.want[v][simEP{n.name, pub.ID}] = struct{}{}
		what := fmt.Sprintf("endpoint added on %s known on every node of VNI %d", n.name, v)
		if !soft {
			s.await(ws, s.p.waitBound, what)
		} else if !s.within(s.p.lossBound, s.held(ws)) {
			s.tb.Logf("late: %s after %v", what, s.p.lossBound)
			late++
		}
		var last time.Duration
		for _, w := range ws {
			d := s.p.lossBound
			if at, ok := w.done(); ok {
				d = at.Sub(start)
			}
			each = append(each, d)
			last = max(last, d)
		}
		all = append(all, last)
	}
	return all, each, late
}

// within reports whether cond held within bound, polling as poll.Until.
func (s *sim) within(bound time.Duration, cond func() (bool, string)) bool {
	ok := true
	poll.Until(softFail{s.tb, &ok}, bound, "", cond)
	return ok
}

// softFail turns poll's failure into a flag.
type softFail struct {
	testing.TB
	ok *bool
}

func (f softFail) Helper()               {}
func (f softFail) Fatalf(string, ...any) { *f.ok = false }

// report logs a figure at once (a later failure keeps it in the log) and
// reports it as a benchmark metric.
func (s *sim) report(v float64, unit string) {
	s.tb.Logf("%s: %.4g", unit, v)
	if b, ok := s.tb.(*testing.B); ok {
		b.ReportMetric(v, unit)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// cpuTime is the process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// maxSimHeap stops a simulation whose heap outgrows what this shared
// machine can give (VXOVL_SIM_MAX_HEAP_GB, default 8), rather than have the
// kernel kill it or its neighbours.
func maxSimHeap() uint64 {
	gb := 8.0
	if v, err := strconv.ParseFloat(os.Getenv("VXOVL_SIM_MAX_HEAP_GB"), 64); err == nil && v > 0 {
		gb = v
	}
	return uint64(gb * (1 << 30))
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
