package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/driver"
	"github.com/vxovl/vxovl/status"
)

// fixedStatus is a statusSource that always has the same status.
type fixedStatus status.Status

func (f fixedStatus) Status() status.Status { return status.Status(f) }

// testStatus is two hosts and one network, as h1 sees them, built from cfg
// as the plugin builds it.
func testStatus(t *testing.T, env map[string]string) status.Status {
	t.Helper()
	cfg, err := configFromEnv(envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	return status.Build(status.Snapshot{
		Time: time.Date(2025, 3, 4, 12, 0, 30, 0, time.UTC),
		Host: hostStatus(cfg, "h1", net.IPv4(10, 98, 0, 1), 1450, "127.0.0.1:9747"),
		Networks: []driver.NetworkStatus{{
			ID: "abcdefabcdefabcdef", Name: "app", VNI: 4242, Subnet: "10.210.0.0/24", Gateway: "10.210.0.1", MTU: 1450, DNS: true,
			Local:  []driver.EndpointStatus{{ID: "l1", IP: "10.210.0.2", MAC: "02:42:0a:d2:00:02", Names: []string{"db"}}},
			Remote: []driver.EndpointStatus{{ID: "r1", Node: "h2", VTEP: "10.98.0.2", IP: "10.210.0.3", MAC: "02:42:0a:d2:00:03", Names: []string{"api"}}},
		}},
		Members: []cluster.Member{{Name: "h1", Addr: net.IPv4(10, 98, 0, 1), Port: 7947}, {Name: "h2", Addr: net.IPv4(10, 98, 0, 2), Port: 7947}},
	})
}

const testKey = "MDEyMzQ1Njc4OWFiY2RlZg==" // base64 of "0123456789abcdef"

// renderAll is the status as every route and the command show it.
func renderAll(t *testing.T, st status.Status) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, render := range map[string]func(io.Writer, status.Status) error{
		"html": status.WriteHTML, "json": status.WriteJSON, "text": status.WriteText,
	} {
		var buf bytes.Buffer
		if err := render(&buf, st); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = buf.String()
	}
	return out
}

func TestStatusNeverShowsGossipKey(t *testing.T) {
	raw, _ := base64.StdEncoding.DecodeString(testKey)
	st := testStatus(t, map[string]string{"GOSSIP_KEY": testKey, "PEERS": "10.98.0.2"})
	if !st.Host.Settings.GossipEncrypted || len(st.Warnings) != 0 {
		t.Fatalf("with a key: encrypted %v, warnings %q", st.Host.Settings.GossipEncrypted, st.Warnings)
	}
	for name, out := range renderAll(t, st) {
		for _, secret := range []string{testKey, strings.TrimRight(testKey, "="), string(raw), hex.EncodeToString(raw)} {
			if strings.Contains(out, secret) {
				t.Errorf("the %s shows the gossip key as %q", name, secret)
			}
		}
		if !strings.Contains(out, "10.98.0.2") || !strings.Contains(out, "4242") {
			t.Errorf("the %s lacks the members or the network:\n%s", name, out)
		}
	}
}

func TestStatusWarnsWithoutGossipKey(t *testing.T) {
	st := testStatus(t, map[string]string{"PEERS": "10.98.0.2"})
	if st.Host.Settings.GossipEncrypted {
		t.Fatal("encrypted without a key")
	}
	for name, out := range renderAll(t, st) {
		if !strings.Contains(out, "control plane is UNAUTHENTICATED") {
			t.Errorf("the %s does not warn that gossip is unauthenticated", name)
		}
	}
}

