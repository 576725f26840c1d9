// Package metrics holds a nixipfs daemon's Prometheus metrics. They live in
// a registry the daemon owns (never the process-wide default, which kubo's
// embedded node fills with its own), served at the gateway's /metrics.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// Lookup results, the "result" label of LookupsTotal.
const (
	Hit   = "hit"
	Miss  = "miss"
	Error = "error"
)

// Metrics are the daemon's metrics. The zero value is not usable; use New.
type Metrics struct {
	Registry *prometheus.Registry

	// Requests counts HTTP requests by endpoint (narinfo, nar, mirror, …)
	// and status code; "aborted" when a response was cut off (a NAR that
	// failed its hash check or lost its blocks mid-stream).
	Requests *prometheus.CounterVec
	// Duration is the time to answer a request, body included, by endpoint.
	Duration *prometheus.HistogramVec
	// BytesServed counts response body bytes written, by endpoint.
	BytesServed *prometheus.CounterVec

	// RenderBytes and RenderSeconds sum NAR bytes rendered from DAGs and
	// the time spent rendering them: their rates' ratio is the render
	// throughput. Renders counts renders by result (ok, error).
	RenderBytes   prometheus.Counter
	RenderSeconds prometheus.Counter
	Renders       *prometheus.CounterVec

	// Lookups counts manifest lookups by kind (narinfo, source) and result
	// (hit, miss, error).
	Lookups *prometheus.CounterVec

	// QueueDepth is the number of publish-queue entries waiting;
	// QueueFailed those set aside as unpublishable. QueuePublished counts
	// store paths the queue worker published (closures included), by
	// status (published, unchanged, signed); QueueAttempts counts publish
	// attempts of queue entries by result (ok, retry, failed).
	QueueDepth     prometheus.Gauge
	QueueFailed    prometheus.Gauge
	QueuePublished *prometheus.CounterVec
	QueueAttempts  *prometheus.CounterVec

	// JobStates is the number of build jobs in each state (the pubsub
	// build protocol sets it: e.g. JobStates.WithLabelValues("leased").Set(n)).
	JobStates *prometheus.GaugeVec
}

// New returns metrics registered in a fresh registry, with the Go runtime
// and process collectors (memory, file descriptors, CPU).
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_http_requests_total",
			Help: "HTTP requests answered, by endpoint and status code (aborted: response cut off).",
		}, []string{"endpoint", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nixipfs_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, body included, by endpoint.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"endpoint"}),
		BytesServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_http_response_bytes_total",
			Help: "Response body bytes written, by endpoint.",
		}, []string{"endpoint"}),
		RenderBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixipfs_nar_render_bytes_total",
			Help: "NAR bytes rendered from UnixFS DAGs.",
		}),
		RenderSeconds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixipfs_nar_render_seconds_total",
			Help: "Time spent rendering NARs; rate(bytes) / rate(seconds) is the render throughput.",
		}),
		Renders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_nar_renders_total",
			Help: "NAR renders by result (ok, error).",
		}, []string{"result"}),
		Lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_manifest_lookups_total",
			Help: "Manifest lookups by kind (narinfo, source) and result (hit, miss, error).",
		}, []string{"kind", "result"}),
		QueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nixipfs_queue_depth",
			Help: "Publish-queue entries waiting to be published.",
		}),
		QueueFailed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nixipfs_queue_failed",
			Help: "Publish-queue entries set aside as unpublishable (see nixipfs status).",
		}),
		QueuePublished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_queue_published_paths_total",
			Help: "Store paths the publish queue published, by status (published, unchanged, signed).",
		}, []string{"status"}),
		QueueAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_queue_attempts_total",
			Help: "Publish attempts of queue entries by result (ok, retry, failed).",
		}, []string{"result"}),
		JobStates: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nixipfs_jobs",
			Help: "Build jobs by state.",
		}, []string{"state"}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Requests, m.Duration, m.BytesServed,
		m.RenderBytes, m.RenderSeconds, m.Renders,
		m.Lookups,
		m.QueueDepth, m.QueueFailed, m.QueuePublished, m.QueueAttempts,
		m.JobStates,
	)
	return m
}

// Atomic is a counter or gauge kept by another package as an atomic
// integer (peer retrieval's, the prerenderer's), read when /metrics is
// served.
type Atomic struct {
	Name, Help string
	V          interface{ Load() int64 }
}

// Atomics registers counters kept as atomics.
func (m *Metrics) Atomics(cs ...Atomic) {
	for _, c := range cs {
		m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.Name, Help: c.Help},
			func() float64 { return float64(c.V.Load()) }))
	}
}

// Gauges registers gauges kept as atomics.
func (m *Metrics) Gauges(cs ...Atomic) {
	for _, c := range cs {
		m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: c.Name, Help: c.Help},
			func() float64 { return float64(c.V.Load()) }))
	}
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// Sum adds up the current values of a counter or gauge vector's series
// whose labels include all of match (for the status page's figures).
func Sum(c prometheus.Collector, match map[string]string) float64 {
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	var total float64
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			continue
		}
		if !labelsMatch(d.GetLabel(), match) {
			continue
		}
		switch {
		case d.Counter != nil:
			total += d.Counter.GetValue()
		case d.Gauge != nil:
			total += d.Gauge.GetValue()
		}
	}
	return total
}

func labelsMatch(have []*dto.LabelPair, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, l := range have {
			if l.GetName() == k && l.GetValue() == v {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
