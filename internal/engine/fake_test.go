package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeEngine is a Docker Engine API server with only what the watcher
// uses: /_ping, /events, /containers/json and /containers/{id}/json, in the
// shapes of API 1.41 (Docker 20.10: short ID and hostname among the
// aliases, no DNSNames) and 1.44 and later (DNSNames).
type fakeEngine struct {
	t       *testing.T
	socket  string
	version string // what /_ping announces
	want    string // the version the watcher must put in its paths

	mu           sync.Mutex
	containers   map[string]*fakeContainer
	streams      map[chan string]bool
	refuseEvents bool
	badInspects  map[string]int // container ID -> garbage answers still to give
	pings        int
	log          []string    // requests, as "/events", "/containers/json", "/containers/ID/json"
	eventsTried  []time.Time // every GET /events, refused or not
	since        []string
	wrongPaths   []string      // requests without the version the watcher should use
	networks     []fakeNetwork // what GET /networks lists
}

type fakeNetwork struct{ ID, Name, Driver string }

type fakeEndpoint struct {
	Network    fakeNetwork
	EndpointID string
	Aliases    []string // the user's, as --network-alias gives them
}

type fakeContainer struct {
	ID, Name, Hostname string // Name without "/"
	Endpoints          []fakeEndpoint
}

var (
	vxNet    = fakeNetwork{ID: strings.Repeat("a1", 32), Name: "app", Driver: "vxovl:latest"}
	vxNet2   = fakeNetwork{ID: strings.Repeat("a2", 32), Name: "back", Driver: "vxovl:latest"}
	otherNet = fakeNetwork{ID: strings.Repeat("b1", 32), Name: "local", Driver: "bridge"}
)

func managed(id string) bool { return id == vxNet.ID || id == vxNet2.ID }

func newFakeEngine(t *testing.T, version string) *fakeEngine {
	t.Helper()
	want, err := agreeVersion(version)
	if err != nil {
		want = "none"
	}
	f := &fakeEngine{
		t:           t,
		socket:      filepath.Join(t.TempDir(), "docker.sock"),
		version:     version,
		want:        want,
		containers:  map[string]*fakeContainer{},
		streams:     map[chan string]bool{},
		badInspects: map[string]int{},
		networks:    []fakeNetwork{vxNet, otherNet},
	}
	l, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	srv.Listener = l
	srv.Start()
	t.Cleanup(func() {
		f.breakStreams() // Close waits for the streaming handlers
		srv.Close()
	})
	return f
}

var versioned = regexp.MustCompile(`^/v([0-9]+\.[0-9]+)(/.*)$`)

