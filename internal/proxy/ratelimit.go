package proxy

import (
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// limiter is nginx's limit_req with nodelay, per app: each client address
// gets a bucket of Burst requests refilled at Rate per second; a request
// finding it empty gets 429.
type limiter struct {
	mu      sync.Mutex
	rate    float64
	burst   float64
	buckets map[netip.Addr]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// maxBuckets bounds the memory one app's limiter may use; past it, idle
// buckets are dropped first and, if need be, all.
const maxBuckets = 100000

func (l *limiter) set(rate float64, burst int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rate, l.burst = rate, float64(max(burst, 1))
	if l.buckets == nil {
		l.buckets = map[netip.Addr]*bucket{}
	}
}

// allow takes a token for ip, or says how long until one is there.
func (l *limiter) allow(ip netip.Addr, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rate <= 0 {
		return true, 0
	}
	b := l.buckets[ip]
	if b == nil {
		if len(l.buckets) >= maxBuckets {
			l.sweep(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[ip] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// sweep drops buckets that would be full again anyway.
func (l *limiter) sweep(now time.Time) {
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for ip, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, ip)
		}
	}
	if len(l.buckets) >= maxBuckets {
		clear(l.buckets)
	}
	l.swept = now
}

// clientAddr is the address a request is limited by: the peer, or, behind
// a trusted proxy, the last address in X-Forwarded-For that is not one.
func (p *Proxy) clientAddr(r *http.Request) netip.Addr {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	ip, _ := netip.ParseAddr(host)
	ip = ip.Unmap()
	if !p.trusted(host) {
		return ip
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h := strings.TrimSpace(hops[i])
		if a, err := netip.ParseAddr(h); err == nil {
			if !p.trusted(h) {
				return a.Unmap()
			}
		}
	}
	return ip
}

func tooMany(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	http.Error(w, "429 too many requests", http.StatusTooManyRequests)
}
