package metrics

import (
	"io"
	"net/http/httptest"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, body)
	}
	return string(body)
}

// One scrape has the build, the state, what was observed, and the Go and
// process collectors'.
func TestHandlerServesEverything(t *testing.T) {
	m := New("v1.2.3-4-gabcdef")
	if err := m.Watch(knownState()); err != nil {
		t.Fatal(err)
	}
	m.ObserveAPI("IpamDriver.RequestAddress", false, 2*time.Millisecond)
	m.ObserveSync(3 * time.Millisecond)
	m.ObserveReconcile(40 * time.Millisecond)
	body := scrape(t, m)
	for _, want := range []string{
		`vxovl_build_info{goversion="` + runtime.Version() + `",version="v1.2.3-4-gabcdef"} 1`,
		`vxovl_cluster_members 3`,
		`vxovl_endpoints{location="remote",vni="4097"} 2`,
		`vxovl_api_requests_total{method="IpamDriver.RequestAddress",result="error"} 1`,
		`vxovl_api_request_duration_seconds_bucket{method="IpamDriver.RequestAddress",le="0.0025"} 1`,
		`vxovl_api_request_duration_seconds_bucket{method="IpamDriver.RequestAddress",le="0.001"} 0`,
		`vxovl_sync_duration_seconds_count 1`,
		`vxovl_reconcile_duration_seconds_bucket{le="0.05"} 1`,
		`vxovl_reconcile_duration_seconds_bucket{le="0.025"} 0`,
		"\ngo_goroutines ",
		"\nprocess_resident_memory_bytes ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(body)
	}
}

func TestObserveAPICountsByMethodAndResult(t *testing.T) {
	m := New("test")
	m.ObserveAPI("NetworkDriver.Join", true, time.Millisecond)
	m.ObserveAPI("NetworkDriver.Join", true, time.Millisecond)
	m.ObserveAPI("NetworkDriver.Join", false, time.Millisecond)
	m.ObserveAPI("other", false, time.Millisecond)
	const want = `
# HELP vxovl_api_requests_total Docker plugin API calls served, by method (the call's path without the slash, e.g. NetworkDriver.Join; "other" for any path that is not a call) and result (ok, error).
# TYPE vxovl_api_requests_total counter
vxovl_api_requests_total{method="NetworkDriver.Join",result="error"} 1
vxovl_api_requests_total{method="NetworkDriver.Join",result="ok"} 2
vxovl_api_requests_total{method="other",result="error"} 1
`
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(want), "vxovl_api_requests_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m.apiLatency); n != 2 {
		t.Fatalf("%d latency series, want one per method (2)", n)
	}
}

// promtool (Debian's prometheus package) finds nothing to lint in a
// scrape with every metric present.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	m := New("v1.2.3")
	if err := m.Watch(knownState()); err != nil {
		t.Fatal(err)
	}
	m.ObserveAPI("NetworkDriver.Join", true, time.Millisecond)
	m.ObserveSync(time.Millisecond)
	m.ObserveReconcile(time.Millisecond)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(scrape(t, m))
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
