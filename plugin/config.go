package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/vxovl/vxovl/internal/vxlan"
)

// Config is everything the plugin reads from its environment. In a managed
// plugin these are set with `docker plugin set vxovl KEY=VALUE`; config.json
// documents each one.
type Config struct {
	// Peers are other vxovl nodes to join, host or host:port (PEERS).
	Peers []string
	// AdvertiseAddr is this node's underlay IPv4, its VTEP (ADVERTISE_ADDR).
	// Empty: the address of the default-route interface, else the first
	// global IPv4.
	AdvertiseAddr net.IP
	// GossipPort is the memberlist TCP+UDP port (GOSSIP_PORT, default 7947,
	// next to but not on swarm's 7946).
	GossipPort int
	// VXLANPort is the VXLAN UDP port (VXLAN_PORT, default 4789).
	VXLANPort int
	// EncryptedPort is the VXLAN UDP port of encrypted networks
	// (ENCRYPTED_VXLAN_PORT, default 4800).
	EncryptedPort int
	// KeyRotation is how long a generation of IPsec keys lasts
	// (KEY_ROTATION, default 1h).
	KeyRotation time.Duration
	// GossipKey turns on gossip encryption and authentication (GOSSIP_KEY,
	// base64 of 16, 24 or 32 bytes).
	GossipKey []byte
	// MTU overrides the default overlay MTU of underlay MTU minus 50 (MTU).
	MTU int
	// NodeName is this node's cluster identity (NODE_NAME). Empty: a name made
	// once from the hostname and kept in the state store.
	NodeName string
	// LogLevel is debug, info, warn or error (LOG_LEVEL, default info).
	LogLevel slog.Level
	// DeadTimeout bounds how long a dead node's endpoints stay programmed
	// (DEAD_TIMEOUT, default 10s).
	DeadTimeout time.Duration
	// ReconcileInterval is how often the kernel is checked and repaired
	// (RECONCILE_INTERVAL, default 10s).
	ReconcileInterval time.Duration
	// StateDir holds the bbolt state file (STATE_DIR, default /var/lib/vxovl:
	// the plugin's `state` mount).
	StateDir string
	// NetnsDir is where overlay namespaces are pinned (NETNS_DIR, default
	// /run/vxovl-netns: the plugin's `netns` mount, a shared host directory,
	// so that the pins live in the host's mount namespace and the overlays
	// outlive the plugin's own, through disable, enable and upgrade).
	NetnsDir string
	// NetnsFallbackDir pins every overlay namespace a second time, under
	// the plugin's propagated mount (NETNS_FALLBACK_DIR, default
	// /run/vxovl/netns): that outlives a crash of the plugin even on a host
	// where NetnsDir is not a shared mount, though not a disable.
	NetnsFallbackDir string
	// DockerSocket is dockerd's Engine API socket, through which vxovl
	// learns container names (DOCKER_SOCKET, default /run/host/docker.sock:
	// the plugin's `docker` mount).
	DockerSocket string
	// SocketPath is the plugin API socket (SOCKET, default
	// /run/docker/plugins/vxovl.sock).
	SocketPath string
	// MetricsAddr is the host:port of the metrics and status server
	// (METRICS_ADDR, default 127.0.0.1:9747: the plugin runs in the host's
	// network namespace, so loopback exposes nothing beyond the host).
	// Empty: no server.
	MetricsAddr string
}

// DefaultMetricsAddr is METRICS_ADDR's default.
const DefaultMetricsAddr = "127.0.0.1:9747"

