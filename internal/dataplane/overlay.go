// Package kernel is vxovl's Linux data plane. Each overlay network gets its
// own network namespace holding a bridge (br0) and a VXLAN device (vxlan0).
// The VXLAN device is created in the host namespace, so its UDP socket and
// routing use the underlay, and then moved into the overlay namespace.
// Containers attach through veth pairs whose overlay end is a br0 port.
//
// Remote endpoints are programmed as static entries (ARP proxy neighbors and
// FDB entries) on vxlan0, local ones as static entries on their br0 ports;
// neither vxlan0 nor br0's vxlan0 port learns, and nothing is multicast.
//
// All methods act on the calling thread's network namespace as "host". The
// plugin runs in the host namespace, so that is simply the host.
package dataplane

import (
	"github.com/vxovl/vxovl/internal/vxlan"

	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	// BridgeName and VxlanName are the device names inside every overlay namespace.
	BridgeName = "br0"
	VxlanName  = "vxlan0"

	pinPrefix = "vni-"
)

// ErrNoNetwork is returned (wrapped) when an operation needs an overlay
// network that has not been set up with EnsureNetwork.
var ErrNoNetwork = errors.New("overlay network does not exist")

// Overlay manages overlay namespaces pinned under a directory, typically
// /run/vxovl-netns. Methods are safe for concurrent use; changes are
// serialized per Overlay.
type Overlay struct {
	dir string
	// fallback, when set, holds a second pin of every namespace (see
	// New); "" for none.
	fallback string
	log      *slog.Logger
	mu       sync.Mutex
	pinMu    sync.Mutex // serialises adopting a namespace from its fallback pin
}

// New returns an Overlay pinning namespaces under dir and, when fallback is
// not "", under fallback too. The plugin pins in a host directory that
// outlives it (dir, kept only if that directory is a shared mount) and in
// its propagated mount (fallback, which outlives a crash of the plugin but
// not its disable): a namespace found under only one of them is adopted
// again under both, so a plugin restart keeps the overlays where either
// survived. A nil log discards.
func New(dir, fallback string, log *slog.Logger) *Overlay {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Overlay{dir: dir, fallback: fallback, log: log}
}

// fallbackPath is vni's pin under the fallback directory; "" without one.
func (o *Overlay) fallbackPath(vni uint32) string {
	if o.fallback == "" {
		return ""
	}
	return filepath.Join(o.fallback, pinPrefix+strconv.FormatUint(uint64(vni), 10))
}

// adopt pins vni's namespace under dir from its fallback pin when only the
// fallback holds it, and reports whether vni has a namespace.
func (o *Overlay) adopt(vni uint32) (bool, error) {
	o.pinMu.Lock()
	defer o.pinMu.Unlock()
	path := o.NamespacePath(vni)
	if IsPinnedNetns(path) {
		return true, nil
	}
	fb := o.fallbackPath(vni)
	if fb == "" || !IsPinnedNetns(fb) {
		return false, nil
	}
	if err := PinAgain(fb, path); err != nil {
		return false, fmt.Errorf("VNI %d: re-adopting its namespace from %s: %w", vni, fb, err)
	}
	o.log.Warn("re-adopted an overlay namespace from the plugin's own mount: its pin in the netns "+
		"directory did not survive the restart, so disable and upgrade will drop this host's overlays; "+
		"make the netns mount's host directory a shared mount (README: Upgrades)", "vni", vni, "netns", path)
	return true, nil
}

// keepFallback pins vni's namespace under the fallback directory too, when
// it is not (a new network, or the propagated mount was emptied by a
// disable).
func (o *Overlay) keepFallback(vni uint32) error {
	fb := o.fallbackPath(vni)
	if fb == "" || IsPinnedNetns(fb) {
		return nil
	}
	if err := PinAgain(o.NamespacePath(vni), fb); err != nil {
		return fmt.Errorf("VNI %d: %w", vni, err)
	}
	return nil
}

// NetworkSpec describes one overlay network on this host.
type NetworkSpec struct {
	VNI     uint32     // 1..16777215
	Gateway *net.IPNet // address put on br0 (e.g. 10.10.0.1/24); nil = none
	MTU     int        // for br0 and vxlan0; 0 = kernel default
	VTEP    net.IP     // this host's underlay IPv4, the vxlan source address
	Port    int        // VXLAN UDP port; 0 = vxlan.DefaultPort
}

