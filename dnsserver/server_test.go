package dnsserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// startServer serves tab on loopback. The upstream resolvers come from a
// file of the test's own (missing unless the test writes it), never from
// the machine's /etc/resolv.conf: tests send nothing off this machine.
func startServer(t *testing.T, cfg Config, tab *Table) (s *Server, udpAddr, tcpAddr string) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = filepath.Join(t.TempDir(), "resolv.conf")
	}
	s, err = Serve(cfg, tab, pc, ln)
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, pc.LocalAddr().String(), ln.Addr().String()
}

func question(name string, qtype uint16, ednsSize uint16) *dns.Msg {
	m := new(dns.Msg).SetQuestion(name, qtype)
	if ednsSize > 0 {
		m.SetEdns0(ednsSize, false)
	}
	return m
}

func exchange(t *testing.T, netw, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := dns.Client{Net: netw, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s query %s to %s: %v", netw, m.Question[0].String(), addr, err)
	}
	if r.Id != m.Id {
		t.Fatalf("answer ID %d, query ID %d", r.Id, m.Id)
	}
	return r
}

func ask(t *testing.T, netw, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	return exchange(t, netw, addr, question(name, qtype, 0))
}

// aAddrs lists the addresses of the A records of r, in answer order.
func aAddrs(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

func TestServeLocalNames(t *testing.T) {
	_, udp, tcp := startServer(t, Config{}, mustTable(t, "app", testRecords()))
	for netw, addr := range map[string]string{"udp": udp, "tcp": tcp} {
		r := ask(t, netw, addr, "Web.App.", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative || !r.RecursionAvailable || !r.Response ||
			len(r.Answer) != 1 || r.Answer[0].String() != "Web.App.\t1\tIN\tA\t10.10.0.2" {
			t.Errorf("%s: A Web.App. = %v", netw, r)
		}
		if r := ask(t, netw, addr, "web.", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("%s: AAAA web. = %v, want NOERROR without records", netw, r)
		}
		if r := ask(t, netw, addr, "nope.app.", dns.TypeA); r.Rcode != dns.RcodeNameError || !r.Authoritative {
			t.Errorf("%s: A nope.app. = %v, want NXDOMAIN", netw, r)
		}
		r = ask(t, netw, addr, "3.0.10.10.in-addr.arpa.", dns.TypePTR)
		if got := rrText(r.Answer); r.Rcode != dns.RcodeSuccess || !slices.Equal(got, []string{
			"3.0.10.10.in-addr.arpa.\t1\tIN\tPTR\tapi.app.", "3.0.10.10.in-addr.arpa.\t1\tIN\tPTR\tworker.app."}) {
			t.Errorf("%s: PTR of 10.10.0.3 = %v", netw, r)
		}
		if r := ask(t, netw, addr, "77.0.10.10.in-addr.arpa.", dns.TypePTR); r.Rcode != dns.RcodeNameError {
			t.Errorf("%s: PTR of an unknown address in the subnet = %v, want NXDOMAIN", netw, r)
		}
	}
}

func TestServeShufflesSharedNames(t *testing.T) {
	var recs []Record
	var all []string
	for i := 2; i < 10; i++ {
		ip := fmt.Sprintf("10.10.0.%d", i)
		recs = append(recs, Record{Names: []string{"pool"}, IP: addr(ip)})
		all = append(all, ip)
	}
	_, udp, _ := startServer(t, Config{TTL: 3 * time.Second}, mustTable(t, "app", recs))
	first := map[string]bool{}
	for range 50 {
		r := ask(t, "udp", udp, "pool.app.", dns.TypeA)
		got := aAddrs(r)
		if s := slices.Sorted(slices.Values(got)); !slices.Equal(s, slices.Sorted(slices.Values(all))) {
			t.Fatalf("pool = %v, want all of %v", got, all)
		}
		if ttl := r.Answer[0].Header().Ttl; ttl != 3 {
			t.Fatalf("TTL %d, want the configured 3", ttl)
		}
		first[got[0]] = true
	}
	// 50 answers of 8 addresses all starting alike: chance 8^-49 if shuffled.
	if len(first) < 2 {
		t.Errorf("every answer starts with %v: not shuffled", first)
	}
}

func TestSetTable(t *testing.T) {
	recs := testRecords()
	s, udp, _ := startServer(t, Config{}, mustTable(t, "app", recs))
	if got := aAddrs(ask(t, "udp", udp, "worker.app.", dns.TypeA)); !slices.Equal(got, []string{"10.10.0.3"}) {
		t.Fatalf("worker = %v", got)
	}
	s.SetTable(mustTable(t, "app", []Record{recs[0], {Names: []string{"worker"}, IP: addr("10.10.0.30")}}))
	if got := aAddrs(ask(t, "udp", udp, "worker.app.", dns.TypeA)); !slices.Equal(got, []string{"10.10.0.30"}) {
		t.Errorf("worker after it moved = %v", got)
	}
	if r := ask(t, "udp", udp, "db.app.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("db after it left = %v, want NXDOMAIN", r)
	}
	// Without a table every name is someone else's: forwarded, and with no
	// upstream resolvers that is SERVFAIL.
	s.SetTable(nil)
	if r := ask(t, "udp", udp, "web.app.", dns.TypeA); r.Rcode != dns.RcodeServerFailure || !r.RecursionAvailable {
		t.Errorf("web.app. without a table = %v, want SERVFAIL", r)
	}
}

func TestServeTruncatesForTheClient(t *testing.T) {
	var recs []Record
	for i := 2; i < 102; i++ {
		recs = append(recs, Record{Names: []string{"many"}, IP: netip.AddrFrom4([4]byte{10, 10, 0, byte(i)})})
	}
	_, udp, tcp := startServer(t, Config{}, mustTable(t, "app", recs))
	for _, c := range []struct {
		edns  uint16
		limit int
	}{{0, 512}, {4096, ednsSize}, {300, 512}} {
		q := question("many.app.", dns.TypeA, c.edns)
		raw := rawExchange(t, udp, q)
		r := new(dns.Msg)
		if err := r.Unpack(raw); err != nil {
			t.Fatal(err)
		}
		if len(raw) > c.limit || !r.Truncated || len(r.Answer) == 0 {
			t.Errorf("EDNS size %d: %d bytes, TC=%v, %d answers; want at most %d bytes, TC and some answers",
				c.edns, len(raw), r.Truncated, len(r.Answer), c.limit)
		}
		if (c.edns != 0) != (r.IsEdns0() != nil) {
			t.Errorf("EDNS size %d: answer OPT = %v", c.edns, r.IsEdns0())
		}
	}
	if r := ask(t, "tcp", tcp, "many.app.", dns.TypeA); r.Truncated || len(r.Answer) != 100 {
		t.Errorf("over TCP: TC=%v, %d answers, want all 100", r.Truncated, len(r.Answer))
	}
}

// rawExchange sends m over UDP and returns the reply's bytes.
func rawExchange(t *testing.T, addr string, m *dns.Msg) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return rawUDP(t, c, b)
}

func rawUDP(t *testing.T, c net.Conn, b []byte) []byte {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, dns.MaxMsgSize)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no UDP answer: %v", err)
	}
	return buf[:n]
}