// configFromEnv parses and validates the environment (lookup is
// os.LookupEnv: a variable set to "" differs from one not set). Every error
// names the variable and what a good value looks like.
func configFromEnv(lookup func(string) (string, bool)) (Config, error) {
	getenv := func(name string) string { v, _ := lookup(name); return v }
	c := Config{
		GossipPort:        7947,
		VXLANPort:         vxlan.DefaultPort,
		EncryptedPort:     vxlan.DefaultEncryptedPort,
		KeyRotation:       time.Hour,
		LogLevel:          slog.LevelInfo,
		DeadTimeout:       10 * time.Second,
		ReconcileInterval: 10 * time.Second,
		StateDir:          "/var/lib/vxovl",
		NetnsDir:          "/run/vxovl-netns",
		NetnsFallbackDir:  "/run/vxovl/netns",
		SocketPath:        "/run/docker/plugins/vxovl.sock",
		DockerSocket:      "/run/host/docker.sock",
		MetricsAddr:       DefaultMetricsAddr,
	}
	var errs []string
	bad := func(name, val, want string) { errs = append(errs, fmt.Sprintf("%s=%q: want %s", name, val, want)) }

	for _, p := range strings.Split(getenv("PEERS"), ",") {
		if p = strings.TrimSpace(p); p != "" {
			c.Peers = append(c.Peers, p)
		}
	}
	if v := strings.TrimSpace(getenv("ADVERTISE_ADDR")); v != "" {
		ip := net.ParseIP(v).To4()
		if ip == nil || ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() {
			bad("ADVERTISE_ADDR", v, "this host's unicast underlay IPv4 address")
		}
		c.AdvertiseAddr = ip
	}
	port := func(name string, dst *int) {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || vxlan.CheckPort(n) != nil {
				bad(name, v, "a port from 1 to 65535")
				return
			}
			*dst = n
		}
	}
	port("GOSSIP_PORT", &c.GossipPort)
	port("VXLAN_PORT", &c.VXLANPort)
	port("ENCRYPTED_VXLAN_PORT", &c.EncryptedPort)
	if c.GossipPort == c.VXLANPort {
		bad("VXLAN_PORT", strconv.Itoa(c.VXLANPort), "a UDP port other than GOSSIP_PORT's")
	}
	if c.EncryptedPort == c.VXLANPort || c.EncryptedPort == c.GossipPort {
		bad("ENCRYPTED_VXLAN_PORT", strconv.Itoa(c.EncryptedPort), "a UDP port other than VXLAN_PORT's and GOSSIP_PORT's")
	}
	if v := strings.TrimSpace(getenv("GOSSIP_KEY")); v != "" {
		k, err := base64.StdEncoding.DecodeString(v)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			bad("GOSSIP_KEY", "<hidden>", "base64 of 16, 24 or 32 random bytes (e.g. `head -c32 /dev/urandom | base64`)")
		}
		c.GossipKey = k
	}
	if v := strings.TrimSpace(getenv("MTU")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || vxlan.CheckMTU(n) != nil {
			bad("MTU", v, fmt.Sprintf("an overlay MTU from %d to %d (underlay MTU minus %d)", vxlan.MinMTU, vxlan.MaxMTU, vxlan.Overhead))
		}
		c.MTU = n
	}
	c.NodeName = strings.TrimSpace(getenv("NODE_NAME"))
	if v := strings.TrimSpace(getenv("LOG_LEVEL")); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			bad("LOG_LEVEL", v, "debug, info, warn or error")
		}
	}
	duration := func(name string, dst *time.Duration, min, max time.Duration) {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d < min || d > max {
				bad(name, v, fmt.Sprintf("a duration from %s to %s, like 10s", min, max))
				return
			}
			*dst = d
		}
	}
	// A dead host's endpoints stay programmed for up to DEAD_TIMEOUT, and
	// the cluster keeps removal records (10 minutes) longer than that.
	duration("DEAD_TIMEOUT", &c.DeadTimeout, 2*time.Second, 5*time.Minute)
	duration("RECONCILE_INTERVAL", &c.ReconcileInterval, time.Second, time.Hour)
	duration("KEY_ROTATION", &c.KeyRotation, time.Minute, 168*time.Hour)
	for name, dst := range map[string]*string{"STATE_DIR": &c.StateDir, "NETNS_DIR": &c.NetnsDir, "NETNS_FALLBACK_DIR": &c.NetnsFallbackDir, "SOCKET": &c.SocketPath, "DOCKER_SOCKET": &c.DockerSocket} {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			*dst = v
		}
	}
	if v, set := lookup("METRICS_ADDR"); set {
		c.MetricsAddr = strings.TrimSpace(v)
	}
	if err := checkMetricsAddr(c.MetricsAddr, c.GossipPort); err != nil {
		bad("METRICS_ADDR", c.MetricsAddr, err.Error())
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("bad plugin settings (fix with `docker plugin set vxovl KEY=VALUE` while the plugin is disabled): %s", strings.Join(errs, "; "))
	}
	return c, nil
}

// checkMetricsAddr accepts "" (no server) or an IP address and port; what
// it returns completes "want ...".
func checkMetricsAddr(addr string, gossipPort int) error {
	if addr == "" {
		return nil
	}
	const want = "an IP address and port like 127.0.0.1:9747 or 10.98.0.1:9747, or empty for no metrics server"
	host, port, err := net.SplitHostPort(addr)
	if err != nil || net.ParseIP(host) == nil {
		return errors.New(want)
	}
	n, err := strconv.Atoi(port)
	if err != nil || vxlan.CheckPort(n) != nil {
		return errors.New(want)
	}
	// Gossip listens on GOSSIP_PORT's TCP port on every address.
	if n == gossipPort {
		return fmt.Errorf("a port other than GOSSIP_PORT's (%d)", gossipPort)
	}
	return nil
}
