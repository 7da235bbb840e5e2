package balance

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

var (
	// ErrNoEndpoint: the app has no endpoint left to try.
	ErrNoEndpoint = errors.New("no ready workers")
	// ErrQueueFull: every worker is busy and the wait queue is full.
	ErrQueueFull = errors.New("all workers busy and the queue is full")
	// ErrQueueTimeout: every worker stayed busy for the whole queue timeout.
	ErrQueueTimeout = errors.New("all workers stayed busy for the queue timeout")
)

// Policy names.
const (
	P2C          = "p2c"
	RoundRobin   = "rr"
	StickyCookie = "sticky-cookie"
	StickyHeader = "sticky-header"
)

// Options configure a Set.
type Options struct {
	// Policy is P2C (default), RoundRobin, or a sticky policy; sticky
	// policies pick by Key.
	Policy string
	// MaxQueue bounds the requests waiting for a busy app; default 1024.
	MaxQueue int
	// QueueTimeout bounds one request's wait; default 30 s.
	QueueTimeout time.Duration
	// OnEject is called when an endpoint is ejected. May be nil.
	OnEject func(*Endpoint)
}

// Set is an app's endpoints and its wait queue. It lives as long as the
// app: Update swaps in a new endpoint list (the Endpoint values that stay
// keep their counters), and requests waiting in the queue then pick from
// the new list.
type Set struct {
	view atomic.Pointer[view]
	rr   atomic.Uint64

	queued atomic.Int64
	mu     sync.Mutex
	wait   []*waiter // FIFO of queued requests
}

// waiter is a queued request and what it may use.
type waiter struct {
	ch    chan struct{}
	key   string
	tried Tried // a copy, so the caller's Tried stays on its stack
}

// view is one immutable endpoint list with its options.
type view struct {
	eps  []*Endpoint
	opts Options
}

// NewSet returns a set over eps.
func NewSet(eps []*Endpoint, opts Options) *Set {
	s := &Set{}
	s.Update(eps, opts)
	return s
}

// Update replaces the endpoints and options. Queued requests look again.
func (s *Set) Update(eps []*Endpoint, opts Options) {
	if opts.MaxQueue <= 0 {
		opts.MaxQueue = 1024
	}
	if opts.QueueTimeout <= 0 {
		opts.QueueTimeout = 30 * time.Second
	}
	s.view.Store(&view{eps: eps, opts: opts})
	s.mu.Lock()
	s.wakeForLocked(nil)
	s.mu.Unlock()
}

// Endpoints returns the set's endpoints; the caller must not modify it.
func (s *Set) Endpoints() []*Endpoint { return s.view.Load().eps }

// Len is the number of endpoints.
func (s *Set) Len() int { return len(s.view.Load().eps) }

// Queued is the number of requests waiting.
func (s *Set) Queued() int64 { return s.queued.Load() }

// maxTried bounds how many endpoints one request remembers having tried.
const maxTried = 8

// Tried is the endpoints a request already failed on. The zero value is
// empty; it allocates nothing.
type Tried struct {
	eps [maxTried]*Endpoint
	n   int
}

// Add records e.
func (t *Tried) Add(e *Endpoint) {
	if t.n < maxTried {
		t.eps[t.n] = e
		t.n++
	}
}

// Has reports whether e was tried.
func (t *Tried) Has(e *Endpoint) bool {
	for i := 0; i < t.n; i++ {
		if t.eps[i] == e {
			return true
		}
	}
	return false
}

