// Package metrics exposes vxovl to Prometheus: the state of its networks,
// cluster and IPAM, read from copies at every scrape, and what it did (API
// calls, syncs, reconcile passes), observed as it happens.
//
// Every label has a bounded set of values (vni, location, method, result,
// direction, pool): nothing is labelled per endpoint or per container, so a
// busy host does not grow the series a scrape returns.
package metrics

import (
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the plugin's registry and the instruments its parts report to.
type Metrics struct {
	reg        *prometheus.Registry
	apiCalls   *prometheus.CounterVec
	apiLatency *prometheus.HistogramVec
	syncs      prometheus.Histogram
	reconciles prometheus.Histogram
}

// Bucket bounds, in seconds.
var (
	// A plugin API call: from a table lookup to a block claim across the
	// cluster (bounded by Docker's 30 s call timeout).
	apiBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	// One network's sync: a few netlink calls, more when it rebuilds an overlay.
	syncBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	// A reconcile pass: every network's sync in turn.
	reconcileBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
)

// New makes the registry with the Go and process collectors,
// vxovl_build_info for version, and the API, sync and reconcile
// instruments. The state is added by Watch.
func New(version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		apiCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vxovl_api_requests_total",
			Help: `Docker plugin API calls served, by method (the call's path without the slash, e.g. NetworkDriver.Join; "other" for any path that is not a call) and result (ok, error).`,
		}, []string{"method", "result"}),
		apiLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vxovl_api_request_duration_seconds",
			Help:    "How long Docker plugin API calls took to answer, by method.",
			Buckets: apiBuckets,
		}, []string{"method"}),
		syncs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vxovl_sync_duration_seconds",
			Help:    "How long one network's sync took: its neighbor and FDB tables, and on a reconcile pass first its devices' health.",
			Buckets: syncBuckets,
		}),
		reconciles: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vxovl_reconcile_duration_seconds",
			Help:    "How long a whole reconcile pass over every network took.",
			Buckets: reconcileBuckets,
		}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "vxovl_build_info",
		Help:        "Always 1: the vxovl version and the Go version it was built with, as labels.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		build, m.apiCalls, m.apiLatency, m.syncs, m.reconciles,
	)
	return m
}

// Watch adds the collector of the plugin's state, read from src at every
// scrape. Call it once.
func (m *Metrics) Watch(src Sources) error {
	return m.reg.Register(&stateCollector{src: src})
}

// Handler serves the registry in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	// A few scrapes at once are plenty; more wait for none of the state's
	// locks but each costs a snapshot.
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4})
}

// ObserveAPI counts and times one plugin API call. method must come from a
// fixed set (the calls the plugin serves, else "other"): it is a label.
func (m *Metrics) ObserveAPI(method string, ok bool, d time.Duration) {
	result := "ok"
	if !ok {
		result = "error"
	}
	m.apiCalls.WithLabelValues(method, result).Inc()
	m.apiLatency.WithLabelValues(method).Observe(d.Seconds())
}

// ObserveSync implements driver.Observer.
func (m *Metrics) ObserveSync(d time.Duration) { m.syncs.Observe(d.Seconds()) }

// ObserveReconcile implements driver.Observer.
func (m *Metrics) ObserveReconcile(d time.Duration) { m.reconciles.Observe(d.Seconds()) }
