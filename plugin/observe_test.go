package main

import (
	"bytes"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/vxovl/vxovl/cluster/clustertest"
	"github.com/vxovl/vxovl/metrics"
)

// The METRICS_ADDR server serves /metrics with the build and the plugin
// API's calls, and stops when told.
func TestObserveServesMetrics(t *testing.T) {
	met := metrics.New("v0.1-3-gabc123-dirty")
	api := httptest.NewServer(newAPI(stubDriver{}, nil, slog.New(slog.DiscardHandler), met))
	defer api.Close()
	call(t, api, "/NetworkDriver.GetCapabilities", "")
	call(t, api, "/NetworkDriver.CreateNetwork", "{}")

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(clustertest.FreePort(t)))
	stop := serveObserve(addr, observeMux(met), slog.New(slog.DiscardHandler))
	resp, body := get(t, "http://"+addr+"/metrics") // status_test.go's
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, body)
	}
	for _, want := range []string{
		`vxovl_build_info{goversion="` + runtime.Version() + `",version="v0.1-3-gabc123-dirty"} 1`,
		`vxovl_api_requests_total{method="NetworkDriver.GetCapabilities",result="ok"} 1`,
		`vxovl_api_requests_total{method="NetworkDriver.CreateNetwork",result="error"} 1`,
		`vxovl_api_request_duration_seconds_count{method="NetworkDriver.GetCapabilities"} 1`,
		"\ngo_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if resp, _ := get(t, "http://"+addr+"/no-such-page"); resp.StatusCode != 404 {
		t.Errorf("/no-such-page: %d", resp.StatusCode)
	}
	stop()
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Fatal("still serving after stop")
	}
}

func TestObserveOffOrBusy(t *testing.T) {
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	serveObserve("", observeMux(metrics.New("x")), log)() // nothing to stop
	if !strings.Contains(logged.String(), "METRICS_ADDR is empty") {
		t.Errorf("no word of metrics being off: %s", logged.String())
	}

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	logged.Reset()
	serveObserve(busy.Addr().String(), observeMux(metrics.New("x")), log)()
	if !strings.Contains(logged.String(), "level=ERROR") || !strings.Contains(logged.String(), "works on without them") {
		t.Errorf("a busy METRICS_ADDR is not logged as an error: %s", logged.String())
	}
}
