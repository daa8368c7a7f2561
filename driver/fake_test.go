package driver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/internal/dataplane"
	"github.com/vxovl/vxovl/internal/ipsec"
)

// fakeDataplane keeps the kernel's state as plain maps, for testing the
// driver's logic without root. internal/dataplane is tested against the real kernel.
type fakeDataplane struct {
	mu        sync.Mutex
	networks  map[uint32]dataplane.NetworkSpec
	endpoints map[string]dataplane.EndpointSpec
	peers     map[uint32][]dataplane.Peer
	flood     map[uint32][]net.IP
	failNext  map[string]error // method name -> error returned once
	deleted   map[uint32]int   // DeleteNetwork calls per VNI
	unhealthy map[uint32]bool
	syncs     int
	// healthHook, when set, runs at the start of every Health call, outside
	// the fake's lock: a test can hold a reconcile pass there.
	healthHook func(vni uint32)
	// dns is where each network's name server listens: on loopback, as the
	// fake has no namespaces.
	dns map[uint32]string
	// ensured counts EnsureEndpoint calls per endpoint.
	ensured map[string]int
	// sas and xfrmPorts are the IPsec state EnsureXfrm installed.
	sas       []ipsec.SA
	xfrmPorts []int
}

func newFakeDataplane() *fakeDataplane {
	return &fakeDataplane{
		networks: map[uint32]dataplane.NetworkSpec{}, endpoints: map[string]dataplane.EndpointSpec{},
		peers: map[uint32][]dataplane.Peer{}, flood: map[uint32][]net.IP{},
		failNext: map[string]error{}, unhealthy: map[uint32]bool{}, deleted: map[uint32]int{},
		dns: map[uint32]string{}, ensured: map[string]int{},
	}
}

// failOnce makes the next call of method return err.
func (f *fakeDataplane) failOnce(method string, err error) {
	f.mu.Lock()
	f.failNext[method] = err
	f.mu.Unlock()
}

// fail returns the error failOnce set for method, once. Needs f.mu.
func (f *fakeDataplane) fail(method string) error {
	if err, ok := f.failNext[method]; ok {
		delete(f.failNext, method)
		return err
	}
	return nil
}

// ListenDNS opens the name server's sockets on a free loopback port (the
// same for UDP and TCP) instead of addr:port in an overlay namespace.
func (f *fakeDataplane) ListenDNS(vni uint32, addr netip.Addr, port int) (net.PacketConn, net.Listener, error) {
	f.mu.Lock()
	err := f.fail("ListenDNS")
	f.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	for range 20 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp4", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			continue // the TCP port is taken: try another
		}
		f.mu.Lock()
		f.dns[vni] = pc.LocalAddr().String()
		f.mu.Unlock()
		return pc, ln, nil
	}
	return nil, nil, errors.New("no free loopback port for UDP and TCP")
}

func (f *fakeDataplane) CheckESP() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fail("CheckESP")
}

// EnsureXfrm keeps the SAs and ports as given; without prune it keeps the
// ones it had too.
func (f *fakeDataplane) EnsureXfrm(ports []int, sas []ipsec.SA, prune bool) (dataplane.XfrmResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("EnsureXfrm"); err != nil {
		return dataplane.XfrmResult{}, err
	}
	if !prune {
		for _, sa := range f.sas {
			if !slices.ContainsFunc(sas, func(s ipsec.SA) bool { return s.Dst.Equal(sa.Dst) && s.SPI == sa.SPI }) {
				sas = append(sas, sa)
			}
		}
		if len(ports) == 0 {
			ports = f.xfrmPorts
		}
	}
	f.xfrmPorts, f.sas = slices.Clone(ports), slices.Clone(sas)
	return dataplane.XfrmResult{StatesAdded: len(sas)}, nil
}

func (f *fakeDataplane) dnsAddr(vni uint32) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dns[vni]
}

func (f *fakeDataplane) EnsureNetwork(s dataplane.NetworkSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("EnsureNetwork"); err != nil {
		return err
	}
	f.networks[s.VNI] = s
	delete(f.unhealthy, s.VNI)
	return nil
}

func (f *fakeDataplane) DeleteNetwork(vni uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted[vni]++
	if err := f.fail("DeleteNetwork"); err != nil {
		return err
	}
	delete(f.networks, vni)
	delete(f.peers, vni)
	delete(f.flood, vni)
	for id, e := range f.endpoints {
		if e.VNI == vni {
			delete(f.endpoints, id)
		}
	}
	return nil
}

func (f *fakeDataplane) Health(s dataplane.NetworkSpec) error {
	f.mu.Lock()
	hook := f.healthHook
	f.mu.Unlock()
	if hook != nil {
		hook(s.VNI)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.networks[s.VNI]; !ok || f.unhealthy[s.VNI] {
		return errors.New("vxlan0 missing")
	}
	return nil
}

func (f *fakeDataplane) Networks() ([]uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []uint32
	for v := range f.networks {
		out = append(out, v)
	}
	return out, nil
}

func (f *fakeDataplane) EnsureEndpoint(s dataplane.EndpointSpec) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("EnsureEndpoint"); err != nil {
		return "", err
	}
	if _, ok := f.networks[s.VNI]; !ok {
		return "", fmt.Errorf("no network %d", s.VNI)
	}
	f.endpoints[s.ID] = s
	f.ensured[s.ID]++
	return dataplane.HostIfName(s.ID), nil
}

