package kernel

import (
	"fmt"
	"net"
)

const (
	// MaxVNI is the largest VXLAN network identifier (24 bits).
	MaxVNI = 1<<24 - 1
	// DefaultPort is the IANA VXLAN port. The Linux default (8472) predates
	// the assignment, so the port is always set explicitly.
	DefaultPort = 4789
	// MinMTU and MaxMTU bound the MTUs accepted in specs (IPv4 minimum and
	// the largest value the kernel stores).
	MinMTU = 68
	MaxMTU = 65535
)

func validateVNI(vni uint32) error {
	if vni == 0 || vni > MaxVNI {
		return fmt.Errorf("VNI %d out of range: must be 1..%d", vni, MaxVNI)
	}
	return nil
}

// validateMTU accepts 0 as "keep the kernel default".
func validateMTU(mtu int) error {
	if mtu != 0 && (mtu < MinMTU || mtu > MaxMTU) {
		return fmt.Errorf("MTU %d out of range: must be %d..%d (or 0 for the kernel default)", mtu, MinMTU, MaxMTU)
	}
	return nil
}

func validateUnicastIPv4(what string, ip net.IP) error {
	if ip == nil {
		return fmt.Errorf("%s is missing: an IPv4 address is required", what)
	}
	if ip.To4() == nil {
		return fmt.Errorf("%s %v is not an IPv4 address", what, ip)
	}
	if ip.IsUnspecified() || ip.IsMulticast() || ip.Equal(net.IPv4bcast) {
		return fmt.Errorf("%s %v is not a unicast address", what, ip)
	}
	return nil
}

func validateMAC(what string, mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("%s %q is not a 6-byte Ethernet address", what, mac)
	}
	if mac[0]&1 != 0 {
		return fmt.Errorf("%s %s is a multicast address: a unicast MAC is required", what, mac)
	}
	if mac.String() == zeroMAC.String() {
		return fmt.Errorf("%s is all zeros: a real MAC is required", what)
	}
	return nil
}

// normalized validates s and fills in defaults (Port).
func (s NetworkSpec) normalized() (NetworkSpec, error) {
	if err := validateVNI(s.VNI); err != nil {
		return s, err
	}
	if err := validateMTU(s.MTU); err != nil {
		return s, err
	}
	if err := validateUnicastIPv4("VTEP", s.VTEP); err != nil {
		return s, err
	}
	s.VTEP = s.VTEP.To4()
	if s.Port == 0 {
		s.Port = DefaultPort
	}
	if s.Port < 1 || s.Port > 65535 {
		return s, fmt.Errorf("VXLAN port %d out of range: must be 1..65535", s.Port)
	}
	if s.Gateway != nil {
		if err := validateUnicastIPv4("gateway", s.Gateway.IP); err != nil {
			return s, err
		}
		ones, bits := s.Gateway.Mask.Size()
		if bits != 32 || ones == 0 {
			return s, fmt.Errorf("gateway %v needs an IPv4 prefix length of 1..32", s.Gateway)
		}
		s.Gateway = &net.IPNet{IP: s.Gateway.IP.To4(), Mask: s.Gateway.Mask}
	}
	return s, nil
}

func validateEndpointID(id string) error {
	if id == "" {
		return fmt.Errorf("endpoint ID is empty")
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return fmt.Errorf("endpoint ID %q: only letters and digits are allowed (interface names derive from it)", id)
		}
	}
	return nil
}

func (s EndpointSpec) validate() error {
	if err := validateVNI(s.VNI); err != nil {
		return err
	}
	if err := validateEndpointID(s.ID); err != nil {
		return err
	}
	if err := validateMAC("endpoint MAC", s.MAC); err != nil {
		return err
	}
	return validateMTU(s.MTU)
}

func validatePeer(p Peer) error {
	if err := validateUnicastIPv4("IP", p.IP); err != nil {
		return err
	}
	if err := validateMAC("MAC", p.MAC); err != nil {
		return err
	}
	return validateUnicastIPv4("VTEP", p.VTEP)
}