// Acquire picks an endpoint for a request and takes one of its slots. key
// is the sticky key (ignored by other policies); tried excludes endpoints
// this request already failed on. When every candidate is at its limit the
// request waits in the queue; the returned wait is how long it waited.
// The caller must call Release exactly once for a returned endpoint.
func (s *Set) Acquire(ctx context.Context, key string, tried *Tried) (ep *Endpoint, wait time.Duration, err error) {
	var start time.Time
	var timer *time.Timer
	for {
		v := s.view.Load()
		e, candidates := s.pick(v, key, tried)
		if e != nil {
			if e.tryAcquire() {
				if !start.IsZero() {
					wait = time.Since(start)
				}
				return e, wait, nil
			}
			continue // lost a race for the last slot; pick again
		}
		if !candidates {
			if !start.IsZero() {
				wait = time.Since(start)
			}
			return nil, wait, ErrNoEndpoint
		}
		if start.IsZero() {
			start = time.Now()
			timer = time.NewTimer(v.opts.QueueTimeout)
			defer timer.Stop()
		}
		if err := s.await(ctx, v, key, tried, timer.C); err != nil {
			return nil, time.Since(start), err
		}
	}
}

// await queues until a slot this request may use frees up (or the
// endpoints change).
func (s *Set) await(ctx context.Context, v *view, key string, tried *Tried, timeout <-chan time.Time) error {
	if s.queued.Add(1) > int64(v.opts.MaxQueue) {
		s.queued.Add(-1)
		return ErrQueueFull
	}
	defer s.queued.Add(-1)
	w := &waiter{ch: make(chan struct{}, 1), key: key, tried: *tried}
	s.mu.Lock()
	s.wait = append(s.wait, w)
	s.mu.Unlock()
	// A usable slot may have freed, or the list changed, between the pick
	// and joining the queue.
	if s.view.Load() != v {
		s.remove(w, nil)
		return nil
	}
	if e, _ := s.pick(v, key, tried); e != nil {
		// If a wake-up came meanwhile, for which endpoint is unknown:
		// everyone looks again.
		s.remove(w, nil)
		return nil
	}
	select {
	case <-w.ch:
		return nil
	case <-timeout:
		s.remove(w, nil)
		return ErrQueueTimeout
	case <-ctx.Done():
		s.remove(w, nil)
		return ctx.Err()
	}
}

// remove takes w out of the queue. If w was woken meanwhile, the wake-up is
// passed on (for endpoint freed, or to everyone if unknown) so it is not
// lost.
func (s *Set) remove(w *waiter, freed *Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.wait {
		if x == w {
			s.wait = append(s.wait[:i], s.wait[i+1:]...)
			return
		}
	}
	select {
	case <-w.ch:
		s.wakeForLocked(freed)
	default:
	}
}

// wakeForLocked wakes the first waiter that may use freed; with freed nil,
// every waiter (they all look again).
func (s *Set) wakeForLocked(freed *Endpoint) {
	if freed == nil {
		for _, w := range s.wait {
			w.ch <- struct{}{}
		}
		s.wait = s.wait[:0]
		return
	}
	v := s.view.Load()
	for i, w := range s.wait {
		if s.mayUse(v, w, freed) {
			s.wait = append(s.wait[:i], s.wait[i+1:]...)
			w.ch <- struct{}{}
			return
		}
	}
}

// mayUse reports whether a queued request could take e by pick's rules:
// it did not fail on e already, e is not ejected (unless ejection is being
// ignored), and, for a sticky request, e is where its key goes.
func (s *Set) mayUse(v *view, w *waiter, e *Endpoint) bool {
	f, any := usable(v.eps, &w.tried, time.Now().UnixNano())
	if !any || !f.ok(e) {
		return false
	}
	if w.key == "" || (v.opts.Policy != StickyCookie && v.opts.Policy != StickyHeader) {
		return true
	}
	return stickyTarget(v.eps, w.key, f) == e
}

// filter says which endpoints a request may be sent to. (A struct, not a
// closure: a returned closure would be heap-allocated on every request.)
type filter struct {
	tried          *Tried
	now            int64
	ignoreEjection bool
}

func (f filter) ok(e *Endpoint) bool {
	return !f.tried.Has(e) && (f.ignoreEjection || !e.Ejected(f.now))
}

