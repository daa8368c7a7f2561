package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The Engine API versions vxovl speaks. It asks for the older of the
// daemon's version and maxAPIVersion, so one binary works from Docker 20.10
// (API 1.41) to today (Docker 29 refuses versions below 1.44).
const (
	minAPIVersion = "1.41" // Docker 20.10
	maxAPIVersion = "1.44" // Docker 25: EndpointSettings.DNSNames
)

// Bounds on what dockerd may send. A host with thousands of containers
// lists a few MB; one inspect is KBs unless its labels and env are huge.
const (
	maxListBytes    = 64 << 20
	maxInspectBytes = 16 << 20
	maxErrorBytes   = 4 << 10
)

// errNotFound is a 404: the container went away before it was inspected.
var errNotFound = errors.New("not found")

// client is a minimal typed Engine API client over the unix socket: the
// four calls the watcher needs, nothing else. Each call is one HTTP/1.1
// request on its own connection, which a context closes when it ends:
// simpler to bound than a pooled http.Transport, and 0.6 MB less binary.
type client struct {
	socket  string
	timeout time.Duration          // bounds every call but the event stream's body
	version atomic.Pointer[string] // negotiated by ping; nil before
}

func newClient(socket string, timeout time.Duration) *client {
	return &client{socket: socket, timeout: timeout}
}

// negotiate asks dockerd its API version (GET /_ping, header API-Version)
// and settles on the older of it and maxAPIVersion.
func (c *client) negotiate(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.do(ctx, "/_ping", nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBytes))
	v, err := agreeVersion(resp.Header.Get("API-Version"))
	if err != nil {
		return "", err
	}
	c.version.Store(&v)
	return v, nil
}

// agreeVersion picks the API version to use with a daemon that speaks
// server: the older of server and maxAPIVersion, refusing one older than
// minAPIVersion.
func agreeVersion(server string) (string, error) {
	sv, err := parseAPIVersion(server)
	if err != nil {
		return "", fmt.Errorf("dockerd's /_ping gave no usable API version (%q): is the socket really dockerd's?", server)
	}
	if minV, _ := parseAPIVersion(minAPIVersion); sv.less(minV) {
		return "", fmt.Errorf("dockerd speaks Engine API %s; vxovl's name service needs %s (Docker 20.10) or newer", server, minAPIVersion)
	}
	if maxV, _ := parseAPIVersion(maxAPIVersion); maxV.less(sv) {
		return maxAPIVersion, nil
	}
	return sv.String(), nil
}

type apiVersion struct{ major, minor int }

func parseAPIVersion(s string) (apiVersion, error) {
	maj, min, ok := strings.Cut(strings.TrimSpace(s), ".")
	a, errA := strconv.Atoi(maj)
	b, errB := strconv.Atoi(min)
	if !ok || errA != nil || errB != nil || a < 0 || b < 0 {
		return apiVersion{}, fmt.Errorf("API version %q is not MAJOR.MINOR", s)
	}
	return apiVersion{a, b}, nil
}

func (v apiVersion) less(o apiVersion) bool {
	return v.major < o.major || v.major == o.major && v.minor < o.minor
}

func (v apiVersion) String() string { return fmt.Sprintf("%d.%d", v.major, v.minor) }

// eventFilters selects the events that give an endpoint names or change
// them: a container joining a network (at its start, or docker network
// connect on a running one), a container's start (its last event after
// all its connects) and its rename; and a network's create, which names
// it. Docker ANDs the keys and ORs the values; no container event is
// called connect and no network event start or rename; a container's
// create passes too and is ignored.
const eventFilters = `{"type":{"container":true,"network":true},"event":{"connect":true,"start":true,"rename":true,"create":true}}`

// message is one event of GET /events: the same shape in every API version.
type message struct {
	Type   string
	Action string
	Actor  struct {
		ID         string
		Attributes map[string]string
	}
}

