package balance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// newEndpoints returns n endpoints with distinct addresses, each taking at
// most limit requests at once.
func newEndpoints(n, limit int) []*Endpoint {
	eps := make([]*Endpoint, n)
	for i := range eps {
		addr := fmt.Sprintf("10.0.%d.%d:8080", i/200, i%200+1)
		eps[i] = NewEndpoint(addr, fmt.Sprintf("node%d", i), fmt.Sprintf("w%d", i), limit)
	}
	return eps
}

// triedOf returns a Tried holding eps.
func triedOf(eps ...*Endpoint) *Tried {
	var tr Tried
	for _, e := range eps {
		tr.Add(e)
	}
	return &tr
}

// only returns a Tried that leaves endpoint i of s as the only candidate.
func only(t testing.TB, s *Set, i int) *Tried {
	t.Helper()
	eps := s.Endpoints()
	if len(eps) > maxTried+1 {
		t.Fatalf("cannot pin one of %d endpoints: Tried holds %d", len(eps), maxTried)
	}
	return triedOf(slices.Delete(slices.Clone(eps), i, i+1)...)
}

// indexOf returns e's index in s, failing the test if e is not there.
func indexOf(t testing.TB, s *Set, e *Endpoint) int {
	t.Helper()
	i := slices.Index(s.Endpoints(), e)
	if i < 0 {
		t.Fatalf("endpoint %v is not in the set", e)
	}
	return i
}

// acquireOn takes a slot on endpoint i and fails the test if it cannot.
func acquireOn(t testing.TB, s *Set, i int) *Endpoint {
	t.Helper()
	ep, _, err := s.Acquire(context.Background(), "", only(t, s, i))
	if err != nil || ep != s.Endpoints()[i] {
		t.Fatalf("Acquire pinned to endpoint %d = %v, %v", i, ep, err)
	}
	return ep
}

// eject fails requests on endpoint i until passive health ejects it.
func eject(t testing.TB, s *Set, i int) {
	t.Helper()
	for range connectFailuresToEject {
		s.Release(acquireOn(t, s, i), 0, ConnectFailed)
	}
	if !s.Endpoints()[i].Ejected(time.Now().UnixNano()) {
		t.Fatalf("endpoint %d not ejected after %d connect failures", i, connectFailuresToEject)
	}
}

// countPicks runs n Acquire/Release pairs one after another and counts the
// picks per endpoint index. key(i) is request i's sticky key (nil: none);
// each request reports latency lat(ep) (nil: 0).
func countPicks(t testing.TB, s *Set, n int, tried *Tried, key func(int) string, lat func(*Endpoint) time.Duration) []int {
	t.Helper()
	counts := make([]int, s.Len())
	for i := range n {
		k := ""
		if key != nil {
			k = key(i)
		}
		ep, _, err := s.Acquire(context.Background(), k, tried)
		if err != nil {
			t.Fatalf("Acquire #%d: %v", i, err)
		}
		counts[indexOf(t, s, ep)]++
		var d time.Duration
		if lat != nil {
			d = lat(ep)
		}
		s.Release(ep, d, OK)
	}
	return counts
}

// pickAddr returns the address key is served by.
func pickAddr(t testing.TB, s *Set, key string) string {
	t.Helper()
	ep, _, err := s.Acquire(context.Background(), key, new(Tried))
	if err != nil {
		t.Fatalf("Acquire(%q): %v", key, err)
	}
	s.Release(ep, 0, OK)
	return ep.Addr
}

func sessionKey(i int) string { return fmt.Sprintf("session-%d", i) }

// keyOn returns a sticky key that rendezvous hashing puts on endpoint i
// while every endpoint of s is a candidate.
func keyOn(t testing.TB, s *Set, i int) string {
	t.Helper()
	for k := range 10000 {
		key := sessionKey(k)
		best, bestScore := -1, uint64(0)
		for j, e := range s.Endpoints() {
			if h := hrw(key, e.Addr); best < 0 || h > bestScore {
				best, bestScore = j, h
			}
		}
		if best == i {
			return key
		}
	}
	t.Fatalf("no key maps to endpoint %d", i)
	return ""
}