// usable returns the predicate for endpoints a request may be sent to:
// untried, and not ejected unless most are (Envoy's panic threshold: then
// ejection is probably wrong about them, or everything is down). any says
// whether any endpoint is untried.
func usable(eps []*Endpoint, tried *Tried, now int64) (f filter, any bool) {
	ejected, untried := 0, 0
	for _, e := range eps {
		if tried.Has(e) {
			continue
		}
		untried++
		if e.Ejected(now) {
			ejected++
		}
	}
	return filter{tried: tried, now: now, ignoreEjection: ejected*2 > len(eps) || ejected == untried}, untried > 0
}

// stickyTarget is where key goes among the endpoints ok accepts:
// rendezvous hashing, so a key keeps its endpoint while it is there and
// only the keys of a removed endpoint move.
func stickyTarget(eps []*Endpoint, key string, f filter) *Endpoint {
	var best *Endpoint
	var bestScore uint64
	for _, e := range eps {
		if !f.ok(e) {
			continue
		}
		if h := hrw(key, e.Addr); best == nil || h > bestScore {
			best, bestScore = e, h
		}
	}
	return best
}

// Release returns the slot taken by Acquire and records how the request
// went (latency feeds the average only for answers).
func (s *Set) Release(e *Endpoint, d time.Duration, o Outcome) {
	e.inflight.Add(-1)
	now := time.Now()
	if o == OK {
		e.observe(d, now.UnixNano())
	}
	if e.record(o, now) {
		if f := s.view.Load().opts.OnEject; f != nil {
			f(e)
		}
	}
	if s.queued.Load() > 0 {
		s.mu.Lock()
		s.wakeForLocked(e)
		s.mu.Unlock()
	}
}

// pick chooses an endpoint with room, or nil. candidates reports whether
// any untried endpoint exists at all (if so, waiting makes sense). It
// allocates nothing.
func (s *Set) pick(v *view, key string, tried *Tried) (e *Endpoint, candidates bool) {
	eps := v.eps
	n := len(eps)
	if n == 0 {
		return nil, false
	}
	now := time.Now().UnixNano()
	f, any := usable(eps, tried, now)
	if !any {
		return nil, false
	}
	policy := v.opts.Policy
	if key == "" && (policy == StickyCookie || policy == StickyHeader) {
		policy = P2C // no affinity yet: the proxy will set a cookie
	}
	switch policy {
	case RoundRobin:
		start := int(s.rr.Add(1) % uint64(n))
		for j := range n {
			if e := eps[(start+j)%n]; f.ok(e) && e.hasRoom() {
				return e, true
			}
		}
	case StickyCookie, StickyHeader:
		if best := stickyTarget(eps, key, f); best != nil && best.hasRoom() {
			return best, true
		}
	default:
		a := sample(eps, nil, f)
		if a == nil {
			break
		}
		if b := sample(eps, a, f); b != nil && b.score(now) < a.score(now) {
			a = b
		}
		return a, true
	}
	return nil, true
}

// sample returns a random endpoint with room that f accepts, other than
// not, or nil.
func sample(eps []*Endpoint, not *Endpoint, f filter) *Endpoint {
	n := len(eps)
	start := rand.IntN(n)
	for j := range n {
		if e := eps[(start+j)%n]; e != not && f.ok(e) && e.hasRoom() {
			return e
		}
	}
	return nil
}

// hrw is the rendezvous weight of key on addr (FNV-1a over both, then a
// finalizer so close addresses spread).
func hrw(key, addr string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * 1099511628211
	}
	h = (h ^ 0xff) * 1099511628211
	for i := 0; i < len(addr); i++ {
		h = (h ^ uint64(addr[i])) * 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

// StickyKey extracts the request's sticky key for the policy: the named
// cookie's or header's value ("" when absent).
func StickyKey(policy, name string, r *http.Request) string {
	switch policy {
	case StickyHeader:
		return r.Header.Get(name)
	case StickyCookie:
		if c, err := r.Cookie(name); err == nil {
			return c.Value
		}
	}
	return ""
}
