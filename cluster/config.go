package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"time"
	"unicode"

	"github.com/hashicorp/memberlist"
)

// Config configures a Cluster. Zero fields take the defaults documented on
// each field (the same values DefaultConfig returns).
type Config struct {
	// NodeName is this node's stable identity; a node restarted with the
	// same name rejoins as itself. Required, at most 128 printable chars.
	NodeName string

	// BindAddr is the address the gossip listeners bind. Default "0.0.0.0".
	BindAddr string

	// BindPort is the gossip port (UDP and TCP). Default 7947, one above
	// swarm's 7946 so both can run on one host.
	BindPort int

	// AdvertiseAddr is this node's underlay IPv4, advertised to peers and
	// used as the VTEP address of its endpoints. Required.
	AdvertiseAddr net.IP

	// Peers are "host" or "host:port" (port defaults to BindPort). They are
	// joined in the background and retried forever with backoff, because a
	// node may start before its peers.
	Peers []string

	// SecretKey, when set (16, 24 or 32 bytes: AES-128/192/256), encrypts
	// and authenticates all gossip; packets without the key are dropped and
	// counted in Stats.DecryptFailures. Default nil: unauthenticated (a
	// warning is logged at start).
	SecretKey []byte

	// DeadTimeout bounds the time to detect a dead node and remove its
	// records, for clusters up to about 1,000 nodes (memberlist's suspicion
	// time grows with log10 of the cluster size, so smaller clusters detect
	// sooner: ~7s at 100 nodes). Default 10s; minimum 500ms. Probe and
	// suspicion timers are derived from it.
	DeadTimeout time.Duration

	// TombstoneTTL is how long a withdrawal is remembered. It must outlast
	// the longest time a stale copy of the record can still circulate
	// (repeated sends take seconds, full-state syncs run every 30s or
	// more), so a late message cannot resurrect the record; after
	// the TTL the owner's version floor keeps blocking older copies.
	// Default 10 minutes.
	TombstoneTTL time.Duration

	// MinVersion is a floor for this node's record versions. The plugin
	// persists Cluster.Version() and passes it back here so versions keep
	// increasing across restarts even if the wall clock stepped back.
	// Default 0 (wall clock only).
	MinVersion uint64

	// RejoinInterval is how often configured peers that are not current
	// members are joined again (this heals partitions). Default 30s.
	RejoinInterval time.Duration

	// NetworkSyncInterval is how often, on average, each network this node
	// has is compared with a random other node of the network (anti-entropy:
	// it repairs what a lost packet and its repeats missed). Default 30s.
	NetworkSyncInterval time.Duration

	// Logger receives cluster and memberlist logs. Default slog.Default().
	Logger *slog.Logger

	// Tune, if set, is called last on the derived memberlist config. For
	// tests and simulations (e.g. many nodes in one process); production
	// should not need it.
	Tune func(*memberlist.Config)
}

// Defaults.
const (
	DefaultBindAddr       = "0.0.0.0"
	DefaultBindPort       = 7947
	DefaultDeadTimeout    = 10 * time.Second
	DefaultTombstoneTTL   = 10 * time.Minute
	DefaultRejoinInterval = 30 * time.Second
	DefaultNetworkSync    = 30 * time.Second

	minDeadTimeout = 500 * time.Millisecond
	maxNodeName    = 128
)

// DefaultConfig returns a Config with every default filled in; NodeName and
// AdvertiseAddr must still be set.
func DefaultConfig() Config {
	return Config{
		BindAddr:            DefaultBindAddr,
		BindPort:            DefaultBindPort,
		DeadTimeout:         DefaultDeadTimeout,
		TombstoneTTL:        DefaultTombstoneTTL,
		RejoinInterval:      DefaultRejoinInterval,
		NetworkSyncInterval: DefaultNetworkSync,
		Logger:              slog.Default(),
	}
}

