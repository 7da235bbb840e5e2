package balance

import (
	"math"
	"testing"
	"time"
)

// approx reports whether two nanosecond counts agree up to float rounding.
func approx(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b)) }

func TestEndpointLimit(t *testing.T) {
	cases := []struct {
		name  string
		limit int
		want  int // slots taken out of 100 tries
	}{
		{"no limit", 0, 100},
		{"negative is no limit", -1, 100},
		{"one", 1, 1},
		{"three", 3, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEndpoint("10.0.0.1:8080", "n", "w", tc.limit)
			got := 0
			for range 100 {
				if e.tryAcquire() {
					got++
				}
			}
			if got != tc.want || e.InFlight() != int64(tc.want) {
				t.Errorf("took %d slots (InFlight %d), want %d", got, e.InFlight(), tc.want)
			}
			if room := e.hasRoom(); room != (tc.want == 100) {
				t.Errorf("hasRoom = %v with %d in flight", room, e.InFlight())
			}
		})
	}
}

func TestEndpointSetLimit(t *testing.T) {
	e := NewEndpoint("10.0.0.1:8080", "n", "w", 1)
	if !e.tryAcquire() || e.tryAcquire() {
		t.Fatal("limit 1 did not allow exactly one slot")
	}
	e.SetLimit(2)
	if !e.tryAcquire() || e.tryAcquire() {
		t.Fatal("limit raised to 2 did not allow exactly one more slot")
	}
	e.SetLimit(1)
	if e.hasRoom() || e.tryAcquire() {
		t.Error("limit lowered below the in-flight count still has room")
	}
	e.SetLimit(0)
	if !e.hasRoom() || !e.tryAcquire() {
		t.Error("limit 0 has no room")
	}
}

func TestLatencyAverage(t *testing.T) {
	ms := float64(time.Millisecond)
	t0 := time.Unix(1000, 0).UnixNano()
	at := func(d time.Duration) int64 { return t0 + int64(d) }
	e1 := math.Exp(-1) // weight of the old average one decay period on
	type sample struct {
		d  time.Duration
		at int64
	}
	cases := []struct {
		name    string
		samples []sample
		now     int64
		want    float64 // nanoseconds
	}{
		{"none", nil, t0, 0},
		{"first sample sets it", []sample{{10 * time.Millisecond, t0}}, t0, 10 * ms},
		{"higher sample replaces it", []sample{{10 * time.Millisecond, t0}, {30 * time.Millisecond, at(time.Millisecond)}}, at(time.Millisecond), 30 * ms},
		{"lower sample at once counts nothing", []sample{{10 * time.Millisecond, t0}, {2 * time.Millisecond, t0}}, t0, 10 * ms},
		{"lower sample a decay period on", []sample{{10 * time.Millisecond, t0}, {2 * time.Millisecond, at(decay)}}, at(decay), 10*ms*e1 + 2*ms*(1-e1)},
		{"lower sample long after", []sample{{10 * time.Millisecond, t0}, {2 * time.Millisecond, at(100 * decay)}}, at(100 * decay), 2 * ms},
		{"idle a decay period", []sample{{10 * time.Millisecond, t0}}, at(decay), 10 * ms * e1},
		{"idle long", []sample{{10 * time.Millisecond, t0}}, at(50 * decay), 10 * ms * math.Exp(-50)},
		{"idle since the last sample", []sample{{30 * time.Millisecond, t0}, {40 * time.Millisecond, at(decay)}}, at(2 * decay), 40 * ms * e1},
		{"read before the last sample", []sample{{10 * time.Millisecond, t0}}, at(-time.Second), 10 * ms},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEndpoint("10.0.0.1:8080", "n", "w", 0)
			for _, s := range tc.samples {
				e.observe(s.d, s.at)
			}
			if got := e.latency(tc.now); !approx(got, tc.want) {
				t.Errorf("latency = %v, want %v", time.Duration(got), time.Duration(tc.want))
			}
		})
	}
}

func TestScore(t *testing.T) {
	t0 := time.Unix(1000, 0).UnixNano()
	cases := []struct {
		name     string
		latency  time.Duration // 0: not measured
		idle     time.Duration // since the sample
		inflight int
		want     float64
	}{
		{"unmeasured idle", 0, 0, 0, 0},
		{"unmeasured busy", 0, 0, 3, 4 * float64(defaultLatency)},
		{"measured idle", 20 * time.Millisecond, 0, 0, float64(20 * time.Millisecond)},
		{"measured busy", 20 * time.Millisecond, 0, 2, float64(60 * time.Millisecond)},
		{"decayed", 20 * time.Millisecond, decay, 1, 2 * float64(20*time.Millisecond) * math.Exp(-1)},
		{"decayed below the default", 20 * time.Millisecond, 10 * decay, 0, float64(20*time.Millisecond) * math.Exp(-10)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEndpoint("10.0.0.1:8080", "n", "w", 0)
			if tc.latency > 0 {
				e.observe(tc.latency, t0)
			}
			for range tc.inflight {
				e.tryAcquire()
			}
			if got := e.score(t0 + int64(tc.idle)); !approx(got, tc.want) {
				t.Errorf("score = %v, want %v", time.Duration(got), time.Duration(tc.want))
			}
		})
	}
}

