package proxy

import (
	"net"
	"slices"
	"strings"
	"time"

	"github.com/herd-run/herd/internal/balance"
	"github.com/herd-run/herd/internal/static"
)

// Route sends requests for some hosts and a path prefix to an app's
// endpoints.
type Route struct {
	App string
	// Hosts are exact names ("shop.example.com") or wildcards
	// ("*.example.com", which matches any name ending in ".example.com").
	// An empty list matches no host.
	Hosts []string
	// Prefix is a path prefix; "" and "/" match every path.
	Prefix string
	// Endpoints are the app's ready workers on all nodes.
	Endpoints []Endpoint
	// Balance is "p2c" (default), "rr", "sticky-cookie=NAME" or
	// "sticky-header=NAME".
	Balance string
	// Concurrency is how many requests one worker takes at once; 0 means
	// no limit.
	Concurrency int
	// MaxQueue and QueueTimeout bound the wait when every worker is busy;
	// zero means the defaults (1024, 30 s).
	MaxQueue     int
	QueueTimeout time.Duration
	// Static are URL prefixes answered from release files instead of the
	// app (first match wins).
	Static []StaticMount
	// Cache turns on the response cache for the app.
	Cache bool
	// NoBuffering passes bodies through as they come instead of holding
	// them whole.
	NoBuffering bool
	// MaxBody is the largest request body accepted (0: 16 MiB).
	MaxBody int64
	// HTTPSRedirect sends plain-HTTP requests to HTTPS (308); HSTS adds
	// Strict-Transport-Security to HTTPS answers.
	HTTPSRedirect bool
	HSTS          bool
	// RateLimit is requests per second per client address (0: none), with
	// a burst of RateBurst.
	RateLimit float64
	RateBurst int
}

// StaticMount serves a URL prefix from release directories, the first
// that has the file winning (the desired release first, then older ones
// still running somewhere).
type StaticMount struct {
	Prefix string // "/static/"
	Dirs   []*static.Dir
}

// Endpoint is one ready worker.
type Endpoint struct {
	Addr    string // host:port
	Node    string
	Worker  string
	Release string // the release it runs (cache entries are keyed by it)
}

// route is a Route as the table uses it: with the live endpoint set and
// the per-app counters.
type route struct {
	Route
	set        *balance.Set
	policy     string // balance policy without its NAME
	stickyName string
	app        *appStats
	retry      *retryBudget
	releases   map[string]bool // releases the app's endpoints run
}

// live reports whether a release still serves the app (for the cache).
func (r *route) live(release string) bool { return r.releases[release] }

// table is an immutable routing table; the proxy swaps whole tables, so a
// request keeps the table it started with.
type table struct {
	exact map[string][]*route // host -> routes, longest prefix first
	wild  []wildRoutes        // longest suffix first
}

type wildRoutes struct {
	suffix string // ".example.com"
	routes []*route
}

func newTable(routes []*route) *table {
	t := &table{exact: map[string][]*route{}}
	wild := map[string][]*route{}
	for _, r := range routes {
		rt := r.Route
		for _, h := range rt.Hosts {
			h = strings.ToLower(h)
			if suffix, ok := strings.CutPrefix(h, "*"); ok {
				wild[suffix] = append(wild[suffix], r)
			} else {
				t.exact[h] = append(t.exact[h], r)
			}
		}
	}
	byPrefix := func(a, b *route) int { return len(b.Prefix) - len(a.Prefix) }
	for _, rs := range t.exact {
		slices.SortStableFunc(rs, byPrefix)
	}
	for suffix, rs := range wild {
		slices.SortStableFunc(rs, byPrefix)
		t.wild = append(t.wild, wildRoutes{suffix: suffix, routes: rs})
	}
	slices.SortFunc(t.wild, func(a, b wildRoutes) int { return len(b.suffix) - len(a.suffix) })
	return t
}

// match finds the route for a request: an exact host before a wildcard one,
// then the longest path prefix. nil means no app serves it.
func (t *table) match(hostport, path string) *route {
	host := strings.ToLower(stripPort(hostport))
	if r := matchPrefix(t.exact[host], path); r != nil {
		return r
	}
	for _, w := range t.wild {
		if strings.HasSuffix(host, w.suffix) && len(host) > len(w.suffix) {
			if r := matchPrefix(w.routes, path); r != nil {
				return r
			}
		}
	}
	return nil
}

func matchPrefix(rs []*route, path string) *route {
	for _, r := range rs {
		if r.Prefix == "/" || path == strings.TrimSuffix(r.Prefix, "/") || strings.HasPrefix(path, r.Prefix) {
			return r
		}
	}
	return nil
}

// normPrefix makes "/api" and "/api/" both match "/api" and "/api/x" but
// not "/apix".
func normPrefix(p string) string {
	if p == "" || p == "/" {
		return "/"
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}

func stripPort(hostport string) string {
	// SplitHostPort allocates its error for a Host without a port, the
	// commonest form.
	if strings.IndexByte(hostport, ':') >= 0 {
		if host, _, err := net.SplitHostPort(hostport); err == nil {
			hostport = host
		}
	}
	return strings.TrimSuffix(hostport, ".")
}

// each calls f for every route (a route with several hosts more than once).
func (t *table) each(f func(*route)) {
	for _, rs := range t.exact {
		for _, r := range rs {
			f(r)
		}
	}
	for _, w := range t.wild {
		for _, r := range w.routes {
			f(r)
		}
	}
}