// fakeUpstream is an upstream resolver on a loopback address. Its handler
// returns the answer to send, or nil to stay silent.
type fakeUpstream struct {
	ip       netip.Addr
	udp, tcp atomic.Int32 // queries seen
}

type upstreamHandler func(q *dns.Msg, tcp bool) *dns.Msg

// startUpstreams runs one fake upstream per handler on 127.0.0.2, .3, ...,
// all on one port (resolv.conf has no ports), and returns them and the port.
func startUpstreams(t *testing.T, handlers ...upstreamHandler) ([]*fakeUpstream, uint16) {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		var closers []io.Closer
		closeAll := func() {
			for _, c := range closers {
				c.Close()
			}
		}
		first, err := net.ListenPacket("udp4", "127.0.0.2:0")
		if err != nil {
			t.Fatal(err)
		}
		port := uint16(first.LocalAddr().(*net.UDPAddr).Port)
		closers = append(closers, first)
		var pcs []net.PacketConn
		var lns []net.Listener
		ok := true
		for i := range handlers {
			ip := fmt.Sprintf("127.0.0.%d:%d", i+2, port)
			pc := first
			if i > 0 {
				if pc, err = net.ListenPacket("udp4", ip); err != nil {
					ok = false
					break
				}
				closers = append(closers, pc)
			}
			ln, err := net.Listen("tcp4", ip)
			if err != nil {
				ok = false
				break
			}
			closers = append(closers, ln)
			pcs, lns = append(pcs, pc), append(lns, ln)
		}
		if !ok {
			closeAll()
			continue
		}
		var ups []*fakeUpstream
		for i, h := range handlers {
			u := &fakeUpstream{ip: netip.AddrFrom4([4]byte{127, 0, 0, byte(i + 2)})}
			ups = append(ups, u)
			serve := func(w dns.ResponseWriter, r *dns.Msg) {
				tcp := w.LocalAddr().Network() == "tcp"
				if tcp {
					u.tcp.Add(1)
				} else {
					u.udp.Add(1)
				}
				if m := h(r, tcp); m != nil {
					_ = w.WriteMsg(m)
				}
			}
			for _, srv := range []*dns.Server{
				{PacketConn: pcs[i], Handler: dns.HandlerFunc(serve)},
				{Listener: lns[i], Handler: dns.HandlerFunc(serve)},
			} {
				go func() { _ = srv.ActivateAndServe() }()
				t.Cleanup(func() { _ = srv.Shutdown() })
			}
		}
		t.Cleanup(closeAll)
		return ups, port
	}
	t.Fatal("no port free on every fake upstream address")
	return nil, 0
}