// waitQueued waits until n requests are in the set's wait queue.
func waitQueued(t testing.TB, s *Set, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		got := len(s.wait)
		s.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue holds %d requests, want %d", got, n)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// acquired is the result of an Acquire run in its own goroutine.
type acquired struct {
	ep   *Endpoint
	wait time.Duration
	err  error
}

func acquireAsync(ctx context.Context, s *Set, key string, tried *Tried) <-chan acquired {
	c := make(chan acquired, 1)
	go func() {
		ep, wait, err := s.Acquire(ctx, key, tried)
		c <- acquired{ep, wait, err}
	}()
	return c
}

func TestNewSetDefaults(t *testing.T) {
	s := NewSet(newEndpoints(2, 0), Options{})
	if o := s.view.Load().opts; o.MaxQueue != 1024 || o.QueueTimeout != 30*time.Second {
		t.Errorf("defaults: MaxQueue %d, QueueTimeout %v; want 1024, 30s", o.MaxQueue, o.QueueTimeout)
	}
	s.Update(newEndpoints(3, 0), Options{Policy: RoundRobin, MaxQueue: 7})
	if o := s.view.Load().opts; o.Policy != RoundRobin || o.MaxQueue != 7 || o.QueueTimeout != 30*time.Second {
		t.Errorf("after Update: Policy %q, MaxQueue %d, QueueTimeout %v; want rr, 7, 30s", o.Policy, o.MaxQueue, o.QueueTimeout)
	}
}

func TestUpdateReplacesEndpoints(t *testing.T) {
	eps := newEndpoints(3, 0)
	s := NewSet(eps[:2], Options{Policy: RoundRobin})
	held := acquireOn(t, s, 1)
	s.Update(eps[1:], Options{Policy: RoundRobin})
	if got := s.Endpoints(); !slices.Equal(got, eps[1:]) || s.Len() != 2 {
		t.Fatalf("Endpoints after Update = %v (Len %d), want %v", got, s.Len(), eps[1:])
	}
	// The endpoint that stayed keeps its counters.
	if n := eps[1].InFlight(); n != 1 {
		t.Errorf("InFlight of the endpoint that stayed = %d, want 1", n)
	}
	// countPicks fails the test if the removed endpoint is picked.
	counts := countPicks(t, s, 100, new(Tried), nil, nil)
	if counts[0] != 50 || counts[1] != 50 {
		t.Errorf("picks after Update: %v, want 50 each of the new endpoints", counts)
	}
	s.Release(held, 0, OK)
	if n := eps[1].InFlight(); n != 0 {
		t.Errorf("InFlight = %d after every Release", n)
	}
}

func TestNoEndpoints(t *testing.T) {
	for _, policy := range []string{P2C, RoundRobin, StickyCookie} {
		s := NewSet(nil, Options{Policy: policy})
		if ep, _, err := s.Acquire(context.Background(), "k", new(Tried)); !errors.Is(err, ErrNoEndpoint) || ep != nil {
			t.Errorf("%s: Acquire on an empty set = %v, %v; want nil, ErrNoEndpoint", policy, ep, err)
		}
	}
}

func TestRoundRobinCycles(t *testing.T) {
	for _, n := range []int{1, 3, 4} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s := NewSet(newEndpoints(n, 0), Options{Policy: RoundRobin})
			counts := make([]int, n)
			prev := -1
			for i := range 100 * n {
				ep, _, err := s.Acquire(context.Background(), "", new(Tried))
				if err != nil {
					t.Fatal(err)
				}
				idx := indexOf(t, s, ep)
				if prev >= 0 && idx != (prev+1)%n {
					t.Fatalf("pick #%d went to %d after %d", i, idx, prev)
				}
				prev = idx
				counts[idx]++
				s.Release(ep, 0, OK)
			}
			for i, c := range counts {
				if c != 100 {
					t.Errorf("endpoint %d picked %d times, want 100 (%v)", i, c, counts)
				}
			}
		})
	}
}

func TestP2CPrefersFewerInFlight(t *testing.T) {
	s := NewSet(newEndpoints(4, 0), Options{})
	const busy = 2
	for range 3 {
		acquireOn(t, s, busy)
	}
	// Two distinct endpoints are compared each time, so one of them is
	// always idle and scores lower than the busy one.
	counts := countPicks(t, s, 1000, new(Tried), nil, nil)
	if counts[busy] != 0 {
		t.Errorf("busy endpoint picked %d times of 1000: %v", counts[busy], counts)
	}
	for i, c := range counts {
		if i != busy && c < 200 {
			t.Errorf("idle endpoint %d picked %d times of 1000: %v", i, c, counts)
		}
	}
}

func TestP2CPrefersLowerLatency(t *testing.T) {
	cases := []struct {
		name       string
		fast, slow int
		// minFast is the least share of picks the fast endpoints get. With
		// as many slow as fast endpoints, a slow one is picked only when
		// both samples are slow (about 1 in 5).
		minFast float64
	}{
		{"one fast one slow", 1, 1, 1},
		{"two fast two slow", 2, 2, 0.7},
		{"one fast three slow", 1, 3, 0.3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eps := newEndpoints(tc.fast+tc.slow, 0)
			lat := func(e *Endpoint) time.Duration {
				if slices.Index(eps, e) < tc.fast {
					return time.Millisecond
				}
				return 50 * time.Millisecond
			}
			s := NewSet(eps, Options{})
			for i, e := range eps {
				for range 5 {
					s.Release(acquireOn(t, s, i), lat(e), OK)
				}
			}
			// Every request below reports its endpoint's own latency, so
			// the averages stay put: lower samples would pull down only
			// the endpoints picked and move the comparison under the test.
			counts := countPicks(t, s, 1000, new(Tried), nil, lat)
			fast := 0
			for _, c := range counts[:tc.fast] {
				fast += c
			}
			if float64(fast) < tc.minFast*1000 {
				t.Errorf("fast endpoints got %d of 1000 picks, want ≥ %.0f: %v", fast, tc.minFast*1000, counts)
			}
		})
	}
}

// TestP2CRetriesSlowEndpoint gives one endpoint a single slow answer and
// the other steady fast traffic: the slow one's average decays while it
// is idle, so it is tried again after about decay·ln(50) (7.8 s).
func TestP2CRetriesSlowEndpoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSet(newEndpoints(2, 0), Options{})
		lat := []time.Duration{time.Millisecond, 50 * time.Millisecond}
		s.Release(acquireOn(t, s, 0), lat[0], OK)
		s.Release(acquireOn(t, s, 1), lat[1], OK)
		start := time.Now()
		var retried time.Duration
		for retried == 0 && time.Since(start) < time.Minute {
			time.Sleep(10 * time.Millisecond)
			ep, _, err := s.Acquire(context.Background(), "", new(Tried))
			if err != nil {
				t.Fatal(err)
			}
			idx := indexOf(t, s, ep)
			s.Release(ep, lat[idx], OK)
			if idx == 1 {
				retried = time.Since(start)
			}
		}
		switch {
		case retried == 0:
			t.Error("slow endpoint not picked again in a minute")
		case retried < 7*time.Second || retried > 9*time.Second:
			t.Errorf("slow endpoint picked again after %v, want about 7.8s", retried)
		}
	})
}