func (f *fakeDataplane) DeleteEndpoint(vni uint32, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("DeleteEndpoint"); err != nil {
		return err
	}
	delete(f.endpoints, id)
	return nil
}

func (f *fakeDataplane) EndpointAttached(vni uint32, id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.endpoints[id]
	return ok, nil
}

// containerGone is what Docker and the kernel do when a container goes away
// without Leave reaching the driver: the pair dies with the namespace (or
// its container end is back in the host, which EndpointAttached tells the same).
func (f *fakeDataplane) containerGone(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.endpoints, id)
}

func (f *fakeDataplane) SyncPeers(vni uint32, peers []dataplane.Peer, flood []net.IP) (dataplane.SyncResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	if _, ok := f.networks[vni]; !ok {
		return dataplane.SyncResult{}, fmt.Errorf("no network %d", vni)
	}
	// Refuse what the kernel dataplane refuses, so the driver's tests catch
	// tables it could never program.
	if err := dataplane.CheckPeers(peers, flood); err != nil {
		return dataplane.SyncResult{}, err
	}
	// Count per entry, as the kernel dataplane does, so that tests can tell
	// how many entries a sync put back.
	var res dataplane.SyncResult
	res.NeighAdded, res.NeighRemoved = diffSets(neighEntries(f.peers[vni]), neighEntries(peers))
	res.FDBAdded, res.FDBRemoved = diffSets(fdbEntries(f.peers[vni], f.flood[vni]), fdbEntries(peers, flood))
	f.peers[vni] = append([]dataplane.Peer(nil), peers...)
	f.flood[vni] = append([]net.IP(nil), flood...)
	return res, nil
}

func neighEntries(peers []dataplane.Peer) map[string]bool {
	set := map[string]bool{}
	for _, p := range peers {
		set[p.IP.String()+" lladdr "+p.MAC.String()] = true
	}
	return set
}

func fdbEntries(peers []dataplane.Peer, flood []net.IP) map[string]bool {
	set := map[string]bool{}
	for _, p := range peers {
		set[p.MAC.String()+" dst "+p.VTEP.String()] = true
	}
	for _, v := range flood {
		set["00:00:00:00:00:00 dst "+v.String()] = true
	}
	return set
}

// diffSets counts what going from have to want adds and removes.
func diffSets(have, want map[string]bool) (added, removed int) {
	for k := range want {
		if !have[k] {
			added++
		}
	}
	for k := range have {
		if !want[k] {
			removed++
		}
	}
	return added, removed
}

// damage removes the peers with the given IPs and their FDB entries from
// vni's tables, as someone running `ip neigh del` and `bridge fdb del` would.
func (f *fakeDataplane) damage(vni uint32, ips ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers[vni] = slices.DeleteFunc(f.peers[vni], func(p dataplane.Peer) bool { return slices.Contains(ips, p.IP.String()) })
}

func (f *fakeDataplane) peerIPs(vni uint32) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, p := range f.peers[vni] {
		out = append(out, p.IP.String()+"@"+p.VTEP.String())
	}
	sort.Strings(out)
	return out
}

// fakeGossip is an in-memory cluster view: local publishes are recorded and
// remote endpoints are set by the test.
type fakeGossip struct {
	mu        sync.Mutex
	networks  map[uint32]cluster.Network
	local     map[string]cluster.Endpoint
	remote    map[uint32][]cluster.Endpoint
	conflicts map[uint32]error
	caughtUp  bool
}

// fakeClock hands out fakeGossip's versions. It is shared, so that a
// restarted driver's fake, like a real cluster, publishes above the
// versions of its previous life.
var fakeClock atomic.Uint64

func (g *fakeGossip) CaughtUp() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.caughtUp
}

func newFakeGossip() *fakeGossip {
	return &fakeGossip{networks: map[uint32]cluster.Network{}, local: map[string]cluster.Endpoint{},
		remote: map[uint32][]cluster.Endpoint{}, conflicts: map[uint32]error{}}
}

func (g *fakeGossip) PublishNetwork(n cluster.Network) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.conflicts[n.VNI]; err != nil {
		return err
	}
	g.networks[n.VNI] = n
	return nil
}

func (g *fakeGossip) WithdrawNetwork(vni uint32) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.networks, vni)
	return nil
}

func (g *fakeGossip) PublishEndpoint(ep cluster.Endpoint) (cluster.Endpoint, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ep.Version = fakeClock.Add(1)
	if ep.Created == 0 {
		ep.Created = ep.Version
	}
	g.local[ep.ID] = ep
	return ep, nil
}

func (g *fakeGossip) WithdrawEndpoint(vni uint32, id string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.local, id)
	return nil
}

func (g *fakeGossip) Endpoints(vni uint32) []cluster.Endpoint {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]cluster.Endpoint(nil), g.remote[vni]...)
}

func (g *fakeGossip) setRemote(vni uint32, eps ...cluster.Endpoint) {
	g.mu.Lock()
	g.remote[vni] = eps
	g.mu.Unlock()
}
