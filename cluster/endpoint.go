package cluster

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/vxovl/vxovl/internal/dnsname"
	"github.com/vxovl/vxovl/internal/vxlan"
)

// Endpoints are records of kind "ep", keyed "<vni>/<endpoint ID>". The
// value is the IPv4 address, MAC and VTEP (14 bytes), then Created
// (uvarint) and the names (a uvarint count, then each name as a uvarint
// length and its bytes). A value of only the first 14 bytes, as sent before
// Created and names existed, is a claim as old as its record (Created =
// Version) with no names.
const (
	kindEndpoint = "ep"
	maxEPID      = 128
	epFixedLen   = 4 + 6 + 4 // IP, MAC, VTEP
)

// MaxNamesLen bounds the total length of one endpoint's DNS names (the sum
// of their lengths), so that the endpoint's record fits one gossip packet;
// dnsname bounds each name (MaxLen) and their number (MaxNames).
const MaxNamesLen = 512

// endpointKind is the built-in kind behind PublishEndpoint and Endpoints.
// Its changes are grouped by VNI and reported to h.
func endpointKind(idx *endpointIndex, h Handler) *kind {
	return &kind{
		builtin: true,
		decode: func(owner string, w wireRecord) (any, error) {
			ep, err := decodeEndpoint(owner, w)
			return &ep, err
		},
		checkKey: func(key string) error { _, _, err := parseEndpointKey(key); return err },
		scope:    func(key string) string { vni, _, _ := strings.Cut(key, "/"); return vni },
		network:  endpointVNI,
		changed: func(vnis []string) {
			if h == nil {
				return
			}
			for _, s := range vnis {
				if vni, err := strconv.ParseUint(s, 10, 32); err == nil {
					h.EndpointsChanged(uint32(vni))
				}
			}
		},
		index: idx,
	}
}

func unicastIPv4(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	a = a.Unmap()
	if !a.Is4() || a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, false
	}
	return a, true
}

func validEndpointID(id string) error {
	if id == "" || len(id) > maxEPID {
		return fmt.Errorf("endpoint ID must be 1-%d bytes", maxEPID)
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fmt.Errorf("endpoint ID %q contains a space or non-printable character", id)
		}
	}
	return nil
}

func endpointKey(vni uint32, id string) string {
	return strconv.FormatUint(uint64(vni), 10) + "/" + id
}

// endpointVNI returns the VNI of a checked endpoint key (0 for a bad one,
// which prepare refuses before it is stored).
func endpointVNI(key string) uint32 {
	v, _, _ := strings.Cut(key, "/")
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0
	}
	return uint32(n)
}