func TestStickySameKeySameEndpoint(t *testing.T) {
	eps := newEndpoints(4, 0)
	s := NewSet(eps, Options{Policy: StickyCookie})
	rev := slices.Clone(eps)
	slices.Reverse(rev)
	other := NewSet(rev, Options{Policy: StickyCookie})
	for k := range 200 {
		key := sessionKey(k)
		want := pickAddr(t, s, key)
		for range 5 {
			if got := pickAddr(t, s, key); got != want {
				t.Fatalf("key %q went to %s, then %s", key, want, got)
			}
		}
		if got := pickAddr(t, other, key); got != want {
			t.Errorf("key %q: %s, but %s in a set listing the endpoints in another order", key, want, got)
		}
	}
}

func TestStickySpreadsKeys(t *testing.T) {
	s := NewSet(newEndpoints(4, 0), Options{Policy: StickyHeader})
	counts := countPicks(t, s, 1000, new(Tried), sessionKey, nil)
	for i, c := range counts {
		if c < 125 {
			t.Errorf("endpoint %d holds %d of 1000 keys: %v", i, c, counts)
		}
	}
}

func TestStickyRemovalMovesOnlyItsKeys(t *testing.T) {
	eps := newEndpoints(4, 0)
	before := NewSet(eps, Options{Policy: StickyCookie})
	for removed := range eps {
		t.Run(eps[removed].Addr, func(t *testing.T) {
			rest := slices.Delete(slices.Clone(eps), removed, removed+1)
			after := NewSet(rest, Options{Policy: StickyCookie})
			moved := map[string]int{}
			for k := range 1000 {
				key := sessionKey(k)
				was, is := pickAddr(t, before, key), pickAddr(t, after, key)
				if was == eps[removed].Addr {
					moved[is]++
				} else if is != was {
					t.Errorf("key %q moved from %s to %s though %s stayed", key, was, is, was)
				}
			}
			if len(moved) < 2 {
				t.Errorf("the removed endpoint's keys went to %v, want them spread", moved)
			}
		})
	}
}

func TestStickyEmptyKeyFallsBackToP2C(t *testing.T) {
	for _, policy := range []string{StickyCookie, StickyHeader} {
		t.Run(policy, func(t *testing.T) {
			s := NewSet(newEndpoints(4, 0), Options{Policy: policy})
			counts := countPicks(t, s, 1000, new(Tried), nil, nil)
			for i, c := range counts {
				if c < 100 {
					t.Errorf("endpoint %d picked %d times of 1000 without a key: %v", i, c, counts)
				}
			}
		})
	}
}

func TestStickyOver64EndpointsIsStable(t *testing.T) {
	eps := newEndpoints(100, 0)
	a := NewSet(slices.Clone(eps), Options{Policy: StickyCookie})
	b := NewSet(slices.Clone(eps), Options{Policy: StickyCookie})
	moved := 0
	for k := range 1000 {
		if key := sessionKey(k); pickAddr(t, a, key) != pickAddr(t, b, key) {
			moved++
		}
	}
	if moved != 0 {
		t.Errorf("%d of 1000 keys moved between two sets over the same 100 endpoints", moved)
	}
}

func TestTriedNeverPicked(t *testing.T) {
	cases := []struct {
		policy string
		key    func(int) string
	}{
		{P2C, nil},
		{RoundRobin, nil},
		{StickyHeader, sessionKey},
		{StickyCookie, nil},
	}
	for _, tc := range cases {
		t.Run(tc.policy, func(t *testing.T) {
			eps := newEndpoints(4, 0)
			s := NewSet(eps, Options{Policy: tc.policy})
			counts := countPicks(t, s, 1000, triedOf(eps[0], eps[2]), tc.key, nil)
			if counts[0] != 0 || counts[2] != 0 || counts[1] == 0 || counts[3] == 0 {
				t.Errorf("picks with endpoints 0 and 2 tried: %v", counts)
			}
		})
	}
}

func TestAllTriedFailsAtOnce(t *testing.T) {
	for _, busy := range []bool{false, true} {
		t.Run(fmt.Sprintf("busy=%v", busy), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				eps := newEndpoints(3, 1)
				s := NewSet(eps, Options{QueueTimeout: time.Minute})
				if busy {
					for i := range 3 {
						acquireOn(t, s, i)
					}
				}
				start := time.Now()
				ep, wait, err := s.Acquire(context.Background(), "", triedOf(eps...))
				if !errors.Is(err, ErrNoEndpoint) || ep != nil || wait != 0 {
					t.Errorf("Acquire with every endpoint tried = %v, %v, %v; want nil, 0, ErrNoEndpoint", ep, wait, err)
				}
				if d := time.Since(start); d != 0 {
					t.Errorf("Acquire took %v", d)
				}
				if q := s.Queued(); q != 0 {
					t.Errorf("Queued = %d", q)
				}
			})
		})
	}
}

