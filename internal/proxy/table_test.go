package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/herd-run/herd/internal/balance"
)

// newTestTable builds a table over routes as SetRoutes does, without
// endpoint sets.
func newTestTable(routes []Route) *table {
	rs := make([]*route, len(routes))
	for i, rt := range routes {
		rt.Prefix = normPrefix(rt.Prefix)
		rs[i] = &route{Route: rt}
	}
	return newTable(rs)
}

func appOf(r *route) string {
	if r == nil {
		return "<nil>"
	}
	return r.App
}

func TestTableMatch(t *testing.T) {
	tab := newTestTable([]Route{
		// Listed before the exact route so that order cannot be what wins.
		{App: "wild", Hosts: []string{"*.example.com"}},
		{App: "eu", Hosts: []string{"*.eu.example.com"}},
		{App: "shop", Hosts: []string{"shop.example.com"}},
		{App: "upper", Hosts: []string{"Upper.Example.COM"}},
		// Same host, prefixes listed shortest first.
		{App: "root", Hosts: []string{"api.test"}, Prefix: "/"},
		{App: "api", Hosts: []string{"api.test"}, Prefix: "/api"},
		{App: "api-v2", Hosts: []string{"api.test"}, Prefix: "/api/v2/"},
		{App: "docs", Hosts: []string{"api.test"}, Prefix: "docs"},
		{App: "none", Hosts: nil},
		{App: "blog", Hosts: []string{"blog.test"}, Prefix: "/blog"},
	})
	tests := []struct {
		host, path string
		want       string
	}{
		// Exact beats wildcard.
		{"shop.example.com", "/", "shop"},
		{"other.example.com", "/", "wild"},
		// Wildcards match one or more labels, never the bare domain.
		{"a.example.com", "/", "wild"},
		{"a.b.example.com", "/x", "wild"},
		{"example.com", "/", "<nil>"},
		{".example.com", "/", "<nil>"},
		{"badexample.com", "/", "<nil>"},
		// The longest wildcard suffix wins.
		{"a.eu.example.com", "/", "eu"},
		{"eu.example.com", "/", "wild"},
		// Case, port and a trailing dot do not matter.
		{"SHOP.Example.Com", "/", "shop"},
		{"shop.example.com:8080", "/", "shop"},
		{"shop.example.com.", "/", "shop"},
		{"A.EXAMPLE.COM:443", "/", "wild"},
		{"upper.example.com", "/", "upper"},
		// The longest prefix of the host wins.
		{"api.test", "/", "root"},
		{"api.test", "/other", "root"},
		{"api.test", "/api", "api"},
		{"api.test", "/api/", "api"},
		{"api.test", "/api/x", "api"},
		{"api.test", "/apix", "root"},
		{"api.test", "/api/v2", "api-v2"},
		{"api.test", "/api/v2/users", "api-v2"},
		{"api.test", "/api/v20", "api"},
		{"api.test", "/docs/intro", "docs"},
		// A prefix without a catch-all route leaves other paths unserved.
		{"blog.test", "/blog", "blog"},
		{"blog.test", "/blog/post", "blog"},
		{"blog.test", "/blogx", "<nil>"},
		{"blog.test", "/", "<nil>"},
		// Unknown hosts.
		{"unknown.test", "/", "<nil>"},
		{"", "/", "<nil>"},
		{"com", "/", "<nil>"},
	}
	for _, tt := range tests {
		if got := appOf(tab.match(tt.host, tt.path)); got != tt.want {
			t.Errorf("match(%q, %q) = %s, want %s", tt.host, tt.path, got, tt.want)
		}
	}
}

func TestTableMatchTrailingDotWithPort(t *testing.T) {

	tab := newTestTable([]Route{
		{App: "wild", Hosts: []string{"*.example.com"}},
		{App: "shop", Hosts: []string{"shop.example.com"}},
	})
	for host, want := range map[string]string{
		"shop.example.com.:8080": "shop",
		"a.example.com.:443":     "wild",
	} {
		if got := appOf(tab.match(host, "/")); got != want {
			t.Errorf("match(%q, /) = %s, want %s", host, got, want)
		}
	}
}

func TestNormPrefix(t *testing.T) {
	for in, want := range map[string]string{
		"":      "/",
		"/":     "/",
		"/api":  "/api/",
		"/api/": "/api/",
		"api":   "/api/",
		"/a/b":  "/a/b/",
	} {
		if got := normPrefix(in); got != want {
			t.Errorf("normPrefix(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEmptyTable(t *testing.T) {
	if r := newTable(nil).match("shop.example.com", "/"); r != nil {
		t.Fatalf("empty table matched %q", r.App)
	}
}

// TestSetRoutesTable checks that SetRoutes builds the table matching uses
// (prefixes normalised, one endpoint set per app).
func TestSetRoutesTable(t *testing.T) {
	p := New(Config{})
	p.SetRoutes([]Route{
		{App: "root", Hosts: []string{"api.test"}, Endpoints: []Endpoint{{Addr: "10.0.0.1:8000"}}},
		{App: "api", Hosts: []string{"api.test"}, Prefix: "api", Endpoints: []Endpoint{{Addr: "10.0.0.2:8000"}, {Addr: "10.0.0.3:8000"}}},
	})
	defer p.SetRoutes(nil)
	tab := p.table.Load()
	for path, want := range map[string]string{"/": "root", "/api": "api", "/api/x": "api", "/apix": "root"} {
		r := tab.match("api.test", path)
		if appOf(r) != want {
			t.Errorf("match(api.test, %q) = %s, want %s", path, appOf(r), want)
			continue
		}
		if n := map[string]int{"root": 1, "api": 2}[want]; r.set.Len() != n {
			t.Errorf("route %s has %d endpoints, want %d", want, r.set.Len(), n)
		}
	}
}

// The request path must not allocate for an ordinary (lower-case) Host:
// matching, taking an endpoint and giving it back.
func TestMatchAndAcquireDoNotAllocate(t *testing.T) {
	p := New(Config{})
	p.SetRoutes(benchRoutes())
	defer p.SetRoutes(nil)
	tab := p.table.Load()
	ctx := context.Background()
	var tried balance.Tried
	allocs := testing.AllocsPerRun(100, func() {
		r := tab.match("app42.example.com:8080", "/api/v1/users")
		if r == nil {
			panic("no route")
		}
		tried = balance.Tried{}
		ep, _, err := r.set.Acquire(ctx, "", &tried)
		if err != nil {
			panic(err)
		}
		r.set.Release(ep, time.Millisecond, balance.OK)
	})
	if allocs != 0 {
		t.Fatalf("match+Acquire+Release allocates %v times per request, want 0", allocs)
	}
}

// TestMatchWithoutPortDoesNotAllocate: most Host headers carry no port.
func TestMatchWithoutPortDoesNotAllocate(t *testing.T) {

	tab := newTestTable(benchRoutes())
	for _, host := range []string{"app42.example.com", "shop.tenant19.example.net", "nowhere.example.org"} {
		allocs := testing.AllocsPerRun(100, func() { tab.match(host, "/") })
		if allocs != 0 {
			t.Errorf("match(%q, /) allocates %v times per request, want 0", host, allocs)
		}
	}
}
