package ipsec

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func mustKey(t *testing.T, s []byte, src, dst string, gen uint64) []byte {
	t.Helper()
	k, err := Key(s, src, dst, gen)
	if err != nil {
		t.Fatal(err)
	}
	if len(k) != KeyBytes {
		t.Fatalf("key of %d bytes, want %d", len(k), KeyBytes)
	}
	return k
}

func TestKeyDerivation(t *testing.T) {
	base := mustKey(t, secret, "h1", "h2", 7)
	for _, c := range []struct {
		name     string
		secret   []byte
		src, dst string
		gen      uint64
		same     bool
	}{
		{"same inputs", secret, "h1", "h2", 7, true},
		{"other direction", secret, "h2", "h1", 7, false},
		{"other pair", secret, "h1", "h3", 7, false},
		{"other generation", secret, "h1", "h2", 8, false},
		{"other secret", []byte("fedcba9876543210fedcba9876543210"), "h1", "h2", 7, false},
		// Length-prefixed names: "h1"+"2x" must not read as "h12"+"x".
		{"names shifted", secret, "h12", "x", 7, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := mustKey(t, c.secret, c.src, c.dst, c.gen)
			if bytes.Equal(k, base) != c.same {
				t.Errorf("key equal to base = %v, want %v", !c.same, c.same)
			}
		})
	}
}

func TestKeyRefusesBadInput(t *testing.T) {
	for _, c := range []struct {
		name     string
		secret   []byte
		src, dst string
		want     string
	}{
		{"short secret", []byte("short"), "a", "b", "at least 16"},
		{"no secret", nil, "a", "b", "at least 16"},
		{"same host", secret, "a", "a", "two distinct"},
		{"empty name", secret, "", "b", "two distinct"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Key(c.secret, c.src, c.dst, 1)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one saying %q", err, c.want)
			}
		})
	}
}

func TestSPIsUniqueAndOutsideReserved(t *testing.T) {
	var members []string
	for i := 0; i < 60; i++ {
		members = append(members, fmt.Sprintf("host-%02d", i))
	}
	// A rotation installs adjacent generations together: the SPIs into one
	// host must be unique across both. 254/255/256 cross the wrap of the
	// SPI's generation byte.
	for _, gen := range []uint64{0, 1, 253, 254, 255, 256, 1 << 40} {
		perDst := map[string]map[uint32]string{}
		for _, g := range []uint64{gen, gen + 1} {
			spis := SPIs(secret, members, g)
			if len(spis) != len(members)*(len(members)-1) {
				t.Fatalf("gen %d: %d SPIs, want %d", g, len(spis), len(members)*(len(members)-1))
			}
			for k, spi := range spis {
				if spi < 256 {
					t.Errorf("gen %d %q: SPI %d in the reserved range", g, k, spi)
				}
				dst := k[strings.IndexByte(k, 0)+1:]
				if perDst[dst] == nil {
					perDst[dst] = map[uint32]string{}
				}
				if other, dup := perDst[dst][spi]; dup {
					t.Errorf("SPI 0x%08x into %s used by %q and gen %d %q", spi, dst, other, g, k)
				}
				perDst[dst][spi] = fmt.Sprintf("gen %d %s", g, k)
			}
		}
	}
}

func TestSPIsResolveCollisions(t *testing.T) {
	// Force collisions: with a 24-bit hash, find two senders whose first
	// candidate into the same receiver collide is impractical, so check
	// the probe directly: the assignment must skip a taken SPI.
	members := []string{"a", "b", "c"}
	spis := SPIs(secret, members, 3)
	seen := map[uint32]bool{}
	for _, src := range []string{"b", "c"} {
		spi := spis[src+"\x00a"]
		if seen[spi] {
			t.Fatalf("SPI 0x%08x into a used twice", spi)
		}
		seen[spi] = true
	}
	if a, b := spiCandidate(secret, "b", "a", 3, 0), spiCandidate(secret, "b", "a", 3, 1); a == b {
		t.Fatalf("probe does not move: try 0 and 1 both 0x%08x", a)
	}
	if SPIs(secret, []string{"c", "a", "b", "a"}, 3)["b\x00a"] != spis["b\x00a"] {
		t.Error("SPIs depend on the order or duplicates of the members")
	}
}

func node(name, ip string) Node { return Node{Name: name, IP: net.ParseIP(ip)} }

