package driver

import (
	"fmt"
	"hash/fnv"
	"net"
	"strconv"
	"strings"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxovl/vxovl/internal/vxlan"
)

// Docker passes `docker network create -o k=v` options under this key.
const genericOptionsKey = "com.docker.network.generic"

// Docker's flag for --internal networks.
const internalOptionKey = "com.docker.network.internal"

// The option names users type after -o.
const (
	OptVNI   = "vni"
	OptMTU   = "mtu"
	OptFlood = "flood"
	OptDNS   = "dns"
	// OptEncrypted carries the network's VXLAN over IPsec.
	OptEncrypted = "encrypted"
)

// networkOptions is what the user asked for, before defaults are applied.
type networkOptions struct {
	VNI      uint32 // 0: derive from the subnet
	MTU      int    // 0: use the driver default
	Flood    bool
	Internal bool
	NoDNS    bool
	// Encrypted: the overlay's VXLAN goes over IPsec (ESP).
	Encrypted bool
}

func parseNetworkOptions(opts map[string]interface{}) (networkOptions, error) {
	var o networkOptions
	if v, ok := opts[internalOptionKey]; ok {
		b, err := boolValue(v)
		if err != nil {
			return o, fmt.Errorf("option %s: %w", internalOptionKey, err)
		}
		o.Internal = b
	}
	raw, ok := opts[genericOptionsKey]
	if !ok || raw == nil {
		return o, nil
	}
	generic, ok := raw.(map[string]interface{})
	if !ok {
		return o, fmt.Errorf("malformed %s: want an object of options, got %T", genericOptionsKey, raw)
	}
	for key, val := range generic {
		s := fmt.Sprint(val)
		switch key {
		case OptVNI:
			n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
			if err != nil || vxlan.CheckVNI(uint32(n)) != nil {
				return o, fmt.Errorf("bad -o vni=%q: want a whole number from 1 to %d", s, vxlan.MaxVNI)
			}
			o.VNI = uint32(n)
		case OptMTU:
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err == nil {
				err = vxlan.CheckMTU(n)
			}
			if err != nil {
				return o, fmt.Errorf("bad -o mtu=%q: want a whole number from %d to %d (the underlay MTU minus %d fits)", s, vxlan.MinMTU, vxlan.MaxMTU, vxlan.Overhead)
			}
			o.MTU = n
		case OptFlood:
			b, err := boolValue(val)
			if err != nil {
				return o, fmt.Errorf("bad -o flood=%q: want true or false", s)
			}
			o.Flood = b
		case OptDNS:
			b, err := boolValue(val)
			if err != nil {
				return o, fmt.Errorf("bad -o dns=%q: want true or false", s)
			}
			o.NoDNS = !b
		case OptEncrypted:
			b, err := boolValue(val)
			if err != nil {
				return o, fmt.Errorf("bad -o encrypted=%q: want true or false", s)
			}
			o.Encrypted = b
		case internalOptionKey:
			// Some Docker versions put --internal among the generic options.
			b, err := boolValue(val)
			if err != nil {
				return o, fmt.Errorf("option %s: %w", internalOptionKey, err)
			}
			o.Internal = o.Internal || b
		default:
			if strings.HasPrefix(key, "com.docker.") {
				continue // Docker's own labels, not for us
			}
			return o, fmt.Errorf("unknown option -o %s: vxovl knows %s, %s, %s, %s and %s", key, OptVNI, OptMTU, OptFlood, OptDNS, OptEncrypted)
		}
	}
	return o, nil
}

func boolValue(v interface{}) (bool, error) {
	switch b := v.(type) {
	case bool:
		return b, nil
	case string:
		p, err := strconv.ParseBool(strings.TrimSpace(b))
		if err != nil {
			return false, fmt.Errorf("want true or false, got %q", b)
		}
		return p, nil
	}
	return false, fmt.Errorf("want true or false, got %v", v)
}

// ipv4Pool is the single IPv4 pool vxovl supports per network.
type ipv4Pool struct {
	Subnet  *net.IPNet
	Gateway *net.IPNet // gateway address with the subnet's mask; nil when Docker gave none
}

func parsePools(v4 []*network.IPAMData, v6 []*network.IPAMData) (ipv4Pool, error) {
	var p ipv4Pool
	if len(v6) > 0 {
		return p, fmt.Errorf("IPv6 is not supported by vxovl yet: create the network without --ipv6")
	}
	if len(v4) != 1 || v4[0] == nil {
		return p, fmt.Errorf("vxovl needs exactly one IPv4 subnet per network, got %d: pass one --subnet", len(v4))
	}
	ip, subnet, err := net.ParseCIDR(v4[0].Pool)
	if err != nil || ip.To4() == nil {
		return p, fmt.Errorf("bad IPv4 pool %q from IPAM: %v", v4[0].Pool, err)
	}
	if ones, _ := subnet.Mask.Size(); ones > 30 {
		return p, fmt.Errorf("subnet %s is too small for an overlay: use /30 or larger", subnet)
	}
	subnet.IP = subnet.IP.To4()
	p.Subnet = subnet
	if gw := v4[0].Gateway; gw != "" {
		gip, gnet, err := net.ParseCIDR(gw)
		if err != nil {
			// Some IPAM drivers send a bare address.
			gip = net.ParseIP(gw)
			if gip == nil {
				return p, fmt.Errorf("bad gateway %q from IPAM", gw)
			}
		} else if gnet.String() != subnet.String() {
			return p, fmt.Errorf("gateway %s is not in subnet %s", gw, subnet)
		}
		if gip.To4() == nil || !subnet.Contains(gip) {
			return p, fmt.Errorf("gateway %s is not an IPv4 address in subnet %s", gw, subnet)
		}
		p.Gateway = &net.IPNet{IP: gip.To4(), Mask: subnet.Mask}
	}
	return p, nil
}

// DeriveVNI maps an IPv4 subnet to a VNI, so that the same
// `docker network create --subnet S` on every host lands in the same overlay
// without agreeing on anything else. It is a hash, so two subnets can collide:
// the collision is caught locally (duplicate VNI) or by the cluster (same VNI,
// different subnet) and the user then passes -o vni=N.
func DeriveVNI(subnet *net.IPNet) uint32 {
	h := fnv.New32a()
	h.Write([]byte("vxovl/ipv4/" + subnet.String()))
	// Fold into 1..MaxVNI; 0 is not a valid VNI.
	return h.Sum32()%vxlan.MaxVNI + 1
}
