package dataplane

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Peer is one remote endpoint: a container IPv4 address and MAC, and the
// underlay address (VTEP) of the host that has it.
type Peer struct {
	IP   net.IP
	MAC  net.HardwareAddr
	VTEP net.IP
}

// SyncResult counts the changes SyncPeers made. A replaced entry counts as
// one removal plus one addition. All zero means the kernel already matched.
type SyncResult struct{ NeighAdded, NeighRemoved, FDBAdded, FDBRemoved int }

// Changed reports whether SyncPeers had to modify anything.
func (r SyncResult) Changed() bool { return r != SyncResult{} }

// zeroMAC keys the "unknown destination" FDB entry; a VXLAN device sends
// broadcast, multicast and unknown unicast to every remote listed under it.
var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

type fdbKey struct{ mac, dst [16]byte }

func fdbKeyOf(mac net.HardwareAddr, dst net.IP) fdbKey {
	var k fdbKey
	copy(k.mac[:], mac)
	copy(k.dst[:], dst.To16())
	return k
}

func ipKey(ip net.IP) [16]byte {
	var k [16]byte
	copy(k[:], ip.To16())
	return k
}

// CheckPeers reports what SyncPeers would refuse in peers and flood without
// touching the kernel: a malformed peer, an IP listed with two MACs, a MAC
// listed behind two VTEPs.
func CheckPeers(peers []Peer, flood []net.IP) error {
	_, _, err := desiredTables(peers, flood)
	return err
}

// desiredTables validates peers and flood and turns them into the exact
// neighbor (IP->MAC) and FDB ((MAC,VTEP)) sets wanted on the vxlan device.
func desiredTables(peers []Peer, flood []net.IP) (map[[16]byte]Peer, map[fdbKey]fdbEntry, error) {
	neighs := make(map[[16]byte]Peer, len(peers))
	fdb := make(map[fdbKey]fdbEntry, len(peers)+len(flood))
	macVTEP := make(map[string]net.IP, len(peers))
	for i, p := range peers {
		if err := validatePeer(p); err != nil {
			return nil, nil, fmt.Errorf("peer %d: %w", i, err)
		}
		ip := p.IP.To4()
		if prev, ok := neighs[ipKey(ip)]; ok && prev.MAC.String() != p.MAC.String() {
			return nil, nil, fmt.Errorf("peer IP %s listed with two MACs (%s, %s): the caller must resolve the conflict", ip, prev.MAC, p.MAC)
		}
		if v, ok := macVTEP[p.MAC.String()]; ok && !v.Equal(p.VTEP) {
			return nil, nil, fmt.Errorf("peer MAC %s listed behind two VTEPs (%s, %s): the caller must resolve the conflict", p.MAC, v, p.VTEP)
		}
		macVTEP[p.MAC.String()] = p.VTEP
		neighs[ipKey(ip)] = Peer{IP: ip, MAC: p.MAC, VTEP: p.VTEP.To4()}
		fdb[fdbKeyOf(p.MAC, p.VTEP)] = fdbEntry{mac: p.MAC, dst: p.VTEP.To4()}
	}
	for i, v := range flood {
		if v.To4() == nil || v.IsUnspecified() || v.IsMulticast() {
			return nil, nil, fmt.Errorf("flood VTEP %d (%v): must be a unicast IPv4 address", i, v)
		}
		fdb[fdbKeyOf(zeroMAC, v)] = fdbEntry{mac: zeroMAC, dst: v.To4()}
	}
	return neighs, fdb, nil
}

type fdbEntry struct {
	mac net.HardwareAddr
	dst net.IP
}

