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

// Set is an app's endpoints and its queue. The endpoints are fixed for the
// Set's life; the proxy builds a new Set when they change, passing on the
// Endpoint values so that counters survive.
type Set struct {
	eps  []*Endpoint
	opts Options
	rr   atomic.Uint64

	queued atomic.Int64
	mu     sync.Mutex
	wait   []chan struct{} // FIFO of queued requests
}

// NewSet returns a set over eps.
func NewSet(eps []*Endpoint, opts Options) *Set {
	if opts.MaxQueue <= 0 {
		opts.MaxQueue = 1024
	}
	if opts.QueueTimeout <= 0 {
		opts.QueueTimeout = 30 * time.Second
	}
	if len(eps) > 64 {
		// The retry mask has 64 bits; beyond that an app is served by its
		// first 64 endpoints per front (far more than a front would pick
		// among per request anyway).
		rand.Shuffle(len(eps), func(i, j int) { eps[i], eps[j] = eps[j], eps[i] })
		eps = eps[:64]
	}
	return &Set{eps: eps, opts: opts}
}

// Endpoints returns the set's endpoints; the caller must not modify it.
func (s *Set) Endpoints() []*Endpoint { return s.eps }

// Len is the number of endpoints.
func (s *Set) Len() int { return len(s.eps) }

// Queued is the number of requests waiting.
func (s *Set) Queued() int64 { return s.queued.Load() }

// Tried is a set of endpoint indexes a request already tried.
type Tried uint64

// Acquire picks an endpoint for a request and takes one of its slots. key
// is the sticky key (ignored by other policies); tried excludes endpoints
// this request already failed on. When every candidate is at its limit the
// request waits in the queue; the returned wait is how long it waited.
// The caller must call Release exactly once for a returned endpoint.
func (s *Set) Acquire(ctx context.Context, key string, tried Tried) (ep *Endpoint, idx int, wait time.Duration, err error) {
	var start time.Time
	var timer *time.Timer
	for {
		idx, candidates := s.pick(key, tried)
		if idx >= 0 {
			if s.eps[idx].tryAcquire() {
				if !start.IsZero() {
					wait = time.Since(start)
				}
				return s.eps[idx], idx, wait, nil
			}
			continue // lost a race for the last slot; pick again
		}
		if !candidates {
			return nil, -1, 0, ErrNoEndpoint
		}
		if start.IsZero() {
			start = time.Now()
			timer = time.NewTimer(s.opts.QueueTimeout)
			defer timer.Stop()
		}
		if err := s.await(ctx, timer.C); err != nil {
			return nil, -1, time.Since(start), err
		}
	}
}

// await queues until a slot frees up somewhere in the set.
func (s *Set) await(ctx context.Context, timeout <-chan time.Time) error {
	if s.queued.Add(1) > int64(s.opts.MaxQueue) {
		s.queued.Add(-1)
		return ErrQueueFull
	}
	defer s.queued.Add(-1)
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.wait = append(s.wait, ch)
	s.mu.Unlock()
	// A slot may have freed between the pick and joining the queue.
	if s.anyRoom() {
		s.remove(ch)
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-timeout:
		s.remove(ch)
		return ErrQueueTimeout
	case <-ctx.Done():
		s.remove(ch)
		return ctx.Err()
	}
}

func (s *Set) remove(ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, c := range s.wait {
		if c == ch {
			s.wait = append(s.wait[:i], s.wait[i+1:]...)
			return
		}
	}
	// Already woken: pass the wake-up on so it is not lost.
	select {
	case <-ch:
		s.wakeLocked()
	default:
	}
}

func (s *Set) wakeLocked() {
	if len(s.wait) == 0 {
		return
	}
	ch := s.wait[0]
	s.wait = s.wait[1:]
	ch <- struct{}{}
}

func (s *Set) anyRoom() bool {
	for _, e := range s.eps {
		if e.hasRoom() {
			return true
		}
	}
	return false
}

// Release returns the slot taken by Acquire and records how the request
// went (latency feeds the EWMA only for answers).
func (s *Set) Release(e *Endpoint, d time.Duration, o Outcome) {
	e.inflight.Add(-1)
	now := time.Now()
	if o == OK {
		e.observe(d, now.UnixNano())
	}
	if e.record(o, now) && s.opts.OnEject != nil {
		s.opts.OnEject(e)
	}
	if s.queued.Load() > 0 {
		s.mu.Lock()
		s.wakeLocked()
		s.mu.Unlock()
	}
}

// pick chooses an endpoint index with room, or -1. candidates reports
// whether any untried endpoint exists at all (if so, waiting makes sense).
// It allocates nothing.
func (s *Set) pick(key string, tried Tried) (idx int, candidates bool) {
	n := len(s.eps)
	if n == 0 {
		return -1, false
	}
	now := time.Now().UnixNano()
	// Envoy's panic threshold: if most endpoints are ejected, ejection is
	// probably wrong about them (or everything is down): use them all.
	ejected := 0
	untried := 0
	for i, e := range s.eps {
		if tried&(1<<uint(i)) != 0 {
			continue
		}
		untried++
		if e.Ejected(now) {
			ejected++
		}
	}
	if untried == 0 {
		return -1, false
	}
	ignoreEjection := ejected*2 > n || ejected == untried
	ok := func(i int) bool {
		e := s.eps[i]
		return tried&(1<<uint(i)) == 0 && (ignoreEjection || !e.Ejected(now))
	}
	policy := s.opts.Policy
	if key == "" && (policy == StickyCookie || policy == StickyHeader) {
		policy = P2C // no affinity yet: the proxy will set a cookie
	}
	switch policy {
	case RoundRobin:
		start := int(s.rr.Add(1) % uint64(n))
		for j := range n {
			i := (start + j) % n
			if ok(i) && s.eps[i].hasRoom() {
				return i, true
			}
		}
	case StickyCookie, StickyHeader:
		// Rendezvous hashing: the key keeps its endpoint while it is
		// there, and only the keys of a removed endpoint move.
		best, bestScore := -1, uint64(0)
		for i, e := range s.eps {
			if !ok(i) {
				continue
			}
			if h := hrw(key, e.Addr); best < 0 || h > bestScore {
				best, bestScore = i, h
			}
		}
		if best >= 0 && s.eps[best].hasRoom() {
			return best, true
		}
	default:
		a := s.sample(n, -1, func(i int) bool { return ok(i) && s.eps[i].hasRoom() })
		if a < 0 {
			break
		}
		b := s.sample(n, a, func(i int) bool { return ok(i) && s.eps[i].hasRoom() })
		if b >= 0 && s.eps[b].score(now) < s.eps[a].score(now) {
			a = b
		}
		return a, true
	}
	return -1, true
}

// sample returns a random index satisfying ok other than not, or -1.
func (s *Set) sample(n, not int, ok func(int) bool) int {
	start := rand.IntN(n)
	for j := range n {
		i := (start + j) % n
		if i != not && ok(i) {
			return i
		}
	}
	return -1
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
