package cluster

import (
	"fmt"
	"net"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// firstSeen records when each VNI was first reported to a node's handler.
type firstSeen struct {
	mu   sync.Mutex
	seen map[uint32]time.Time
}

func (f *firstSeen) EndpointsChanged(vni uint32) {
	now := time.Now()
	f.mu.Lock()
	if f.seen == nil {
		f.seen = map[uint32]time.Time{}
	}
	if _, ok := f.seen[vni]; !ok {
		f.seen[vni] = now
	}
	f.mu.Unlock()
}

func (f *firstSeen) at(vni uint32) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.seen[vni]
	return t, ok
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkPropagation measures the time until an endpoint published on
// one node is known on every other node (all of them have its network), at 10, 50 and 100 memberlist
// instances in this process on 127.0.0.1. Each sample uses a fresh VNI so
// the first handler call on a node marks arrival. Defaults otherwise
// (DeadTimeout 10s => probe 1s, gossip 200ms, push/pull 30s).
//
//	go test ./cluster -run XXX -bench Propagation -benchtime 1x
func BenchmarkPropagation(b *testing.B) {
	for _, n := range []int{10, 50, 100} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			const samples = 60
			for range b.N {
				hs := make([]*firstSeen, n)
				nodes := make([]*Cluster, n)
				var vnis []uint32
				for s := range samples {
					vnis = append(vnis, uint32(1000+s))
				}
				for i := range n {
					hs[i] = &firstSeen{}
					o := nodeOpts{dead: 10 * time.Second, nets: vnis}
					if i > 0 {
						o.peers = []string{addr(nodes[0])}
					}
					nodes[i] = startNode(b, fmt.Sprintf("n%d", i), o, hs[i])
				}
				deadline := time.Now().Add(60 * time.Second)
				for {
					var counts []int
					ok := true
					for _, c := range nodes {
						a := int(c.alive.Load())
						counts = append(counts, a)
						ok = ok && a == n
					}
					if ok {
						break
					}
					if time.Now().After(deadline) {
						b.Fatalf("no full membership after 60s; alive counts per node: %v", counts)
					}
					time.Sleep(50 * time.Millisecond)
				}
				// Every node must know every other's networks (which is what
				// makes it an audience) before an add is timed.
				poll.True(b, 60*time.Second, "every node knows every network definition", func() bool {
					for _, c := range nodes {
						if len(c.Networks()) != n*len(vnis) {
							return false
						}
					}
					return true
				})
				var all, each []time.Duration
				for s := range samples {
					vni := uint32(1000 + s)
					src := s % n
					start := time.Now()
					ep := Endpoint{VNI: vni, ID: "bench", IP: net.IPv4(10, 1, 0, 2), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}
					if _, err := nodes[src].PublishEndpoint(ep); err != nil {
						b.Fatal(err)
					}
					var last time.Duration
					poll.True(b, 30*time.Second, "endpoint known everywhere", func() bool {
						for i := range n {
							if i == src {
								continue
							}
							if _, ok := hs[i].at(vni); !ok {
								return false
							}
						}
						return true
					})
					for i := range n {
						if i == src {
							continue
						}
						at, _ := hs[i].at(vni)
						d := at.Sub(start)
						each = append(each, d)
						last = max(last, d)
					}
					all = append(all, last)
				}
				b.ReportMetric(float64(percentile(all, 0.5).Microseconds())/1000, "all-p50-ms")
				b.ReportMetric(float64(percentile(all, 0.99).Microseconds())/1000, "all-p99-ms")
				b.ReportMetric(float64(percentile(each, 0.5).Microseconds())/1000, "node-p50-ms")
				b.ReportMetric(float64(percentile(each, 0.99).Microseconds())/1000, "node-p99-ms")
				for _, c := range nodes {
					c.Shutdown()
				}
			}
		})
	}
}

