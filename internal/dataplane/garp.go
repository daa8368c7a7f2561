package dataplane

import (
	"encoding/binary"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// announcePeers sends one gratuitous ARP per peer out of the overlay's bridge, to the local
// containers only, for the remote addresses just added or given a new MAC. It matters when the
// MAC behind an address changed. The driver derives an endpoint's MAC from its overlay and
// address, so a container that comes back with its address has its old MAC; the MAC changes
// only when --mac-address is involved (the old or the new container was started with it) or
// the old endpoint had a random MAC from Docker (made before vxovl's IPAM stopped asking for
// MACs). The containers here then still have the old MAC in their ARP caches (REACHABLE for
// up to 45 s, then 5 s of delay and probes) and would talk into the void until that expires.
// A gratuitous ARP overrides an existing cache entry at once (and completes a pending one);
// it creates none, so it costs nothing for containers that never talked to the peer. The
// frames do not leave the host: vxlan0 answers ARP itself (proxy) and never forwards it.
func announcePeers(nsPath string, bridgeIndex int, peers []Peer) error {
	if len(peers) == 0 {
		return nil
	}
	return Do(nsPath, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return fmt.Errorf("open packet socket: %w", err)
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: bridgeIndex, Halen: 6}
		copy(to.Addr[:], broadcastMAC)
		for _, p := range peers {
			if err := unix.Sendto(fd, garpFrame(p.MAC, p.IP), 0, to); err != nil {
				return fmt.Errorf("gratuitous ARP for %s: %w", p.IP, err)
			}
		}
		return nil
	})
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// garpFrame is an Ethernet broadcast ARP request with sender and target address both ip
// (RFC 5227's ARP announcement), padded to the Ethernet minimum.
func garpFrame(mac net.HardwareAddr, ip net.IP) []byte {
	f := make([]byte, 60)
	copy(f[0:6], broadcastMAC)
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_ARP)
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:2], 1)             // hardware: Ethernet
	binary.BigEndian.PutUint16(a[2:4], unix.ETH_P_IP) // protocol: IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], 1) // request
	copy(a[8:14], mac)
	copy(a[14:18], ip.To4())
	// a[18:24], the target MAC, stays zero.
	copy(a[24:28], ip.To4())
	return f
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