func TestReleaseEjects(t *testing.T) {
	cases := []struct {
		name     string
		outcomes []Outcome
		ejected  bool
	}{
		{"one connect failure", []Outcome{ConnectFailed}, false},
		{"two connect failures", []Outcome{ConnectFailed, ConnectFailed}, true},
		{"connect failures split by OK", []Outcome{ConnectFailed, OK, ConnectFailed}, false},
		{"four server errors", rep(ServerError, 4), false},
		{"five server errors", rep(ServerError, 5), true},
		{"OK resets the count", slices.Concat(rep(ServerError, 4), []Outcome{OK}, rep(ServerError, 4)), false},
		{"cancels only", rep(Canceled, 100), false},
		{"cancels after a connect failure", slices.Concat([]Outcome{ConnectFailed}, rep(Canceled, 100)), false},
		{"cancels after four server errors", slices.Concat(rep(ServerError, 4), rep(Canceled, 100)), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var onEject []*Endpoint
			s := NewSet(newEndpoints(2, 0), Options{OnEject: func(e *Endpoint) { onEject = append(onEject, e) }})
			for _, o := range tc.outcomes {
				s.Release(acquireOn(t, s, 1), time.Millisecond, o)
			}
			now := time.Now().UnixNano()
			eps := s.Endpoints()
			if got := eps[1].Ejected(now); got != tc.ejected {
				t.Errorf("Ejected = %v, want %v", got, tc.ejected)
			}
			want := 0
			if tc.ejected {
				want = 1
			}
			if len(onEject) != want || (want == 1 && onEject[0] != eps[1]) {
				t.Errorf("OnEject called with %v, want endpoint 1 %d time(s)", onEject, want)
			}
			if eps[0].Ejected(now) {
				t.Error("the other endpoint was ejected")
			}
			if n := eps[1].InFlight(); n != 0 {
				t.Errorf("InFlight = %d after every Release", n)
			}
		})
	}
}

func rep(o Outcome, n int) []Outcome {
	out := make([]Outcome, n)
	for i := range out {
		out[i] = o
	}
	return out
}

func TestReleaseFeedsLatencyOnlyForAnswers(t *testing.T) {
	s := NewSet(newEndpoints(1, 0), Options{})
	e := s.Endpoints()[0]
	s.Release(acquireOn(t, s, 0), 10*time.Millisecond, OK)
	// Read the stored average: Latency decays it with the wall clock.
	stored := func() time.Duration { return time.Duration(math.Float64frombits(e.ewma.Load())) }
	for _, o := range []Outcome{ServerError, ConnectFailed, Canceled} {
		s.Release(acquireOn(t, s, 0), time.Second, o)
		if got := stored(); got != 10*time.Millisecond {
			t.Errorf("average after a 1s request with outcome %d = %v, want 10ms", o, got)
		}
	}
	s.Release(acquireOn(t, s, 0), 20*time.Millisecond, OK)
	if got := stored(); got != 20*time.Millisecond {
		t.Errorf("average after a 20ms answer = %v, want 20ms", got)
	}
	if got := e.Latency(); got <= 0 || got > 20*time.Millisecond {
		t.Errorf("Latency = %v, want at most 20ms", got)
	}
}

func TestEjectedNotPicked(t *testing.T) {
	cases := []struct {
		name    string
		ejected []int
		// panics: most endpoints are ejected, so all are used.
		panics bool
	}{
		{"one of four", []int{3}, false},
		{"two of four", []int{1, 3}, false},
		{"three of four", []int{0, 1, 3}, true},
		{"four of four", []int{0, 1, 2, 3}, true},
	}
	for _, policy := range []string{P2C, RoundRobin} {
		for _, tc := range cases {
			t.Run(policy+"/"+tc.name, func(t *testing.T) {
				s := NewSet(newEndpoints(4, 0), Options{Policy: policy})
				for _, i := range tc.ejected {
					eject(t, s, i)
				}
				counts := countPicks(t, s, 1000, new(Tried), nil, nil)
				for i, c := range counts {
					isEjected := slices.Contains(tc.ejected, i)
					if !isEjected && c == 0 {
						t.Errorf("healthy endpoint %d never picked: %v", i, counts)
					}
					if isEjected && !tc.panics && c != 0 {
						t.Errorf("ejected endpoint %d picked %d times: %v", i, c, counts)
					}
					if isEjected && tc.panics && c == 0 {
						t.Errorf("over the panic threshold, ejected endpoint %d never picked: %v", i, counts)
					}
				}
			})
		}
	}
}

func TestEjectedUsedWhenOnlyCandidate(t *testing.T) {
	eps := newEndpoints(4, 0)
	s := NewSet(eps, Options{})
	eject(t, s, 3)
	// A retry that already tried every healthy endpoint still gets one.
	counts := countPicks(t, s, 10, triedOf(eps[:3]...), nil, nil)
	if counts[3] != 10 {
		t.Errorf("picks with only the ejected endpoint untried: %v", counts)
	}
}

func TestStickyKeyMovesOffEjectedEndpoint(t *testing.T) {
	s := NewSet(newEndpoints(4, 0), Options{Policy: StickyCookie})
	before := make([]string, 1000)
	for k := range before {
		before[k] = pickAddr(t, s, sessionKey(k))
	}
	eject(t, s, 2)
	ejected := s.Endpoints()[2].Addr
	for k, was := range before {
		is := pickAddr(t, s, sessionKey(k))
		if is == ejected {
			t.Fatalf("key %q still on the ejected endpoint", sessionKey(k))
		}
		if was != ejected && is != was {
			t.Errorf("key %q moved from healthy %s to %s", sessionKey(k), was, is)
		}
	}
}