// EndpointSpec describes one container attachment.
type EndpointSpec struct {
	VNI uint32
	ID  string           // Docker endpoint ID; interface names derive from its first chars
	MAC net.HardwareAddr // the container interface's MAC
	MTU int              // 0 = kernel default
}

// NamespacePath returns the pin file of vni's namespace, usable with
// `nsenter --net=PATH`.
func (o *Overlay) NamespacePath(vni uint32) string {
	return filepath.Join(o.dir, pinPrefix+strconv.FormatUint(uint64(vni), 10))
}

// tempVxlanName is the host-namespace name of a vxlan device between creation
// and its move into the overlay namespace. It is unique per VNI so leftovers
// from an interrupted EnsureNetwork can be found and reused.
func tempVxlanName(vni uint32) string { return fmt.Sprintf("vxo%06x", vni) }

// HostIfName is the name of an endpoint's container-side veth end while it is
// still in the host namespace (Docker moves and renames it on join).
func HostIfName(id string) string { return "vxc" + idPrefix(id) }

// overlayIfName is the name of an endpoint's br0-side veth end.
func overlayIfName(id string) string { return "vxe" + idPrefix(id) }

func idPrefix(id string) string {
	if len(id) > 10 {
		return id[:10]
	}
	return id
}

// NetworkExists reports whether vni's pinned namespace exists and is live.
func (o *Overlay) NetworkExists(vni uint32) bool {
	return vxlan.CheckVNI(vni) == nil && IsPinnedNetns(o.NamespacePath(vni))
}

// Networks lists the VNIs with a live pinned namespace (under dir or the
// fallback), in ascending order.
func (o *Overlay) Networks() ([]uint32, error) {
	vnis, err := pinnedVNIs(o.dir)
	if err != nil || o.fallback == "" {
		return vnis, err
	}
	more, err := pinnedVNIs(o.fallback)
	if err != nil {
		return nil, err
	}
	vnis = append(vnis, more...)
	slices.Sort(vnis)
	return slices.Compact(vnis), nil
}

// pinnedVNIs lists the VNIs with a live pin under dir, in ascending order.
func pinnedVNIs(dir string) ([]uint32, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list overlay namespaces in %s: %w", dir, err)
	}
	var vnis []uint32
	for _, e := range entries {
		s, ok := strings.CutPrefix(e.Name(), pinPrefix)
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil || vxlan.CheckVNI(uint32(n)) != nil || strconv.FormatUint(n, 10) != s {
			continue
		}
		if IsPinnedNetns(filepath.Join(dir, e.Name())) {
			vnis = append(vnis, uint32(n))
		}
	}
	slices.Sort(vnis)
	return vnis, nil
}

// handles holds netlink handles for the host (calling thread's) namespace and
// one overlay namespace. ns is kept open for moving links into it.
type handles struct {
	host *netlink.Handle
	ov   *netlink.Handle
	ns   netns.NsHandle
}

func (h *handles) close() {
	if h.host != nil {
		h.host.Close()
	}
	if h.ov != nil {
		h.ov.Close()
	}
	if h.ns.IsOpen() {
		h.ns.Close()
	}
}

func hostHandle() (*netlink.Handle, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	return h, nil
}

// open returns handles for vni's namespace, wrapping ErrNoNetwork if it is not
// pinned. withHost also opens a host handle.
func (o *Overlay) open(vni uint32, withHost bool) (*handles, error) {
	path := o.NamespacePath(vni)
	if have, err := o.adopt(vni); err != nil {
		return nil, err
	} else if !have {
		return nil, fmt.Errorf("VNI %d (%s): %w", vni, path, ErrNoNetwork)
	}
	h := &handles{ns: netns.None()}
	var err error
	if h.ns, err = netns.GetFromPath(path); err != nil {
		return nil, fmt.Errorf("open overlay namespace %s: %w", path, err)
	}
	if h.ov, err = handleIn(h.ns); err != nil {
		h.close()
		return nil, fmt.Errorf("open netlink socket in %s: %w", path, err)
	}
	if withHost {
		if h.host, err = hostHandle(); err != nil {
			h.close()
			return nil, err
		}
	}
	return h, nil
}