func TestRecordStats(t *testing.T) {
	e := NewEndpoint("10.0.0.1:8080", "n", "w", 0)
	now := time.Unix(1000, 0)
	for _, o := range []Outcome{OK, ServerError, Canceled, ConnectFailed, OK, Canceled} {
		e.record(o, now)
	}
	if req, errs := e.Stats(); req != 6 || errs != 2 {
		t.Errorf("Stats = %d requests, %d errors; want 6, 2", req, errs)
	}
}

func TestRecordEjects(t *testing.T) {
	cases := []struct {
		name     string
		outcomes []Outcome
		// ejectAt is the index of the outcome that ejects (-1: none).
		ejectAt int
	}{
		{"connect failures", []Outcome{ConnectFailed, ConnectFailed}, 1},
		{"server errors", rep(ServerError, 5), 4},
		{"four server errors", rep(ServerError, 4), -1},
		{"OK between", []Outcome{ServerError, ServerError, ServerError, ServerError, OK, ServerError, ServerError, ServerError, ServerError}, -1},
		{"cancels do not count", []Outcome{ConnectFailed, Canceled, Canceled, Canceled}, -1},
		{"cancels do not reset", []Outcome{ConnectFailed, Canceled, ConnectFailed}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEndpoint("10.0.0.1:8080", "n", "w", 0)
			now := time.Unix(1000, 0)
			for i, o := range tc.outcomes {
				if got := e.record(o, now); got != (i == tc.ejectAt) {
					t.Errorf("record #%d (%d) ejected = %v", i, o, got)
				}
			}
			if got := e.Ejected(now.UnixNano()); got != (tc.ejectAt >= 0) {
				t.Errorf("Ejected = %v", got)
			}
		})
	}
}

func TestEjectionBackoff(t *testing.T) {
	e := NewEndpoint("10.0.0.1:8080", "n", "w", 0)
	// ejectAt fails e until it is ejected at now and returns for how long.
	ejectAt := func(now time.Time) time.Duration {
		t.Helper()
		for range connectFailuresToEject - 1 {
			e.record(ConnectFailed, now)
		}
		if !e.record(ConnectFailed, now) {
			t.Fatalf("not ejected at %v", now)
		}
		until := e.ejectedUntil.Load()
		if !e.Ejected(now.UnixNano()) || !e.Ejected(until-1) || e.Ejected(until) {
			t.Fatalf("Ejected wrong during the ejection from %v to %v", now, time.Unix(0, until))
		}
		return time.Duration(until - now.UnixNano())
	}
	now := time.Unix(1000, 0)
	var last time.Duration
	for i := range 30 {
		d := ejectAt(now)
		if want := min(ejectBase*time.Duration(i+1), ejectMax); d != want {
			t.Fatalf("ejection #%d lasts %v, want %v", i+1, d, want)
		}
		if d < last || (d == last && d != ejectMax) {
			t.Fatalf("ejection #%d lasts %v, the one before %v", i+1, d, last)
		}
		last = d
		// Back, and failing again soon after.
		now = now.Add(d + time.Second)
		e.record(OK, now)
	}

	// Healthy for a while, but not for ejectMax: the backoff stays long.
	until := time.Unix(0, e.ejectedUntil.Load())
	now = until.Add(ejectMax / 2)
	e.record(OK, now)
	if d := ejectAt(now); d != ejectMax {
		t.Errorf("ejection after a short healthy spell lasts %v, want %v", d, ejectMax)
	}

	// Healthy for longer than ejectMax: the next ejection starts short.
	until = time.Unix(0, e.ejectedUntil.Load())
	now = until.Add(ejectMax + time.Second)
	e.record(OK, now)
	if d := ejectAt(now); d != ejectBase {
		t.Errorf("ejection after a long healthy spell lasts %v, want %v", d, ejectBase)
	}
}

// TestNotEjectedAgainWhileEjected fails the requests still in flight when
// an endpoint was ejected: they must not eject it again.
func TestNotEjectedAgainWhileEjected(t *testing.T) {
	e := NewEndpoint("10.0.0.1:8080", "n", "w", 0)
	now := time.Unix(1000, 0)
	ejections := 0
	for range 10 {
		if e.record(ConnectFailed, now) {
			ejections++
		}
	}
	if d := time.Duration(e.ejectedUntil.Load() - now.UnixNano()); ejections != 1 || d != ejectBase {
		t.Errorf("10 connect failures at once: ejected %d times, for %v; want once, for %v", ejections, d, ejectBase)
	}
}
