package cluster

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode"

	"github.com/vxovl/vxovl/internal/vxlan"
)

// Built-in record kinds; RegisterKind refuses them.
const (
	kindEndpoint = "ep"
	kindNetwork  = "net"
)

const (
	maxEPID  = 128
	epValLen = 4 + 6 + 4 // IP, MAC, VTEP
)

func validKind(k string) error {
	if k == "" || len(k) > maxKindLen {
		return fmt.Errorf("kind %q must be 1-%d bytes", k, maxKindLen)
	}
	for _, r := range k {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fmt.Errorf("kind %q contains a space or non-printable character", k)
		}
	}
	return nil
}

// validRecord checks what every record must satisfy regardless of kind.
func validRecord(owner string, w wireRecord) error {
	if err := validNodeName(owner); err != nil {
		return fmt.Errorf("owner: %w", err)
	}
	if err := validKind(w.Kind); err != nil {
		return err
	}
	if w.Key == "" || len(w.Key) > maxKeyLen {
		return fmt.Errorf("key must be 1-%d bytes", maxKeyLen)
	}
	if w.Version == 0 {
		return fmt.Errorf("version 0")
	}
	if w.Deleted && len(w.Value) != 0 {
		return fmt.Errorf("tombstone carries a value")
	}
	return nil
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

// checkEndpoint validates a local endpoint before publishing.
func checkEndpoint(ep Endpoint) error {
	if err := vxlan.CheckVNI(ep.VNI); err != nil {
		return err
	}
	if err := validEndpointID(ep.ID); err != nil {
		return err
	}
	if _, ok := unicastIPv4(ep.IP); !ok {
		return fmt.Errorf("endpoint IP %q must be a unicast IPv4 address", ep.IP)
	}
	return vxlan.CheckMAC(ep.MAC)
}

func encodeEndpointValue(ep Endpoint) []byte {
	b := make([]byte, 0, epValLen)
	b = append(b, ep.IP.To4()...)
	b = append(b, ep.MAC...)
	return append(b, ep.VTEP.To4()...)
}

// decodeEndpoint turns a live endpoint record into an Endpoint, validating
// everything a received record could get wrong.
func decodeEndpoint(owner string, w wireRecord) (Endpoint, error) {
	vni, id, err := parseEndpointKey(w.Key)
	if err != nil {
		return Endpoint{}, err
	}
	if len(w.Value) != epValLen {
		return Endpoint{}, fmt.Errorf("endpoint value is %d bytes, want %d", len(w.Value), epValLen)
	}
	ep := Endpoint{
		VNI:     vni,
		ID:      id,
		IP:      net.IP(append([]byte(nil), w.Value[0:4]...)),
		MAC:     net.HardwareAddr(append([]byte(nil), w.Value[4:10]...)),
		VTEP:    net.IP(append([]byte(nil), w.Value[10:14]...)),
		Node:    owner,
		Version: w.Version,
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

func networkKey(vni uint32) string { return strconv.FormatUint(uint64(vni), 10) }

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
	return append(b, n.Subnet...)
}

func decodeNetwork(owner string, w wireRecord) (Network, error) {
	n64, err := strconv.ParseUint(w.Key, 10, 32)
	if err != nil || strconv.FormatUint(n64, 10) != w.Key {
		return Network{}, fmt.Errorf("network key %q is not a VNI", w.Key)
	}
	mtu, k := binary.Uvarint(w.Value)
	if k <= 0 || mtu > vxlan.MaxMTU {
		return Network{}, fmt.Errorf("network value: bad MTU")
	}
	n, err := checkNetwork(Network{VNI: uint32(n64), Subnet: string(w.Value[k:]), MTU: int(mtu), Node: owner})
	if err != nil {
		return Network{}, err
	}
	if n.Subnet != string(w.Value[k:]) {
		return Network{}, fmt.Errorf("network subnet %q not canonical", w.Value[k:])
	}
	return n, nil
}
