package memnet

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

func newTransports(t *testing.T, n *Network, addrs ...string) []*Transport {
	t.Helper()
	out := make([]*Transport, len(addrs))
	for i, a := range addrs {
		tr, err := n.Transport(a)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = tr
	}
	return out
}

func recv(t *testing.T, tr *Transport, within time.Duration) *memberlist.Packet {
	t.Helper()
	select {
	case p := <-tr.PacketCh():
		return p
	case <-time.After(within):
		t.Fatalf("%s received nothing within %v", tr.Addr(), within)
		return nil
	}
}

func noPacket(t *testing.T, tr *Transport, within time.Duration) {
	t.Helper()
	select {
	case p := <-tr.PacketCh():
		t.Fatalf("%s received %q from %s, want nothing", tr.Addr(), p.Buf, p.From)
	case <-time.After(within):
	}
}

func TestPacketDelivery(t *testing.T) {
	n := New(Config{})
	defer n.Close()
	ts := newTransports(t, n, "10.0.0.1:7947", "10.0.0.2:7947")
	a, b := ts[0], ts[1]
	buf := []byte("ping")
	if _, err := a.WriteTo(buf, b.Addr()); err != nil {
		t.Fatal(err)
	}
	buf[0] = 'X' // the network holds its own copy
	p := recv(t, b, time.Second)
	if string(p.Buf) != "ping" || p.From.String() != a.Addr() || p.Timestamp.IsZero() {
		t.Fatalf("got %q from %s at %v, want \"ping\" from %s with a timestamp", p.Buf, p.From, p.Timestamp, a.Addr())
	}
	// Nobody at the address: lost, like UDP, without an error.
	if _, err := a.WriteTo([]byte("x"), "10.0.0.9:7947"); err != nil {
		t.Fatal(err)
	}
	ca, cb := a.Counters(), b.Counters()
	if ca.PacketsOut != 2 || ca.PacketsLost != 1 || ca.BytesOut != 5 || cb.PacketsIn != 1 || cb.BytesIn != 4 {
		t.Fatalf("counters a=%+v b=%+v", ca, cb)
	}
	// A detached node neither sends nor receives until attached.
	b.Detach()
	_, _ = a.WriteTo([]byte("lost"), b.Addr())
	_, _ = b.WriteTo([]byte("lost"), a.Addr())
	noPacket(t, a, 20*time.Millisecond)
	noPacket(t, b, 20*time.Millisecond)
	if _, err := a.DialTimeout(b.Addr(), time.Second); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("dial to a detached node: %v, want %v", err, ErrUnreachable)
	}
	b.Attach()
	_, _ = a.WriteTo([]byte("back"), b.Addr())
	if p := recv(t, b, time.Second); string(p.Buf) != "back" {
		t.Fatalf("after Attach b got %q", p.Buf)
	}
	if _, err := n.Transport(a.Addr()); err == nil {
		t.Fatal("a second transport on a taken address was made")
	}
	if _, err := n.Transport("not-an-ip:1"); err == nil {
		t.Fatal("a transport on a host name was made")
	}
	if ip, port, err := a.FinalAdvertiseAddr("10.0.0.1", 7947); err != nil || !ip.Equal(net.IPv4(10, 0, 0, 1)) || port != 7947 {
		t.Fatalf("FinalAdvertiseAddr = %v %d %v", ip, port, err)
	}
	if _, _, err := a.FinalAdvertiseAddr("10.0.0.2", 7947); err == nil {
		t.Fatal("FinalAdvertiseAddr accepted another node's address")
	}
}

func TestLatencyOrdering(t *testing.T) {
	const latency, count = 30 * time.Millisecond, 50
	n := New(Config{Latency: latency})
	defer n.Close()
	ts := newTransports(t, n, "10.0.0.1:7947", "10.0.0.2:7947")
	start := time.Now()
	for i := range count {
		_, _ = ts[0].WriteTo([]byte{byte(i)}, ts[1].Addr())
	}
	for i := range count {
		p := recv(t, ts[1], 2*time.Second)
		if int(p.Buf[0]) != i {
			t.Fatalf("packet %d arrived as number %d: fixed latency must keep send order", p.Buf[0], i)
		}
		if d := p.Timestamp.Sub(start); d < latency {
			t.Fatalf("packet %d arrived after %v, before the latency %v", i, d, latency)
		}
	}

	// With jitter every packet still arrives, none before the fixed part.
	n.SetLatency(latency, 20*time.Millisecond)
	start = time.Now()
	for i := range count {
		_, _ = ts[0].WriteTo([]byte{byte(i)}, ts[1].Addr())
	}
	seen := map[byte]bool{}
	for range count {
		p := recv(t, ts[1], 2*time.Second)
		seen[p.Buf[0]] = true
		if d := p.Timestamp.Sub(start); d < latency {
			t.Fatalf("packet %d arrived after %v, before the latency %v", p.Buf[0], d, latency)
		}
	}
	if len(seen) != count {
		t.Fatalf("%d distinct packets arrived, want %d", len(seen), count)
	}
}

