package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vxovl/vxovl/internal/vxlan"
)

// ListenDNS opens a UDP and a TCP socket bound to addr:port inside vni's
// overlay namespace, for the network's DNS server: addr is normally the
// gateway address on br0 and port 53, so that containers started with
// --dns <gateway> reach it.
//
// A socket belongs to the namespace it was created in for its whole life:
// these are reachable from the network's containers and not from the host,
// while the goroutines serving them, and any sockets those goroutines
// create (queries forwarded upstream), are in the plugin's own namespace.
// The sockets also hold the namespace: close them when the network is
// deleted, and open new ones if it is created again (a new namespace).
// On error nothing is left open.
func (o *Overlay) ListenDNS(vni uint32, addr netip.Addr, port int) (net.PacketConn, net.Listener, error) {
	if err := vxlan.CheckVNI(vni); err != nil {
		return nil, nil, err
	}
	addr = addr.Unmap()
	if err := validateUnicastIPv4("DNS listen address", net.IP(addr.AsSlice())); err != nil {
		return nil, nil, err
	}
	if err := vxlan.CheckPort(port); err != nil {
		return nil, nil, fmt.Errorf("DNS %w", err)
	}
	path := o.NamespacePath(vni)
	if !IsPinnedNetns(path) {
		return nil, nil, fmt.Errorf("VNI %d (%s): %w", vni, path, ErrNoNetwork)
	}
	ap := netip.AddrPortFrom(addr, uint16(port)).String()
	var pc net.PacketConn
	var ln net.Listener
	err := Do(path, func() (err error) {
		if pc, err = net.ListenPacket("udp4", ap); err != nil {
			return fmt.Errorf("listen on UDP %s: %w", ap, err)
		}
		if ln, err = net.Listen("tcp4", ap); err != nil {
			return fmt.Errorf("listen on TCP %s: %w", ap, err)
		}
		return nil
	})
	if err != nil {
		// Also when both are open but the thread could not switch back.
		if pc != nil {
			pc.Close()
		}
		if ln != nil {
			ln.Close()
		}
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			err = fmt.Errorf("%w: %s is not an address of VNI %d's %s; listen on the network's gateway", err, addr, vni, BridgeName)
		}
		return nil, nil, fmt.Errorf("VNI %d: DNS sockets in %s: %w", vni, path, err)
	}
	return pc, ln, nil
}
