// Command vxovl is the vxovl managed Docker plugin: a libnetwork remote
// network driver (and IPAM driver) that builds kernel VXLAN overlays across
// standalone Docker hosts, coordinated by memberlist gossip.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vxovl/vxovl/internal/ipsec"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/dnsserver"
	"github.com/vxovl/vxovl/driver"
	"github.com/vxovl/vxovl/internal/dataplane"
	"github.com/vxovl/vxovl/internal/engine"
	"github.com/vxovl/vxovl/internal/store"
	"github.com/vxovl/vxovl/internal/vxlan"
	vxipam "github.com/vxovl/vxovl/ipam"
	"github.com/vxovl/vxovl/metrics"
	"github.com/vxovl/vxovl/status"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "status" {
		os.Exit(statusCommand(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "cleanup" {
		os.Exit(cleanupCommand(os.Args[2:], os.Stdout, os.Stderr))
	}
	cfg, cfgErr := configFromEnv(os.LookupEnv)
	// stdout: dockerd tags every line a managed plugin writes to stderr as
	// level=error, which would drown real errors.
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	slog.SetDefault(log)
	if err := run(cfg, cfgErr, log); err != nil {
		log.Error("vxovl stopped", "err", err)
		os.Exit(1)
	}
}

func run(cfg Config, cfgErr error, log *slog.Logger) error {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()

	api, cleanup, err := setup(ctx, cfg, cfgErr, log)
	if err != nil {
		// Docker shows a driver's error to the user at `docker network
		// create`: answering every call with the reason is clearer than a
		// plugin that crash-loops with the reason buried in dockerd's log.
		log.Error("vxovl cannot work; answering every call with this error", "err", err)
		api = failingAPI(err)
		cleanup = func() {}
	}
	defer cleanup()

	if err := os.MkdirAll(filepath.Dir(cfg.SocketPath), 0o755); err != nil {
		return fmt.Errorf("creating socket directory: %w", err)
	}
	_ = os.Remove(cfg.SocketPath) // a stale socket from a killed predecessor
	ln, err := net.Listen("unix", cfg.SocketPath)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.SocketPath, err)
	}
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		<-ctx.Done()
		shutdownCtx, c := context.WithTimeout(context.Background(), shutdownGrace)
		defer c()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			log.Warn("calls still running at shutdown", "err", err)
		}
	}()
	log.Info("serving plugin API", "socket", cfg.SocketPath)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving %s: %w", cfg.SocketPath, err)
	}
	// Serve returns as soon as Shutdown begins: let the calls in flight
	// finish before cleanup closes the store under them.
	<-drained
	return nil
}

// shutdownGrace bounds how long a stopping plugin waits for calls in flight.
const shutdownGrace = 5 * time.Second

