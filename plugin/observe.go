package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/vxovl/vxovl/metrics"
)

// version is the plugin's build, set by the Makefile with
// -ldflags "-X main.version=$(git describe --always --dirty)".
var version = "dev"

// observeMux is what METRICS_ADDR serves: /metrics here, and the status
// page's routes, which setup adds to it before serveObserve.
func observeMux(met *metrics.Metrics) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", met.Handler())
	return mux
}

// serveObserve serves mux on addr (nothing when addr is empty) until the
// returned stop is called. A failure to listen is logged and not fatal:
// the networks matter more than their metrics.
func serveObserve(addr string, mux *http.ServeMux, log *slog.Logger) (stop func()) {
	if addr == "" {
		log.Info("no metrics and status server (METRICS_ADDR is empty)")
		return func() {}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error("cannot serve metrics and status; the plugin works on without them (set METRICS_ADDR to a free address of this host)",
			"metrics_addr", addr, "err", err)
		return func() {}
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics and status server stopped", "metrics_addr", addr, "err", err)
		}
	}()
	log.Info("serving metrics and status", "metrics_addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			_ = srv.Close() // a scrape still running after 2s is cut off
		}
		<-done
	}
}
