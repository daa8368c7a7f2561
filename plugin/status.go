package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vxovl/vxovl/status"
)

// statusSource is what the status routes read; status.Source implements it
// over the running driver, cluster and IPAM.
type statusSource interface {
	Status() status.Status
}

// statusRoutes serves the status on mux: GET / is the HTML page, GET
// /status.json the same as JSON. It is meant for the METRICS_ADDR server's
// mux, next to /metrics (register it there with the same source that
// pluginStatusRoute gets); "/" matches only the root, so the other paths of
// that mux keep their own handlers and unknown ones get 404.
func statusRoutes(mux *http.ServeMux, src statusSource) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		serveStatus(w, src, "text/html; charset=utf-8", status.WriteHTML)
	})
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		serveStatus(w, src, "application/json", status.WriteJSON)
	})
}

// statusPluginPath is the status on the plugin socket: `vxovl status` reads
// it there, so that it works with METRICS_ADDR off.
const statusPluginPath = "/vxovl/status"

// pluginStatusRoute serves GET /vxovl/status (the JSON of /status.json) on
// the plugin socket's mux.
func pluginStatusRoute(mux *http.ServeMux, src statusSource) {
	mux.HandleFunc("GET "+statusPluginPath, func(w http.ResponseWriter, r *http.Request) {
		serveStatus(w, src, "application/json", status.WriteJSON)
	})
}

// serveStatus renders into a buffer first, so that a failure is a clean
// 500 rather than half a page.
func serveStatus(w http.ResponseWriter, src statusSource, contentType string, render func(io.Writer, status.Status) error) {
	var buf bytes.Buffer
	if err := render(&buf, src.Status()); err != nil {
		http.Error(w, "rendering the vxovl status: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes()) // the client hung up: nothing to do
}

// hostStatus is this host as the status shows it: the settings in effect,
// with the autodetected node name, VTEP and MTU, and of GOSSIP_KEY only
// whether it is set. metricsAddr is METRICS_ADDR ("" when off).
func hostStatus(cfg Config, node string, vtep net.IP, mtu int, metricsAddr string) status.Host {
	return status.Host{
		Node: node, VTEP: vtep.String(), Version: version,
		Settings: status.Settings{
			VXLANPort: cfg.VXLANPort, GossipPort: cfg.GossipPort, DefaultMTU: mtu,
			DeadTimeout: status.Duration(cfg.DeadTimeout), ReconcileInterval: status.Duration(cfg.ReconcileInterval),
			Peers: cfg.Peers, MetricsAddr: metricsAddr, GossipEncrypted: len(cfg.GossipKey) > 0,
		},
	}
}

// The status of a managed plugin is reached through its socket, which
// dockerd keeps at /run/docker/plugins/<plugin id>/vxovl.sock on the host;
// a plugin run as a plain process has the plugin's own default path.
var statusSocketGlobs = []string{"/run/docker/plugins/*/vxovl.sock", "/run/docker/plugins/vxovl.sock"}

// defaultStatusAddr is METRICS_ADDR's default: where to look when no
// socket is found.
const defaultStatusAddr = "127.0.0.1:9747"

const statusUsage = `usage: vxovl status [--socket PATH | --addr HOST:PORT] [--json]

Prints the status of the vxovl plugin on this host: settings, cluster
members, networks with their endpoints, health. It reads the plugin's socket
under /run/docker/plugins/*/vxovl.sock (run as root), else its METRICS_ADDR
at http://` + defaultStatusAddr + `.

`

// statusCommand runs `vxovl status` and returns the exit code: 0, 1 when
// the status cannot be had, 2 for bad usage.
func statusCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vxovl status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, statusUsage)
		fs.PrintDefaults()
	}
	socket := fs.String("socket", "", "the plugin's socket (default: the one found under /run/docker/plugins)")
	addr := fs.String("addr", "", "the plugin's METRICS_ADDR, host:port (default when no socket is found: "+defaultStatusAddr+")")
	asJSON := fs.Bool("json", false, "print the JSON, which lists every endpoint, instead of text")
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	if *socket != "" && *addr != "" {
		fmt.Fprintln(stderr, "vxovl status: give --socket or --addr, not both")
		return 2
	}
	var found []string
	if *socket == "" && *addr == "" {
		for _, g := range statusSocketGlobs {
			m, _ := filepath.Glob(g) // the patterns are well-formed
			found = append(found, m...)
		}
	}
	t, err := chooseStatusTarget(*socket, *addr, found)
	if err != nil {
		fmt.Fprintln(stderr, "vxovl status:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, st, err := fetchStatus(ctx, t)
	if err != nil {
		fmt.Fprintln(stderr, "vxovl status:", err)
		return 1
	}
	if *asJSON {
		_, err = stdout.Write(body)
	} else {
		err = status.WriteText(stdout, st)
	}
	if err != nil {
		fmt.Fprintln(stderr, "vxovl status: writing the output:", err)
		return 1
	}
	return 0
}

// statusTarget is where `vxovl status` asks: a unix socket or a TCP
// address.
type statusTarget struct {
	socket string // the plugin socket; "" for addr
	addr   string // host:port of METRICS_ADDR
	// fallback: no flag was given and no socket found
	fallback bool
}

func (t statusTarget) String() string {
	if t.socket != "" {
		return "the plugin socket " + t.socket
	}
	return "http://" + t.addr + "/status.json"
}

// chooseStatusTarget is the policy of where to ask: the flag given, else
// the one plugin socket found, else the default METRICS_ADDR.
func chooseStatusTarget(socket, addr string, found []string) (statusTarget, error) {
	switch {
	case socket != "":
		return statusTarget{socket: socket}, nil
	case addr != "":
		addr = strings.TrimSuffix(strings.TrimPrefix(addr, "http://"), "/")
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return statusTarget{}, fmt.Errorf("--addr %q: want host:port, like %s", addr, defaultStatusAddr)
		}
		return statusTarget{addr: addr}, nil
	case len(found) == 1:
		return statusTarget{socket: found[0]}, nil
	case len(found) > 1:
		return statusTarget{}, fmt.Errorf("found several vxovl plugin sockets (%s): choose one with --socket PATH; "+
			"the directory is the plugin's ID, which `docker plugin inspect -f '{{.Id}}' vxovl:latest` prints", strings.Join(found, ", "))
	}
	return statusTarget{addr: defaultStatusAddr, fallback: true}, nil
}

