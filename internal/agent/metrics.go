package agent

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exposes the node's workers on /metrics: one series per worker
// slot, read from the same status `herdctl status --workers` shows.
type collector struct{ m *manager }

var (
	descWorkerUp       = prometheus.NewDesc("herd_node_worker_ready", "1 when the worker is ready (advertised), else 0.", []string{"app", "release", "worker", "state"}, nil)
	descWorkerRestarts = prometheus.NewDesc("herd_node_worker_restarts_total", "Restarts of the worker slot.", []string{"app", "release", "worker"}, nil)
	descWorkerRSS      = prometheus.NewDesc("herd_node_worker_rss_bytes", "Resident memory of the worker's process group.", []string{"app", "release", "worker"}, nil)
	descWorkerCPU      = prometheus.NewDesc("herd_node_worker_cpu_seconds_total", "CPU time of the worker's process group.", []string{"app", "release", "worker"}, nil)
	descDrained        = prometheus.NewDesc("herd_node_drained", "1 when the node is drained.", nil, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWorkerUp, descWorkerRestarts, descWorkerRSS, descWorkerCPU, descDrained} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, w := range c.m.workers("") {
		idx := strconv.Itoa(int(w.GetIndex()))
		ready := 0.0
		if w.GetState() == "ready" {
			ready = 1
		}
		ch <- prometheus.MustNewConstMetric(descWorkerUp, prometheus.GaugeValue, ready, w.GetApp(), w.GetRelease(), idx, w.GetState())
		ch <- prometheus.MustNewConstMetric(descWorkerRestarts, prometheus.CounterValue, float64(w.GetRestarts()), w.GetApp(), w.GetRelease(), idx)
		ch <- prometheus.MustNewConstMetric(descWorkerRSS, prometheus.GaugeValue, float64(w.GetRssBytes()), w.GetApp(), w.GetRelease(), idx)
		ch <- prometheus.MustNewConstMetric(descWorkerCPU, prometheus.CounterValue, w.GetCpuSeconds(), w.GetApp(), w.GetRelease(), idx)
	}
	drained := 0.0
	if c.m.drainMode() != "" {
		drained = 1
	}
	ch <- prometheus.MustNewConstMetric(descDrained, prometheus.GaugeValue, drained)
}