func TestHostStatus(t *testing.T) {
	cfg, err := configFromEnv(envOf(map[string]string{
		"PEERS": "10.98.0.2,10.98.0.3:7000", "GOSSIP_PORT": "7000", "VXLAN_PORT": "4790",
		"DEAD_TIMEOUT": "5s", "RECONCILE_INTERVAL": "2s", "GOSSIP_KEY": testKey,
	}))
	if err != nil {
		t.Fatal(err)
	}
	h := hostStatus(cfg, "h1", net.IPv4(10, 98, 0, 1), 1400, "10.98.0.1:9747")
	want := status.Settings{
		VXLANPort: 4790, GossipPort: 7000, DefaultMTU: 1400, DeadTimeout: status.Duration(5 * time.Second),
		ReconcileInterval: status.Duration(2 * time.Second), Peers: []string{"10.98.0.2", "10.98.0.3:7000"},
		MetricsAddr: "10.98.0.1:9747", GossipEncrypted: true,
	}
	if h.Node != "h1" || h.VTEP != "10.98.0.1" || h.Version == "" || !reflect.DeepEqual(h.Settings, want) {
		t.Fatalf("hostStatus = %+v, want settings %+v", h, want)
	}
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestStatusRoutes(t *testing.T) {
	st := testStatus(t, nil)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "metrics here") })
	statusRoutes(mux, fixedStatus(st))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, body := get(t, srv.URL+"/")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" ||
		!strings.Contains(body, "<title>vxovl on h1</title>") || !strings.Contains(body, "10.210.0.3") {
		t.Errorf("GET /: %s %q\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	resp, body = get(t, srv.URL+"/status.json")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("GET /status.json: %s %q", resp.Status, resp.Header)
	}
	if got, err := status.ReadJSON(strings.NewReader(body)); err != nil || !reflect.DeepEqual(got, st) {
		t.Errorf("GET /status.json: %v\n got %+v\nwant %+v", err, got, st)
	}
	if resp, body = get(t, srv.URL+"/metrics"); resp.StatusCode != 200 || body != "metrics here" {
		t.Errorf("GET /metrics went elsewhere: %s %q", resp.Status, body)
	}
	if resp, _ = get(t, srv.URL+"/nothing"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing: %s, want 404", resp.Status)
	}
	resp, err := http.Post(srv.URL+"/", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %s, want 405", resp.Status)
	}
}

// unixServer serves h on a unix socket in a temporary directory.
func unixServer(t *testing.T, h http.Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vxovl.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return path
}