func TestLossRate(t *testing.T) {
	const sent, loss = 20000, 0.1
	n := New(Config{Loss: loss, Seed: 1})
	defer n.Close()
	ts := newTransports(t, n, "10.0.0.1:7947", "10.0.0.2:7947")
	var got atomic.Int64
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-ts[1].PacketCh():
				got.Add(1)
			case <-stop:
				return
			}
		}
	}()
	for i := range sent {
		_, _ = ts[0].WriteTo([]byte("p"), ts[1].Addr())
		if i%500 == 499 { // let the reader keep up: no queue overflow
			poll.True(t, 5*time.Second, "every packet not lost is received", func() bool {
				return uint64(got.Load())+ts[0].Counters().PacketsLost == uint64(i+1)
			})
		}
	}
	lost := ts[0].Counters().PacketsLost
	// 3 standard deviations of a binomial(20000, 0.1) are about 127.
	if want := uint64(sent * loss); lost < want-130 || lost > want+130 {
		t.Fatalf("%d of %d packets lost at loss %v, want %d±130", lost, sent, loss, want)
	}
	if d := ts[1].Counters().PacketsDropped; d != 0 {
		t.Fatalf("%d packets dropped by a receiver that keeps up", d)
	}

	// Loss set at run time applies to the next packets.
	n.SetLoss(0)
	before := got.Load()
	for range 100 {
		_, _ = ts[0].WriteTo([]byte("p"), ts[1].Addr())
	}
	poll.True(t, 5*time.Second, "all 100 packets arrive at loss 0", func() bool { return got.Load() == before+100 })
}

func TestKilledNode(t *testing.T) {
	n := New(Config{Latency: time.Millisecond})
	defer n.Close()
	ts := newTransports(t, n, "10.0.0.1:7947", "10.0.0.2:7947", "10.0.0.3:7947")
	a, b, c := ts[0], ts[1], ts[2]

	// An open stream between a and b breaks when b dies.
	go func() {
		if s, ok := <-b.StreamCh(); ok {
			_, _ = io.Copy(io.Discard, s)
		}
	}()
	s, err := a.DialTimeout(b.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	n.Kill(b.Addr())
	_ = s.SetDeadline(time.Now().Add(time.Second))
	if _, err := s.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("write on a stream to a killed node: %v, want %v", err, io.ErrClosedPipe)
	}

	_, _ = a.WriteTo([]byte("to b"), b.Addr())
	_, _ = b.WriteTo([]byte("from b"), c.Addr())
	noPacket(t, b, 50*time.Millisecond)
	noPacket(t, c, 50*time.Millisecond)
	if out := b.Counters().PacketsOut; out != 0 {
		t.Fatalf("a killed node sent %d packets", out)
	}

	// A dial to a killed host gets no answer until the timeout.
	start := time.Now()
	_, err = a.DialTimeout(b.Addr(), 100*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || time.Since(start) < 100*time.Millisecond {
		t.Fatalf("dial to a killed node: %v after %v, want a timeout after 100ms", err, time.Since(start))
	}
	if _, err := b.DialTimeout(a.Addr(), time.Second); err == nil {
		t.Fatal("a killed node dialled out")
	}

	// The others still talk; a shut down node refuses at once.
	_, _ = a.WriteTo([]byte("to c"), c.Addr())
	if p := recv(t, c, time.Second); string(p.Buf) != "to c" {
		t.Fatalf("c got %q", p.Buf)
	}
	_ = c.Shutdown()
	if _, err := a.DialTimeout(c.Addr(), time.Minute); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("dial to a shut down node: %v, want %v", err, ErrUnreachable)
	}
}

func TestStreamsBothWays(t *testing.T) {
	n := New(Config{Latency: 5 * time.Millisecond})
	defer n.Close()
	ts := newTransports(t, n, "10.0.0.1:7947", "10.0.0.2:7947")
	a, b := ts[0], ts[1]
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // b answers "pong" to "ping"
		defer wg.Done()
		s := <-b.StreamCh()
		defer s.Close()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
			t.Errorf("b read %q, %v", buf, err)
			return
		}
		_, _ = s.Write([]byte("pong"))
	}()
	start := time.Now()
	s, err := a.DialAddressTimeout(memberlist.Address{Addr: b.Addr(), Name: "b"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 5*time.Millisecond {
		t.Fatalf("connect took %v, less than the latency", d)
	}
	if _, err := s.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("a read %q, %v", buf, err)
	}
	_ = s.Close()
	wg.Wait()
	ca, cb := a.Counters(), b.Counters()
	if ca.StreamsOut != 1 || cb.StreamsIn != 1 || ca.StreamBytesOut != 4 || ca.StreamBytesIn != 4 || cb.StreamBytesOut != 4 || cb.StreamBytesIn != 4 {
		t.Fatalf("counters a=%+v b=%+v", ca, cb)
	}
	if _, err := a.DialTimeout("10.0.0.9:7947", time.Second); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("dial to nobody: %v, want %v", err, ErrUnreachable)
	}
}

