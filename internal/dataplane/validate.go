package dataplane

import (
	"fmt"
	"net"

	"github.com/vxovl/vxovl/internal/vxlan"
)

// validateMTU accepts 0 as "keep the kernel default".
func validateMTU(mtu int) error {
	if mtu == 0 {
		return nil
	}
	return vxlan.CheckMTU(mtu)
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
	if err := vxlan.CheckMAC(mac); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// normalized validates s and fills in defaults (Port).
func (s NetworkSpec) normalized() (NetworkSpec, error) {
	if err := vxlan.CheckVNI(s.VNI); err != nil {
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
		s.Port = vxlan.DefaultPort
	}
	if err := vxlan.CheckPort(s.Port); err != nil {
		return s, fmt.Errorf("VXLAN %w", err)
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
	if err := vxlan.CheckVNI(s.VNI); err != nil {
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