// setup builds store, data plane, cluster and driver, and restores state.
func setup(ctx context.Context, cfg Config, cfgErr error, log *slog.Logger) (http.Handler, func(), error) {
	if cfgErr != nil {
		return nil, nil, cfgErr
	}
	st, err := store.Open(filepath.Join(cfg.StateDir, "state.db"))
	if err != nil {
		return nil, nil, err
	}
	for _, m := range st.Migrations() {
		log.Info("state migrated to a new format", "file", st.Path(), "from", m.From, "to", m.To, "change", m.What,
			"copy_before", store.Backup(st.Path(), st.Migrations()[0].From))
	}
	// The background loops end before the cluster and the store they use
	// are shut down: also when setup fails half-way.
	ctx, stopLoops := context.WithCancel(ctx)
	var loops sync.WaitGroup
	undo := []func(){func() { stopLoops(); st.Close() }}
	cleanup := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	fail := func(err error) (http.Handler, func(), error) { cleanup(); return nil, nil, err }

	vtep := cfg.AdvertiseAddr
	if vtep == nil {
		if vtep, err = dataplane.DefaultRouteIPv4(); err != nil {
			return fail(fmt.Errorf("finding this host's underlay address (set ADVERTISE_ADDR): %w", err))
		}
	}
	mtu := cfg.MTU
	if mtu == 0 {
		under, err := dataplane.UnderlayMTU(vtep)
		if err != nil {
			return fail(fmt.Errorf("reading the MTU of the interface holding %s (set MTU): %w", vtep, err))
		}
		mtu = under - vxlan.Overhead
	}
	name, err := nodeName(st, cfg.NodeName)
	if err != nil {
		return fail(err)
	}
	var floor uint64
	if _, err := st.Get(bucketNode, keyVersion, &floor); err != nil {
		return fail(err)
	}
	log.Info("starting vxovl", "node", name, "vtep", vtep, "vxlan_port", cfg.VXLANPort, "encrypted_vxlan_port", cfg.EncryptedPort, "gossip_port", cfg.GossipPort,
		"peers", strings.Join(cfg.Peers, ","), "default_mtu", mtu, "netns_dir", cfg.NetnsDir)

	met := metrics.New(version)
	dp := dataplane.New(cfg.NetnsDir, cfg.NetnsFallbackDir, log.With("part", "dataplane"))
	// Encrypted networks key from GOSSIP_KEY; without it they are refused
	// at create time, with the reason.
	var ipsecSecret []byte
	if len(cfg.GossipKey) > 0 {
		if ipsecSecret, err = ipsec.ClusterSecret(cfg.GossipKey); err != nil {
			return fail(err)
		}
	}
	drv := driver.New(driver.Config{
		VTEP: vtep, VXLANPort: cfg.VXLANPort, DefaultMTU: mtu,
		EncryptedPort: cfg.EncryptedPort, NodeName: name, IPsecSecret: ipsecSecret, KeyRotation: cfg.KeyRotation,
		ReconcileInterval: cfg.ReconcileInterval, RestoreGrace: 3 * cfg.DeadTimeout,
		DNS:      dnsserver.Config{Log: log.With("part", "dns")},
		Logger:   log.With("part", "driver"),
		Observer: met,
	}, dp, st)

	ccfg := cluster.DefaultConfig()
	ccfg.NodeName = name
	ccfg.BindPort = cfg.GossipPort
	ccfg.AdvertiseAddr = vtep
	ccfg.Peers = cfg.Peers
	ccfg.SecretKey = cfg.GossipKey
	ccfg.DeadTimeout = cfg.DeadTimeout
	ccfg.MinVersion = floor
	ccfg.Logger = log.With("part", "cluster")
	cl, err := cluster.New(ccfg, drv)
	if err != nil {
		return fail(fmt.Errorf("starting gossip on port %d: %w", cfg.GossipPort, err))
	}
	undo = append(undo, func() {
		// No Leave: a plugin restart (upgrade, crash) must not make every
		// peer drop this host's endpoints while its containers keep running;
		// if the host is really gone, peers time it out after DEAD_TIMEOUT.
		_ = cl.Shutdown()
		saveVersion(st, cl, log)
	})
	var ipd *vxipam.Driver
	undo = append(undo, func() {
		stopLoops()
		loops.Wait()
		drv.Wait()
		if ipd != nil {
			ipd.Close()
		}
	})
	loops.Go(func() { persistVersion(ctx, st, cl, log) })

	if err := drv.Start(ctx, cl); err != nil {
		return fail(err)
	}
	// Container names come from dockerd after the state is restored, so
	// that the watcher's first resync finds every endpoint it reports.
	watcher, err := engine.New(engine.Config{
		Socket: cfg.DockerSocket, Managed: drv.Manages, Sink: endpointNames{drv}, Logger: log.With("part", "engine"),
	})
	if err != nil {
		return fail(err)
	}
	loops.Go(func() { watcher.Run(ctx) })
	ipd, err = vxipam.New(vxipam.Config{NodeName: name, Logger: log.With("part", "ipam")}, cl, st)
	if err != nil {
		return fail(err)
	}
	if err := met.Watch(metrics.Sources{Driver: drv, Cluster: cl, IPAM: ipd, GossipEncrypted: len(cfg.GossipKey) > 0}); err != nil {
		return fail(fmt.Errorf("setting up metrics: %w", err))
	}
	api := newAPI(drv, ipd, log.With("part", "api"), met)
	// The same source serves /, /status.json (on METRICS_ADDR, below) and
	// /vxovl/status.
	src := status.Source{Host: hostStatus(cfg, name, vtep, mtu, cfg.MetricsAddr), Driver: drv, Cluster: cl, IPAM: ipd}
	pluginStatusRoute(api.mux, src)
	api.mux.HandleFunc("/vxovl/state", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"node": name, "vtep": vtep.String(), "driver": drv.Stats(), "ipam": ipd.Stats(), "cluster": cl.Stats(), "members": cl.Members(),
		})
	})
	api.mux.HandleFunc("/vxovl/reconcile", func(w http.ResponseWriter, r *http.Request) {
		rctx, c := context.WithTimeout(r.Context(), 30*time.Second)
		defer c()
		if err := drv.Reconcile(rctx); err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{Err: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, drv.Stats())
	})
	loops.Go(func() { reconcileOnHUP(ctx, drv, log) })
	mux := observeMux(met)
	statusRoutes(mux, src)
	undo = append(undo, serveObserve(cfg.MetricsAddr, mux, log.With("part", "observe")))
	return api, cleanup, nil
}

