package vxlan

import (
	"net"
	"testing"
)

func TestChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"vni 0", CheckVNI(0), false},
		{"vni 1", CheckVNI(1), true},
		{"vni max", CheckVNI(MaxVNI), true},
		{"vni max+1", CheckVNI(MaxVNI + 1), false},
		{"mtu min-1", CheckMTU(MinMTU - 1), false},
		{"mtu min", CheckMTU(MinMTU), true},
		{"mtu default", CheckMTU(DefaultMTU), true},
		{"mtu max", CheckMTU(MaxMTU), true},
		{"mtu max+1", CheckMTU(MaxMTU + 1), false},
		{"port 0", CheckPort(0), false},
		{"port default", CheckPort(DefaultPort), true},
		{"port 65536", CheckPort(65536), false},
		{"mac unicast", CheckMAC(net.HardwareAddr{2, 0x42, 0, 0, 0, 1}), true},
		{"mac multicast", CheckMAC(net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}), false},
		{"mac zero", CheckMAC(net.HardwareAddr{0, 0, 0, 0, 0, 0}), false},
		{"mac short", CheckMAC(net.HardwareAddr{2, 0, 0, 0, 0}), false},
		{"mac eui64", CheckMAC(net.HardwareAddr{2, 0, 0, 0, 0, 0, 0, 1}), false},
	} {
		if (tc.err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, tc.err, tc.ok)
		}
	}
	if _, err := ParseMAC("02:42:0a:00:00:02"); err != nil {
		t.Errorf("ParseMAC(good): %v", err)
	}
	for _, s := range []string{"", "zz", "01:00:5e:00:00:01", "00:00:00:00:00:00", "02:00:00:00:00:00:00:01"} {
		if _, err := ParseMAC(s); err == nil {
			t.Errorf("ParseMAC(%q) accepted", s)
		}
	}
}