func writeResolvConf(t *testing.T, path string, ups ...*fakeUpstream) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# written by the test\nsearch example.test\noptions ndots:1\n")
	for _, u := range ups {
		fmt.Fprintf(&b, "nameserver %s\n", u.ip)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// answerA answers every question with one A record.
func answerA(ip string) upstreamHandler {
	return func(q *dns.Msg, _ bool) *dns.Msg {
		m := new(dns.Msg).SetReply(q)
		m.RecursionAvailable = true
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A: net.ParseIP(ip)}}
		return m
	}
}

func rcode(rc int) upstreamHandler {
	return func(q *dns.Msg, _ bool) *dns.Msg { return new(dns.Msg).SetRcode(q, rc) }
}

func silent(*dns.Msg, bool) *dns.Msg { return nil }

// forwardingServer serves testRecords with the given upstreams in its resolv.conf.
func forwardingServer(t *testing.T, timeout time.Duration, handlers ...upstreamHandler) (ups []*fakeUpstream, udp, tcp string) {
	t.Helper()
	ups, port := startUpstreams(t, handlers...)
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	writeResolvConf(t, rc, ups...)
	_, udp, tcp = startServer(t, Config{ResolvConf: rc, UpstreamTimeout: timeout, upstreamPort: port}, mustTable(t, "app", testRecords()))
	return ups, udp, tcp
}

func TestForward(t *testing.T) {
	ups, udp, tcp := forwardingServer(t, 0, answerA("10.99.0.1"))
	for netw, addr := range map[string]string{"udp": udp, "tcp": tcp} {
		r := ask(t, netw, addr, "Example.COM.", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || !r.RecursionAvailable || r.Authoritative ||
			len(r.Answer) != 1 || r.Answer[0].String() != "Example.COM.\t60\tIN\tA\t10.99.0.1" {
			t.Errorf("%s: forwarded answer = %v", netw, r)
		}
	}
	// Not-ours names include the zone's own name and reverse names outside the subnet.
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"app.", dns.TypeA}, {"1.1.99.10.in-addr.arpa.", dns.TypePTR}, {"web.other.", dns.TypeA}} {
		if r := ask(t, "udp", udp, q.name, q.qtype); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Errorf("%s was not forwarded: %v", q.name, r)
		}
	}
	if n := ups[0].udp.Load(); n != 5 {
		t.Errorf("upstream saw %d UDP queries, want 5 (its TCP port is only for truncated answers)", n)
	}
	// The network's own names never reach the upstream.
	ask(t, "udp", udp, "web.app.", dns.TypeA)
	ask(t, "udp", udp, "nope.app.", dns.TypeA)
	if n := ups[0].udp.Load() + ups[0].tcp.Load(); n != 5 {
		t.Errorf("upstream saw %d queries after local ones, want still 5", n)
	}
}

func TestForwardFallsBackToTCP(t *testing.T) {
	many := func(q *dns.Msg, tcp bool) *dns.Msg {
		m := new(dns.Msg).SetReply(q)
		if !tcp {
			m.Truncated = true
			return m
		}
		for i := range 100 {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.IPv4(10, 99, 1, byte(i))})
		}
		return m
	}
	ups, udp, tcp := forwardingServer(t, 0, many)
	if r := ask(t, "tcp", tcp, "big.example.", dns.TypeA); r.Truncated || len(r.Answer) != 100 {
		t.Errorf("over TCP: TC=%v, %d answers, want all 100", r.Truncated, len(r.Answer))
	}
	// A UDP client gets what fits, flagged truncated, and retries over TCP.
	if r := ask(t, "udp", udp, "big.example.", dns.TypeA); !r.Truncated || len(r.Answer) == 0 || len(r.Answer) == 100 {
		t.Errorf("over UDP: TC=%v, %d answers, want some of them and TC", r.Truncated, len(r.Answer))
	}
	if u, c := ups[0].udp.Load(), ups[0].tcp.Load(); u != 2 || c != 2 {
		t.Errorf("upstream saw %d UDP and %d TCP queries, want 2 and 2 (TCP after each truncated UDP answer)", u, c)
	}
}

