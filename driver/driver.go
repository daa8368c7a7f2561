// Package driver implements the libnetwork remote network driver: it turns
// Docker's CreateNetwork/CreateEndpoint/Join calls into kernel overlays (through
// a Dataplane) and tells the cluster about them (through Gossip), and it keeps
// the kernel's neighbor and FDB tables equal to what the cluster knows.
//
// Every API call changes three things in order: the cluster (which can refuse,
// e.g. a conflicting network definition), the kernel, and the store. A failure
// at any step undoes the earlier ones, so a refused call leaves nothing behind.
package driver

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/dnsserver"
	"github.com/vxovl/vxovl/internal/dataplane"
	"github.com/vxovl/vxovl/internal/ipsec"
	"github.com/vxovl/vxovl/internal/store"
	"github.com/vxovl/vxovl/internal/vxlan"
)

// Dataplane is the kernel work the driver needs; internal/dataplane implements it
// with netlink. Every method is idempotent.
type Dataplane interface {
	EnsureNetwork(spec dataplane.NetworkSpec) error
	DeleteNetwork(vni uint32) error
	Health(spec dataplane.NetworkSpec) error
	Networks() ([]uint32, error)
	EnsureEndpoint(spec dataplane.EndpointSpec) (hostIfName string, err error)
	DeleteEndpoint(vni uint32, id string) error
	EndpointAttached(vni uint32, id string) (bool, error)
	SyncPeers(vni uint32, peers []dataplane.Peer, flood []net.IP) (dataplane.SyncResult, error)
	// ListenDNS opens the sockets of a network's name server inside its
	// overlay namespace.
	ListenDNS(vni uint32, addr netip.Addr, port int) (net.PacketConn, net.Listener, error)
	// CheckESP reports whether the host's kernel can run encrypted networks.
	CheckESP() error
	// EnsureXfrm installs the SAs and the policies of the encrypted
	// networks' port (ports empty: none); prune removes vxovl's others.
	EnsureXfrm(ports []int, sas []ipsec.SA, prune bool) (dataplane.XfrmResult, error)
}

// Gossip is the part of the cluster the driver uses.
type Gossip interface {
	PublishNetwork(n cluster.Network) error
	WithdrawNetwork(vni uint32) error
	PublishEndpoint(ep cluster.Endpoint) (cluster.Endpoint, error)
	WithdrawEndpoint(vni uint32, id string) error
	Endpoints(vni uint32) []cluster.Endpoint
}

// Config is the node-wide configuration of the driver.
type Config struct {
	// VTEP is this node's underlay IPv4 address, the source of its VXLAN packets.
	VTEP net.IP
	// VXLANPort is the UDP port of every unencrypted overlay on this node.
	// Default 4789.
	VXLANPort int
	// EncryptedPort is the UDP port of every encrypted overlay. Default
	// vxlan.DefaultEncryptedPort.
	EncryptedPort int
	// NodeName is this node's cluster name, its identity in the keys of
	// encrypted networks.
	NodeName string
	// IPsecSecret is the cluster secret the keys of encrypted networks are
	// derived from; nil: encrypted networks are refused.
	IPsecSecret []byte
	// KeyRotation is how long a key generation lasts. Default 1h.
	KeyRotation time.Duration
	// DefaultMTU is used for networks without -o mtu; the plugin sets it to the
	// underlay interface's MTU minus 50. Default 1450.
	DefaultMTU int
	// ReconcileInterval is how often the kernel is checked against the desired
	// state and repaired. Default 10s.
	ReconcileInterval time.Duration
	// RestoreGrace is how long after a restart remote entries remembered in the
	// store are kept programmed while the cluster catches up, so that running
	// containers do not lose their neighbors during a plugin restart. Default 30s.
	RestoreGrace time.Duration
	// DNS configures every network's name server (TTL, upstream resolvers).
	DNS dnsserver.Config
	// DNSPort is the name servers' port. Default DNSPort (53).
	DNSPort int
	Logger  *slog.Logger
	// Observer, when set, is told how long syncs and reconcile passes take.
	Observer Observer
}

