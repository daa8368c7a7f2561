package dnsserver

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// rrText is an answer as comparable text: "name TTL type data".
func rrText(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, rr.String())
	}
	slices.Sort(out)
	return out
}

func TestResolve(t *testing.T) {
	tab := mustTable(t, "app", testRecords())
	q := func(name string, qtype uint16) dns.Question {
		return dns.Question{Name: name, Qtype: qtype, Qclass: dns.ClassINET}
	}
	for _, c := range []struct {
		q    dns.Question
		v    verdict
		want []string
	}{
		{q("web.", dns.TypeA), answer, []string{"web.\t7\tIN\tA\t10.10.0.2"}},
		{q("Web.App.", dns.TypeA), answer, []string{"Web.App.\t7\tIN\tA\t10.10.0.2"}}, // the question's case is kept
		{q("api.app.", dns.TypeA), answer, []string{"api.app.\t7\tIN\tA\t10.10.0.2", "api.app.\t7\tIN\tA\t10.10.0.3"}},
		{q("api.", dns.TypeANY), answer, []string{"api.\t7\tIN\tA\t10.10.0.2", "api.\t7\tIN\tA\t10.10.0.3"}},
		{dns.Question{Name: "web.", Qtype: dns.TypeA, Qclass: dns.ClassANY}, answer, []string{"web.\t7\tIN\tA\t10.10.0.2"}},
		// tasks.<name>: every holder, for clients whose own host holds the name.
		{q("tasks.api.", dns.TypeA), answer, []string{"tasks.api.\t7\tIN\tA\t10.10.0.2", "tasks.api.\t7\tIN\tA\t10.10.0.3"}},
		{q("tasks.nope.app.", dns.TypeA), nxdomain, nil},
		{q("tasks.nope.", dns.TypeA), forward, nil},
		// Known names without data of the type: an empty answer, not NXDOMAIN,
		// or a resolver asking AAAA first would give up on the name.
		{q("web.", dns.TypeAAAA), answer, nil},
		{q("web.app.", dns.TypeMX), answer, nil},
		{q("web.", dns.TypePTR), answer, nil},
		{dns.Question{Name: "web.", Qtype: dns.TypeA, Qclass: dns.ClassCHAOS}, answer, nil},
		// Unknown names below the zone do not exist; the zone's own name and
		// other names are not the network's.
		{q("nope.app.", dns.TypeA), nxdomain, nil},
		{q("nope.app.", dns.TypeAAAA), nxdomain, nil},
		{q("a.b.app.", dns.TypeA), nxdomain, nil},
		{q("app.", dns.TypeA), forward, nil},
		{q("nope.", dns.TypeA), forward, nil},
		{q("example.com.", dns.TypeA), forward, nil},
		{q("web.example.com.", dns.TypeA), forward, nil},
		{q(".", dns.TypeNS), forward, nil},
		// Reverse: the subnet is the network's.
		{q("2.0.10.10.in-addr.arpa.", dns.TypePTR), answer, []string{
			"2.0.10.10.in-addr.arpa.\t7\tIN\tPTR\tapi.app.",
			"2.0.10.10.in-addr.arpa.\t7\tIN\tPTR\tapp_web_1.app.",
			"2.0.10.10.in-addr.arpa.\t7\tIN\tPTR\tweb.app."}},
		{q("4.0.10.10.IN-ADDR.ARPA.", dns.TypePTR), answer, []string{
			"4.0.10.10.IN-ADDR.ARPA.\t7\tIN\tPTR\tdb.app.",
			"4.0.10.10.IN-ADDR.ARPA.\t7\tIN\tPTR\tdb.internal.app."}},
		{q("2.0.10.10.in-addr.arpa.", dns.TypeA), answer, nil},
		{q("9.0.10.10.in-addr.arpa.", dns.TypePTR), nxdomain, nil}, // in the subnet, no container
		{q("1.0.10.10.in-addr.arpa.", dns.TypePTR), nxdomain, nil}, // the gateway is no container either
		{q("2.0.11.10.in-addr.arpa.", dns.TypePTR), forward, nil},  // outside the subnet
		{q("0.10.10.in-addr.arpa.", dns.TypePTR), forward, nil},    // not an address
		{q("02.0.10.10.in-addr.arpa.", dns.TypePTR), forward, nil},
		// Zone transfers of the network's names are refused.
		{q("web.app.", dns.TypeAXFR), refused, nil},
		{q("nope.app.", dns.TypeIXFR), refused, nil},
		{q("2.0.10.10.in-addr.arpa.", dns.TypeAXFR), refused, nil},
		{q("example.com.", dns.TypeAXFR), forward, nil},
	} {
		v, rrs := resolve(tab, c.q, 7)
		if v != c.v || !slices.Equal(rrText(rrs), c.want) {
			t.Errorf("resolve(%s) = %d %q, want %d %q", c.q.String(), v, rrText(rrs), c.v, c.want)
		}
	}
	if v, _ := resolve(nil, q("web.", dns.TypeA), 7); v != forward {
		t.Errorf("the nil table does not forward: %d", v)
	}
}

func TestParseReverse(t *testing.T) {
	for name, want := range map[string]string{
		"1.2.3.4.in-addr.arpa":         "4.3.2.1",
		"0.0.0.0.in-addr.arpa":         "0.0.0.0",
		"255.255.255.255.in-addr.arpa": "255.255.255.255",
	} {
		if got, ok := parseReverse(name); !ok || got != netip.MustParseAddr(want) {
			t.Errorf("parseReverse(%q) = %v, %v; want %s", name, got, ok, want)
		}
	}
	for _, name := range []string{
		"", "in-addr.arpa", "4.in-addr.arpa", "2.3.4.in-addr.arpa", "1.2.3.4.5.in-addr.arpa",
		"1..3.4.in-addr.arpa", "256.2.3.4.in-addr.arpa", "01.2.3.4.in-addr.arpa", "+1.2.3.4.in-addr.arpa",
		"a.2.3.4.in-addr.arpa", "1.2.3.4.ip6.arpa", "1.2.3.4.in-addr.arpa.com", "1000.2.3.4.in-addr.arpa",
	} {
		if got, ok := parseReverse(name); ok {
			t.Errorf("parseReverse(%q) = %v, want not an address", name, got)
		}
	}
}