// BenchmarkJoinLearn measures how long a new node takes to learn 10,000
// existing endpoints held by 10 nodes (1,000 each, over 10 VNIs).
//
//	go test ./cluster -run XXX -bench JoinLearn -benchtime 1x
func BenchmarkJoinLearn(b *testing.B) {
	const owners, per, vnis = 10, 1000, 10
	for range b.N {
		nets := []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
		nodes := startCluster(b, owners, nodeOpts{dead: 10 * time.Second, nets: nets})
		for i, c := range nodes {
			for j := range per {
				ip := net.IPv4(10, byte(i), byte(j>>8), byte(j&0xff)+1)
				id := fmt.Sprintf("%064x", i*per+j)
				ep := Endpoint{VNI: uint32(1 + j%vnis), ID: id, IP: ip, MAC: net.HardwareAddr{2, 0, 0, byte(i), byte(j >> 8), byte(j)}}
				if _, err := c.PublishEndpoint(ep); err != nil {
					b.Fatal(err)
				}
			}
		}
		total := func(c *Cluster) int {
			n := 0
			for v := range vnis {
				n += len(c.Endpoints(uint32(1 + v)))
			}
			return n
		}
		poll.True(b, 60*time.Second, "existing nodes converge", func() bool { return total(nodes[0]) == (owners-1)*per })
		start := time.Now()
		joiner := startNode(b, "joiner", nodeOpts{dead: 10 * time.Second, nets: nets, peers: []string{addr(nodes[0])}}, nil)
		d := poll.True(b, 60*time.Second, "joiner learns 10,000 endpoints", func() bool { return total(joiner) == owners*per })
		_ = start
		b.ReportMetric(float64(d.Microseconds())/1000, "learn-10k-ms")
		b.ReportMetric(float64(len(encodeState(func() stateMsg {
			joiner.mu.Lock()
			defer joiner.mu.Unlock()
			return joiner.t.snapshot(1, 0, cover{cluster: true, nets: map[uint32]struct{}{1: {}, 2: {}, 3: {}, 4: {}, 5: {}, 6: {}, 7: {}, 8: {}, 9: {}, 10: {}}}, false)
		}())))/1024, "state-KiB")
		for _, c := range append(nodes, joiner) {
			c.Shutdown()
		}
	}
}

// BenchmarkTableMemory measures the heap one node spends on 10,000 remote
// endpoints (10 owners with 1,000 each over 10 VNIs, 64-character IDs as
// Docker's), received as full states through the real receive path, without
// names and with 4 names of 12 characters each.
//
//	go test ./cluster -run XXX -bench TableMemory -benchtime 3x
func BenchmarkTableMemory(b *testing.B) {
	const owners, per = 10, 1000
	for _, names := range []int{0, 4} {
		b.Run(fmt.Sprintf("names=%d", names), func(b *testing.B) {
			states := make([][]byte, owners)
			for i := range owners {
				g := ownerRecords{Owner: fmt.Sprintf("n%d", i)}
				for j := range per {
					n := i*per + j
					ep := Endpoint{VNI: uint32(1 + j%10), ID: fmt.Sprintf("%064x", n), IP: net.IPv4(10, byte(i), byte(j>>8), byte(j)),
						MAC: net.HardwareAddr{2, 0, 0, byte(i), byte(j >> 8), byte(j)}, VTEP: net.IPv4(10, 98, 0, byte(i+1)), Created: uint64(n + 1)}
					for k := range names {
						ep.Names = append(ep.Names, fmt.Sprintf("c%d-%05d-app", k, n)) // 12 characters
					}
					g.Recs = append(g.Recs, wireRecord{Kind: kindEndpoint, Key: endpointKey(ep.VNI, ep.ID), Version: uint64(n + 1), Value: encodeEndpointValue(ep)})
				}
				states[i] = encodeState(stateMsg{Sender: g.Owner, Clock: 1 << 40, Owners: []ownerRecords{g}})
			}
			var perEP float64
			for range b.N {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				c := newTestCluster("self")
				haveNets(b, c, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
				for i := range owners {
					c.t.setAlive(fmt.Sprintf("n%d", i), true, nil)
				}
				for _, st := range states {
					c.handleState(st[1:])
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				if live, _ := c.t.count(); live != owners*per+10 || c.Stats().RecordsMalformed != 0 {
					b.Fatalf("table holds %d records (%d malformed), want %d", live, c.Stats().RecordsMalformed, owners*per)
				}
				perEP = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / (owners * per)
				runtime.KeepAlive(c)
			}
			b.ReportMetric(perEP, "B/endpoint")
			b.ReportMetric(perEP*owners*per/(1<<20), "MiB/10k")
			b.ReportMetric(float64(len(states[0]))/per, "wire-B/endpoint")
		})
	}
}
