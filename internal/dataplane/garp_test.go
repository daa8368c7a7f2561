package dataplane

import (
	"bytes"
	"net"
	"testing"
)

func TestGARPFrame(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	f := garpFrame(mac, net.ParseIP("10.1.2.3"))
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 0x08, 0x06, // Ethernet
		0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, // Ethernet/IPv4, request
		0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 10, 1, 2, 3, // sender
		0, 0, 0, 0, 0, 0, 10, 1, 2, 3, // target: the same address (an announcement)
	}
	if len(f) != 60 || !bytes.Equal(f[:len(want)], want) || !bytes.Equal(f[len(want):], make([]byte, 60-len(want))) {
		t.Fatalf("frame\n% x\nwant\n% x (padded to 60)", f, want)
	}
}
