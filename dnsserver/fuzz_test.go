package dnsserver

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/miekg/dns"
)

// FuzzHandler feeds arbitrary messages to the code every UDP datagram and
// TCP frame goes through (respond, and forward with a stand-in for the
// upstream resolvers) and checks that whatever comes in, the server does not
// crash and every reply is a well-formed response to that message that fits
// the client's transport.
//
//	go test -run '^$' -fuzz FuzzHandler -fuzztime 60s ./dnsserver/
func FuzzHandler(f *testing.F) {
	pack := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	seeds := []*dns.Msg{
		question("web.app.", dns.TypeA, 0),
		question("WEB.", dns.TypeA, 4096),
		question("api.app.", dns.TypeANY, 0),
		question("web.app.", dns.TypeAAAA, 1232),
		question("nope.app.", dns.TypeA, 0),
		question("2.0.10.10.in-addr.arpa.", dns.TypePTR, 0),
		question("9.0.10.10.in-addr.arpa.", dns.TypePTR, 0),
		question("example.com.", dns.TypeA, 0),
		question("big.example.com.", dns.TypeTXT, 512),
		question("web.app.", dns.TypeAXFR, 0),
	}
	for _, m := range seeds {
		f.Add(pack(m), false)
		f.Add(pack(m), true)
	}
	two := question("web.app.", dns.TypeA, 0)
	two.Question = append(two.Question, two.Question[0])
	f.Add(pack(two), false)
	notify := question("app.", dns.TypeSOA, 0)
	notify.Opcode = dns.OpcodeNotify
	f.Add(pack(notify), false)
	f.Add([]byte{}, false)
	f.Add([]byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1}, false) // compression loop

	s, err := newServer(Config{ResolvConf: filepath.Join(f.TempDir(), "none")}, fuzzTable(f), nil)
	if err != nil {
		f.Fatal(err)
	}
	// The upstream stand-in answers with records enough to need truncation
	// over UDP, or fails, depending on the question.
	s.exchange = func(_ context.Context, q *dns.Msg) (*dns.Msg, error) {
		name := q.Question[0].Name
		if len(name)%3 == 0 {
			return nil, errors.New("no upstream answers")
		}
		r := new(dns.Msg).SetReply(q)
		for i := range len(name) {
			r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.IPv4(10, 99, 0, byte(i))})
		}
		if opt := q.IsEdns0(); opt != nil {
			r.SetEdns0(4096, false)
		}
		return r, nil
	}

	f.Fuzz(func(t *testing.T, raw []byte, tcp bool) {
		reply, fwd := s.respond(raw, tcp)
		if fwd != nil {
			if reply != nil {
				t.Fatal("both a reply and a forward")
			}
			reply = s.forward(fwd)
			if reply == nil {
				t.Fatal("a forward got no reply")
			}
		}
		if len(raw) < headerLen || raw[2]&0x80 != 0 {
			if reply != nil {
				t.Fatalf("answered a message that is not a query: %x", reply)
			}
			return
		}
		if reply == nil {
			t.Fatal("a query got no reply")
		}
		limit := dns.MaxMsgSize
		if !tcp {
			limit = ednsSize
			if len(raw) <= maxQueryLen {
				if req := new(dns.Msg); req.Unpack(raw) == nil && req.IsEdns0() == nil {
					limit = dns.MinMsgSize
				}
			}
		}
		if len(reply) > limit {
			t.Fatalf("reply of %d bytes, more than the client's %d", len(reply), limit)
		}
		r := new(dns.Msg)
		if err := r.Unpack(reply); err != nil {
			t.Fatalf("reply does not parse: %v\n%x", err, reply)
		}
		if !r.Response || r.Id != binary.BigEndian.Uint16(raw) {
			t.Fatalf("reply QR=%v ID=%d to query ID %d", r.Response, r.Id, binary.BigEndian.Uint16(raw))
		}
	})
}

func fuzzTable(t testing.TB) *Table {
	recs := testRecords()
	for i := 10; i < 200; i++ {
		recs = append(recs, Record{Names: []string{"many"}, IP: netip.AddrFrom4([4]byte{10, 10, 0, byte(i)})})
	}
	return mustTable(t, "app", recs)
}
