// Package balance holds an app's endpoints (ready workers) with their live
// counters, and picks one for each request: power of two choices on
// in-flight requests weighted by latency (the default), round robin, or
// sticky by a key (cookie or header). It also keeps each worker's
// concurrency limit, queues requests when every worker is busy, and ejects
// endpoints that keep failing.
package balance

import (
	"math"
	"net/http"
	"sync/atomic"
	"time"
)

// Ejection parameters (Envoy's outlier detection, simplified).
const (
	connectFailuresToEject = 2
	serverErrorsToEject    = 5
	ejectBase              = 5 * time.Second
	ejectMax               = 2 * time.Minute
	// defaultLatency is what an endpoint without measurements is assumed
	// to take, so it is tried but not flooded.
	defaultLatency = time.Millisecond
	// decay is the time constant of the latency average (Linkerd's peak
	// EWMA): a sample counts less the sooner the next one follows, and
	// the latency of an endpoint that gets no requests decays toward zero,
	// so one slow answer does not starve it forever.
	decay = 2 * time.Second
)

// Outcome is how a request to an endpoint ended.
type Outcome int

const (
	// OK is any answer below 500.
	OK Outcome = iota
	// ConnectFailed means no connection could be made: the request never
	// reached the worker.
	ConnectFailed
	// ServerError is a 5xx answer, or an error after the request was sent.
	ServerError
	// Canceled means the client went away; it says nothing about the
	// endpoint.
	Canceled
)

// Endpoint is one ready worker as a front sees it. Its counters are
// updated without locks on the request path.
type Endpoint struct {
	Addr    string // host:port
	Node    string
	Worker  string
	Release string
	// Transport is the keep-alive pool to this endpoint; the proxy owns it.
	Transport *http.Transport

	limit        atomic.Int64 // max requests in flight; 0 = no limit
	inflight     atomic.Int64
	ewma         atomic.Uint64 // float64 bits, nanoseconds
	ewmaAt       atomic.Int64  // unix nanoseconds of the last sample
	fails        atomic.Int32  // consecutive failures
	ejections    atomic.Int32  // times ejected recently (for growing backoff)
	ejectedUntil atomic.Int64  // unix nanoseconds

	requests atomic.Uint64
	errors   atomic.Uint64
}

// NewEndpoint returns an endpoint taking at most limit requests at once
// (0: no limit).
func NewEndpoint(addr, node, worker string, limit int) *Endpoint {
	e := &Endpoint{Addr: addr, Node: node, Worker: worker}
	e.limit.Store(int64(limit))
	return e
}

// SetLimit changes the concurrency limit (a new spec for the app).
func (e *Endpoint) SetLimit(limit int) { e.limit.Store(int64(limit)) }

// InFlight is the number of requests the endpoint is serving.
func (e *Endpoint) InFlight() int64 { return e.inflight.Load() }

// Latency is the endpoint's latency average as of now.
func (e *Endpoint) Latency() time.Duration {
	return time.Duration(e.latency(time.Now().UnixNano()))
}

// latency is the decayed average in nanoseconds (0: never measured).
func (e *Endpoint) latency(now int64) float64 {
	v := math.Float64frombits(e.ewma.Load())
	if v == 0 {
		return 0
	}
	if idle := now - e.ewmaAt.Load(); idle > 0 {
		v *= math.Exp(-float64(idle) / float64(decay))
	}
	return v
}

// Ejected reports whether passive health checks took the endpoint out.
func (e *Endpoint) Ejected(now int64) bool { return e.ejectedUntil.Load() > now }

// Stats returns the requests served and the failures among them.
func (e *Endpoint) Stats() (requests, errors uint64) { return e.requests.Load(), e.errors.Load() }

// tryAcquire takes a slot if the endpoint is below its limit.
func (e *Endpoint) tryAcquire() bool {
	limit := e.limit.Load()
	for {
		n := e.inflight.Load()
		if limit > 0 && n >= limit {
			return false
		}
		if e.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (e *Endpoint) hasRoom() bool {
	limit := e.limit.Load()
	return limit <= 0 || e.inflight.Load() < limit
}

// score is the expected wait for a new request: latency times the
// requests ahead of it. Lower is better.
func (e *Endpoint) score(now int64) float64 {
	n := e.inflight.Load()
	if e.ewma.Load() == 0 {
		// Never measured: idle, it wins, or a new worker would starve
		// behind faster ones under light load (the 1 ms guess loses to
		// every endpoint that answers quicker); busy, the guess holds, so
		// a new worker is not piled on before its first answer.
		if n == 0 {
			return 0
		}
		return float64(defaultLatency) * float64(n+1)
	}
	return e.latency(now) * float64(n+1)
}

// observe folds a latency sample in: a sample above the average replaces
// it at once (a worker that got slow is avoided now, not after several
// requests); one below pulls the average down with a weight that grows
// with the time since the previous sample.
func (e *Endpoint) observe(d time.Duration, now int64) {
	for {
		old := e.ewma.Load()
		prev := e.ewmaAt.Load()
		v := float64(d)
		if old != 0 {
			cur := math.Float64frombits(old)
			if v < cur {
				w := math.Exp(-float64(max(now-prev, 0)) / float64(decay))
				v = cur*w + v*(1-w)
			}
		}
		if e.ewma.CompareAndSwap(old, math.Float64bits(v)) {
			e.ewmaAt.Store(now)
			return
		}
	}
}

// record updates passive health and reports whether the endpoint was
// ejected by this outcome.
func (e *Endpoint) record(o Outcome, now time.Time) bool {
	e.requests.Add(1)
	var threshold int32
	switch o {
	case OK:
		e.fails.Store(0)
		if until := e.ejectedUntil.Load(); until != 0 && now.UnixNano() > until+int64(ejectMax) {
			// Healthy for a long while: the next ejection starts short again.
			e.ejections.Store(0)
		}
		return false
	case Canceled:
		return false
	case ConnectFailed:
		threshold = connectFailuresToEject
	case ServerError:
		threshold = serverErrorsToEject
	}
	e.errors.Add(1)
	if e.fails.Add(1) < threshold {
		return false
	}
	if e.Ejected(now.UnixNano()) {
		// The requests in flight when it failed: one incident, one
		// ejection.
		e.fails.Store(0)
		return false
	}
	e.fails.Store(0)
	n := e.ejections.Add(1)
	d := min(ejectBase*time.Duration(n), ejectMax)
	e.ejectedUntil.Store(now.Add(d).UnixNano())
	return true
}