// TestShutdownLeavesNoGoroutines runs a small memberlist cluster on the
// network with latency and jitter, then shuts it all down: the goroutine
// count must come back to where it was.
func TestShutdownLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	n := New(Config{Latency: 2 * time.Millisecond, Jitter: time.Millisecond, Seed: 7})
	var lists []*memberlist.Memberlist
	for i := range 5 {
		addr := fmt.Sprintf("10.0.0.%d:7947", i+1)
		tr, err := n.Transport(addr)
		if err != nil {
			t.Fatal(err)
		}
		mc := memberlist.DefaultLocalConfig()
		mc.Name = fmt.Sprintf("n%d", i)
		mc.Transport = tr
		mc.AdvertiseAddr, mc.AdvertisePort = fmt.Sprintf("10.0.0.%d", i+1), 7947
		mc.BindPort = 7947
		mc.ProbeInterval, mc.GossipInterval, mc.PushPullInterval = 50*time.Millisecond, 20*time.Millisecond, 200*time.Millisecond
		mc.Logger = log.New(io.Discard, "", 0)
		ml, err := memberlist.Create(mc)
		if err != nil {
			t.Fatal(err)
		}
		lists = append(lists, ml)
		if i > 0 {
			if _, err := ml.Join([]string{"10.0.0.1:7947"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	poll.True(t, 10*time.Second, "5 members everywhere", func() bool {
		for _, ml := range lists {
			if ml.NumMembers() != 5 {
				return false
			}
		}
		return true
	})
	// A crashed member is found dead by the others.
	n.Kill("10.0.0.5:7947")
	poll.True(t, 10*time.Second, "killed member declared dead", func() bool {
		for _, ml := range lists[:4] {
			if ml.NumMembers() != 4 {
				return false
			}
		}
		return true
	})
	if tot := n.Totals(); tot.PacketsIn == 0 || tot.StreamsIn == 0 {
		t.Fatalf("totals %+v: memberlist used no packets or no streams", tot)
	}
	for _, ml := range lists {
		_ = ml.Shutdown()
	}
	n.Close()
	n.Close() // idempotent
	poll.True(t, 10*time.Second, "goroutines back to the start", func() bool { return runtime.NumGoroutine() <= before })
}

// BenchmarkDelayedDelivery compares the Network's heap and one delivery
// goroutine against a time.AfterFunc per packet, at the packet rate of an
// idle 1,000-node cluster (about 4,000 packets/s: a probe and its ack per
// node per second) over 1 s, with 1 ms latency. Reported: CPU per packet.
//
//	go test ./internal/memnet -run XXX -bench DelayedDelivery -benchtime 3x
func BenchmarkDelayedDelivery(b *testing.B) {
	const rate, latency = 4000, time.Millisecond
	sink := make(chan *memberlist.Packet, packetQueueLen)
	drain := func(stop chan struct{}) {
		for {
			select {
			case <-sink:
			case <-stop:
				return
			}
		}
	}
	run := func(b *testing.B, send func(p *memberlist.Packet)) {
		for range b.N {
			stop := make(chan struct{})
			go drain(stop)
			cpu0 := cpuTime()
			tick := time.NewTicker(time.Second / 100)
			for range 100 {
				<-tick.C
				for range rate / 100 {
					send(&memberlist.Packet{Buf: []byte("x")})
				}
			}
			tick.Stop()
			time.Sleep(10 * latency)
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/rate, "cpu-ns/packet")
			close(stop)
		}
	}
	b.Run("heap", func(b *testing.B) {
		n := New(Config{Latency: latency})
		defer n.Close()
		a, _ := n.Transport("10.0.0.1:1")
		dst, _ := n.Transport("10.0.0.2:1")
		dst.packets = sink
		run(b, func(p *memberlist.Packet) { _, _ = a.WriteTo(p.Buf, "10.0.0.2:1") })
	})
	b.Run("afterfunc", func(b *testing.B) {
		run(b, func(p *memberlist.Packet) {
			p.Buf = append([]byte(nil), p.Buf...)
			time.AfterFunc(latency, func() {
				p.Timestamp = time.Now()
				select {
				case sink <- p:
				default:
				}
			})
		})
	})
}

// cpuTime is the process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