func (c *Config) setDefaults() {
	if c.VXLANPort == 0 {
		c.VXLANPort = vxlan.DefaultPort
	}
	if c.EncryptedPort == 0 {
		c.EncryptedPort = vxlan.DefaultEncryptedPort
	}
	if c.KeyRotation == 0 {
		c.KeyRotation = time.Hour
	}
	if c.DefaultMTU == 0 {
		c.DefaultMTU = vxlan.DefaultMTU
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = 10 * time.Second
	}
	if c.RestoreGrace == 0 {
		c.RestoreGrace = 30 * time.Second
	}
	if c.DNSPort == 0 {
		c.DNSPort = DNSPort
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Stats are counters an operator can read through the plugin's debug API.
type Stats struct {
	DriftRepairs   uint64 // overlay devices, neighbor and FDB entries the reconciler found changed since vxovl programmed them, and fixed
	IPConflicts    uint64 // remote endpoints not programmed because they claim a local endpoint's IP
	MACConflicts   uint64 // remote endpoints not programmed because their MAC is local or behind another VTEP
	SyncErrors     uint64
	Reconciles     uint64
	LastReconcile  time.Time
	Networks       int
	LocalEndpoints int
	// UnfinishedCleanups are deletes whose kernel or store step failed and
	// that the reconcile loop keeps retrying.
	UnfinishedCleanups int
}

// Driver implements network.Driver.
type Driver struct {
	cfg   Config
	log   *slog.Logger
	dp    Dataplane
	store *store.Store

	// mu guards everything below and the overlays' endpoints. API calls hold
	// it through their kernel and store work; the reconcile loop takes it
	// only for snapshots and counters (lock order: an overlay's syncMu, then mu).
	mu     sync.Mutex
	gossip Gossip // set by Start, before the loop and the API start
	// xfrmKeep (restored, within the restore grace) stops syncXfrm from
	// removing SAs; xfrmIdle says no IPsec state of vxovl's is left, so a
	// host without encrypted networks does not list XFRM on every sync.
	// Both are used only by Start and then the loop's goroutine.
	xfrmKeep, xfrmIdle bool
	networks           map[string]*overlay // by Docker network ID
	byVNI              map[uint32]*overlay
	stats              Stats
	// unfinished are clean-ups of networks and endpoints Docker has already
	// forgotten (it goes on after a failed delete) whose kernel or store
	// step failed, by what they remove; the reconcile loop retries them.
	unfinished map[string]func() error

	// managed holds the IDs of the networks, for Manages, which must not
	// wait for mu.
	managed sync.Map

	dirtyMu  sync.Mutex
	dirty    map[uint32]struct{}
	kick     chan struct{}
	onDemand chan chan struct{}
	loop     sync.WaitGroup
}

var _ network.Driver = (*Driver)(nil)

type overlay struct {
	networkRecord
	subnet    *net.IPNet
	gateway   *net.IPNet
	endpoints map[string]*endpoint // guarded by Driver.mu

	// syncMu serialises the syncs of this network (which may rebuild its
	// overlay) with its DeleteNetwork, without Driver.mu held throughout.
	// It guards the fields below. Taken before Driver.mu, never after.
	syncMu sync.Mutex
	// deleted is set by DeleteNetwork, holding syncMu and Driver.mu: a sync
	// then leaves the kernel and the store alone.
	deleted bool
	// restored are remote peers remembered from before a restart, programmed
	// until RestoreGrace ends.
	restored []dataplane.Peer
	// saved is what the store holds as this network's programmed peers, so
	// that a sync writes only when they changed, without reading it back.
	saved []dataplane.Peer
	// programmed is what the last SyncPeers put in the kernel's tables; nil
	// while unknown (before the first sync, after a failed one).
	programmed *peerTable
	// conflicts are the remote endpoints left out of the tables because they
	// clash (node/endpoint -> why), so each is reported once.
	conflicts map[string]string
	// names is the network's name server; nil while none runs.
	names *dnsserver.Server
	// shown is the last table a sync programmed, for Networks, which must
	// not wait for syncMu (a sync holds it across kernel calls).
	shown atomic.Pointer[peerTable]
}

type endpoint struct {
	endpointRecord
	ip  net.IP
	mac net.HardwareAddr
}

// localEndpoints lists o's endpoints as the peer policy sees them.
func (o *overlay) localEndpoints() []localEndpoint {
	out := make([]localEndpoint, 0, len(o.endpoints))
	for _, ep := range o.endpoints {
		out = append(out, localEndpoint{ID: ep.ID, IP: ep.ip, MAC: ep.mac, Names: ep.Names})
	}
	return out
}

// endpointSpec is what the dataplane makes for ep.
func (o *overlay) endpointSpec(ep *endpoint) dataplane.EndpointSpec {
	return dataplane.EndpointSpec{VNI: o.VNI, ID: ep.ID, MAC: ep.mac, MTU: o.MTU}
}

// clusterNetwork is the definition of o that the cluster compares across hosts.
func (o *overlay) clusterNetwork() cluster.Network {
	return cluster.Network{VNI: o.VNI, Subnet: o.Subnet, MTU: o.MTU, Encrypted: o.Encrypted}
}

// clusterEndpoint is what the cluster announces of ep.
func (ep *endpoint) clusterEndpoint(vni uint32) cluster.Endpoint {
	return cluster.Endpoint{VNI: vni, ID: ep.ID, IP: ep.ip, MAC: ep.mac, Names: ep.Names, Created: ep.Created}
}

// New makes a driver. Call Start before serving the API.
func New(cfg Config, dp Dataplane, st *store.Store) *Driver {
	cfg.setDefaults()
	return &Driver{
		cfg:      cfg,
		log:      cfg.Logger,
		dp:       dp,
		store:    st,
		networks: map[string]*overlay{},
		byVNI:    map[uint32]*overlay{},
		dirty:    map[uint32]struct{}{},

		unfinished: map[string]func() error{},
		kick:       make(chan struct{}, 1),
		onDemand:   make(chan chan struct{}),
	}
}

func (d *Driver) spec(o *overlay) dataplane.NetworkSpec {
	return dataplane.NetworkSpec{VNI: o.VNI, Gateway: o.gateway, MTU: o.MTU, VTEP: d.cfg.VTEP, Port: d.port(o.Encrypted)}
}

// GetCapabilities: the driver keeps its state per host (local scope) but its
// networks span hosts (global connectivity), like the native overlay.
func (d *Driver) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: network.LocalScope, ConnectivityScope: network.GlobalScope}, nil
}