// events subscribes to the events eventFilters selects, starting with the
// ones dockerd still holds since `since`. The caller reads the stream with
// decodeEvents and closes it.
//
// dockerd sends the response headers before it subscribes, so having them
// does not mean an event emitted next reaches this stream. Asking for the
// events since a moment before the request closes that gap: dockerd
// replays its recent events (the last 256) atomically with subscribing.
func (c *client) events(ctx context.Context, since time.Time) (io.ReadCloser, error) {
	q := url.Values{}
	q.Set("since", fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()))
	q.Set("filters", eventFilters)
	path, err := c.versioned("/events")
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, path, q)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// listManaged lists the running containers with an endpoint on a network
// managed reports true for.
func (c *client) listManaged(ctx context.Context, managed func(networkID string) bool) (ids []string, running int, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var list []struct {
		ID              string `json:"Id"`
		NetworkSettings struct {
			Networks map[string]endpointSettings
		}
	}
	if err := c.getJSON(ctx, "/containers/json", nil, maxListBytes, &list); err != nil {
		return nil, 0, fmt.Errorf("listing containers: %w", err)
	}
	for _, ctr := range list {
		for _, es := range ctr.NetworkSettings.Networks {
			if es.EndpointID != "" && managed(es.NetworkID) {
				ids = append(ids, ctr.ID)
				break
			}
		}
	}
	return ids, len(list), nil
}

// listNetworks names the networks managed reports true for.
func (c *client) listNetworks(ctx context.Context, managed func(networkID string) bool) ([]Update, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var list []struct {
		ID   string `json:"Id"`
		Name string
	}
	if err := c.getJSON(ctx, "/networks", nil, maxListBytes, &list); err != nil {
		return nil, fmt.Errorf("listing networks: %w", err)
	}
	var out []Update
	for _, n := range list {
		if n.ID != "" && managed(n.ID) {
			out = append(out, Update{NetworkID: n.ID, NetworkName: n.Name})
		}
	}
	return out, nil
}

// inspect gets a container's names and endpoints; errNotFound when it is gone.
func (c *client) inspect(ctx context.Context, id string) (container, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var ctr container
	if err := c.getJSON(ctx, "/containers/"+url.PathEscape(id)+"/json", nil, maxInspectBytes, &ctr); err != nil {
		return container{}, fmt.Errorf("inspecting container %s: %w", shortID(id), err)
	}
	return ctr, nil
}

func (c *client) getJSON(ctx context.Context, path string, q url.Values, limit int64, v any) error {
	path, err := c.versioned(path)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, path, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body := http.MaxBytesReader(nil, resp.Body, limit)
	if err := json.NewDecoder(body).Decode(v); err != nil {
		return fmt.Errorf("dockerd's answer is not the JSON expected: %w", err)
	}
	return nil
}

// versioned prefixes path with the agreed API version.
func (c *client) versioned(path string) (string, error) {
	v := c.version.Load()
	if v == nil {
		return "", errors.New("no API version agreed with dockerd yet")
	}
	return "/v" + *v + path, nil
}

// do sends GET path and returns a 2xx response; anything else is an error
// carrying dockerd's message.
func (c *client) do(ctx context.Context, path string, q url.Values) (*http.Response, error) {
	u := url.URL{Scheme: "http", Host: "docker", Path: path, RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "vxovl")
	req.Close = true // one request per connection
	resp, err := c.roundTrip(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	var msg struct{ Message string }
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
	if json.Unmarshal(b, &msg) != nil || msg.Message == "" {
		msg.Message = strings.TrimSpace(string(b))
	}
	err = fmt.Errorf("GET %s: dockerd answered %s: %s", path, resp.Status, msg.Message)
	if resp.StatusCode == http.StatusNotFound {
		err = fmt.Errorf("%w: %w", errNotFound, err)
	}
	return nil, err
}

// roundTrip sends req on a new connection and reads the response headers
// within c.timeout. The body stays readable until ctx ends or it is closed,
// which closes the connection.
func (c *client) roundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	d := net.Dialer{Timeout: c.timeout}
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, fmt.Errorf("%w (is the host's docker.sock mounted at %s?)", err, c.socket)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	closeConn := func() error {
		stop()
		return conn.Close()
	}
	_ = conn.SetDeadline(time.Now().Add(c.timeout))
	if err := req.Write(conn); err != nil {
		closeConn()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		closeConn()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, err
	}
	// dockerd sends the event stream's headers at once, then nothing until
	// an event: from here only ctx bounds the body.
	_ = conn.SetDeadline(time.Time{})
	resp.Body = readCloser{resp.Body, closeConn}
	return resp, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }
