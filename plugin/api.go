package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"
	"github.com/docker/go-plugins-helpers/sdk"
)

// The request and response types and the Driver/Ipam interfaces come from
// go-plugins-helpers. Its handlers are not used directly because each owns a
// private mux and manifest (one socket could not serve both the network and
// the IPAM protocol, as a managed plugin with both interface types must) and
// because they answer malformed JSON with plain text instead of the
// {"Err": "..."} body that Docker shows to the user.

// maxRequestBytes bounds a request body: the largest real one (CreateNetwork)
// is a few KiB.
const maxRequestBytes = 1 << 20

type apiError struct {
	Err string
}

type handler struct {
	mux *http.ServeMux
	log *slog.Logger
	// calls are the protocol calls served, by name (path without the
	// slash): the values of the metrics' method label.
	calls map[string]bool
	obs   apiObserver // nil: none
}

// apiObserver is told of every request the plugin API answered (the
// metrics): method is one of the calls served, else "other".
type apiObserver interface {
	ObserveAPI(method string, ok bool, d time.Duration)
}

// ipamDriver is the IPAM protocol plus what vxovl's IPAM must hear from the
// network side: Docker sends a network's --aux-address and an endpoint's
// --ip alike, and only the network's CreateNetwork, which comes between
// them, tells them apart (see ipam.Driver.NetworkCreating).
type ipamDriver interface {
	ipam.Ipam
	NetworkCreating(*network.CreateNetworkRequest) error
}

func newAPI(nd network.Driver, ipd ipamDriver, log *slog.Logger, obs apiObserver) *handler {
	h := &handler{mux: http.NewServeMux(), log: log, calls: map[string]bool{}, obs: obs}
	implements := []string{"NetworkDriver"}
	if ipd != nil {
		implements = append(implements, "IpamDriver")
	}
	h.handle("/Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string][]string{"Implements": implements})
	})

	route(h, "/NetworkDriver.GetCapabilities", func(*struct{}) (any, error) { return nd.GetCapabilities() })
	route(h, "/NetworkDriver.CreateNetwork", noResult(func(r *network.CreateNetworkRequest) error {
		if ipd != nil {
			if err := ipd.NetworkCreating(r); err != nil {
				return err
			}
		}
		return nd.CreateNetwork(r)
	}))
	route(h, "/NetworkDriver.AllocateNetwork", withResult(nd.AllocateNetwork))
	route(h, "/NetworkDriver.DeleteNetwork", noResult(nd.DeleteNetwork))
	route(h, "/NetworkDriver.FreeNetwork", noResult(nd.FreeNetwork))
	route(h, "/NetworkDriver.CreateEndpoint", withResult(nd.CreateEndpoint))
	route(h, "/NetworkDriver.DeleteEndpoint", noResult(nd.DeleteEndpoint))
	route(h, "/NetworkDriver.EndpointOperInfo", withResult(nd.EndpointInfo))
	route(h, "/NetworkDriver.Join", withResult(nd.Join))
	route(h, "/NetworkDriver.Leave", noResult(nd.Leave))
	route(h, "/NetworkDriver.DiscoverNew", noResult(nd.DiscoverNew))
	route(h, "/NetworkDriver.DiscoverDelete", noResult(nd.DiscoverDelete))
	route(h, "/NetworkDriver.ProgramExternalConnectivity", noResult(nd.ProgramExternalConnectivity))
	route(h, "/NetworkDriver.RevokeExternalConnectivity", noResult(nd.RevokeExternalConnectivity))

	if ipd != nil {
		route(h, "/IpamDriver.GetCapabilities", func(*struct{}) (any, error) { return ipd.GetCapabilities() })
		route(h, "/IpamDriver.GetDefaultAddressSpaces", func(*struct{}) (any, error) { return ipd.GetDefaultAddressSpaces() })
		route(h, "/IpamDriver.RequestPool", withResult(ipd.RequestPool))
		route(h, "/IpamDriver.ReleasePool", noResult(ipd.ReleasePool))
		route(h, "/IpamDriver.RequestAddress", withResult(ipd.RequestAddress))
		route(h, "/IpamDriver.ReleaseAddress", noResult(ipd.ReleaseAddress))
	}
	return h
}

// handle serves one protocol call.
func (h *handler) handle(path string, fn http.HandlerFunc) {
	h.calls[strings.TrimPrefix(path, "/")] = true
	h.mux.HandleFunc(path, fn)
}

// ServeHTTP answers a request and tells the observer: which call (any
// other path is "other", so that the label's values stay bounded whatever
// is sent to the socket), whether it succeeded (a 2xx answer) and how long
// it took.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.obs == nil {
		h.mux.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	h.mux.ServeHTTP(sw, r)
	method := strings.TrimPrefix(r.URL.Path, "/")
	if !h.calls[method] {
		method = "other"
	}
	h.obs.ObserveAPI(method, sw.status < 300, time.Since(start))
}

// statusWriter remembers the status of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

func noResult[Req any](fn func(*Req) error) func(*Req) (any, error) {
	return func(r *Req) (any, error) { return struct{}{}, fn(r) }
}

func withResult[Req, Resp any](fn func(*Req) (*Resp, error)) func(*Req) (any, error) {
	return func(r *Req) (any, error) { return fn(r) }
}

// route serves one protocol call: decode, call, encode. Any failure, including
// a panic deep inside, becomes an {"Err": ...} answer; the process lives on.
func route[Req any](h *handler, path string, fn func(*Req) (any, error)) {
	h.handle(path, func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				h.log.Error("panic serving plugin call", "path", path, "panic", p, "stack", string(debug.Stack()))
				writeJSON(w, http.StatusInternalServerError, apiError{Err: fmt.Sprintf("vxovl internal error in %s: %v (see the plugin log)", path, p)})
			}
		}()
		if r.Method != http.MethodPost {
			writeJSON(w, http.StatusMethodNotAllowed, apiError{Err: path + " takes POST"})
			return
		}
		req := new(Req)
		dec := json.NewDecoder(io.LimitReader(r.Body, maxRequestBytes))
		if err := dec.Decode(req); err != nil && !errors.Is(err, io.EOF) {
			h.log.Warn("malformed plugin request", "path", path, "err", err)
			writeJSON(w, http.StatusBadRequest, apiError{Err: fmt.Sprintf("malformed request to %s: %v", path, err)})
			return
		}
		resp, err := fn(req)
		if err != nil {
			h.log.Warn("plugin call failed", "path", path, "err", err)
			writeJSON(w, http.StatusInternalServerError, apiError{Err: err.Error()})
			return
		}
		h.log.Debug("plugin call", "path", path)
		writeJSON(w, http.StatusOK, resp)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", sdk.DefaultContentTypeV1_1)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client hung up: nothing to do
}
