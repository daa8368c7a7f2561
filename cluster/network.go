package cluster

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/vxovl/vxovl/internal/vxlan"
)

// Networks are records of kind "net", keyed by the VNI in decimal, whose
// value is the MTU (uvarint) and the canonical subnet, followed by
// encryptedSuffix for an encrypted network. An unencrypted network's
// record is what it was before encryption existed; a host too old to know
// the suffix rejects an encrypted network's record rather than join it in
// clear.
const kindNetwork = "net"

const encryptedSuffix = ";encrypted"

// networkKind is the built-in kind behind PublishNetwork and Networks.
func networkKind(idx *networkIndex) *kind {
	return &kind{
		builtin: true,
		decode: func(owner string, w wireRecord) (any, error) {
			n, err := decodeNetwork(owner, w)
			return &n, err
		},
		checkKey: func(key string) error { _, err := parseNetworkKey(key); return err },
		index:    idx,
	}
}

func networkKey(vni uint32) string { return strconv.FormatUint(uint64(vni), 10) }

func parseNetworkKey(key string) (uint32, error) {
	n, err := strconv.ParseUint(key, 10, 32)
	if err != nil || strconv.FormatUint(n, 10) != key {
		return 0, fmt.Errorf("network key %q is not a VNI", key)
	}
	return uint32(n), vxlan.CheckVNI(uint32(n))
}

// canonicalSubnet parses an IPv4 CIDR and returns its masked form.
func canonicalSubnet(s string) (string, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return "", fmt.Errorf("subnet %q is not an IPv4 CIDR", s)
	}
	return p.Masked().String(), nil
}

func checkNetwork(n Network) (Network, error) {
	if err := vxlan.CheckVNI(n.VNI); err != nil {
		return n, err
	}
	s, err := canonicalSubnet(n.Subnet)
	if err != nil {
		return n, err
	}
	n.Subnet = s
	if err := vxlan.CheckMTU(n.MTU); err != nil {
		return n, err
	}
	return n, nil
}

func encodeNetworkValue(n Network) []byte {
	b := binary.AppendUvarint(nil, uint64(n.MTU))
	b = append(b, n.Subnet...)
	if n.Encrypted {
		b = append(b, encryptedSuffix...)
	}
	return b
}

func decodeNetwork(owner string, w wireRecord) (Network, error) {
	vni, err := parseNetworkKey(w.Key)
	if err != nil {
		return Network{}, err
	}
	mtu, k := binary.Uvarint(w.Value)
	if k <= 0 || mtu > vxlan.MaxMTU {
		return Network{}, fmt.Errorf("network value: bad MTU")
	}
	subnet, encrypted := strings.CutSuffix(string(w.Value[k:]), encryptedSuffix)
	n, err := checkNetwork(Network{VNI: vni, Subnet: subnet, MTU: int(mtu), Encrypted: encrypted, Node: owner})
	if err != nil {
		return Network{}, err
	}
	if n.Subnet != subnet {
		return Network{}, fmt.Errorf("network subnet %q not canonical", subnet)
	}
	return n, nil
}

// definition is how errors show what hosts must agree on.
func (n Network) definition() string {
	return fmt.Sprintf("subnet %s MTU %d encrypted=%t", n.Subnet, n.MTU, n.Encrypted)
}

func sameNetwork(a, b Network) bool {
	return a.Subnet == b.Subnet && a.MTU == b.MTU && a.Encrypted == b.Encrypted
}

// networkIndex holds the live network definitions by VNI and owner, for
// Networks and for noticing a remote definition that disagrees with ours.
type networkIndex struct {
	self      string
	byVNI     map[uint32]map[string]*Network
	own       map[uint32]struct{} // the VNIs this node defines
	conflicts uint64
	// onConflict, if set, is told about each remote definition that
	// disagrees with ours, when either arrives.
	onConflict func(ours, theirs Network)
	// onHolder, if set, is told when a remote node's definition of a
	// network this node has arrives: the node has taken the network up (or
	// came back), and needs our records of it.
	onHolder func(owner string, vni uint32)
}

func newNetworkIndex(self string) *networkIndex {
	return &networkIndex{self: self, byVNI: map[uint32]map[string]*Network{}, own: map[uint32]struct{}{}}
}

func (x *networkIndex) add(owner string, val any) {
	nw := val.(*Network)
	m := x.byVNI[nw.VNI]
	if m == nil {
		m = map[string]*Network{}
		x.byVNI[nw.VNI] = m
	}
	m[owner] = nw
	if owner == x.self {
		x.own[nw.VNI] = struct{}{}
	}
	if owner != x.self && m[x.self] != nil && x.onHolder != nil {
		x.onHolder(owner, nw.VNI)
	}
	if owner == x.self {
		for o, other := range m {
			if o != x.self && !sameNetwork(*nw, *other) {
				x.conflict(*nw, *other)
			}
		}
	} else if ours := m[x.self]; ours != nil && !sameNetwork(*ours, *nw) {
		x.conflict(*ours, *nw)
	}
}

func (x *networkIndex) conflict(ours, theirs Network) {
	x.conflicts++
	if x.onConflict != nil {
		x.onConflict(ours, theirs)
	}
}

func (x *networkIndex) remove(owner string, val any) {
	nw := val.(*Network)
	if owner == x.self {
		delete(x.own, nw.VNI)
	}
	if m := x.byVNI[nw.VNI]; m != nil {
		delete(m, owner)
		if len(m) == 0 {
			delete(x.byVNI, nw.VNI)
		}
	}
}

func (x *networkIndex) networks() []Network {
	var out []Network
	for _, m := range x.byVNI {
		for _, n := range m {
			out = append(out, *n)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].VNI != out[j].VNI {
			return out[i].VNI < out[j].VNI
		}
		return out[i].Node < out[j].Node
	})
	return out
}

// remote returns the live remote definitions of one VNI.
func (x *networkIndex) remote(vni uint32) []Network {
	var out []Network
	for owner, n := range x.byVNI[vni] {
		if owner != x.self {
			out = append(out, *n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// has reports whether this node defines the network.
func (x *networkIndex) has(vni uint32) bool { _, ok := x.own[vni]; return ok }

// holders returns the live remote nodes that define the network.
func (x *networkIndex) holders(vni uint32) []string {
	m := x.byVNI[vni]
	out := make([]string, 0, len(m))
	for owner := range m {
		if owner != x.self {
			out = append(out, owner)
		}
	}
	return out
}

// holds reports whether node defines the network.
func (x *networkIndex) holds(node string, vni uint32) bool { return x.byVNI[vni][node] != nil }

// shared returns the networks this node defines that node defines too.
func (x *networkIndex) shared(node string) []uint32 {
	var out []uint32
	for vni := range x.own {
		if x.holds(node, vni) {
			out = append(out, vni)
		}
	}
	return out
}

// ours returns the networks this node defines.
func (x *networkIndex) ours() []uint32 {
	out := make([]uint32, 0, len(x.own))
	for vni := range x.own {
		out = append(out, vni)
	}
	slices.Sort(out)
	return out
}