func TestConcurrencyLimitQueues(t *testing.T) {
	for _, policy := range []string{P2C, RoundRobin} {
		t.Run(policy, func(t *testing.T) {
			const workers, hold = 20, 5 * time.Millisecond
			s := NewSet(newEndpoints(2, 1), Options{Policy: policy, QueueTimeout: 10 * time.Second})
			var (
				wg      sync.WaitGroup
				ours    [2]atomic.Int64 // requests holding each endpoint, by our count
				maxSeen atomic.Int64
				failed  atomic.Int64
			)
			see := func(n int64) {
				for {
					m := maxSeen.Load()
					if n <= m || maxSeen.CompareAndSwap(m, n) {
						return
					}
				}
			}
			start := time.Now()
			for range workers {
				wg.Go(func() {
					ep, _, err := s.Acquire(context.Background(), "", new(Tried))
					if err != nil {
						t.Errorf("Acquire: %v", err)
						failed.Add(1)
						return
					}
					idx := slices.Index(s.Endpoints(), ep)
					see(ours[idx].Add(1))
					see(ep.InFlight())
					time.Sleep(hold)
					see(ep.InFlight())
					ours[idx].Add(-1)
					s.Release(ep, hold, OK)
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			if m := maxSeen.Load(); m > 1 {
				t.Errorf("saw %d requests in flight on one endpoint with limit 1", m)
			}
			if failed.Load() == 0 && elapsed < workers*hold/2 {
				t.Errorf("%d requests of %v on 2 endpoints with limit 1 took %v, want ≥ %v", workers, hold, elapsed, workers*hold/2)
			}
			if q := s.Queued(); q != 0 {
				t.Errorf("Queued = %d after all requests", q)
			}
			for i, e := range s.Endpoints() {
				if n := e.InFlight(); n != 0 {
					t.Errorf("endpoint %d: InFlight = %d after all requests", i, n)
				}
			}
		})
	}
}

func TestQueueWaiterGetsFreedSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSet(newEndpoints(1, 1), Options{QueueTimeout: time.Second})
		held := acquireOn(t, s, 0)
		res := acquireAsync(context.Background(), s, "", new(Tried))
		synctest.Wait()
		if q := s.Queued(); q != 1 {
			t.Fatalf("Queued = %d, want 1", q)
		}
		time.Sleep(20 * time.Millisecond)
		s.Release(held, 0, OK)
		r := <-res
		if r.err != nil || r.ep != held || r.wait != 20*time.Millisecond {
			t.Fatalf("queued Acquire = %v, %v, %v; want endpoint 0, 20ms, nil", r.ep, r.wait, r.err)
		}
		s.Release(r.ep, 0, OK)
		if q := s.Queued(); q != 0 {
			t.Errorf("Queued = %d", q)
		}
	})
}

func TestQueueTimeout(t *testing.T) {
	for _, policy := range []string{P2C, RoundRobin, StickyHeader} {
		t.Run(policy, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const timeout = 30 * time.Millisecond
				s := NewSet(newEndpoints(1, 1), Options{Policy: policy, QueueTimeout: timeout})
				held := acquireOn(t, s, 0)
				start := time.Now()
				ep, wait, err := s.Acquire(context.Background(), "user-1", new(Tried))
				if !errors.Is(err, ErrQueueTimeout) || ep != nil {
					t.Errorf("Acquire on a busy set = %v, %v; want nil, ErrQueueTimeout", ep, err)
				}
				if wait != timeout || time.Since(start) != timeout {
					t.Errorf("waited %v (returned %v), want %v", time.Since(start), wait, timeout)
				}
				if q := s.Queued(); q != 0 {
					t.Errorf("Queued = %d after the timeout", q)
				}
				s.Release(held, 0, OK)
			})
		})
	}
}

func TestQueueFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSet(newEndpoints(1, 1), Options{MaxQueue: 1, QueueTimeout: time.Second})
		held := acquireOn(t, s, 0)
		first := acquireAsync(context.Background(), s, "", new(Tried))
		synctest.Wait()
		start := time.Now()
		if ep, _, err := s.Acquire(context.Background(), "", new(Tried)); !errors.Is(err, ErrQueueFull) || ep != nil {
			t.Errorf("second waiter = %v, %v; want nil, ErrQueueFull", ep, err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("ErrQueueFull came after %v", d)
		}
		if q := s.Queued(); q != 1 {
			t.Errorf("Queued = %d, want 1", q)
		}
		s.Release(held, 0, OK)
		r := <-first
		if r.err != nil {
			t.Fatalf("first waiter: %v", r.err)
		}
		s.Release(r.ep, 0, OK)
	})
}

func TestQueueContextDone(t *testing.T) {
	cases := []struct {
		name     string
		ctx      func(context.Context) (context.Context, context.CancelFunc)
		cancelAt time.Duration // 0: the deadline ends the wait
		want     error
		wait     time.Duration
	}{
		{"canceled", context.WithCancel, 15 * time.Millisecond, context.Canceled, 15 * time.Millisecond},
		{"deadline", func(ctx context.Context) (context.Context, context.CancelFunc) {
			return context.WithTimeout(ctx, 10*time.Millisecond)
		}, 0, context.DeadlineExceeded, 10 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := NewSet(newEndpoints(1, 1), Options{QueueTimeout: time.Minute})
				held := acquireOn(t, s, 0)
				ctx, cancel := tc.ctx(context.Background())
				defer cancel()
				res := acquireAsync(ctx, s, "", new(Tried))
				if tc.cancelAt > 0 {
					time.Sleep(tc.cancelAt)
					cancel()
				}
				r := <-res
				if !errors.Is(r.err, tc.want) || r.ep != nil || r.wait != tc.wait {
					t.Errorf("Acquire = %v, %v, %v; want nil, %v, %v", r.ep, r.wait, r.err, tc.wait, tc.want)
				}
				if q := s.Queued(); q != 0 {
					t.Errorf("Queued = %d", q)
				}
				s.Release(held, 0, OK)
			})
		})
	}
}

