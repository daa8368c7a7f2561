package dnsserver

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// benchRecords is n endpoints of a /16 with three names each, as Docker
// gives them: container name, hostname (short ID) and a service alias
// shared by groups of ten.
func benchRecords(n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = Record{
			Names: []string{fmt.Sprintf("app_web_%d", i), fmt.Sprintf("%012x", 0xc0ffee000000+i), fmt.Sprintf("svc%d", i/10)},
			IP:    netip.AddrFrom4([4]byte{10, 20, byte((i + 2) >> 8), byte(i + 2)}),
		}
	}
	return recs
}

var benchSubnet = netip.MustParsePrefix("10.20.0.0/16")

// BenchmarkTable10k builds the table of 10,000 endpoints and reports the
// heap it holds (B/table) beyond the records' own strings, which it shares.
func BenchmarkTable10k(b *testing.B) {
	recs := benchRecords(10000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tab, err := NewTable("app", benchSubnet, recs)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := after.HeapAlloc - before.HeapAlloc
	runtime.KeepAlive(tab)
	runtime.KeepAlive(recs)

	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := NewTable("app", benchSubnet, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(held), "B/table")
	b.ReportMetric(float64(held)/10000, "B/endpoint")
}

// BenchmarkRespond is the CPU cost of one local answer, without sockets.
func BenchmarkRespond(b *testing.B) {
	tab, err := NewTable("app", benchSubnet, benchRecords(10000))
	if err != nil {
		b.Fatal(err)
	}
	s, err := newServer(Config{ResolvConf: filepath.Join(b.TempDir(), "none")}, tab, nil)
	if err != nil {
		b.Fatal(err)
	}
	raw, _ := question("app_web_4242.app.", dns.TypeA, 1232).Pack()
	b.ReportAllocs()
	for b.Loop() {
		if reply, _ := s.respond(raw, false); reply == nil {
			b.Fatal("no reply")
		}
	}
}

func benchServer(b *testing.B) string {
	b.Helper()
	tab, err := NewTable("app", benchSubnet, benchRecords(10000))
	if err != nil {
		b.Fatal(err)
	}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s, err := Serve(Config{ResolvConf: filepath.Join(b.TempDir(), "none")}, tab, pc, ln)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return pc.LocalAddr().String()
}

// udpAsker sends one query at a time over its own UDP socket.
type udpAsker struct {
	c     net.Conn
	query []byte
	buf   []byte
}

func newAsker(b *testing.B, addr string) *udpAsker {
	c, err := net.Dial("udp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	q, _ := question("svc42.app.", dns.TypeA, 0).Pack() // 10 addresses
	return &udpAsker{c: c, query: q, buf: make([]byte, 1500)}
}

func (a *udpAsker) ask() error {
	if _, err := a.c.Write(a.query); err != nil {
		return err
	}
	_ = a.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := a.c.Read(a.buf)
	if err != nil {
		return err
	}
	if n < headerLen || a.buf[3]&0xf != dns.RcodeSuccess {
		return fmt.Errorf("bad answer %x", a.buf[:n])
	}
	return nil
}

// BenchmarkAnswerUDP is the latency of one local answer over loopback, a
// query at a time (ns/op), client and server in this process.
func BenchmarkAnswerUDP(b *testing.B) {
	a := newAsker(b, benchServer(b))
	for b.Loop() {
		if err := a.ask(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
}

// BenchmarkAnswerUDPParallel is the throughput of local answers with 16
// clients asking at once per GOMAXPROCS.
func BenchmarkAnswerUDPParallel(b *testing.B) {
	addr := benchServer(b)
	b.SetParallelism(16)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		a := newAsker(b, addr)
		for pb.Next() {
			if err := a.ask(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "queries/s")
}