// maxStatusBytes bounds the answer: 10,000 endpoints are about 3 MB.
const maxStatusBytes = 64 << 20

// fetchStatus asks t for the status and returns the JSON as received and
// decoded. Its errors say what was tried and what to do.
func fetchStatus(ctx context.Context, t statusTarget) ([]byte, status.Status, error) {
	client := &http.Client{}
	target := "http://" + t.addr + "/status.json"
	if t.socket != "" {
		client.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", t.socket)
		}}
		target = "http://vxovl" + statusPluginPath
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, status.Status{}, fmt.Errorf("asking %s: %w", t, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error // its Get "http://vxovl/..." says nothing to the user
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, status.Status{}, unreachable(t, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxStatusBytes))
	if err != nil {
		return nil, status.Status{}, fmt.Errorf("reading the answer of %s: %w", t, err)
	}
	if resp.StatusCode != http.StatusOK {
		// A plugin whose setup failed answers every call with its reason.
		var e apiError
		if json.Unmarshal(body, &e) == nil && e.Err != "" {
			return nil, status.Status{}, fmt.Errorf("%s answered: %s", t, e.Err)
		}
		return nil, status.Status{}, fmt.Errorf("%s answered %s: %s (is it vxovl, and a version with `vxovl status`?)",
			t, resp.Status, strings.TrimSpace(string(body[:min(len(body), 200)])))
	}
	st, err := status.ReadJSON(bytes.NewReader(body))
	if err != nil {
		return nil, status.Status{}, fmt.Errorf("%s: %w", t, err)
	}
	return body, st, nil
}

func unreachable(t statusTarget, err error) error {
	hint := "is the plugin enabled (docker plugin ls)?"
	switch {
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		hint = "run vxovl status as root"
	case t.fallback:
		hint = "no plugin socket was found under /run/docker/plugins and nothing answers on METRICS_ADDR's default; " +
			"is the plugin enabled (docker plugin ls)? Give --socket PATH, or --addr HOST:PORT if METRICS_ADDR is set elsewhere"
	case t.socket == "":
		hint = "is the plugin enabled (docker plugin ls), with METRICS_ADDR " + t.addr + "?"
	}
	return fmt.Errorf("cannot reach vxovl at %s: %w; %s", t, err, hint)
}

// parseFlags parses a command's flags (it takes no other arguments) and
// says whether the command is done, with its exit code: 0 after -h, 2 for
// bad usage.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, done bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return 2, true
	}
	return 0, false
}