func (f *fakeEngine) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/_ping" {
		f.mu.Lock()
		f.pings++
		f.mu.Unlock()
		w.Header().Set("API-Version", f.version)
		fmt.Fprint(w, "OK")
		return
	}
	path := r.URL.Path
	m := versioned.FindStringSubmatch(path)
	f.mu.Lock()
	if m == nil || m[1] != f.want {
		f.wrongPaths = append(f.wrongPaths, path)
		f.mu.Unlock()
		http.Error(w, `{"message":"wrong API version in path"}`, http.StatusBadRequest)
		return
	}
	path = m[2]
	f.log = append(f.log, path)
	f.mu.Unlock()

	switch {
	case path == "/events":
		f.serveEvents(w, r)
	case path == "/networks":
		f.mu.Lock()
		var list []map[string]any
		for _, n := range f.networks {
			list = append(list, map[string]any{"Id": n.ID, "Name": n.Name, "Driver": n.Driver})
		}
		f.mu.Unlock()
		writeJSON(w, list)
	case path == "/containers/json":
		f.mu.Lock()
		list := f.list()
		f.mu.Unlock()
		writeJSON(w, list)
	case strings.HasPrefix(path, "/containers/") && strings.HasSuffix(path, "/json"):
		id := strings.TrimSuffix(strings.TrimPrefix(path, "/containers/"), "/json")
		f.mu.Lock()
		c, ok := f.containers[id]
		bad := f.badInspects[id] > 0
		if bad {
			f.badInspects[id]--
		}
		var body any
		if ok {
			body = f.inspect(c)
		}
		f.mu.Unlock()
		switch {
		case !ok:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"message":"No such container: %s"}`, id)
		case bad:
			fmt.Fprint(w, `{"Id": "`+id+`", "Name": `)
		default:
			writeJSON(w, body)
		}
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeEngine) serveEvents(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.eventsTried = append(f.eventsTried, time.Now())
	if f.refuseEvents {
		f.mu.Unlock()
		http.Error(w, `{"message":"daemon is shutting down"}`, http.StatusServiceUnavailable)
		return
	}
	f.since = append(f.since, r.URL.Query().Get("since"))
	if got := r.URL.Query().Get("filters"); got != eventFilters {
		f.t.Errorf("events filters = %s", got)
	}
	ch := make(chan string, 64)
	f.streams[ch] = true
	f.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	for {
		select {
		case line, ok := <-ch:
			if !ok {
				return
			}
			fmt.Fprint(w, line)
			w.(http.Flusher).Flush()
		case <-r.Context().Done():
			f.mu.Lock()
			delete(f.streams, ch)
			f.mu.Unlock()
			return
		}
	}
}

// list is GET /containers/json: running containers (all of the fake's).
func (f *fakeEngine) list() []map[string]any {
	var out []map[string]any
	for _, c := range f.containers {
		nets := map[string]any{}
		for _, ep := range c.Endpoints {
			nets[ep.Network.Name] = map[string]any{
				"NetworkID": ep.Network.ID, "EndpointID": ep.EndpointID, "Aliases": ep.Aliases,
			}
		}
		out = append(out, map[string]any{
			"Id": c.ID, "Names": []string{"/" + c.Name}, "State": "running",
			"NetworkSettings": map[string]any{"Networks": nets},
		})
	}
	return out
}

// inspect is GET /containers/{id}/json in the shape of f's version.
func (f *fakeEngine) inspect(c *fakeContainer) map[string]any {
	nets := map[string]any{}
	for _, ep := range c.Endpoints {
		// Docker 20.10 to 28 (API < 1.45) add the short ID and, on Docker
		// 20.10, the hostname to the aliases of a user-defined network.
		aliases := append(slices.Clone(ep.Aliases), c.ID[:12])
		es := map[string]any{
			"IPAMConfig": nil, "Links": nil, "NetworkID": ep.Network.ID, "EndpointID": ep.EndpointID,
			"Gateway": "10.210.0.1", "IPAddress": "10.210.0.5", "IPPrefixLen": 24, "MacAddress": "02:42:0a:d2:00:05",
		}
		if v, _ := parseAPIVersion(f.version); v.less(apiVersion{1, 44}) {
			aliases = append(aliases, c.Hostname)
		} else {
			es["DNSNames"] = append(append([]string{c.Name}, ep.Aliases...), c.ID[:12], c.Hostname)
		}
		es["Aliases"] = aliases
		nets[ep.Network.Name] = es
	}
	return map[string]any{
		"Id": c.ID, "Name": "/" + c.Name, "State": map[string]any{"Running": true},
		"Config":          map[string]any{"Hostname": c.Hostname, "Image": "busybox", "Labels": map[string]string{"x": "y"}},
		"NetworkSettings": map[string]any{"Networks": nets, "SandboxKey": "/var/run/docker/netns/0123"},
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// emit sends an event to every open stream.
func (f *fakeEngine) emit(typ, action, actorID string, attrs map[string]string) {
	now := time.Now()
	m := map[string]any{
		"Type": typ, "Action": action, "Actor": map[string]any{"ID": actorID, "Attributes": attrs},
		"scope": "local", "time": now.Unix(), "timeNano": now.UnixNano(),
	}
	if typ == "container" {
		m["status"], m["id"], m["from"] = action, actorID, "busybox"
	}
	b, _ := json.Marshal(m)
	f.emitRaw(string(b) + "\n")
}

func (f *fakeEngine) emitRaw(line string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.streams {
		select {
		case ch <- line:
		default:
			f.t.Errorf("an event stream is full: the watcher does not read it")
		}
	}
}

// start adds a running container, emitting what dockerd does: a connect
// per network, then start.
func (f *fakeEngine) start(c fakeContainer) {
	f.mu.Lock()
	f.containers[c.ID] = &c
	f.mu.Unlock()
	for _, ep := range c.Endpoints {
		f.connectEvent(c.ID, ep.Network)
	}
	f.emit("container", "start", c.ID, map[string]string{"name": c.Name, "image": "busybox"})
}

// add adds a running container without any event.
func (f *fakeEngine) add(c fakeContainer) {
	f.mu.Lock()
	f.containers[c.ID] = &c
	f.mu.Unlock()
}

// connect is docker network connect on a running container.
func (f *fakeEngine) connect(id string, ep fakeEndpoint) {
	f.mu.Lock()
	f.containers[id].Endpoints = append(f.containers[id].Endpoints, ep)
	f.mu.Unlock()
	f.connectEvent(id, ep.Network)
}

func (f *fakeEngine) connectEvent(id string, n fakeNetwork) {
	f.emit("network", "connect", n.ID, map[string]string{"container": id, "name": n.Name, "type": n.Driver})
}

// createNetwork adds n to the networks and emits its create event.
func (f *fakeEngine) createNetwork(n fakeNetwork) {
	f.mu.Lock()
	f.networks = append(f.networks, n)
	f.mu.Unlock()
	f.emit("network", "create", n.ID, map[string]string{"name": n.Name, "type": n.Driver})
}

func (f *fakeEngine) rename(id, name string) {
	f.mu.Lock()
	old := f.containers[id].Name
	f.containers[id].Name = name
	f.mu.Unlock()
	f.emit("container", "rename", id, map[string]string{"name": name, "oldName": "/" + old, "image": "busybox"})
}

// breakStreams ends every open event stream, as a dockerd restart does.
func (f *fakeEngine) breakStreams() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.streams {
		close(ch)
		delete(f.streams, ch)
	}
}

func (f *fakeEngine) setRefuseEvents(refuse bool) {
	f.mu.Lock()
	f.refuseEvents = refuse
	f.mu.Unlock()
}

func (f *fakeEngine) setBadInspects(id string, n int) {
	f.mu.Lock()
	f.badInspects[id] = n
	f.mu.Unlock()
}

// streamsOpen counts the event streams open now.
func (f *fakeEngine) streamsOpen() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.streams)
}

// subscriptions counts the event streams ever opened.
func (f *fakeEngine) subscriptions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.since)
}

// count counts the requests for path.
func (f *fakeEngine) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, p := range f.log {
		if p == path {
			n++
		}
	}
	return n
}

func (f *fakeEngine) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.log)
}

// recorder is a Sink that keeps the last update of each endpoint.
type recorder struct {
	mu       sync.Mutex
	last     map[string]Update
	networks map[string]string // network ID -> name, from updates that only name a network
}

func (r *recorder) EndpointNames(u Update) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if u.EndpointID == "" {
		if r.networks == nil {
			r.networks = map[string]string{}
		}
		r.networks[u.NetworkID] = u.NetworkName
		return
	}
	if r.last == nil {
		r.last = map[string]Update{}
	}
	r.last[u.EndpointID] = u
}

func (r *recorder) networkName(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.networks[id]
}

func (r *recorder) get(endpointID string) (Update, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u, ok := r.last[endpointID]
	return u, ok
}

func (r *recorder) endpoints() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.last))
	for id := range r.last {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// startWatcher runs a Watcher against socket until the test ends, with
// pauses short enough for tests.
func startWatcher(t *testing.T, socket string, tweaks ...func(*Watcher)) (*Watcher, *recorder) {
	t.Helper()
	rec := &recorder{}
	w, err := New(Config{Socket: socket, Managed: managed, Sink: rec, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	w.minBackoff, w.maxBackoff = 10*time.Millisecond, 80*time.Millisecond
	for _, tweak := range tweaks {
		tweak(w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		w.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of its context ending")
		}
	})
	return w, rec
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}