func TestForwardTriesTheNextUpstream(t *testing.T) {
	for _, c := range []struct {
		what  string
		first upstreamHandler
	}{
		{"silent", silent},
		{"SERVFAIL", rcode(dns.RcodeServerFailure)},
		{"REFUSED", rcode(dns.RcodeRefused)},
	} {
		t.Run(c.what, func(t *testing.T) {
			ups, udp, _ := forwardingServer(t, 200*time.Millisecond, c.first, answerA("10.99.0.2"))
			r := ask(t, "udp", udp, "example.com.", dns.TypeA)
			if got := aAddrs(r); r.Rcode != dns.RcodeSuccess || !slices.Equal(got, []string{"10.99.0.2"}) {
				t.Errorf("answer = %v, want the second upstream's", r)
			}
			if ups[0].udp.Load() != 1 {
				t.Errorf("the first upstream was not asked first")
			}
		})
	}
	// An NXDOMAIN is an answer: the next upstream is not asked.
	ups, udp, _ := forwardingServer(t, 200*time.Millisecond, rcode(dns.RcodeNameError), answerA("10.99.0.2"))
	if r := ask(t, "udp", udp, "example.com.", dns.TypeA); r.Rcode != dns.RcodeNameError || ups[1].udp.Load() != 0 {
		t.Errorf("answer = %v, second upstream asked %d times; want the first's NXDOMAIN only", r, ups[1].udp.Load())
	}
	// When all refuse, the client gets the refusal; when none answers, SERVFAIL.
	_, udp, _ = forwardingServer(t, 200*time.Millisecond, rcode(dns.RcodeRefused), rcode(dns.RcodeRefused))
	if r := ask(t, "udp", udp, "example.com.", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Errorf("all upstreams refuse: answer %v", r)
	}
	_, udp, tcp := forwardingServer(t, 200*time.Millisecond, silent, silent)
	for netw, addr := range map[string]string{"udp": udp, "tcp": tcp} {
		start := time.Now()
		r := exchange(t, netw, addr, question("example.com.", dns.TypeA, 1232))
		if r.Rcode != dns.RcodeServerFailure || !r.RecursionAvailable || r.IsEdns0() == nil {
			t.Errorf("%s: no upstream answers: %v, want SERVFAIL with EDNS", netw, r)
		}
		t.Logf("%s: SERVFAIL after %v with two silent upstreams and a 200ms timeout", netw, time.Since(start))
	}
}

// countingConn counts the datagrams a server reads.
type countingConn struct {
	net.PacketConn
	reads atomic.Int32
}

func (c *countingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if err == nil {
		c.reads.Add(1)
	}
	return n, a, err
}

