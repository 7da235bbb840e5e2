package balance

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// benchKeys are the sticky keys the benchmarks cycle through.
var benchKeys = func() []string {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = sessionKey(i)
	}
	return keys
}()

func benchmarkAcquireRelease(b *testing.B, policy string) {
	key := func(i int) string {
		if policy == StickyHeader || policy == StickyCookie {
			return benchKeys[i%len(benchKeys)]
		}
		return ""
	}
	b.Run("serial", func(b *testing.B) {
		s := NewSet(newEndpoints(8, 0), Options{Policy: policy})
		ctx := context.Background()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			var tried Tried // one per request, as the proxy has it
			ep, _, err := s.Acquire(ctx, key(i), &tried)
			if err != nil {
				b.Fatal(err)
			}
			s.Release(ep, time.Millisecond, OK)
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		s := NewSet(newEndpoints(8, 0), Options{Policy: policy})
		ctx := context.Background()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				var tried Tried
				ep, _, err := s.Acquire(ctx, key(i), &tried)
				if err != nil {
					b.Error(err)
					return
				}
				s.Release(ep, time.Millisecond, OK)
				i++
			}
		})
	})
}

func BenchmarkAcquireReleaseP2C(b *testing.B)    { benchmarkAcquireRelease(b, P2C) }
func BenchmarkAcquireReleaseRR(b *testing.B)     { benchmarkAcquireRelease(b, RoundRobin) }
func BenchmarkAcquireReleaseSticky(b *testing.B) { benchmarkAcquireRelease(b, StickyHeader) }

// TestPickAllocatesNothing measures the balancer's own work per request
// (the Tried is reused, so only Acquire and Release can allocate).
func TestPickAllocatesNothing(t *testing.T) {
	for _, policy := range []string{P2C, RoundRobin, StickyHeader} {
		t.Run(policy, func(t *testing.T) {
			s := NewSet(newEndpoints(8, 0), Options{Policy: policy})
			ctx := context.Background()
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("X-Session", "user-42")
			var tried Tried
			allocs := testing.AllocsPerRun(1000, func() {
				tried = Tried{}
				ep, _, err := s.Acquire(ctx, StickyKey(policy, "X-Session", r), &tried)
				if err != nil {
					t.Fatal(err)
				}
				s.Release(ep, time.Millisecond, OK)
			})
			if allocs != 0 {
				t.Errorf("Acquire+Release allocates %v times per request", allocs)
			}
		})
	}
}

// TestAcquireWithRequestTriedAllocatesNothing calls Acquire as the proxy
// does, with a Tried declared per request.
func TestAcquireWithRequestTriedAllocatesNothing(t *testing.T) {

	for _, policy := range []string{P2C, RoundRobin, StickyHeader} {
		t.Run(policy, func(t *testing.T) {
			s := NewSet(newEndpoints(8, 0), Options{Policy: policy})
			ctx := context.Background()
			allocs := testing.AllocsPerRun(1000, func() {
				var tried Tried
				ep, _, err := s.Acquire(ctx, "user-42", &tried)
				if err != nil {
					t.Fatal(err)
				}
				s.Release(ep, time.Millisecond, OK)
			})
			if allocs != 0 {
				t.Errorf("Acquire+Release with a fresh Tried allocates %v times per request", allocs)
			}
		})
	}
}
