package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"
)

// stubDriver answers CreateNetwork by echoing the ID into an error and
// panics on Join, to exercise the API layer alone.
type stubDriver struct{ network.Driver }

func (stubDriver) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: "local", ConnectivityScope: "global"}, nil
}
func (stubDriver) CreateNetwork(r *network.CreateNetworkRequest) error {
	if r.NetworkID == "" {
		return errString("empty NetworkID")
	}
	return nil
}
func (stubDriver) Join(*network.JoinRequest) (*network.JoinResponse, error) { panic("boom") }

type errString string

func (e errString) Error() string { return string(e) }

func call(t *testing.T, srv *httptest.Server, path, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: response %q is not JSON: %v", path, raw, err)
	}
	return resp.StatusCode, out
}

func TestAPI(t *testing.T) {
	srv := httptest.NewServer(newAPI(stubDriver{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), nil))
	defer srv.Close()

	code, out := call(t, srv, "/Plugin.Activate", "")
	if code != 200 || out["Implements"].([]any)[0] != "NetworkDriver" {
		t.Fatalf("activate: %d %v", code, out)
	}
	code, out = call(t, srv, "/NetworkDriver.GetCapabilities", "")
	if code != 200 || out["Scope"] != "local" || out["ConnectivityScope"] != "global" {
		t.Fatalf("capabilities: %d %v", code, out)
	}
	code, out = call(t, srv, "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1"}`)
	if code != 200 || len(out) != 0 {
		t.Fatalf("create: %d %v", code, out)
	}
	for _, body := range []string{`{"NetworkID":`, `[1,2]`, `{"NetworkID": 5}`, "\x00\x01"} {
		code, out = call(t, srv, "/NetworkDriver.CreateNetwork", body)
		if code != 400 || !strings.Contains(out["Err"].(string), "malformed request") {
			t.Errorf("malformed %q: %d %v", body, code, out)
		}
	}
	code, out = call(t, srv, "/NetworkDriver.CreateNetwork", `{}`)
	if code != 500 || out["Err"] != "empty NetworkID" {
		t.Fatalf("driver error: %d %v", code, out)
	}
	code, out = call(t, srv, "/NetworkDriver.Join", `{"NetworkID":"n1","EndpointID":"e1"}`)
	if code != 500 || !strings.Contains(out["Err"].(string), "internal error") {
		t.Fatalf("panic: %d %v", code, out)
	}
	// The server survived the panic.
	if code, _ = call(t, srv, "/NetworkDriver.GetCapabilities", ""); code != 200 {
		t.Fatal("server died after a panic")
	}
}

func TestFailingAPIExplains(t *testing.T) {
	srv := httptest.NewServer(failingAPI(errString("state file unreadable: mv it aside")))
	defer srv.Close()
	if code, _ := call(t, srv, "/NetworkDriver.GetCapabilities", ""); code != 200 {
		t.Fatal("capabilities must work so dockerd keeps the plugin")
	}
	if code, out := call(t, srv, "/IpamDriver.GetCapabilities", ""); code != 200 || out["RequiresMACAddress"] != false {
		t.Fatalf("IPAM capabilities must be the working IPAM's (no MAC): %d %v", code, out)
	}
	code, out := call(t, srv, "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1"}`)
	if code != 500 || !strings.Contains(out["Err"].(string), "mv it aside") {
		t.Fatalf("failing API: %d %v", code, out)
	}
}

// recordingIPAM and recordingDriver log the CreateNetwork calls they see.
type recordingIPAM struct {
	ipam.Ipam
	calls *[]string
}

func (r recordingIPAM) NetworkCreating(req *network.CreateNetworkRequest) error {
	*r.calls = append(*r.calls, "ipam "+req.NetworkID)
	if req.NetworkID == "refused" {
		return errString("the IPAM refuses")
	}
	return nil
}

type recordingDriver struct {
	stubDriver
	calls *[]string
}

func (r recordingDriver) CreateNetwork(req *network.CreateNetworkRequest) error {
	*r.calls = append(*r.calls, "driver "+req.NetworkID)
	return nil
}

// The IPAM hears of a CreateNetwork before the network driver: it is what
// tells a network's --aux-address from an endpoint's --ip.
func TestCreateNetworkTellsIPAMFirst(t *testing.T) {
	var calls []string
	srv := httptest.NewServer(newAPI(recordingDriver{calls: &calls}, recordingIPAM{calls: &calls}, slog.New(slog.DiscardHandler), nil))
	defer srv.Close()
	if code, out := call(t, srv, "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1"}`); code != 200 {
		t.Fatalf("create: %d %v", code, out)
	}
	if code, out := call(t, srv, "/NetworkDriver.CreateNetwork", `{"NetworkID":"refused"}`); code != 500 || out["Err"] != "the IPAM refuses" {
		t.Fatalf("create refused by the IPAM: %d %v", code, out)
	}
	if want := []string{"ipam n1", "driver n1", "ipam refused"}; !slices.Equal(calls, want) {
		t.Fatalf("calls %v, want %v", calls, want)
	}
}

type observed struct {
	method string
	ok     bool
}

type recordingObserver struct {
	mu    sync.Mutex
	calls []observed
}

func (r *recordingObserver) ObserveAPI(method string, ok bool, d time.Duration) {
	r.mu.Lock()
	r.calls = append(r.calls, observed{method, ok})
	r.mu.Unlock()
}

// Every request is observed once, by call and result; a path that is not a
// call counts as "other", whatever it is.
func TestAPIObservesEveryCall(t *testing.T) {
	obs := &recordingObserver{}
	srv := httptest.NewServer(newAPI(stubDriver{}, recordingIPAM{calls: new([]string)}, slog.New(slog.DiscardHandler), obs))
	defer srv.Close()
	call(t, srv, "/Plugin.Activate", "")
	call(t, srv, "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1"}`)
	call(t, srv, "/NetworkDriver.CreateNetwork", `{}`)                // the driver refuses
	call(t, srv, "/NetworkDriver.CreateNetwork", `{"Netw`)            // malformed
	call(t, srv, "/NetworkDriver.Join", `{"NetworkID":"n1"}`)         // panics
	call(t, srv, "/IpamDriver.GetDefaultAddressSpaces", "")           // the embedded nil Ipam panics
	resp, err := http.Get(srv.URL + "/NetworkDriver.GetCapabilities") // not a POST
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// Not following redirects: the mux answers //NetworkDriver.Join with one.
	noRedirects := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/NetworkDriver.Nope", "/a-path-nobody-serves-" + strings.Repeat("x", 100), "//NetworkDriver.Join"} {
		resp, err := noRedirects.Post(srv.URL+path, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	want := []observed{
		{"Plugin.Activate", true},
		{"NetworkDriver.CreateNetwork", true},
		{"NetworkDriver.CreateNetwork", false},
		{"NetworkDriver.CreateNetwork", false},
		{"NetworkDriver.Join", false},
		{"IpamDriver.GetDefaultAddressSpaces", false},
		{"NetworkDriver.GetCapabilities", false},
		{"other", false}, {"other", false}, {"other", false},
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if !slices.Equal(obs.calls, want) {
		t.Fatalf("observed\n%v\nwant\n%v", obs.calls, want)
	}
}