func TestNeverForwardsToItself(t *testing.T) {
	raw, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc := &countingConn{PacketConn: raw}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The host's resolvers are this server itself and Docker's embedded DNS.
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(rc, []byte("nameserver 127.0.0.1\nnameserver 127.0.0.11\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Serve(Config{ResolvConf: rc, upstreamPort: uint16(raw.LocalAddr().(*net.UDPAddr).Port)}, nil, pc, ln)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r := ask(t, "udp", raw.LocalAddr().String(), "example.com.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("answer %v, want SERVFAIL", r)
	}
	if n := pc.reads.Load(); n != 1 {
		t.Errorf("the server read %d queries for one: it forwarded to itself", n)
	}
}

func TestUpstreamsFollowResolvConf(t *testing.T) {
	ups, port := startUpstreams(t, answerA("10.99.0.1"), answerA("10.99.0.2"))
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	_, udp, _ := startServer(t, Config{ResolvConf: rc, upstreamPort: port}, nil)

	answerIs := func(want string) func() (bool, string) {
		return func() (bool, string) {
			r := ask(t, "udp", udp, "example.com.", dns.TypeA)
			got := aAddrs(r)
			return slices.Equal(got, []string{want}), fmt.Sprintf("rcode %s, answer %v", dns.RcodeToString[r.Rcode], got)
		}
	}
	if r := ask(t, "udp", udp, "example.com.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("without resolv.conf: %v, want SERVFAIL", r)
	}
	writeResolvConf(t, rc, ups[0]) // created
	d := poll.Until(t, 5*time.Second, "the new resolv.conf's upstream to answer", answerIs("10.99.0.1"))
	writeResolvConf(t, rc, ups[1]) // rewritten in place
	d += poll.Until(t, 5*time.Second, "the rewritten resolv.conf's upstream to answer", answerIs("10.99.0.2"))
	tmp := rc + ".new" // replaced by rename, as resolvconf and NetworkManager do
	writeResolvConf(t, tmp, ups[0])
	if err := os.Rename(tmp, rc); err != nil {
		t.Fatal(err)
	}
	d += poll.Until(t, 5*time.Second, "the replaced resolv.conf's upstream to answer", answerIs("10.99.0.1"))
	t.Logf("three resolv.conf changes picked up in %v in all", d)
}

func TestRespondToOddMessages(t *testing.T) {
	s, err := newServer(Config{ResolvConf: filepath.Join(t.TempDir(), "none")}, mustTable(t, "app", testRecords()), nil)
	if err != nil {
		t.Fatal(err)
	}
	pack := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	web := func() *dns.Msg { return question("web.app.", dns.TypeA, 0) }
	withOpcode := func(op int) []byte { m := web(); m.Opcode = op; return pack(m) }
	twoQuestions := web()
	twoQuestions.Question = append(twoQuestions.Question, twoQuestions.Question[0])
	noQuestion := web()
	noQuestion.Question = nil
	ednsV1 := question("web.app.", dns.TypeA, 1232)
	ednsV1.IsEdns0().SetVersion(1)
	twoOPT := question("web.app.", dns.TypeA, 1232)
	twoOPT.Extra = append(twoOPT.Extra, twoOPT.Extra[0])
	isResponse := web()
	isResponse.Response = true
	good := pack(web())
	cut := good[:len(good)-3]                                     // the question is cut short
	loop := append(slices.Clone(good[:12]), 0xc0, 12, 0, 1, 0, 1) // a name pointing at itself
	huge := append(slices.Clone(good), make([]byte, maxQueryLen)...)

	for _, c := range []struct {
		what  string
		raw   []byte
		rcode int // -1: no answer at all
	}{
		{"a good query", good, dns.RcodeSuccess},
		{"empty", nil, -1},
		{"shorter than a header", good[:11], -1},
		{"a response", pack(isResponse), -1},
		{"a header alone", good[:12], dns.RcodeFormatError},
		{"a cut question", cut, dns.RcodeFormatError},
		{"a compression loop", loop, dns.RcodeFormatError},
		{"too long", huge, dns.RcodeFormatError},
		{"two questions", pack(twoQuestions), dns.RcodeFormatError},
		{"no question", pack(noQuestion), dns.RcodeFormatError},
		{"NOTIFY", withOpcode(dns.OpcodeNotify), dns.RcodeNotImplemented},
		{"UPDATE", withOpcode(dns.OpcodeUpdate), dns.RcodeNotImplemented},
		{"IQUERY", withOpcode(dns.OpcodeIQuery), dns.RcodeNotImplemented},
		{"STATUS", withOpcode(dns.OpcodeStatus), dns.RcodeNotImplemented},
		{"EDNS version 1", pack(ednsV1), dns.RcodeBadVers},
		{"two OPT records", pack(twoOPT), dns.RcodeFormatError},
	} {
		for _, tcp := range []bool{false, true} {
			reply, fwd := s.respond(c.raw, tcp)
			if fwd != nil {
				t.Errorf("%s: forwarded", c.what)
				continue
			}
			if c.rcode < 0 {
				if reply != nil {
					t.Errorf("%s: answered %x, want no answer", c.what, reply)
				}
				continue
			}
			r := new(dns.Msg)
			if err := r.Unpack(reply); err != nil {
				t.Errorf("%s: answer does not parse: %v", c.what, err)
				continue
			}
			if r.Rcode != c.rcode || !r.Response || r.Id != binary.BigEndian.Uint16(c.raw) {
				t.Errorf("%s: answer rcode %s QR=%v ID=%d, want %s QR for ID %d", c.what, dns.RcodeToString[r.Rcode],
					r.Response, r.Id, dns.RcodeToString[c.rcode], binary.BigEndian.Uint16(c.raw))
			}
		}
	}
}

// TestServeSurvivesGarbage sends garbage, then a query: the garbage must
// get its FORMERR (or nothing) and the query its answer, in that order.
func TestServeSurvivesGarbage(t *testing.T) {
	_, udp, tcp := startServer(t, Config{}, mustTable(t, "app", testRecords()))
	c, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, junk := range [][]byte{{}, {1, 2, 3}, {0xab, 0xcd, 0x80, 0, 0, 1}, append([]byte{0x12, 0x34}, make([]byte, 40)...)} {
		if _, err := c.Write(junk); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := question("web.app.", dns.TypeA, 0).Pack()
	binary.BigEndian.PutUint16(b, 0x4242)
	r1 := rawUDP(t, c, b) // the reply to the 40-byte garbage comes first
	if len(r1) != headerLen || binary.BigEndian.Uint16(r1) != 0x1234 || r1[3]&0xf != dns.RcodeFormatError {
		t.Errorf("reply to garbage = %x, want a FORMERR header for ID 0x1234", r1)
	}
	r2 := rawUDP(t, c, nil)
	if binary.BigEndian.Uint16(r2) != 0x4242 {
		t.Errorf("the query after the garbage got %x", r2)
	}

	// TCP: two queries in one write are answered in order; a frame that
	// cannot be a query ends the connection.
	tc, err := net.Dial("tcp", tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	var out []byte
	for _, id := range []uint16{1, 2} {
		m := question("web.app.", dns.TypeA, 0)
		m.Id = id
		b, _ := m.Pack()
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	out = append(out, 0, 3, 1, 2, 3) // too short for a header
	if _, err := tc.Write(out); err != nil {
		t.Fatal(err)
	}
	_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, id := range []uint16{1, 2} {
		var l [2]byte
		if _, err := io.ReadFull(tc, l[:]); err != nil {
			t.Fatalf("answer %d: %v", id, err)
		}
		msg := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(tc, msg); err != nil {
			t.Fatal(err)
		}
		if got := binary.BigEndian.Uint16(msg); got != id {
			t.Errorf("TCP answer for ID %d, want %d", got, id)
		}
	}
	// EOF, or a reset as the server closes with the bad frame's bytes unread.
	if n, err := tc.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("after a bad frame: read %d, %v; want the server to close the connection", n, err)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	_, port := startUpstreams(t, silent)
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(rc, []byte("nameserver 127.0.0.2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, udp, tcp := startServer(t, Config{ResolvConf: rc, UpstreamTimeout: 30 * time.Second, upstreamPort: port}, nil)

	// A forward waits on a silent upstream for 30 s; an idle TCP client holds a connection.
	c, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, _ := question("example.com.", dns.TypeA, 0).Pack()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	tc, err := net.Dial("tcp", tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	poll.True(t, 5*time.Second, "the forward and the TCP connection to be in flight", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.forwards) == 1 && len(s.conns) == 1
	})

	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return within 5s: it waits for the forward's 30s timeout")
	}
	t.Logf("Close returned after %v", time.Since(start))
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := tc.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("TCP connection after Close: %v, want EOF", err)
	}
	if _, err := net.Dial("tcp", tcp); err == nil {
		t.Error("the TCP socket still accepts after Close")
	}
}

func TestServeBadConfig(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, c := range []struct {
		cfg    Config
		pc     net.PacketConn
		ln     net.Listener
		errHas string
	}{
		{Config{TTL: -time.Second}, pc, ln, "TTL"},
		{Config{TTL: 2 * time.Hour}, pc, ln, "TTL"},
		{Config{UpstreamTimeout: -1}, pc, ln, "timeout"},
		{Config{UpstreamTimeout: time.Hour}, pc, ln, "timeout"},
		{Config{}, nil, ln, "UDP"},
		{Config{}, pc, nil, "TCP"},
	} {
		c.cfg.ResolvConf = filepath.Join(t.TempDir(), "none")
		if s, err := Serve(c.cfg, nil, c.pc, c.ln); err == nil || !strings.Contains(err.Error(), c.errHas) {
			t.Errorf("Serve(%+v) = %v, %v; want an error about %s", c.cfg, s, err, c.errHas)
		}
	}
	// A failed Serve leaves the sockets to the caller, open.
	if _, err := pc.WriteTo([]byte{0}, pc.LocalAddr()); err != nil {
		t.Errorf("the UDP socket was closed by a failed Serve: %v", err)
	}
}
