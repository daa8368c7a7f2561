// Package vxlan is the one home of the limits and validators of an overlay
// network's definition: VNI range, MTU bounds, the VXLAN overhead and port,
// and what makes an endpoint's MAC usable. The driver, the dataplane, the
// cluster and the plugin's settings all check against these, so a value
// one part accepts is never refused by another.
package vxlan

import (
	"fmt"
	"net"
)

const (
	// MaxVNI is the largest VXLAN network identifier (24 bits); 0 is not valid.
	MaxVNI = 1<<24 - 1
	// DefaultPort is the IANA VXLAN port. The Linux default (8472) predates
	// the assignment, so the port is always set explicitly.
	DefaultPort = 4789
	// Overhead is what VXLAN adds to an overlay frame on the underlay: outer
	// IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
	Overhead = 50
	// MinMTU is IPv4's floor for a link that must carry a full IP header and
	// options plus a useful payload; below it, TCP cannot work well.
	MinMTU = 576
	// MaxMTU is the largest jumbo frame common NICs carry, less Overhead.
	MaxMTU = 9216 - Overhead
	// DefaultMTU is the overlay MTU on a standard 1500-byte underlay.
	DefaultMTU = 1500 - Overhead
	// ESPOverhead is what IPsec ESP in transport mode with AES-GCM adds to
	// an encrypted network's VXLAN packets: ESP header (8) + IV (8) + ICV
	// (16) + trailer (2) + up to 3 bytes of padding, rounded up to 40. An
	// encrypted network's default MTU is the plain default minus this.
	ESPOverhead = 40
	// DefaultEncryptedPort is the VXLAN UDP port of encrypted networks. Their
	// own port lets the kernel's IPsec policies select their traffic by port
	// alone, and drop cleartext aimed at it, without touching the others'.
	DefaultEncryptedPort = 4800
)

// CheckVNI reports whether vni is a usable VXLAN network identifier.
func CheckVNI(vni uint32) error {
	if vni < 1 || vni > MaxVNI {
		return fmt.Errorf("VNI %d out of range: must be 1 to %d", vni, MaxVNI)
	}
	return nil
}

// CheckMTU reports whether mtu is a usable overlay MTU.
func CheckMTU(mtu int) error {
	if mtu < MinMTU || mtu > MaxMTU {
		return fmt.Errorf("MTU %d out of range: must be %d to %d (the underlay MTU minus %d fits)", mtu, MinMTU, MaxMTU, Overhead)
	}
	return nil
}

// CheckPort reports whether port is a usable UDP or TCP port.
func CheckPort(port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("port %d out of range: must be 1 to 65535", port)
	}
	return nil
}

// CheckMAC reports whether mac can be an endpoint's address: 6 bytes,
// unicast, not all zeros.
func CheckMAC(mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("MAC %q is not a 6-byte Ethernet address", mac)
	}
	if mac[0]&1 != 0 {
		return fmt.Errorf("MAC %s is a multicast address: a unicast MAC is required", mac)
	}
	if mac[0]|mac[1]|mac[2]|mac[3]|mac[4]|mac[5] == 0 {
		return fmt.Errorf("MAC is all zeros: a real MAC is required")
	}
	return nil
}

// ParseMAC parses an endpoint MAC as Docker passes it and checks it.
func ParseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("bad MAC address %q: want a unicast 6-byte MAC like 02:42:0a:00:00:02", s)
	}
	if err := CheckMAC(mac); err != nil {
		return nil, fmt.Errorf("bad MAC address %q: %w", s, err)
	}
	return mac, nil
}