// withDefaults fills zero fields and checks the result.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.BindAddr == "" {
		c.BindAddr = d.BindAddr
	}
	if c.BindPort == 0 {
		c.BindPort = d.BindPort
	}
	if c.DeadTimeout == 0 {
		c.DeadTimeout = d.DeadTimeout
	}
	if c.TombstoneTTL == 0 {
		c.TombstoneTTL = d.TombstoneTTL
	}
	if c.RejoinInterval == 0 {
		c.RejoinInterval = d.RejoinInterval
	}
	if c.NetworkSyncInterval == 0 {
		c.NetworkSyncInterval = d.NetworkSyncInterval
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if err := validNodeName(c.NodeName); err != nil {
		return c, fmt.Errorf("cluster config: NodeName: %w", err)
	}
	ip4 := c.AdvertiseAddr.To4()
	if ip4 == nil || ip4.IsUnspecified() || ip4.IsMulticast() {
		return c, fmt.Errorf("cluster config: AdvertiseAddr %q must be this host's unicast underlay IPv4", c.AdvertiseAddr)
	}
	c.AdvertiseAddr = ip4
	if c.BindPort < 1 || c.BindPort > 65535 {
		return c, fmt.Errorf("cluster config: BindPort %d out of range 1-65535", c.BindPort)
	}
	switch len(c.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return c, fmt.Errorf("cluster config: SecretKey is %d bytes; use 16, 24 or 32 (e.g. `openssl rand 32`)", len(c.SecretKey))
	}
	if c.DeadTimeout < minDeadTimeout {
		return c, fmt.Errorf("cluster config: DeadTimeout %v below minimum %v", c.DeadTimeout, minDeadTimeout)
	}
	if c.NetworkSyncInterval < 0 {
		return c, fmt.Errorf("cluster config: NetworkSyncInterval %v is negative", c.NetworkSyncInterval)
	}
	if c.TombstoneTTL < c.DeadTimeout {
		return c, fmt.Errorf("cluster config: TombstoneTTL %v must be at least DeadTimeout %v", c.TombstoneTTL, c.DeadTimeout)
	}
	return c, nil
}

func validNodeName(s string) error {
	if s == "" {
		return fmt.Errorf("empty; set a stable node name")
	}
	if len(s) > maxNodeName {
		return fmt.Errorf("%d bytes, limit %d", len(s), maxNodeName)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fmt.Errorf("%q contains a space or non-printable character", s)
		}
	}
	return nil
}

// suspicionMult and designLog10 size the failure detector: detection takes
// about one probe interval to hit the dead node, one to fail the direct and
// indirect probes, then suspicionMult*log10(n) intervals of suspicion. With
// SuspicionMaxTimeoutMult=1 the suspicion time is fixed, so at n<=1,000
// (log10=3) the whole path is at most ~14 probe intervals = DeadTimeout.
const (
	suspicionMult = 4
	designLog10   = 3
)

func probeInterval(dead time.Duration) time.Duration {
	return dead / (2 + suspicionMult*designLog10)
}

// memberlistConfig derives the memberlist configuration.
func (c Config) memberlistConfig() *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.NodeName
	mc.BindAddr = c.BindAddr
	mc.BindPort = c.BindPort
	mc.AdvertiseAddr = c.AdvertiseAddr.String()
	mc.AdvertisePort = c.BindPort
	mc.ProtocolVersion = memberlist.ProtocolVersionMax

	pi := probeInterval(c.DeadTimeout)
	mc.ProbeInterval = pi
	mc.ProbeTimeout = pi / 2
	mc.SuspicionMult = suspicionMult
	mc.SuspicionMaxTimeoutMult = 1
	// A restarted node keeps its name even if its address changed.
	mc.DeadNodeReclaimTime = c.DeadTimeout
	// memberlist LZW-compresses every packet, pings included, and builds
	// a new table for each: at 1,000 nodes that was a fifth of the CPU of
	// a cluster (BenchmarkSimulation's profile). Records are a few dozen
	// bytes and states one network's worth, so bytes are cheap here.
	mc.EnableCompression = false

	if len(c.SecretKey) > 0 {
		// NewKeyring only fails on a bad key size, checked in withDefaults.
		kr, err := memberlist.NewKeyring(nil, append([]byte(nil), c.SecretKey...))
		if err == nil {
			mc.Keyring = kr
		}
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	if c.Tune != nil {
		c.Tune(mc)
	}
	return mc
}