func TestQueueIsFIFO(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const waiters = 8
		s := NewSet(newEndpoints(1, 1), Options{QueueTimeout: time.Second})
		held := acquireOn(t, s, 0)
		var (
			mu    sync.Mutex
			order []int
			wg    sync.WaitGroup
		)
		for i := range waiters {
			wg.Go(func() {
				ep, _, err := s.Acquire(context.Background(), "", new(Tried))
				if err != nil {
					t.Errorf("waiter %d: %v", i, err)
					return
				}
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
				s.Release(ep, 0, OK)
			})
			synctest.Wait() // waiter i is queued before i+1 arrives
		}
		s.Release(held, 0, OK)
		wg.Wait()
		if want := []int{0, 1, 2, 3, 4, 5, 6, 7}; !slices.Equal(order, want) {
			t.Errorf("served in order %v, want %v", order, want)
		}
	})
}

func TestRemovePassesWakeUpOn(t *testing.T) {
	cases := []struct {
		name  string
		woken bool    // the removed waiter a was woken (for endpoint 0) before it left
		freed bool    // a left taking endpoint 0 (else: without an endpoint)
		want  [2]bool // waiters b and c woken
	}{
		{"not woken", false, true, [2]bool{false, false}},
		{"woken, took the endpoint", true, true, [2]bool{false, true}},
		{"woken, gave up", true, false, [2]bool{true, true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eps := newEndpoints(2, 1)
			s := NewSet(eps, Options{})
			newWaiter := func(tried *Tried) *waiter { return &waiter{ch: make(chan struct{}, 1), tried: *tried} }
			// b already failed on endpoint 0, so only c may take it.
			a, b, c := newWaiter(new(Tried)), newWaiter(triedOf(eps[0])), newWaiter(new(Tried))
			s.wait = []*waiter{a, b, c}
			if tc.woken {
				s.mu.Lock()
				s.wakeForLocked(eps[0])
				s.mu.Unlock()
				select {
				case <-a.ch:
					a.ch <- struct{}{} // unread, as when the wake-up races with leaving
				default:
					t.Fatal("releasing endpoint 0 did not wake the head of the queue")
				}
			}
			var freed *Endpoint
			if tc.freed {
				freed = eps[0]
			}
			s.remove(a, freed)
			var want []*waiter
			for i, w := range []*waiter{b, c} {
				select {
				case <-w.ch:
					if !tc.want[i] {
						t.Errorf("waiter %c woken", 'b'+i)
					}
				default:
					if tc.want[i] {
						t.Errorf("waiter %c not woken: the wake-up of a waiter that left was lost", 'b'+i)
					}
					want = append(want, w)
				}
			}
			if !slices.Equal(s.wait, want) {
				t.Errorf("queue holds %d waiters after remove, want %d", len(s.wait), len(want))
			}
		})
	}
}

// TestNoLostWakeUp cancels a queued request at the moment a release wakes
// it: the request behind it must still be served.
func TestNoLostWakeUp(t *testing.T) {
	for i := range 200 {
		s := NewSet(newEndpoints(1, 1), Options{QueueTimeout: 2 * time.Second})
		held := acquireOn(t, s, 0)
		ctx, cancel := context.WithCancel(context.Background())
		first := acquireAsync(ctx, s, "", new(Tried))
		waitQueued(t, s, 1)
		second := acquireAsync(context.Background(), s, "", new(Tried))
		waitQueued(t, s, 2)
		go cancel()
		s.Release(held, 0, OK)
		if r := <-first; r.err == nil {
			s.Release(r.ep, 0, OK)
		} else if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("round %d: first waiter: %v", i, r.err)
		}
		r := <-second
		if r.err != nil {
			t.Fatalf("round %d: second waiter: %v (wake-up lost)", i, r.err)
		}
		s.Release(r.ep, 0, OK)
		cancel()
	}
}