func parseEndpointKey(key string) (uint32, string, error) {
	v, id, ok := strings.Cut(key, "/")
	if !ok {
		return 0, "", fmt.Errorf("endpoint key %q lacks '/'", key)
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || strconv.FormatUint(n, 10) != v {
		return 0, "", fmt.Errorf("endpoint key %q: bad VNI", key)
	}
	if err := vxlan.CheckVNI(uint32(n)); err != nil {
		return 0, "", err
	}
	if err := validEndpointID(id); err != nil {
		return 0, "", err
	}
	return uint32(n), id, nil
}

// checkEndpoint validates a local endpoint before publishing and returns its
// names normalised.
func checkEndpoint(ep Endpoint) ([]string, error) {
	if err := vxlan.CheckVNI(ep.VNI); err != nil {
		return nil, err
	}
	if err := validEndpointID(ep.ID); err != nil {
		return nil, err
	}
	if _, ok := unicastIPv4(ep.IP); !ok {
		return nil, fmt.Errorf("endpoint IP %q must be a unicast IPv4 address", ep.IP)
	}
	if err := vxlan.CheckMAC(ep.MAC); err != nil {
		return nil, err
	}
	names, err := dnsname.Normalize(ep.Names)
	if err != nil {
		return nil, err
	}
	if n := namesLen(names); n > MaxNamesLen {
		return nil, fmt.Errorf("the endpoint's %d DNS names take %d bytes, at most %d fit its gossip record: drop some aliases", len(names), n, MaxNamesLen)
	}
	return names, nil
}

func namesLen(names []string) int {
	n := 0
	for _, s := range names {
		n += len(s)
	}
	return n
}

func encodeEndpointValue(ep Endpoint) []byte {
	b := make([]byte, 0, epFixedLen+2*binary.MaxVarintLen64+len(ep.Names)+namesLen(ep.Names))
	b = append(b, ep.IP.To4()...)
	b = append(b, ep.MAC...)
	b = append(b, ep.VTEP.To4()...)
	b = binary.AppendUvarint(b, ep.Created)
	b = binary.AppendUvarint(b, uint64(len(ep.Names)))
	for _, s := range ep.Names {
		b = appendString(b, s)
	}
	return b
}

// decodeNames reads the names of an endpoint value and checks that they
// are within bounds and in the normalised form a publisher sends, so that
// every node holds the same list.
func decodeNames(r *reader) ([]string, error) {
	n := r.count(2)
	if r.err != nil {
		return nil, r.err
	}
	if n > dnsname.MaxNames {
		return nil, fmt.Errorf("%d DNS names, at most %d", n, dnsname.MaxNames)
	}
	if n == 0 {
		return nil, nil
	}
	names := make([]string, 0, n)
	total := 0
	for range n {
		s := r.str(dnsname.MaxLen, "DNS name")
		if r.err != nil {
			return nil, r.err
		}
		if total += len(s); total > MaxNamesLen {
			return nil, fmt.Errorf("DNS names exceed %d bytes", MaxNamesLen)
		}
		names = append(names, s)
	}
	norm, err := dnsname.Normalize(names)
	if err != nil {
		return nil, err
	}
	if !slices.Equal(norm, names) {
		return nil, fmt.Errorf("DNS names %q are not normalised", names)
	}
	return names, nil
}

// decodeEndpoint turns a live endpoint record into an Endpoint, validating
// everything a received record could get wrong.
func decodeEndpoint(owner string, w wireRecord) (Endpoint, error) {
	vni, id, err := parseEndpointKey(w.Key)
	if err != nil {
		return Endpoint{}, err
	}
	if len(w.Value) < epFixedLen {
		return Endpoint{}, fmt.Errorf("endpoint value is %d bytes, want at least %d", len(w.Value), epFixedLen)
	}
	ep := Endpoint{
		VNI:     vni,
		ID:      id,
		IP:      net.IP(append([]byte(nil), w.Value[0:4]...)),
		MAC:     net.HardwareAddr(append([]byte(nil), w.Value[4:10]...)),
		VTEP:    net.IP(append([]byte(nil), w.Value[10:14]...)),
		Node:    owner,
		Version: w.Version,
		Created: w.Version,
	}
	if rest := w.Value[epFixedLen:]; len(rest) > 0 {
		r := reader{b: rest}
		ep.Created = r.uvarint()
		if ep.Names, err = decodeNames(&r); err != nil {
			return Endpoint{}, fmt.Errorf("endpoint value: %w", err)
		}
		if err := r.done(); err != nil {
			return Endpoint{}, fmt.Errorf("endpoint value: %w", err)
		}
		if ep.Created == 0 || ep.Created > ep.Version {
			return Endpoint{}, fmt.Errorf("endpoint created at version %d, published at %d", ep.Created, ep.Version)
		}
	}
	if _, ok := unicastIPv4(ep.IP); !ok {
		return Endpoint{}, fmt.Errorf("endpoint IP %s is not unicast IPv4", ep.IP)
	}
	if _, ok := unicastIPv4(ep.VTEP); !ok {
		return Endpoint{}, fmt.Errorf("VTEP %s is not unicast IPv4", ep.VTEP)
	}
	if err := vxlan.CheckMAC(ep.MAC); err != nil {
		return Endpoint{}, err
	}
	return ep, nil
}

func copyEndpoint(ep Endpoint) Endpoint {
	ep.IP = append(net.IP(nil), ep.IP...)
	ep.MAC = append(net.HardwareAddr(nil), ep.MAC...)
	ep.VTEP = append(net.IP(nil), ep.VTEP...)
	ep.Names = slices.Clone(ep.Names)
	return ep
}

// endpointIndex holds the live endpoints by VNI and by (VNI, IP), for
// Endpoints and for noticing two owners claiming one IP.
type endpointIndex struct {
	self  string
	byVNI map[uint32]map[epRef]*Endpoint
	// byIP holds one claim per IP but while two owners claim one; a slice,
	// not a map, because a small map per IP costs hundreds of bytes.
	byIP      map[vniIP][]epRef
	conflicts uint64
	// onConflict, if set, is told about each new claim on an IP that
	// another live endpoint holds.
	onConflict func(newer, older Endpoint)
}

type epRef struct{ owner, id string }

type vniIP struct {
	vni uint32
	ip  [4]byte
}

func newEndpointIndex(self string) *endpointIndex {
	return &endpointIndex{self: self, byVNI: map[uint32]map[epRef]*Endpoint{}, byIP: map[vniIP][]epRef{}}
}

func (x *endpointIndex) add(owner string, val any) {
	ep := val.(*Endpoint)
	ref := epRef{owner, ep.ID}
	m := x.byVNI[ep.VNI]
	if m == nil {
		m = map[epRef]*Endpoint{}
		x.byVNI[ep.VNI] = m
	}
	m[ref] = ep
	ik := vniIP{ep.VNI, [4]byte(ep.IP.To4())}
	others := x.byIP[ik]
	if len(others) > 0 {
		x.conflicts++
		if x.onConflict != nil {
			other := x.byVNI[ep.VNI][others[0]]
			if other.NewerThan(ep) {
				x.onConflict(*other, *ep)
			} else {
				x.onConflict(*ep, *other)
			}
		}
	}
	x.byIP[ik] = append(others, ref)
}

func (x *endpointIndex) remove(owner string, val any) {
	ep := val.(*Endpoint)
	ref := epRef{owner, ep.ID}
	if m := x.byVNI[ep.VNI]; m != nil {
		delete(m, ref)
		if len(m) == 0 {
			delete(x.byVNI, ep.VNI)
		}
	}
	ik := vniIP{ep.VNI, [4]byte(ep.IP.To4())}
	refs := x.byIP[ik]
	if i := slices.Index(refs, ref); i >= 0 {
		refs = slices.Delete(refs, i, i+1)
	}
	if len(refs) == 0 {
		delete(x.byIP, ik)
	} else {
		x.byIP[ik] = refs
	}
}

// endpoints returns the remote winners per IP in one VNI.
func (x *endpointIndex) endpoints(vni uint32) []Endpoint {
	best := map[[4]byte]*Endpoint{}
	for _, ep := range x.byVNI[vni] {
		ip := [4]byte(ep.IP.To4())
		if cur := best[ip]; cur == nil || ep.NewerThan(cur) {
			best[ip] = ep
		}
	}
	out := make([]Endpoint, 0, len(best))
	for _, ep := range best {
		if ep.Node != x.self {
			out = append(out, copyEndpoint(*ep))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if c := bytes.Compare(out[i].IP, out[j].IP); c != 0 {
			return c < 0
		}
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].ID < out[j].ID
	})
	return out
}
