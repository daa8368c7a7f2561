// Command fakemember is a cluster member with no Docker behind it: it joins the vxovl gossip,
// publishes the definitions of the networks it is given and a number of endpoints on each, and
// keeps them published until it is told to stop (SIGTERM or SIGINT). The run-latency benchmark
// (tests/e2e/runlatency_test.go) uses it to give a lab host a thousand remote endpoints without a
// thousand containers.
//
// It is built from the same source tree as the plugin it talks to, so that both speak the same
// record format (the endpoint value grew between versions, and an older plugin drops the newer
// form). It therefore uses only the cluster API that versions share.
//
// Endpoint r of the network with VNI v and subnet s has the address s+first+r and the MAC
// 02:aa:RR:VV:VV:rr (VV:VV the VNI's low 16 bits, RR:rr the number r): distinct across networks
// and from the MACs vxovl derives. A subnet larger than a /24 holds more than 254 endpoints.
//
//	fakemember -bind 10.86.0.240 -peer 10.86.0.1 -mtu 1450 -per-network 20 \
//	    -networks 15001=10.150.1.0/24,15002=10.150.2.0/24
//
// It prints "ready N networks M endpoints" on stdout once everything is published.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/vxovl/vxovl/cluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fakemember:", err)
		os.Exit(1)
	}
}

func run() error {
	bind := flag.String("bind", "", "underlay IPv4 address to gossip on and advertise as the endpoints' VTEP")
	port := flag.Int("port", cluster.DefaultBindPort, "gossip port")
	peer := flag.String("peer", "", "comma-separated host[:port] of the members to join")
	name := flag.String("name", "fakemember", "node name")
	mtu := flag.Int("mtu", 1450, "MTU of the published network definitions (must match the hosts')")
	perNetwork := flag.Int("per-network", 20, "endpoints published on each network")
	first := flag.Int("first", 200, "host number, within each subnet, of the first endpoint's address")
	networks := flag.String("networks", "", "comma-separated VNI=SUBNET of the networks to publish")
	flag.Parse()

	addr := net.ParseIP(*bind).To4()
	if addr == nil {
		return fmt.Errorf("-bind %q is not an IPv4 address", *bind)
	}
	nets, err := parseNetworks(*networks)
	if err != nil {
		return err
	}
	for _, n := range nets {
		// The last address of the subnet is its broadcast address.
		if last := *first + *perNetwork - 1; *first < 1 || *perNetwork < 0 || *perNetwork > 1<<16 || last >= 1<<(32-n.Subnet.Bits())-1 {
			return fmt.Errorf("%s: endpoints %d..%d do not fit the subnet (at most 65536 per network)", n.Subnet, *first, last)
		}
	}

	cfg := cluster.DefaultConfig()
	cfg.NodeName = *name
	cfg.BindAddr = addr.String()
	cfg.BindPort = *port
	cfg.AdvertiseAddr = addr
	cfg.Peers = strings.Split(*peer, ",")
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := cluster.New(cfg, ignoreChanges{})
	if err != nil {
		return err
	}
	defer c.Shutdown()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	endpoints := 0
	for _, n := range nets {
		if err := c.PublishNetwork(cluster.Network{VNI: n.VNI, Subnet: n.Subnet.String(), MTU: *mtu}); err != nil {
			return fmt.Errorf("publishing network %d (%s): %w", n.VNI, n.Subnet, err)
		}
		base := binary.BigEndian.Uint32(n.Subnet.Addr().AsSlice())
		for r := range *perNetwork {
			ip := binary.BigEndian.AppendUint32(nil, base+uint32(*first+r))
			ep := cluster.Endpoint{
				VNI: n.VNI,
				ID:  fmt.Sprintf("fake-%d-%d", n.VNI, r),
				IP:  net.IP(ip),
				MAC: net.HardwareAddr{0x02, 0xaa, byte(r >> 8), byte(n.VNI >> 8), byte(n.VNI), byte(r)},
			}
			if err := publishEndpoint(c, ep); err != nil {
				return fmt.Errorf("publishing endpoint %s on network %d: %w", ep.IP, n.VNI, err)
			}
			endpoints++
		}
	}
	fmt.Printf("ready %d networks %d endpoints\n", len(nets), endpoints)
	<-stop
	return nil
}

type network struct {
	VNI    uint32
	Subnet netip.Prefix
}

func parseNetworks(s string) ([]network, error) {
	if s == "" {
		return nil, errors.New("-networks is empty: give VNI=SUBNET,...")
	}
	var nets []network
	for _, f := range strings.Split(s, ",") {
		v, p, ok := strings.Cut(f, "=")
		vni, err := strconv.ParseUint(v, 10, 32)
		if !ok || err != nil {
			return nil, fmt.Errorf("-networks: %q is not VNI=SUBNET", f)
		}
		prefix, err := netip.ParsePrefix(p)
		if err != nil || !prefix.Addr().Is4() {
			return nil, fmt.Errorf("-networks: %q: %q is not an IPv4 subnet", f, p)
		}
		nets = append(nets, network{VNI: uint32(vni), Subnet: prefix.Masked()})
	}
	return nets, nil
}

// publishEndpoint calls PublishEndpoint whichever of its two signatures the tree has: it
// returned only an error before endpoints carried their creation version.
func publishEndpoint(c *cluster.Cluster, ep cluster.Endpoint) error {
	switch p := any(c).(type) {
	case interface {
		PublishEndpoint(cluster.Endpoint) (cluster.Endpoint, error)
	}:
		_, err := p.PublishEndpoint(ep)
		return err
	case interface{ PublishEndpoint(cluster.Endpoint) error }:
		return p.PublishEndpoint(ep)
	}
	return errors.New("this tree's cluster.Cluster has no PublishEndpoint this command knows")
}

// ignoreChanges is the Handler of a member that only publishes.
type ignoreChanges struct{}

func (ignoreChanges) EndpointsChanged(uint32) {}