// TestQueueWaitsForUsableEndpoint queues a request whose candidates are
// all busy while an endpoint it may not use has room: it must wait (and
// give up on time), not spin.
func TestQueueWaitsForUsableEndpoint(t *testing.T) {
	const limit = 30 * time.Millisecond
	cases := []struct {
		name   string
		policy string
		// setup makes endpoint 1 unusable for the request and returns the
		// request's key and tried set.
		setup func(t *testing.T, s *Set) (string, *Tried)
	}{
		{"retry that tried the free endpoint", P2C, func(t *testing.T, s *Set) (string, *Tried) {
			return "", triedOf(s.Endpoints()[1])
		}},
		{"sticky key on the busy endpoint", StickyCookie, func(t *testing.T, s *Set) (string, *Tried) { return keyOn(t, s, 0), new(Tried) }},
		{"free endpoint ejected", P2C, func(t *testing.T, s *Set) (string, *Tried) { eject(t, s, 1); return "", new(Tried) }},
	}
	limits := []struct {
		name                     string
		queueTimeout, ctxTimeout time.Duration
		want                     error
	}{
		{"queue timeout", limit, time.Minute, ErrQueueTimeout},
		{"context deadline", time.Minute, limit, context.DeadlineExceeded},
	}
	for _, tc := range cases {
		for _, l := range limits {
			t.Run(tc.name+"/"+l.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), l.ctxTimeout)
				defer cancel()
				s := NewSet(newEndpoints(2, 1), Options{Policy: tc.policy, QueueTimeout: l.queueTimeout})
				key, tried := tc.setup(t, s)
				held := acquireOn(t, s, 0)
				res := acquireAsync(ctx, s, key, tried)
				var r acquired
				select {
				case r = <-res:
					s.Release(held, 0, OK)
				case <-time.After(time.Second):
					s.Release(held, 0, OK)
					r = <-res
					t.Errorf("Acquire was still waiting 1s into a %v limit; it returned only when the busy endpoint was freed", limit)
				}
				if r.err == nil {
					s.Release(r.ep, 0, OK)
				}
				if !errors.Is(r.err, l.want) {
					t.Errorf("Acquire = %v, %v, %v; want %v", r.ep, r.wait, r.err, l.want)
				}
			})
		}
	}
}

// TestReleaseWakesWaiterThatCanUseIt frees the endpoint of the second of
// two sticky waiters: the second must get it although the first is ahead.
func TestReleaseWakesWaiterThatCanUseIt(t *testing.T) {
	s := NewSet(newEndpoints(2, 1), Options{Policy: StickyCookie, QueueTimeout: 300 * time.Millisecond})
	held0, held1 := acquireOn(t, s, 0), acquireOn(t, s, 1)
	first := acquireAsync(context.Background(), s, keyOn(t, s, 0), new(Tried))
	waitQueued(t, s, 1)
	second := acquireAsync(context.Background(), s, keyOn(t, s, 1), new(Tried))
	waitQueued(t, s, 2)
	s.Release(held1, 0, OK)
	r := <-second
	if r.err != nil || r.ep != held1 {
		t.Errorf("waiter for the freed endpoint = %v, %v, %v; want endpoint 1, nil", r.ep, r.wait, r.err)
	} else {
		s.Release(r.ep, 0, OK)
	}
	select {
	case r = <-first:
	case <-time.After(time.Second):
		t.Error("waiter for the busy endpoint still waiting after its queue timeout")
		s.Release(held0, 0, OK)
		r = <-first
		held0 = nil
	}
	if r.err == nil {
		s.Release(r.ep, 0, OK)
	}
	if held0 != nil {
		s.Release(held0, 0, OK)
	}
}

// TestReleaseWakesWaiterThatCanUseItWithEjections frees an endpoint that
// the second of two waiters picks but the first does not, where pick's
// ejection rules decide (it ignores ejection when that leaves a request no
// candidate, or when most endpoints are ejected): the second must get it.
func TestReleaseWakesWaiterThatCanUseItWithEjections(t *testing.T) {

	cases := []struct {
		name   string
		policy string
		n      int // endpoints, limit 1 each
		// setup ejects and holds endpoints, and returns the two waiters'
		// keys and tried sets and the endpoint to free.
		setup func(t *testing.T, s *Set) (keys [2]string, tried [2]*Tried, free *Endpoint)
	}{
		{"retry whose only candidate is ejected", P2C, 2, func(t *testing.T, s *Set) ([2]string, [2]*Tried, *Endpoint) {
			eps := s.Endpoints()
			eject(t, s, 0)
			acquireOn(t, s, 0)
			acquireOn(t, s, 1)
			// The first waiter may not use ejected endpoint 0; the second
			// tried endpoint 1, so endpoint 0 is all it has.
			return [2]string{}, [2]*Tried{new(Tried), triedOf(eps[1])}, eps[0]
		}},
		{"sticky key on an ejected endpoint in panic mode", StickyCookie, 3, func(t *testing.T, s *Set) ([2]string, [2]*Tried, *Endpoint) {
			keys := [2]string{keyOn(t, s, 0), keyOn(t, s, 2)}
			eject(t, s, 0)
			eject(t, s, 1)
			for i := range 3 {
				acquireOn(t, s, i)
			}
			// Two of three are ejected, so pick ignores ejection and the
			// first waiter's key stays on endpoint 0.
			return keys, [2]*Tried{new(Tried), new(Tried)}, s.Endpoints()[2]
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := NewSet(newEndpoints(tc.n, 1), Options{Policy: tc.policy, QueueTimeout: time.Second})
				keys, tried, free := tc.setup(t, s)
				first := acquireAsync(context.Background(), s, keys[0], tried[0])
				synctest.Wait()
				second := acquireAsync(context.Background(), s, keys[1], tried[1])
				synctest.Wait()
				if q := s.Queued(); q != 2 {
					t.Fatalf("Queued = %d, want 2", q)
				}
				s.Release(free, 0, OK)
				synctest.Wait()
				select {
				case r := <-second:
					if r.err != nil || r.ep != free {
						t.Errorf("waiter that may use the freed endpoint = %v, %v; want it, nil", r.ep, r.err)
					} else {
						s.Release(r.ep, 0, OK)
					}
				default:
					t.Error("waiter that may use the freed endpoint not woken")
					if r := <-second; r.err == nil {
						s.Release(r.ep, 0, OK)
					}
				}
				for _, e := range s.Endpoints() {
					if e != free {
						s.Release(e, 0, OK)
					}
				}
				if r := <-first; r.err == nil {
					s.Release(r.ep, 0, OK)
				}
			})
		})
	}
}