// CreateNetwork builds the overlay namespace, bridge and VXLAN device.
func (d *Driver) CreateNetwork(req *network.CreateNetworkRequest) error {
	if req.NetworkID == "" {
		return errors.New("CreateNetwork: empty NetworkID")
	}
	opts, err := parseNetworkOptions(req.Options)
	if err != nil {
		return err
	}
	pool, err := parsePools(req.IPv4Data, req.IPv6Data)
	if err != nil {
		return err
	}
	o := &overlay{
		networkRecord: networkRecord{
			ID: req.NetworkID, VNI: opts.VNI, Subnet: pool.Subnet.String(),
			MTU: opts.MTU, Flood: opts.Flood, Internal: opts.Internal, NoDNS: opts.NoDNS, Encrypted: opts.Encrypted,
		},
		subnet:    pool.Subnet,
		gateway:   pool.Gateway,
		endpoints: map[string]*endpoint{},
	}
	if pool.Gateway != nil {
		o.Gateway = pool.Gateway.String()
	}
	if o.VNI == 0 {
		o.VNI = DeriveVNI(pool.Subnet)
	}
	if o.MTU == 0 {
		o.MTU = d.cfg.DefaultMTU
		if o.Encrypted {
			o.MTU -= vxlan.ESPOverhead
		}
	}
	if o.Encrypted {
		if err := d.canEncrypt(); err != nil {
			return err
		}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.networks[req.NetworkID]; ok {
		if old.definition() == o.definition() {
			return nil // Docker retried; the network is already there
		}
		return fmt.Errorf("network %s already exists with other settings", short(req.NetworkID))
	}
	if other, ok := d.byVNI[o.VNI]; ok {
		return fmt.Errorf("VNI %d is already used by network %s (subnet %s) on this host: "+
			"pass a different -o vni=N (1-%d) to one of them", o.VNI, short(other.ID), other.Subnet, vxlan.MaxVNI)
	}
	if err := d.gossip.PublishNetwork(o.clusterNetwork()); err != nil {
		return fmt.Errorf("network with VNI %d: %w", o.VNI, err)
	}
	if err := d.dp.EnsureNetwork(d.spec(o)); err != nil {
		d.undo("withdraw network", d.gossip.WithdrawNetwork(o.VNI))
		d.undo("delete network", d.dp.DeleteNetwork(o.VNI))
		return fmt.Errorf("building overlay for VNI %d: %w", o.VNI, err)
	}
	if err := d.store.Put(bucketNetworks, o.ID, o.networkRecord); err != nil {
		d.undo("withdraw network", d.gossip.WithdrawNetwork(o.VNI))
		d.undo("delete network", d.dp.DeleteNetwork(o.VNI))
		return err
	}
	d.networks[o.ID] = o
	d.byVNI[o.VNI] = o
	d.managed.Store(o.ID, struct{}{})
	d.log.Info("network created", "network", short(o.ID), "vni", o.VNI, "subnet", o.Subnet, "mtu", o.MTU, "flood", o.Flood, "encrypted", o.Encrypted)
	// Peers may already have endpoints in this overlay: program them now.
	d.markDirty(o.VNI)
	return nil
}

// undo logs a failed rollback step; the original error is what the caller
// returns, and the reconciler will retry the cleanup.
func (d *Driver) undo(what string, err error) {
	if err != nil {
		d.log.Error("rollback step failed; the reconciler will retry", "step", what, "err", err)
	}
}

// DeleteNetwork removes everything CreateNetwork made. Docker forgets the
// network whatever the answer, so it leaves vxovl's view at once (its VNI is
// free again); a kernel or store step that fails is retried by the
// reconcile loop.
func (d *Driver) DeleteNetwork(req *network.DeleteNetworkRequest) error {
	o, unlock, err := d.lockNetwork(req.NetworkID)
	if err != nil {
		return err
	}
	defer unlock()
	o.deleted = true
	d.stopNames(o)
	d.managed.Delete(o.ID)
	var errs []error
	for id := range o.endpoints {
		errs = append(errs, d.deleteEndpointLocked(o, id))
	}
	delete(d.networks, o.ID)
	delete(d.byVNI, o.VNI)
	d.undo("withdraw network", d.gossip.WithdrawNetwork(o.VNI))
	vni, id := o.VNI, o.ID
	// Records go before the kernel: once Docker has forgotten the network, a
	// restart must not bring it back, while a leftover namespace is removed
	// by the reconciler (or at start, as one no stored network owns).
	errs = append(errs, d.finish("network", id, func() error {
		err := d.store.Delete(bucketNetworks, id)
		// A network created since with the same VNI owns the namespace and
		// the peer list now.
		if _, reused := d.byVNI[vni]; !reused {
			err = errors.Join(err, d.store.Delete(bucketPeers, vniKey(vni)))
			if kerr := d.dp.DeleteNetwork(vni); kerr != nil {
				err = errors.Join(err, fmt.Errorf("removing overlay for VNI %d: %w", vni, kerr))
			}
		}
		return err
	}))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if o.Encrypted {
		d.markDirty(o.VNI) // the next sync drops what only it needed of IPsec
	}
	d.log.Info("network deleted", "network", short(o.ID), "vni", o.VNI)
	return nil
}

// lockNetwork takes the network's syncMu and then d.mu, in the lock order,
// waiting for a sync of it in progress to end.
func (d *Driver) lockNetwork(id string) (*overlay, func(), error) {
	for {
		d.mu.Lock()
		o, err := d.networkLocked(id)
		d.mu.Unlock()
		if err != nil {
			return nil, nil, err
		}
		o.syncMu.Lock()
		d.mu.Lock()
		if d.networks[id] == o {
			return o, func() { d.mu.Unlock(); o.syncMu.Unlock() }, nil
		}
		// Deleted, and maybe made again, while we waited: look again.
		d.mu.Unlock()
		o.syncMu.Unlock()
	}
}

// AllocateNetwork is only called in swarm mode, which vxovl does not need.
func (d *Driver) AllocateNetwork(*network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error) {
	return &network.AllocateNetworkResponse{Options: map[string]string{}}, nil
}

// FreeNetwork is only called in swarm mode.
func (d *Driver) FreeNetwork(*network.FreeNetworkRequest) error { return nil }

// CreateEndpoint records the endpoint's address and MAC and announces it to
// the cluster at once, so remote hosts are programmed before the container runs.
func (d *Driver) CreateEndpoint(req *network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	if req.EndpointID == "" {
		return nil, errors.New("CreateEndpoint: empty EndpointID")
	}
	if req.Interface == nil || req.Interface.Address == "" {
		return nil, errors.New("endpoint has no IPv4 address: vxovl needs Docker's IPAM (or vxovl's) to assign one")
	}
	if req.Interface.AddressIPv6 != "" {
		return nil, errors.New("IPv6 addresses are not supported by vxovl yet")
	}
	ip, ipnet, err := net.ParseCIDR(req.Interface.Address)
	if err != nil || ip.To4() == nil {
		return nil, fmt.Errorf("bad endpoint address %q: want an IPv4 CIDR", req.Interface.Address)
	}
	ip = ip.To4()
	resp := &network.CreateEndpointResponse{}
	// Docker sets a MAC only for --mac-address: neither vxovl's IPAM nor
	// Docker's default one asks for endpoint MACs (an IPAM that did would
	// make Docker pick a random one). Every other endpoint gets the derived
	// MAC, whichever IPAM handed out its address.
	var mac net.HardwareAddr
	if req.Interface.MacAddress != "" {
		if mac, err = vxlan.ParseMAC(req.Interface.MacAddress); err != nil {
			return nil, err
		}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	o, err := d.networkLocked(req.NetworkID)
	if err != nil {
		return nil, err
	}
	if mac == nil {
		mac = endpointMAC(o.VNI, ip)
		// Docker rejects a response that overwrites a field it set: return
		// only what it left empty.
		resp.Interface = &network.EndpointInterface{MacAddress: mac.String()}
	}
	if !o.subnet.Contains(ip) || ipnet.Mask.String() != o.subnet.Mask.String() {
		return nil, fmt.Errorf("address %s is not in the network's subnet %s", req.Interface.Address, o.Subnet)
	}
	if old, ok := o.endpoints[req.EndpointID]; ok {
		if old.ip.Equal(ip) && old.mac.String() == mac.String() {
			return resp, nil
		}
		return nil, fmt.Errorf("endpoint %s already exists with another address", short(req.EndpointID))
	}
	for _, other := range o.endpoints {
		if !other.ip.Equal(ip) {
			continue
		}
		// Docker hands out an address of a network on this host only once it
		// has released it: an older endpoint with no container is one Docker
		// deleted while vxovl could not hear it, and must not block this one.
		// One with a container still attached means Docker's own state is
		// off: refuse.
		detached, err := d.detachedLocked(o, other)
		if err != nil {
			return nil, fmt.Errorf("address %s is already used by endpoint %s on this host: %w", ip, short(other.ID), err)
		}
		if !detached {
			return nil, fmt.Errorf("address %s is already used by endpoint %s on this host, whose container is still attached", ip, short(other.ID))
		}
		d.log.Warn("replacing a stale endpoint with the same address: Docker deleted it while vxovl could not hear it",
			"network", short(o.ID), "ip", ip, "stale_endpoint", short(other.ID), "endpoint", short(req.EndpointID))
		if err := d.deleteEndpointLocked(o, other.ID); err != nil {
			d.log.Warn("removing the stale endpoint; the reconciler will retry", "endpoint", short(other.ID), "err", err)
		}
	}
	ep := &endpoint{
		endpointRecord: endpointRecord{ID: req.EndpointID, NetworkID: o.ID, Address: req.Interface.Address, MAC: mac.String()},
		ip:             ip,
		mac:            mac,
	}
	if err := d.store.Put(bucketEndpoints, ep.ID, ep.endpointRecord); err != nil {
		return nil, err
	}
	pub, err := d.gossip.PublishEndpoint(ep.clusterEndpoint(o.VNI))
	if err != nil {
		d.undo("forget endpoint", d.store.Delete(bucketEndpoints, ep.ID))
		return nil, fmt.Errorf("announcing endpoint to the cluster: %w", err)
	}
	d.keepClaimStamp(ep, pub.Created)
	o.endpoints[ep.ID] = ep
	d.log.Info("endpoint created", "network", short(o.ID), "vni", o.VNI, "endpoint", short(ep.ID), "ip", ip, "mac", mac.String())
	// A remote endpoint claiming this IP must now be unprogrammed.
	d.markDirty(o.VNI)
	return resp, nil
}

// endpointMAC derives a locally administered unicast MAC from the overlay and
// the endpoint's address, as Docker's own overlay derives it from the address.
// Every endpoint started without --mac-address gets it, with either IPAM.
// A container that comes back with its address (docker restart, a dockerd
// restart, a host reboot, --ip on another host) comes back with its MAC, so
// the ARP caches of the containers that talk to it stay right and only the
// FDB entry (which VTEP) changes, which vxovl reprograms from the cluster at
// once. A MAC that changed with every new endpoint left peers sending to a
// MAC nobody had until their ARP entry went stale: 30-50 s without replies.
func endpointMAC(vni uint32, ip net.IP) net.HardwareAddr {
	sum := sha256.Sum256([]byte(fmt.Sprintf("vxovl/mac/%d/%s", vni, ip.To4())))
	return net.HardwareAddr(append([]byte{0x02}, sum[:5]...))
}

// DeleteEndpoint withdraws the endpoint from the cluster and removes its veth.
func (d *Driver) DeleteEndpoint(req *network.DeleteEndpointRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	o, _, err := d.endpointLocked(req.NetworkID, req.EndpointID)
	if err != nil {
		return err
	}
	return d.deleteEndpointLocked(o, req.EndpointID)
}

// detachedLocked reports whether ep has no container: not joined yet, left,
// or its container is gone (Docker moved the container end back to the
// host, or it died with the container's namespace).
func (d *Driver) detachedLocked(o *overlay, ep *endpoint) (bool, error) {
	attached, err := d.dp.EndpointAttached(o.VNI, ep.ID)
	if err != nil {
		return false, fmt.Errorf("checking the veth of endpoint %s: %w", short(ep.ID), err)
	}
	return !attached, nil
}

// deleteEndpointLocked drops the endpoint from vxovl's view and the cluster
// at once (Docker forgets it whatever the answer) and removes its veth and
// record, leaving a failed step to the reconcile loop.
func (d *Driver) deleteEndpointLocked(o *overlay, id string) error {
	delete(o.endpoints, id)
	d.markDirty(o.VNI)
	d.undo("withdraw endpoint", d.gossip.WithdrawEndpoint(o.VNI, id))
	vni := o.VNI
	// The record goes before the veth, as for networks: a restart must not
	// bring back an endpoint Docker has forgotten.
	if err := d.finish("endpoint", id, func() error {
		err := d.store.Delete(bucketEndpoints, id)
		if kerr := d.dp.DeleteEndpoint(vni, id); kerr != nil {
			err = errors.Join(err, fmt.Errorf("removing veth of endpoint %s: %w", short(id), kerr))
		}
		return err
	}); err != nil {
		return err
	}
	d.log.Info("endpoint deleted", "network", short(o.ID), "vni", o.VNI, "endpoint", short(id))
	return nil
}

// finish runs the clean-up of a network or endpoint now and, when it fails,
// keeps it for the reconcile loop to retry.
func (d *Driver) finish(kind, id string, cleanup func() error) error {
	if err := cleanup(); err != nil {
		d.unfinished[kind+" "+id] = cleanup
		return fmt.Errorf("%w (vxovl retries the clean-up of %s %s in the background)", err, kind, short(id))
	}
	return nil
}

// EndpointInfo reports where the endpoint lives, for `docker network inspect`.
func (d *Driver) EndpointInfo(req *network.InfoRequest) (*network.InfoResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	o, ep, err := d.endpointLocked(req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, err
	}
	return &network.InfoResponse{Value: map[string]string{
		"vxovl.vni":  fmt.Sprint(o.VNI),
		"vxovl.vtep": d.cfg.VTEP.String(),
		"vxovl.mac":  ep.MAC,
	}}, nil
}

// Join makes the veth pair whose container end Docker moves into the sandbox.
func (d *Driver) Join(req *network.JoinRequest) (*network.JoinResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	o, ep, err := d.endpointLocked(req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, err
	}
	name, err := d.dp.EnsureEndpoint(o.endpointSpec(ep))
	if err != nil {
		d.undo("delete veth", d.dp.DeleteEndpoint(o.VNI, ep.ID))
		return nil, fmt.Errorf("making veth for endpoint %s: %w", short(ep.ID), err)
	}
	rec := ep.endpointRecord
	rec.Joined = true
	if err := d.store.Put(bucketEndpoints, ep.ID, rec); err != nil {
		d.undo("delete veth", d.dp.DeleteEndpoint(o.VNI, ep.ID))
		return nil, err
	}
	ep.endpointRecord = rec
	return &network.JoinResponse{
		InterfaceName: network.InterfaceName{SrcName: name, DstPrefix: "eth"},
		// No Gateway: Docker then adds its docker_gwbridge for egress, as with
		// the native overlay. Internal networks get no egress at all.
		DisableGatewayService: o.Internal,
	}, nil
}

// Leave removes the veth pair; the endpoint stays announced until DeleteEndpoint.
func (d *Driver) Leave(req *network.LeaveRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	o, ep, err := d.endpointLocked(req.NetworkID, req.EndpointID)
	if err != nil {
		return err
	}
	if err := d.dp.DeleteEndpoint(o.VNI, ep.ID); err != nil {
		return fmt.Errorf("removing veth of endpoint %s: %w", short(ep.ID), err)
	}
	rec := ep.endpointRecord
	rec.Joined = false
	if err := d.store.Put(bucketEndpoints, ep.ID, rec); err != nil {
		return err
	}
	ep.endpointRecord = rec
	return nil
}

func (d *Driver) DiscoverNew(*network.DiscoveryNotification) error    { return nil }
func (d *Driver) DiscoverDelete(*network.DiscoveryNotification) error { return nil }
func (d *Driver) ProgramExternalConnectivity(*network.ProgramExternalConnectivityRequest) error {
	return nil
}
func (d *Driver) RevokeExternalConnectivity(*network.RevokeExternalConnectivityRequest) error {
	return nil
}

// Stats returns a copy of the driver's counters.
func (d *Driver) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.stats
	s.Networks = len(d.networks)
	s.UnfinishedCleanups = len(d.unfinished)
	for _, o := range d.networks {
		s.LocalEndpoints += len(o.endpoints)
	}
	return s
}

func (d *Driver) networkLocked(id string) (*overlay, error) {
	o, ok := d.networks[id]
	if !ok {
		return nil, fmt.Errorf("network %s is not known to vxovl on this host", short(id))
	}
	return o, nil
}

func (d *Driver) endpointLocked(netID, epID string) (*overlay, *endpoint, error) {
	o, err := d.networkLocked(netID)
	if err != nil {
		return nil, nil, err
	}
	ep, ok := o.endpoints[epID]
	if !ok {
		return nil, nil, fmt.Errorf("endpoint %s is not known in network %s", short(epID), short(netID))
	}
	return o, ep, nil
}

func ipLess(a, b net.IP) bool { return string(a.To16()) < string(b.To16()) }

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