func TestSAsBothSidesAgree(t *testing.T) {
	h1, h2, h3 := node("h1", "10.0.0.1"), node("h2", "10.0.0.2"), node("h3", "10.0.0.3")
	plan := func(self Node, peers ...Node) []SA {
		t.Helper()
		sas, err := SAs(secret, Want{Self: self, Peers: peers, Send: 5, Receive: []uint64{4, 5, 6}})
		if err != nil {
			t.Fatal(err)
		}
		return sas
	}
	on1, on2 := plan(h1, h2, h3), plan(h2, h3, h1)
	if len(on1) != 2*(1+3) {
		t.Fatalf("h1 has %d SAs, want 8 (per peer: 1 out, 3 in): %v", len(on1), on1)
	}
	// Every outbound SA of h1 toward h2 must match exactly one inbound SA
	// of h2 from h1, and the reverse.
	match := func(from, to []SA, peerOfFrom string) {
		t.Helper()
		for _, o := range from {
			if o.Dir != Out || o.Peer != peerOfFrom {
				continue
			}
			found := 0
			for _, i := range to {
				if i.Dir == In && i.Src.Equal(o.Src) && i.Dst.Equal(o.Dst) && i.Gen == o.Gen {
					found++
					if i.SPI != o.SPI || !bytes.Equal(i.Key, o.Key) {
						t.Errorf("%v and %v disagree on SPI or key", o, i)
					}
				}
			}
			if found != 1 {
				t.Errorf("%v has %d matching inbound SAs, want 1", o, found)
			}
		}
	}
	match(on1, on2, "h2")
	match(on2, on1, "h1")
	spis := map[uint32]bool{}
	for _, s := range on1 {
		if s.Dir == In {
			if spis[s.SPI] {
				t.Errorf("inbound SPI 0x%08x twice on h1", s.SPI)
			}
			spis[s.SPI] = true
		}
	}
	// The two directions of a pair use different keys.
	for _, a := range on1 {
		for _, b := range on1 {
			if a.Peer == b.Peer && a.Dir != b.Dir && a.Gen == b.Gen && bytes.Equal(a.Key, b.Key) {
				t.Errorf("%v and %v share a key", a, b)
			}
		}
	}
}

func TestSAsMembership(t *testing.T) {
	self := node("h1", "10.0.0.1")
	for _, c := range []struct {
		name  string
		want  Want
		count int
		err   string
	}{
		{"alone", Want{Self: self, Send: 1, Receive: []uint64{1}}, 0, ""},
		{"one peer", Want{Self: self, Peers: []Node{node("h2", "10.0.0.2")}, Send: 1, Receive: []uint64{1, 1, 0}}, 3, ""},
		{"peer leaves", Want{Self: self, Peers: nil, Send: 2, Receive: []uint64{1, 2}}, 0, ""},
		{"duplicate peer", Want{Self: self, Peers: []Node{node("h2", "10.0.0.2"), node("h2", "10.0.0.3")}, Send: 1}, 0, "twice"},
		{"peer named as self", Want{Self: self, Peers: []Node{node("h1", "10.0.0.2")}, Send: 1}, 0, "twice"},
		{"IPv6 peer", Want{Self: self, Peers: []Node{node("h2", "fd00::2")}, Send: 1}, 0, "IPv4"},
		{"unnamed self", Want{Self: node("", "10.0.0.1"), Send: 1}, 0, "without a name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sas, err := SAs(secret, c.want)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want one saying %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(sas) != c.count {
				t.Fatalf("%d SAs, want %d: %v", len(sas), c.count, sas)
			}
		})
	}
	if _, err := SAs([]byte("short"), Want{Self: self}); err == nil {
		t.Error("a short secret was accepted")
	}
}

func TestClusterSecret(t *testing.T) {
	if _, err := ClusterSecret(nil); err == nil || !strings.Contains(err.Error(), "GOSSIP_KEY") {
		t.Fatalf("no gossip key: err = %v, want one naming GOSSIP_KEY", err)
	}
	gk := []byte("0123456789abcdef")
	s, err := ClusterSecret(gk)
	if err != nil {
		t.Fatal(err)
	}
	if CheckSecret(s) != nil || bytes.Contains(s, gk) {
		t.Fatalf("secret %x unusable or contains the gossip key", s)
	}
	if s2, _ := ClusterSecret(gk); !bytes.Equal(s, s2) {
		t.Fatal("two hosts with the same gossip key derive different secrets")
	}
}

func TestGeneration(t *testing.T) {
	for _, c := range []struct {
		now, period int64
		want        uint64
	}{{0, 3600, 0}, {3599, 3600, 0}, {3600, 3600, 1}, {7300, 3600, 2}, {100, 0, 0}, {-5, 60, 0}} {
		if got := Generation(c.now, c.period); got != c.want {
			t.Errorf("Generation(%d, %d) = %d, want %d", c.now, c.period, got, c.want)
		}
	}
}