// TestUpdateWakesQueuedForNewEndpoint queues a request on a busy endpoint;
// an Update adding a free one must hand it over at once.
func TestUpdateWakesQueuedForNewEndpoint(t *testing.T) {
	for _, policy := range []string{P2C, RoundRobin, StickyHeader} {
		t.Run(policy, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				eps := newEndpoints(2, 1)
				a, b := eps[0], eps[1]
				opts := Options{Policy: policy, QueueTimeout: time.Minute}
				s := NewSet([]*Endpoint{a}, opts)
				key := ""
				if policy == StickyHeader {
					key = keyOn(t, NewSet(eps, opts), 1) // goes to b once b is there
				}
				held := acquireOn(t, s, 0)
				res := acquireAsync(context.Background(), s, key, new(Tried))
				synctest.Wait()
				if q := s.Queued(); q != 1 {
					t.Fatalf("Queued = %d, want 1", q)
				}
				time.Sleep(10 * time.Millisecond)
				s.Update([]*Endpoint{a, b}, opts)
				synctest.Wait()
				select {
				case r := <-res:
					if r.err != nil || r.ep != b || r.wait != 10*time.Millisecond {
						t.Errorf("queued Acquire = %v, %v, %v; want the new endpoint after 10ms, nil", r.ep, r.wait, r.err)
					}
					if r.err == nil {
						s.Release(r.ep, 0, OK)
					}
				default:
					t.Error("queued request still waiting after Update added a free endpoint")
					s.Release(held, 0, OK)
					if r := <-res; r.err == nil {
						s.Release(r.ep, 0, OK)
					}
					return
				}
				if q := s.Queued(); q != 0 {
					t.Errorf("Queued = %d", q)
				}
				s.Release(held, 0, OK)
			})
		})
	}
}

// TestUpdateToNoEndpointsFailsQueued removes every endpoint while a
// request waits: it must fail now, not at its queue timeout.
func TestUpdateToNoEndpointsFailsQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := Options{QueueTimeout: time.Minute}
		s := NewSet(newEndpoints(1, 1), opts)
		held := acquireOn(t, s, 0)
		res := acquireAsync(context.Background(), s, "", new(Tried))
		synctest.Wait()
		if q := s.Queued(); q != 1 {
			t.Fatalf("Queued = %d, want 1", q)
		}
		start := time.Now()
		time.Sleep(10 * time.Millisecond)
		s.Update(nil, opts)
		synctest.Wait()
		select {
		case r := <-res:
			if !errors.Is(r.err, ErrNoEndpoint) || r.ep != nil {
				t.Errorf("queued Acquire = %v, %v; want nil, ErrNoEndpoint", r.ep, r.err)
			}
			if d := time.Since(start); d != 10*time.Millisecond {
				t.Errorf("queued Acquire failed after %v, want 10ms", d)
			}
		default:
			t.Error("queued request still waiting after Update removed every endpoint")
			s.Update([]*Endpoint{held}, opts)
			s.Release(held, 0, OK)
			if r := <-res; r.err == nil {
				s.Release(r.ep, 0, OK)
			}
			return
		}
		if q := s.Queued(); q != 0 {
			t.Errorf("Queued = %d", q)
		}
		s.Release(held, 0, OK)
	})
}

// TestWaitReportedWhenQueueEndsWithNoEndpoint: Acquire's wait is how long
// the request waited, whatever ended the wait.
func TestWaitReportedWhenQueueEndsWithNoEndpoint(t *testing.T) {

	synctest.Test(t, func(t *testing.T) {
		opts := Options{QueueTimeout: time.Minute}
		s := NewSet(newEndpoints(1, 1), opts)
		held := acquireOn(t, s, 0)
		res := acquireAsync(context.Background(), s, "", new(Tried))
		synctest.Wait()
		time.Sleep(10 * time.Millisecond)
		s.Update(nil, opts)
		r := <-res
		if !errors.Is(r.err, ErrNoEndpoint) || r.wait != 10*time.Millisecond {
			t.Errorf("queued Acquire = %v, waited %v; want ErrNoEndpoint, 10ms", r.err, r.wait)
		}
		s.Release(held, 0, OK)
	})
}

func TestStickyKey(t *testing.T) {
	cases := []struct {
		name, policy, keyName string
		header, cookie        string // request's X-Session header and sid cookie
		want                  string
	}{
		{"header", StickyHeader, "X-Session", "abc", "", "abc"},
		{"header name any case", StickyHeader, "x-session", "abc", "", "abc"},
		{"header absent", StickyHeader, "X-Session", "", "abc", ""},
		{"cookie", StickyCookie, "sid", "", "xyz", "xyz"},
		{"cookie absent", StickyCookie, "sid", "abc", "", ""},
		{"other cookie name", StickyCookie, "other", "", "xyz", ""},
		{"not sticky", P2C, "X-Session", "abc", "xyz", ""},
		{"round robin", RoundRobin, "sid", "abc", "xyz", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			if tc.header != "" {
				r.Header.Set("X-Session", tc.header)
			}
			if tc.cookie != "" {
				r.AddCookie(&http.Cookie{Name: "sid", Value: tc.cookie})
			}
			if got := StickyKey(tc.policy, tc.keyName, r); got != tc.want {
				t.Errorf("StickyKey(%q, %q) = %q, want %q", tc.policy, tc.keyName, got, tc.want)
			}
		})
	}
}