// endpointNames hands the names the Engine API watcher learns to the driver.
type endpointNames struct{ drv *driver.Driver }

func (n endpointNames) EndpointNames(u engine.Update) {
	n.drv.SetNames(u.NetworkID, u.NetworkName, u.EndpointID, u.Names)
}

const (
	bucketNode = "node"
	keyName    = "name"
	keyVersion = "version"
)

// nodeName returns the configured name, else the one made at first start, so
// that a restarted node is the same node to its peers.
func nodeName(st *store.Store, configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	var name string
	if ok, err := st.Get(bucketNode, keyName, &name); err != nil || ok {
		return name, err
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "vxovl"
	}
	suffix := make([]byte, 3)
	if _, err := rand.Read(suffix); err != nil {
		return "", fmt.Errorf("making a node name: %w", err)
	}
	name = host + "-" + hex.EncodeToString(suffix)
	if err := st.Put(bucketNode, keyName, name); err != nil {
		return "", err
	}
	return name, nil
}

func saveVersion(st *store.Store, cl *cluster.Cluster, log *slog.Logger) {
	if err := st.Put(bucketNode, keyVersion, cl.Version()); err != nil {
		log.Warn("saving the gossip version floor", "err", err)
	}
}

// persistVersion keeps the stored version floor close to the cluster clock,
// so that versions after a crash still exceed those before it even if the
// wall clock stepped back meanwhile.
func persistVersion(ctx context.Context, st *store.Store, cl *cluster.Cluster, log *slog.Logger) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			saveVersion(st, cl, log)
		}
	}
}

// reconcileOnHUP gives operators an on-demand repair: kill -HUP <pid>.
func reconcileOnHUP(ctx context.Context, drv *driver.Driver, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Info("SIGHUP: reconciling now")
			rctx, c := context.WithTimeout(ctx, 30*time.Second)
			if err := drv.Reconcile(rctx); err != nil {
				log.Warn("on-demand reconcile", "err", err)
			}
			c()
		}
	}
}

// failingAPI answers every call with err, except capabilities, so that
// dockerd keeps the plugin enabled and shows err to the user.
func failingAPI(err error) http.Handler {
	msg := "vxovl is not working on this host: " + err.Error()
	mux := http.NewServeMux()
	mux.HandleFunc("/Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string][]string{"Implements": {"NetworkDriver", "IpamDriver"}})
	})
	mux.HandleFunc("/NetworkDriver.GetCapabilities", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"Scope": "local", "ConnectivityScope": "global"})
	})
	mux.HandleFunc("/IpamDriver.GetCapabilities", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, vxipam.Capabilities())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusInternalServerError, apiError{Err: msg})
	})
	return mux
}