// syncNeighbors makes the permanent IPv4 neighbor entries on link exactly
// want. Non-permanent entries belong to the kernel and are left alone.
// changed lists the peers it added or gave a new MAC.
func syncNeighbors(h *netlink.Handle, link netlink.Link, want map[[16]byte]Peer) (added, removed int, changed []Peer, err error) {
	idx := link.Attrs().Index
	have, err := dump(func() ([]netlink.Neigh, error) { return h.NeighList(idx, unix.AF_INET) })
	if err != nil {
		return 0, 0, nil, fmt.Errorf("list neighbors on %q: %w", link.Attrs().Name, err)
	}
	present := make(map[[16]byte]bool, len(have))
	for _, n := range have {
		if n.State&netlink.NUD_PERMANENT == 0 || n.IP.To4() == nil {
			continue
		}
		p, wanted := want[ipKey(n.IP)]
		switch {
		case wanted && slices.Equal(n.HardwareAddr, p.MAC):
			present[ipKey(n.IP)] = true
		case wanted:
			// Same IP, other MAC (the address was reused): replace in place so
			// the IP never resolves to nothing.
			if err := h.NeighSet(permanentNeigh(idx, p)); err != nil {
				return added, removed, changed, fmt.Errorf("replace neighbor %s -> %s: %w", p.IP, p.MAC, err)
			}
			present[ipKey(n.IP)] = true
			changed = append(changed, p)
			added++
			removed++
		default:
			if err := h.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, IP: n.IP}); err != nil && !isNotFound(err) {
				return added, removed, changed, fmt.Errorf("remove stale neighbor %s: %w", n.IP, err)
			}
			removed++
		}
	}
	for k, p := range want {
		if present[k] {
			continue
		}
		if err := h.NeighSet(permanentNeigh(idx, p)); err != nil {
			return added, removed, changed, fmt.Errorf("add neighbor %s -> %s: %w", p.IP, p.MAC, err)
		}
		changed = append(changed, p)
		added++
	}
	return added, removed, changed, nil
}

func permanentNeigh(idx int, p Peer) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    idx,
		Family:       unix.AF_INET,
		State:        netlink.NUD_PERMANENT,
		IP:           p.IP,
		HardwareAddr: p.MAC,
	}
}

// permanentFDB is the vxlan device's own (NTF_SELF) forwarding entry
// MAC -> remote VTEP.
func permanentFDB(idx int, mac net.HardwareAddr, dst net.IP) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    idx,
		Family:       unix.AF_BRIDGE,
		Flags:        netlink.NTF_SELF,
		State:        netlink.NUD_PERMANENT,
		IP:           dst,
		HardwareAddr: mac,
	}
}

// syncFDB makes the vxlan device's own (NTF_SELF) permanent forwarding entries
// exactly want. Entries the bridge keeps for the port (NTF_MASTER, e.g. local
// or learned MACs) are not ours and are left alone.
func syncFDB(h *netlink.Handle, link netlink.Link, want map[fdbKey]fdbEntry) (added, removed int, err error) {
	idx := link.Attrs().Index
	have, err := dump(func() ([]netlink.Neigh, error) { return h.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return 0, 0, fmt.Errorf("list forwarding entries on %q: %w", link.Attrs().Name, err)
	}
	present := make(map[fdbKey]bool, len(have))
	// Remove before adding: a MAC that moved to another VTEP must lose its old
	// destination first, or the append would leave both.
	for _, n := range have {
		if n.Flags&netlink.NTF_SELF == 0 || n.Flags&netlink.NTF_MASTER != 0 ||
			n.State&netlink.NUD_PERMANENT == 0 || n.IP == nil {
			continue
		}
		k := fdbKeyOf(n.HardwareAddr, n.IP)
		if _, ok := want[k]; ok {
			present[k] = true
			continue
		}
		if err := h.NeighDel(permanentFDB(idx, n.HardwareAddr, n.IP)); err != nil && !isNotFound(err) {
			return added, removed, fmt.Errorf("remove stale forwarding entry %s -> %s: %w", n.HardwareAddr, n.IP, err)
		}
		removed++
	}
	for k, e := range want {
		if present[k] {
			continue
		}
		// Append, not replace: the all-zeros entry holds one remote per
		// flood VTEP, and for a unicast MAC the stale remote is already gone.
		if err := h.NeighAppend(permanentFDB(idx, e.mac, e.dst)); err != nil {
			return added, removed, fmt.Errorf("add forwarding entry %s -> %s: %w", e.mac, e.dst, err)
		}
		added++
	}
	return added, removed, nil
}

func isNotFound(err error) bool {
	return err != nil && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV))
}