// pluginAPI is the plugin socket's handler with the status route, as setup
// builds it.
func pluginAPI(st status.Status) http.Handler {
	api := newAPI(stubDriver{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	pluginStatusRoute(api.mux, fixedStatus(st))
	return api
}

func runStatus(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := statusCommand(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestStatusCommand(t *testing.T) {
	st := testStatus(t, nil)
	sock := unixServer(t, pluginAPI(st))

	code, out, errOut := runStatus("--socket", sock)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var want bytes.Buffer
	if err := status.WriteText(&want, st); err != nil {
		t.Fatal(err)
	}
	if out != want.String() {
		t.Errorf("text:\n%s\nwant:\n%s", out, want.String())
	}
	for _, s := range []string{"h1 (this host)", "10.98.0.2", "app  VNI 4242", "10.210.0.3", "UNAUTHENTICATED"} {
		if !strings.Contains(out, s) {
			t.Errorf("text lacks %q", s)
		}
	}

	code, out, errOut = runStatus("--socket", sock, "--json")
	if code != 0 || errOut != "" {
		t.Fatalf("--json: exit %d, stderr %q", code, errOut)
	}
	if got, err := status.ReadJSON(strings.NewReader(out)); err != nil || !reflect.DeepEqual(got, st) {
		t.Errorf("--json: %v\n%s", err, out)
	}

	// Docker's calls still reach the plugin on the same socket.
	docker := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := docker.Post("http://plugin/Plugin.Activate", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("Plugin.Activate next to the status: %s", resp.Status)
	}

	mux := http.NewServeMux()
	statusRoutes(mux, fixedStatus(st))
	tcp := httptest.NewServer(mux)
	defer tcp.Close()
	addr := strings.TrimPrefix(tcp.URL, "http://")
	for _, a := range []string{addr, "http://" + addr, "http://" + addr + "/"} {
		if code, out, errOut = runStatus("--addr", a); code != 0 || out != want.String() {
			t.Errorf("--addr %s: exit %d, stderr %q", a, code, errOut)
		}
	}
}

func TestStatusCommandErrors(t *testing.T) {
	failing := unixServer(t, failingAPI(errors.New(`bad plugin settings: MTU="9": want an overlay MTU`)))
	notFound := unixServer(t, http.NotFoundHandler())
	garbage := unixServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{") }))
	tcp := httptest.NewServer(http.NotFoundHandler())
	defer tcp.Close()
	deadAddr := func() string { // a port nothing listens on
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()

	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string // parts of stderr
	}{
		{"no socket there", []string{"--socket", filepath.Join(t.TempDir(), "none.sock")}, 1,
			[]string{"cannot reach vxovl at the plugin socket", "none.sock", "no such file", "docker plugin ls"}},
		{"nothing on the address", []string{"--addr", deadAddr}, 1,
			[]string{"cannot reach vxovl at http://" + deadAddr + "/status.json", "connection refused", "METRICS_ADDR " + deadAddr}},
		{"plugin whose setup failed", []string{"--socket", failing}, 1,
			[]string{"answered: vxovl is not working on this host: bad plugin settings: MTU=\"9\""}},
		{"not vxovl, or an old one", []string{"--socket", notFound}, 1, []string{"answered 404 Not Found", "a version with `vxovl status`"}},
		{"old plugin on the address", []string{"--addr", strings.TrimPrefix(tcp.URL, "http://")}, 1, []string{"answered 404 Not Found"}},
		{"not a status", []string{"--socket", garbage}, 1, []string{"decoding the vxovl status", "unexpected EOF"}},
		{"both flags", []string{"--socket", "x", "--addr", "y:1"}, 2, []string{"not both"}},
		{"bad address", []string{"--addr", "9747"}, 2, []string{`--addr "9747": want host:port`}},
		{"stray argument", []string{"now"}, 2, []string{`unexpected argument "now"`, "usage: vxovl status"}},
		{"unknown flag", []string{"--sock", "x"}, 2, []string{"flag provided but not defined: -sock", "usage: vxovl status"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runStatus(tc.args...)
			if code != tc.code || out != "" {
				t.Errorf("exit %d, want %d; stdout %q", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q lacks %q", errOut, w)
				}
			}
		})
	}
	if code, _, errOut := runStatus("--help"); code != 0 || !strings.Contains(errOut, "--socket") {
		t.Errorf("--help: exit %d, %q", code, errOut)
	}
}

func TestChooseStatusTarget(t *testing.T) {
	for _, tc := range []struct {
		name         string
		socket, addr string
		found        []string
		want         statusTarget
		err          string
	}{
		{name: "socket flag wins over what is found", socket: "/s", found: []string{"/a", "/b"}, want: statusTarget{socket: "/s"}},
		{name: "addr flag", addr: "10.98.0.1:9747", found: []string{"/a"}, want: statusTarget{addr: "10.98.0.1:9747"}},
		{name: "addr as a URL", addr: "http://[::1]:9747/", want: statusTarget{addr: "[::1]:9747"}},
		{name: "bad addr", addr: "localhost", err: `--addr "localhost": want host:port`},
		{name: "the one socket found", found: []string{"/run/docker/plugins/abc/vxovl.sock"}, want: statusTarget{socket: "/run/docker/plugins/abc/vxovl.sock"}},
		{name: "several sockets", found: []string{"/run/docker/plugins/a/vxovl.sock", "/run/docker/plugins/b/vxovl.sock"},
			err: "several vxovl plugin sockets (/run/docker/plugins/a/vxovl.sock, /run/docker/plugins/b/vxovl.sock): choose one with --socket PATH"},
		{name: "none: the default METRICS_ADDR", want: statusTarget{addr: "127.0.0.1:9747", fallback: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := chooseStatusTarget(tc.socket, tc.addr, tc.found)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %+v, %v; want error %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestUnreachableFallbackHint(t *testing.T) {
	err := unreachable(statusTarget{addr: defaultStatusAddr, fallback: true}, errors.New("connection refused"))
	if !strings.Contains(err.Error(), "no plugin socket was found under /run/docker/plugins") || !strings.Contains(err.Error(), "--socket PATH") {
		t.Fatalf("%v", err)
	}
}