// EnsureNetwork idempotently builds vni's overlay: the pinned namespace with lo
// up, br0 (Gateway, MTU, up) and vxlan0 (created in the host namespace, moved
// in, enslaved to br0, up). It finishes half-done work from an interrupted
// earlier call and recreates a vxlan0 whose VNI, port or local address is
// wrong. On error it undoes what this call created.
func (o *Overlay) EnsureNetwork(spec NetworkSpec) (err error) {
	spec, err = spec.normalized()
	if err != nil {
		return fmt.Errorf("invalid network spec: %w", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()

	path := o.NamespacePath(spec.VNI)
	createdNS := false
	have, err := o.adopt(spec.VNI)
	if err != nil {
		return err
	}
	if !have {
		if err := CreatePinned(path); err != nil {
			return fmt.Errorf("create overlay namespace for VNI %d: %w", spec.VNI, err)
		}
		createdNS = true
	}
	if err := o.keepFallback(spec.VNI); err != nil {
		if createdNS {
			_ = Unpin(path)
		}
		return err
	}
	h, err := o.open(spec.VNI, true)
	if err != nil {
		if createdNS {
			_ = Unpin(path)
			_ = Unpin(o.fallbackPath(spec.VNI))
		}
		return err
	}
	defer h.close()

	var createdBr, createdVx bool
	defer func() {
		if err == nil {
			return
		}
		if createdNS {
			err = errors.Join(err, o.deleteNetwork(h.host, spec.VNI))
			return
		}
		if createdVx {
			tmp := tempVxlanName(spec.VNI)
			err = errors.Join(err, deleteLink(h.ov, VxlanName), deleteLink(h.ov, tmp), deleteLink(h.host, tmp))
		}
		if createdBr {
			err = errors.Join(err, deleteLink(h.ov, BridgeName))
		}
	}()

	lo, err := h.ov.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("VNI %d: look up lo: %w", spec.VNI, err)
	}
	if err := setUp(h.ov, lo); err != nil {
		return fmt.Errorf("VNI %d: %w", spec.VNI, err)
	}
	br, createdBr, err := ensureBridge(h.ov, BridgeName, spec.MTU)
	if err != nil {
		return fmt.Errorf("VNI %d: %w", spec.VNI, err)
	}
	if err := ensureIPv4Addrs(h.ov, br, spec.Gateway); err != nil {
		return fmt.Errorf("VNI %d: %w", spec.VNI, err)
	}
	vx, createdVx, err := o.ensureVxlan(h, spec)
	if err != nil {
		return fmt.Errorf("VNI %d: %w", spec.VNI, err)
	}
	if err := setMTU(h.ov, vx, spec.MTU); err != nil {
		return fmt.Errorf("VNI %d: %w", spec.VNI, err)
	}
	if err := setMaster(h.ov, vx, br); err != nil {
		return fmt.Errorf("VNI %d: %w", spec.VNI, err)
	}
	// Before it goes up, so that br0 never learns on it.
	if err := ensureTunnelPort(h.ov, vx); err != nil {
		return fmt.Errorf("VNI %d: %w", spec.VNI, err)
	}
	if err := setUp(h.ov, vx); err != nil {
		return fmt.Errorf("VNI %d: %w", spec.VNI, err)
	}
	// A deleted br0 takes its ports off the bridge but leaves them in the
	// namespace: put the running containers' ports back on the new one.
	if err := attachPorts(h.ov, br); err != nil {
		return fmt.Errorf("VNI %d: %w", spec.VNI, err)
	}
	if createdNS || createdVx || createdBr {
		o.log.Info("overlay network ready", "vni", spec.VNI, "netns", path,
			"new_namespace", createdNS, "new_vxlan", createdVx, "vtep", spec.VTEP, "port", spec.Port, "mtu", spec.MTU)
	}
	return nil
}

// endpointPorts lists the overlay ends of the endpoints' veth pairs: every
// veth in an overlay namespace is one, since only EnsureEndpoint makes them.
func endpointPorts(ov *netlink.Handle) ([]netlink.Link, error) {
	links, err := dump(ov.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	return slices.DeleteFunc(links, func(l netlink.Link) bool {
		_, isVeth := l.(*netlink.Veth)
		return !isVeth
	}), nil
}

// attachPorts puts every endpoint port on br and up.
func attachPorts(ov *netlink.Handle, br netlink.Link) error {
	ports, err := endpointPorts(ov)
	if err != nil {
		return err
	}
	for _, p := range ports {
		if err := setMaster(ov, p, br); err != nil {
			return err
		}
		if err := setUp(ov, p); err != nil {
			return err
		}
	}
	return nil
}

// ensureVxlan returns a correct vxlan0 in the overlay namespace, reusing what
// it can: the existing vxlan0, or a temp-named device left in either namespace
// by an interrupted call. created reports whether this call made a device.
func (o *Overlay) ensureVxlan(h *handles, spec NetworkSpec) (vx netlink.Link, created bool, err error) {
	cfg := vxlanConfig{VNI: spec.VNI, Port: spec.Port, Local: spec.VTEP}
	tmp := tempVxlanName(spec.VNI)

	l, err := linkByName(h.ov, VxlanName)
	if err != nil {
		return nil, false, err
	}
	if l != nil {
		why := vxlanMismatch(l, cfg)
		if why == "" {
			return l, false, nil
		}
		o.log.Warn("recreating vxlan device", "vni", spec.VNI, "reason", why)
		// Delete first: the kernel refuses a second device with the same VNI and port.
		if err := h.ov.LinkDel(l); err != nil {
			return nil, false, fmt.Errorf("delete mismatched %s (%s): %w", VxlanName, why, err)
		}
	}

	// Moved in but not renamed yet.
	if l, err = linkByName(h.ov, tmp); err != nil {
		return nil, false, err
	}
	if l != nil && vxlanMismatch(l, cfg) != "" {
		if err := h.ov.LinkDel(l); err != nil {
			return nil, false, fmt.Errorf("delete leftover %s in overlay namespace: %w", tmp, err)
		}
		l = nil
	}

	if l == nil {
		// Created but not moved yet: reuse only if it is exactly right.
		if l, err = linkByName(h.host, tmp); err != nil {
			return nil, false, err
		}
		if l != nil {
			if why := vxlanMismatch(l, cfg); why != "" {
				o.log.Info("replacing leftover vxlan device in host namespace", "vni", spec.VNI, "name", tmp, "reason", why)
				if err := h.host.LinkDel(l); err != nil {
					return nil, false, fmt.Errorf("delete leftover %s in host namespace: %w", tmp, err)
				}
				l = nil
			}
		}
		if l == nil {
			if err := h.host.LinkAdd(newVxlan(tmp, cfg, spec.MTU)); err != nil {
				return nil, false, fmt.Errorf("create vxlan device %s (VNI %d, port %d, local %s): %w; check that no other vxlan device uses the same VNI and port",
					tmp, spec.VNI, spec.Port, spec.VTEP, err)
			}
			created = true
			if l, err = h.host.LinkByName(tmp); err != nil {
				return nil, created, fmt.Errorf("look up new vxlan device %s: %w", tmp, err)
			}
		}
		if err := h.host.LinkSetNsFd(l, int(h.ns)); err != nil {
			return nil, created, fmt.Errorf("move %s into overlay namespace: %w", tmp, err)
		}
		if l, err = h.ov.LinkByName(tmp); err != nil {
			return nil, created, fmt.Errorf("look up %s after moving it: %w", tmp, err)
		}
	}

	if l.Attrs().Flags&net.FlagUp != 0 {
		if err := h.ov.LinkSetDown(l); err != nil {
			return nil, created, fmt.Errorf("set %s down for rename: %w", tmp, err)
		}
	}
	if err := h.ov.LinkSetName(l, VxlanName); err != nil {
		return nil, created, fmt.Errorf("rename %s to %s: %w", tmp, VxlanName, err)
	}
	if l, err = h.ov.LinkByName(VxlanName); err != nil {
		return nil, created, fmt.Errorf("look up %s: %w", VxlanName, err)
	}
	return l, created, nil
}

// DeleteNetwork removes vni's namespace with everything in it, its pin, and
// any leftover temp vxlan device in the host namespace. Missing is success.
func (o *Overlay) DeleteNetwork(vni uint32) error {
	if err := vxlan.CheckVNI(vni); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	host, err := hostHandle()
	if err != nil {
		return err
	}
	defer host.Close()
	return o.deleteNetwork(host, vni)
}

func (o *Overlay) deleteNetwork(host *netlink.Handle, vni uint32) error {
	if err := deleteLink(host, tempVxlanName(vni)); err != nil {
		return fmt.Errorf("VNI %d: %w", vni, err)
	}
	path := o.NamespacePath(vni)
	if _, err := o.adopt(vni); err != nil {
		return err
	}
	if IsPinnedNetns(path) {
		// Delete the links explicitly instead of leaving it to namespace
		// teardown, which the kernel runs asynchronously: the host-side veth
		// ends must be gone when this returns, or their names stay taken.
		if err := clearNamespace(path); err != nil {
			return fmt.Errorf("VNI %d: %w", vni, err)
		}
	}
	if err := Unpin(path); err != nil {
		return fmt.Errorf("VNI %d: %w", vni, err)
	}
	if fb := o.fallbackPath(vni); fb != "" {
		if err := Unpin(fb); err != nil {
			return fmt.Errorf("VNI %d: %w", vni, err)
		}
	}
	o.log.Info("overlay network deleted", "vni", vni)
	return nil
}

// clearNamespace deletes every link but lo in the namespace pinned at path.
func clearNamespace(path string) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open overlay namespace %s: %w", path, err)
	}
	defer ns.Close()
	h, err := handleIn(ns)
	if err != nil {
		return fmt.Errorf("open netlink socket in %s: %w", path, err)
	}
	defer h.Close()
	links, err := dump(h.LinkList)
	if err != nil {
		return fmt.Errorf("list links in %s: %w", path, err)
	}
	var errs []error
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %q: %w", l.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// EnsureEndpoint idempotently creates the endpoint's veth pair: the container
// end in the host namespace, down, named HostIfName(ID), with MAC and MTU; the
// other end in the overlay namespace, a br0 port, up. It returns the
// container end's name.
//
// If only the overlay end exists, the container end has already been moved
// into the container by Docker (the pair always dies together); the overlay
// end is repaired and nothing is recreated, so a running container keeps its
// link.
func (o *Overlay) EnsureEndpoint(spec EndpointSpec) (hostIfName string, err error) {
	if err := spec.validate(); err != nil {
		return "", fmt.Errorf("invalid endpoint spec: %w", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	h, err := o.open(spec.VNI, true)
	if err != nil {
		return "", err
	}
	defer h.close()

	hostName, ovName := HostIfName(spec.ID), overlayIfName(spec.ID)
	br, err := linkByName(h.ov, BridgeName)
	if err != nil {
		return "", err
	}
	if br == nil {
		return "", fmt.Errorf("VNI %d has no %s: run EnsureNetwork first: %w", spec.VNI, BridgeName, ErrNoNetwork)
	}

	hostEnd, err := linkByName(h.host, hostName)
	if err != nil {
		return "", err
	}
	ovEnd, err := linkByName(h.ov, ovName)
	if err != nil {
		return "", err
	}
	if hostEnd != nil && ovEnd == nil {
		if _, isVeth := hostEnd.(*netlink.Veth); !isVeth {
			return "", fmt.Errorf("%s exists in the host namespace but is a %s, not a veth; delete it and retry", hostName, hostEnd.Type())
		}
		// Its peer is not ours (or not where it should be): start over.
		if err := h.host.LinkDel(hostEnd); err != nil {
			return "", fmt.Errorf("delete orphaned %s: %w", hostName, err)
		}
		hostEnd = nil
	}
	created := false
	if ovEnd == nil {
		if err := h.host.LinkAdd(newVeth(hostName, ovName, spec.MAC, spec.MTU, int(h.ns))); err != nil {
			return "", fmt.Errorf("create veth pair %s/%s: %w", hostName, ovName, err)
		}
		created = true
		defer func() {
			if err != nil {
				err = errors.Join(err, deleteLink(h.ov, ovName))
			}
		}()
		if hostEnd, err = h.host.LinkByName(hostName); err != nil {
			return "", fmt.Errorf("look up new %s: %w", hostName, err)
		}
		if ovEnd, err = h.ov.LinkByName(ovName); err != nil {
			return "", fmt.Errorf("look up new %s: %w", ovName, err)
		}
	}
	if hostEnd != nil {
		if err := fixContainerEnd(h.host, hostEnd, spec); err != nil {
			return "", err
		}
	}
	if err := setMTU(h.ov, ovEnd, spec.MTU); err != nil {
		return "", err
	}
	if err := setMaster(h.ov, ovEnd, br); err != nil {
		return "", err
	}
	if err := pinEndpoint(h.ov, ovEnd, spec.MAC); err != nil {
		return "", err
	}
	if err := setUp(h.ov, ovEnd); err != nil {
		return "", err
	}
	if created {
		o.log.Debug("endpoint created", "vni", spec.VNI, "endpoint", spec.ID, "host_if", hostName)
	}
	return hostName, nil
}

func fixContainerEnd(h *netlink.Handle, l netlink.Link, spec EndpointSpec) error {
	if l.Attrs().HardwareAddr.String() != spec.MAC.String() {
		if err := h.LinkSetHardwareAddr(l, spec.MAC); err != nil {
			return fmt.Errorf("set MAC %s on %s: %w", spec.MAC, l.Attrs().Name, err)
		}
	}
	return setMTU(h, l, spec.MTU)
}

// EndpointAttached reports whether the endpoint's container end is in a
// container: its veth pair exists and that end has left the host namespace.
// Docker moves it into the container at start and, when it destroys the
// container's sandbox, back out to the host (or it dies with the
// namespace); in both cases the endpoint has no container any more.
func (o *Overlay) EndpointAttached(vni uint32, id string) (bool, error) {
	if err := vxlan.CheckVNI(vni); err != nil {
		return false, err
	}
	if err := validateEndpointID(id); err != nil {
		return false, err
	}
	h, err := o.open(vni, true)
	if errors.Is(err, ErrNoNetwork) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer h.close()
	ovEnd, err := linkByName(h.ov, overlayIfName(id))
	if err != nil || ovEnd == nil {
		return false, err
	}
	hostEnd, err := linkByName(h.host, HostIfName(id))
	return hostEnd == nil, err
}

// DeleteEndpoint removes the endpoint's veth pair wherever its ends still are
// in the host and overlay namespaces. Missing is success.
func (o *Overlay) DeleteEndpoint(vni uint32, id string) error {
	if err := vxlan.CheckVNI(vni); err != nil {
		return err
	}
	if err := validateEndpointID(id); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	h, err := o.open(vni, true)
	if errors.Is(err, ErrNoNetwork) {
		// The pair died with the namespace; only a stray host end may remain.
		host, err := hostHandle()
		if err != nil {
			return err
		}
		defer host.Close()
		return deleteVethEnd(host, HostIfName(id))
	}
	if err != nil {
		return err
	}
	defer h.close()
	if err := deleteLink(h.ov, overlayIfName(id)); err != nil {
		return err
	}
	return deleteVethEnd(h.host, HostIfName(id))
}

// deleteVethEnd deletes name only if it is a veth, so a foreign device that
// happens to share the name survives.
func deleteVethEnd(h *netlink.Handle, name string) error {
	l, err := linkByName(h, name)
	if err != nil || l == nil {
		return err
	}
	if _, ok := l.(*netlink.Veth); !ok {
		return nil
	}
	if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// SyncPeers makes vxlan0's static tables in vni's namespace exactly match
// peers and flood: a permanent neighbor IP->MAC and FDB entry MAC->VTEP per
// peer, an all-zeros-MAC FDB entry per flood VTEP (head-end replication of
// broadcast and unknown unicast), and no other permanent entries. Kernel-owned
// entries are left alone. It is idempotent and reports what it changed.
func (o *Overlay) SyncPeers(vni uint32, peers []Peer, flood []net.IP) (SyncResult, error) {
	var res SyncResult
	if err := vxlan.CheckVNI(vni); err != nil {
		return res, err
	}
	neighs, fdb, err := desiredTables(peers, flood)
	if err != nil {
		return res, fmt.Errorf("VNI %d: %w", vni, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	h, err := o.open(vni, false)
	if err != nil {
		return res, err
	}
	defer h.close()
	vx, err := linkByName(h.ov, VxlanName)
	if err != nil {
		return res, err
	}
	if vx == nil {
		return res, fmt.Errorf("VNI %d has no %s: run EnsureNetwork first", vni, VxlanName)
	}
	// FDB first: a neighbor whose MAC has no forwarding entry yet would send
	// its first packets to the flood list.
	res.FDBAdded, res.FDBRemoved, err = syncFDB(h.ov, vx, fdb)
	if err != nil {
		return res, fmt.Errorf("VNI %d: %w", vni, err)
	}
	var changed []Peer
	res.NeighAdded, res.NeighRemoved, changed, err = syncNeighbors(h.ov, vx, neighs)
	if err != nil {
		return res, fmt.Errorf("VNI %d: %w", vni, err)
	}
	// Best effort: without it local containers still recover once their ARP entry expires.
	if br, err := linkByName(h.ov, BridgeName); err == nil && br != nil {
		if err := announcePeers(o.NamespacePath(vni), br.Attrs().Index, changed); err != nil {
			o.log.Warn("announcing changed neighbors to local containers", "vni", vni, "err", err)
		}
	}
	if res.Changed() {
		o.log.Debug("peer tables synced", "vni", vni, "peers", len(peers), "flood", len(flood),
			"neigh_added", res.NeighAdded, "neigh_removed", res.NeighRemoved,
			"fdb_added", res.FDBAdded, "fdb_removed", res.FDBRemoved)
	}
	return res, nil
}

// Health checks vni's kernel objects and describes the first problem found.
// A nil result means EnsureNetwork(spec) would change nothing structural.
// It waits for the changes in progress (an endpoint being made is not yet
// attached to the bridge, which is not damage).
func (o *Overlay) Health(spec NetworkSpec) error {
	spec, err := spec.normalized()
	if err != nil {
		return fmt.Errorf("invalid network spec: %w", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	h, err := o.open(spec.VNI, false)
	if err != nil {
		return err
	}
	defer h.close()
	br, err := linkByName(h.ov, BridgeName)
	switch {
	case err != nil:
		return err
	case br == nil:
		return fmt.Errorf("VNI %d: %s is missing", spec.VNI, BridgeName)
	case br.Type() != "bridge":
		return fmt.Errorf("VNI %d: %s is a %s, not a bridge", spec.VNI, BridgeName, br.Type())
	case br.Attrs().Flags&net.FlagUp == 0:
		return fmt.Errorf("VNI %d: %s is down", spec.VNI, BridgeName)
	case spec.MTU != 0 && br.Attrs().MTU != spec.MTU:
		return fmt.Errorf("VNI %d: %s has MTU %d, want %d", spec.VNI, BridgeName, br.Attrs().MTU, spec.MTU)
	}
	if spec.Gateway != nil {
		addrs, err := dump(func() ([]netlink.Addr, error) { return h.ov.AddrList(br, netlink.FAMILY_V4) })
		if err != nil {
			return fmt.Errorf("VNI %d: list addresses of %s: %w", spec.VNI, BridgeName, err)
		}
		if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool {
			return a.IP.Equal(spec.Gateway.IP) && a.Mask.String() == spec.Gateway.Mask.String()
		}) {
			return fmt.Errorf("VNI %d: %s lacks gateway address %s", spec.VNI, BridgeName, spec.Gateway)
		}
	}
	vx, err := linkByName(h.ov, VxlanName)
	switch {
	case err != nil:
		return err
	case vx == nil:
		return fmt.Errorf("VNI %d: %s is missing", spec.VNI, VxlanName)
	}
	if why := vxlanMismatch(vx, vxlanConfig{VNI: spec.VNI, Port: spec.Port, Local: spec.VTEP}); why != "" {
		return fmt.Errorf("VNI %d: %s %s", spec.VNI, VxlanName, why)
	}
	switch {
	case vx.Attrs().Flags&net.FlagUp == 0:
		return fmt.Errorf("VNI %d: %s is down", spec.VNI, VxlanName)
	case vx.Attrs().MasterIndex != br.Attrs().Index:
		return fmt.Errorf("VNI %d: %s is not attached to %s", spec.VNI, VxlanName, BridgeName)
	case spec.MTU != 0 && vx.Attrs().MTU != spec.MTU:
		return fmt.Errorf("VNI %d: %s has MTU %d, want %d", spec.VNI, VxlanName, vx.Attrs().MTU, spec.MTU)
	}
	flags, err := portFlags(h.ov, vx)
	if err != nil {
		return fmt.Errorf("VNI %d: %w", spec.VNI, err)
	}
	if why := tunnelPortMismatch(flags); why != "" {
		return fmt.Errorf("VNI %d: %s: %s", spec.VNI, VxlanName, why)
	}
	ports, err := endpointPorts(h.ov)
	if err != nil {
		return fmt.Errorf("VNI %d: %w", spec.VNI, err)
	}
	for _, p := range ports {
		switch {
		case p.Attrs().MasterIndex != br.Attrs().Index:
			return fmt.Errorf("VNI %d: endpoint port %s is not attached to %s", spec.VNI, p.Attrs().Name, BridgeName)
		case p.Attrs().Flags&net.FlagUp == 0:
			return fmt.Errorf("VNI %d: endpoint port %s is down", spec.VNI, p.Attrs().Name)
		}
	}
	return nil
}
