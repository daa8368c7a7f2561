package dnsserver

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// verdict is what the server does with one question.
type verdict uint8

const (
	// forward: the name is not the network's; the upstream resolvers answer.
	forward verdict = iota
	// answer: the name is the network's; the records (possibly none: the
	// name exists but has no data of that type) are the answer.
	answer
	// nxdomain: the name is in the network's zone or subnet, but no
	// container has it.
	nxdomain
	// refused: a question the server will not answer for its own names
	// (zone transfers).
	refused
)

// resolve is the server's policy for one question, a pure function of the
// table: A (and ANY) questions for a container's name get its addresses,
// PTR questions for an address in the subnet get its names, other types for
// those names get an empty answer, unknown names below the zone and unknown
// addresses in the subnet get NXDOMAIN, and everything else is forwarded.
// Records come in the table's order; the caller shuffles them.
func resolve(t *Table, q dns.Question, ttl uint32) (verdict, []dns.RR) {
	if t == nil {
		return forward, nil
	}
	name := canonical(q.Name)
	hdr := func(rrtype uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
	}
	wants := func(rrtype uint16) bool {
		return (q.Qtype == rrtype || q.Qtype == dns.TypeANY) &&
			(q.Qclass == dns.ClassINET || q.Qclass == dns.ClassANY)
	}
	isTransfer := q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR

	if ip, ok := parseReverse(name); ok {
		if !t.subnet.Contains(ip) {
			return forward, nil
		}
		names := t.names[ip.As4()]
		switch {
		case isTransfer:
			return refused, nil
		case len(names) == 0:
			return nxdomain, nil
		case !wants(dns.TypePTR):
			return answer, nil
		}
		rrs := make([]dns.RR, len(names))
		for i, n := range names {
			rrs[i] = &dns.PTR{Hdr: hdr(dns.TypePTR), Ptr: t.fqdn(n)}
		}
		return answer, rrs
	}

	b, known := t.bare(name)
	switch {
	case !known && !t.inZone(name):
		return forward, nil
	case isTransfer:
		return refused, nil
	case !known:
		return nxdomain, nil
	case !wants(dns.TypeA):
		return answer, nil
	}
	addrs := t.addrs[b]
	rrs := make([]dns.RR, len(addrs))
	for i, a := range addrs {
		rrs[i] = &dns.A{Hdr: hdr(dns.TypeA), A: net.IP(a[:])} // a is a copy: the table is not shared
	}
	return answer, rrs
}

// parseReverse returns the IPv4 address of a full reverse name
// (d.c.b.a.in-addr.arpa, canonical). Partial names (a zone cut such as
// 0.10.10.in-addr.arpa) and labels that are not plain decimal octets are not
// addresses.
func parseReverse(name string) (netip.Addr, bool) {
	rest, ok := strings.CutSuffix(name, ".in-addr.arpa")
	if !ok {
		return netip.Addr{}, false
	}
	var b [4]byte
	for i := 3; i >= 0; i-- {
		label := rest
		if i > 0 {
			var found bool
			label, rest, found = strings.Cut(rest, ".")
			if !found {
				return netip.Addr{}, false
			}
		}
		if len(label) == 0 || len(label) > 3 || (len(label) > 1 && label[0] == '0') {
			return netip.Addr{}, false
		}
		n, err := strconv.ParseUint(label, 10, 8)
		if err != nil {
			return netip.Addr{}, false
		}
		b[i] = byte(n)
	}
	return netip.AddrFrom4(b), true
}
