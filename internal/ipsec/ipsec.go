// Package ipsec computes what the kernel's IPsec must hold for vxovl's
// encrypted overlays: the keys of each pair of hosts and direction, derived
// from one cluster secret, their SPIs, and the security associations (SAs) a
// host needs for a given membership and key generation. It is pure: the
// dataplane installs what it computes.
//
// Every host derives the same keys for a pair without talking to it: the key
// of the traffic from A to B in generation g is HKDF-SHA256 of the cluster
// secret with A, B and g in the info. Nothing secret ever crosses the wire.
package ipsec

import (
	"cmp"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
)

const (
	// Algorithm is the kernel's name of the AEAD every SA uses: AES-GCM as in
	// RFC 4106, with a 16-byte ICV.
	Algorithm = "rfc4106(gcm(aes))"
	// ICVBits is the length of the GCM tag.
	ICVBits = 128
	// KeyBits is the AES key size. AES-128 rather than 256: 10 rounds instead
	// of 14 make it the faster of the two with AES-NI, and 128 bits are far
	// beyond brute force for keys that rotate.
	KeyBits = 128
	// SaltBytes is the nonce salt RFC 4106 appends to the AES key.
	SaltBytes = 4
	// KeyBytes is the length of the kernel's key material: AES key + salt.
	KeyBytes = KeyBits/8 + SaltBytes
	// MinSecretBytes is the shortest cluster secret accepted: 128 bits of
	// entropy, the strength of the keys derived from it.
	MinSecretBytes = 16
	// minSPI is the first SPI outside 0-255, which RFC 4303 reserves.
	minSPI = 256
)

// Node is one host of the cluster as the key derivation sees it: its
// cluster-unique name (the identity in the derivation) and underlay address
// (where its SAs point).
type Node struct {
	Name string
	IP   net.IP
}

// Dir says which way an SA carries traffic, seen from the local host.
type Dir int

const (
	In Dir = iota
	Out
)

func (d Dir) String() string {
	if d == Out {
		return "out"
	}
	return "in"
}

// SA is one security association: the traffic of generation Gen from Src to
// Dst, encrypted with Key and marked with SPI.
type SA struct {
	Dir  Dir
	Peer string // the other host's name
	Src  net.IP
	Dst  net.IP
	SPI  uint32
	Gen  uint64
	Key  []byte // KeyBytes: AES key then salt
}

func (s SA) String() string {
	return fmt.Sprintf("%s %s->%s spi 0x%08x gen %d", s.Dir, s.Src, s.Dst, s.SPI, s.Gen)
}

// CheckSecret reports whether secret can be the cluster secret.
func CheckSecret(secret []byte) error {
	if len(secret) < MinSecretBytes {
		return fmt.Errorf("cluster secret is %d bytes; encrypted networks need at least %d (e.g. `head -c 32 /dev/urandom | base64`)", len(secret), MinSecretBytes)
	}
	return nil
}

// ClusterSecret derives the cluster secret of the encrypted networks from
// the gossip key: every host already shares it, and an encrypted data plane
// beside a gossip anyone can write to would protect little. The derivation
// (its own HKDF label) keeps the gossip key itself out of the SAs.
func ClusterSecret(gossipKey []byte) ([]byte, error) {
	if len(gossipKey) == 0 {
		return nil, errors.New("encrypted networks need GOSSIP_KEY (the same on every host): set it with `docker plugin set vxovl GOSSIP_KEY=$(head -c32 /dev/urandom | base64)` while the plugin is disabled")
	}
	return hkdf.Key(sha256.New, gossipKey, nil, "vxovl ipsec v1 cluster secret", 32)
}

// Generation is the key generation of time t with keys rotating every
// period: every host computes it from its clock, with no coordination.
// Hosts accept the generations before and after their own (see Want), so
// clocks may differ by up to a period.
func Generation(unixSeconds int64, period int64) uint64 {
	if period <= 0 || unixSeconds < 0 {
		return 0
	}
	return uint64(unixSeconds / period)
}

// info is the HKDF context of the traffic from src to dst in generation
// gen. The names are sorted and the direction added, so the one encoding
// names the pair whichever side computes it; lengths prefix the names so
// that no two pairs encode alike.
func info(purpose, src, dst string, gen uint64) string {
	lo, hi, dir := src, dst, "lo>hi"
	if hi < lo {
		lo, hi, dir = dst, src, "hi>lo"
	}
	return fmt.Sprintf("vxovl ipsec v1 %s %d:%s %d:%s %s gen %d", purpose, len(lo), lo, len(hi), hi, dir, gen)
}

