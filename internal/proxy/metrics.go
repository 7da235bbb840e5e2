package proxy

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-run/herd/internal/balance"
)

// Metrics are the proxy's Prometheus metrics.
type Metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	queueWait *prometheus.HistogramVec
	ejections *prometheus.CounterVec
	retries   *prometheus.CounterVec
}

// NewMetrics registers the proxy's metrics with reg. Call Collect... via
// RegisterEndpoints for the per-endpoint gauges.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_http_requests_total", Help: "Requests answered by the front, by app and status.",
		}, []string{"app", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "herd_http_request_duration_seconds", Help: "Time from request to the end of the response, by app.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"app"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "herd_queue_wait_seconds", Help: "Time requests waited for a free worker, by app (only requests that waited).",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30},
		}, []string{"app"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_upstream_ejections_total", Help: "Endpoints ejected by passive health checks, by app.",
		}, []string{"app"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_upstream_retries_total", Help: "Requests retried on another endpoint, by app and reason (connect, error).",
		}, []string{"app", "reason"}),
	}
	reg.MustRegister(m.requests, m.duration, m.queueWait, m.ejections, m.retries)
	return m
}

func (m *Metrics) observe(app string, code int, d time.Duration) {
	if app != "" {
		return // counted by the app's cached handles
	}
	m.requests.WithLabelValues("", strconv.Itoa(code)).Inc()
}

// appStats are one app's counters, kept across routing-table changes.
type appStats struct {
	name   string
	m      *Metrics
	active atomic.Int64
	retry  *retryBudget
	set    *balance.Set
	limit  limiter
	// tunnels counts upgraded connections (WebSockets) open now.
	tunnels atomic.Int64

	codes    [600]atomic.Pointer[prometheus.Counter]
	duration prometheus.Observer
	wait     prometheus.Observer
}

func (p *Proxy) appStatsLocked(name string) *appStats {
	if a := p.apps[name]; a != nil {
		return a
	}
	a := &appStats{name: name, m: p.cfg.Metrics, set: balance.NewSet(nil, balance.Options{})}
	a.retry = &retryBudget{active: &a.active}
	if a.m != nil {
		a.duration = a.m.duration.WithLabelValues(name)
		a.wait = a.m.queueWait.WithLabelValues(name)
	}
	p.apps[name] = a
	return a
}

// observe counts a finished request without allocating once its status
// was seen before.
func (a *appStats) observe(code int, d, wait time.Duration) {
	if a.m == nil {
		return
	}
	if code >= 0 && code < len(a.codes) {
		c := a.codes[code].Load()
		if c == nil {
			cc := a.m.requests.WithLabelValues(a.name, strconv.Itoa(code))
			c = &cc
			a.codes[code].Store(c)
		}
		(*c).Inc()
	}
	a.duration.Observe(d.Seconds())
	if wait > 0 {
		a.wait.Observe(wait.Seconds())
	}
}

func (a *appStats) ejected() {
	if a.m != nil {
		a.m.ejections.WithLabelValues(a.name).Inc()
	}
}

func (a *appStats) retried(o balance.Outcome) {
	if a.m == nil {
		return
	}
	reason := "error"
	if o == balance.ConnectFailed {
		reason = "connect"
	}
	a.m.retries.WithLabelValues(a.name, reason).Inc()
}

// Collector exposes per-endpoint state at scrape time (nothing on the
// request path): in-flight requests, latency EWMA, ejection, requests and
// errors, and each app's queue length.
func (p *Proxy) Collector() prometheus.Collector { return (*collector)(p) }

type collector Proxy

var (
	descInFlight = prometheus.NewDesc("herd_upstream_in_flight", "Requests in flight to an endpoint.", []string{"app", "endpoint", "node"}, nil)
	descLatency  = prometheus.NewDesc("herd_upstream_latency_ewma_seconds", "Latency EWMA of an endpoint.", []string{"app", "endpoint", "node"}, nil)
	descEjected  = prometheus.NewDesc("herd_upstream_ejected", "1 while passive health checks keep an endpoint out.", []string{"app", "endpoint", "node"}, nil)
	descUpReqs   = prometheus.NewDesc("herd_upstream_requests_total", "Requests sent to an endpoint.", []string{"app", "endpoint", "node"}, nil)
	descUpErrs   = prometheus.NewDesc("herd_upstream_errors_total", "Failed requests to an endpoint (connect failures, errors, 5xx).", []string{"app", "endpoint", "node"}, nil)
	descQueued   = prometheus.NewDesc("herd_queue_length", "Requests waiting for a free worker.", []string{"app"}, nil)
	descTunnels  = prometheus.NewDesc("herd_upgraded_connections", "Upgraded connections (WebSockets) open through the front.", []string{"app"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInFlight, descLatency, descEjected, descUpReqs, descUpErrs, descQueued, descTunnels} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now().UnixNano()
	seen := map[*route]bool{}
	c.table.Load().each(func(r *route) {
		if seen[r] {
			return
		}
		seen[r] = true
		ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(r.set.Queued()), r.App)
		ch <- prometheus.MustNewConstMetric(descTunnels, prometheus.GaugeValue, float64(r.app.tunnels.Load()), r.App)
		for _, e := range r.set.Endpoints() {
			reqs, errs := e.Stats()
			ejected := 0.0
			if e.Ejected(now) {
				ejected = 1
			}
			ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(e.InFlight()), r.App, e.Addr, e.Node)
			ch <- prometheus.MustNewConstMetric(descLatency, prometheus.GaugeValue, e.Latency().Seconds(), r.App, e.Addr, e.Node)
			ch <- prometheus.MustNewConstMetric(descEjected, prometheus.GaugeValue, ejected, r.App, e.Addr, e.Node)
			ch <- prometheus.MustNewConstMetric(descUpReqs, prometheus.CounterValue, float64(reqs), r.App, e.Addr, e.Node)
			ch <- prometheus.MustNewConstMetric(descUpErrs, prometheus.CounterValue, float64(errs), r.App, e.Addr, e.Node)
		}
	})
}