// Key derives the key material of the traffic from src to dst in
// generation gen.
func Key(secret []byte, src, dst string, gen uint64) ([]byte, error) {
	if err := CheckSecret(secret); err != nil {
		return nil, err
	}
	if src == "" || dst == "" || src == dst {
		return nil, fmt.Errorf("derive key: need two distinct host names, got %q and %q", src, dst)
	}
	return hkdf.Key(sha256.New, secret, nil, info("key", src, dst, gen), KeyBytes)
}

// spiCandidate is the try-th SPI candidate of the traffic from src to dst
// in generation gen. The top byte is 1 + gen mod 255: never 0, so no SPI
// falls in the reserved 0-255, and adjacent generations (the ones installed
// together during a rotation) never share an SPI. The low 24 bits come from
// the hash of the pair, so they need no coordination.
func spiCandidate(secret []byte, src, dst string, gen uint64, try int) uint32 {
	h := sha256.Sum256(append(append([]byte(nil), secret...), fmt.Sprintf("%s try %d", info("spi", src, dst, gen), try)...))
	low := binary.BigEndian.Uint32(h[:4]) & 0x00ffffff
	return uint32(1+gen%255)<<24 | low
}

// SPIs assigns the SPI of every directed pair of members in generation gen,
// keyed "src\x00dst". The kernel finds an inbound SA by destination and
// SPI, so the SPIs into one host must differ: for each receiver, senders in
// name order take their first candidate not yet taken. Every host that sees
// the same membership computes the same table.
func SPIs(secret []byte, members []string, gen uint64) map[string]uint32 {
	names := slices.Clone(members)
	slices.Sort(names)
	names = slices.Compact(names)
	out := make(map[string]uint32, len(names)*len(names))
	for _, dst := range names {
		taken := make(map[uint32]bool, len(names))
		for _, src := range names {
			if src == dst {
				continue
			}
			for try := 0; ; try++ {
				spi := spiCandidate(secret, src, dst, gen, try)
				if spi >= minSPI && !taken[spi] {
					taken[spi] = true
					out[src+"\x00"+dst] = spi
					break
				}
			}
		}
	}
	return out
}

// Want is what a host asks for: itself, the other hosts it shares
// encrypted networks with, the generation it sends with and the ones it
// accepts (the send generation and its neighbours during a rotation).
type Want struct {
	Self    Node
	Peers   []Node
	Send    uint64
	Receive []uint64
}

// SAs computes the SAs the local host needs: one outbound SA per peer in
// the send generation, one inbound SA per peer and receive generation.
// The result is sorted, so equal inputs give equal slices.
func SAs(secret []byte, w Want) ([]SA, error) {
	if err := CheckSecret(secret); err != nil {
		return nil, err
	}
	if err := checkNode(w.Self); err != nil {
		return nil, fmt.Errorf("local host: %w", err)
	}
	members := []string{w.Self.Name}
	seen := map[string]bool{w.Self.Name: true}
	for _, p := range w.Peers {
		if err := checkNode(p); err != nil {
			return nil, fmt.Errorf("peer: %w", err)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("peer %q listed twice or has the local host's name", p.Name)
		}
		seen[p.Name] = true
		members = append(members, p.Name)
	}
	recv := slices.Clone(w.Receive)
	slices.Sort(recv)
	recv = slices.Compact(recv)
	gens := slices.Compact(slices.Sorted(slices.Values(append([]uint64{w.Send}, recv...))))
	spis := make(map[uint64]map[string]uint32, len(gens))
	for _, g := range gens {
		spis[g] = SPIs(secret, members, g)
	}
	var out []SA
	add := func(dir Dir, peer string, src, dst Node, gen uint64) error {
		key, err := Key(secret, src.Name, dst.Name, gen)
		if err != nil {
			return err
		}
		out = append(out, SA{Dir: dir, Peer: peer, Src: src.IP.To4(), Dst: dst.IP.To4(),
			SPI: spis[gen][src.Name+"\x00"+dst.Name], Gen: gen, Key: key})
		return nil
	}
	for _, p := range w.Peers {
		if err := add(Out, p.Name, w.Self, p, w.Send); err != nil {
			return nil, err
		}
		for _, g := range recv {
			if err := add(In, p.Name, p, w.Self, g); err != nil {
				return nil, err
			}
		}
	}
	slices.SortFunc(out, func(a, b SA) int {
		if c := strings.Compare(a.Peer, b.Peer); c != 0 {
			return c
		}
		if a.Dir != b.Dir {
			return int(a.Dir) - int(b.Dir)
		}
		return cmp.Compare(a.Gen, b.Gen)
	})
	return out, nil
}

func checkNode(n Node) error {
	if n.Name == "" {
		return errors.New("host without a name")
	}
	if n.IP.To4() == nil {
		return fmt.Errorf("host %q has no IPv4 underlay address (%v)", n.Name, n.IP)
	}
	return nil
}
