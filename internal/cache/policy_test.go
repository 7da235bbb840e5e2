package cache

import (
	"net/http"
	"testing"
	"time"
)

// storedAfter reports whether a response with the header pairs, fetched
// for req, was stored: whether it answers a plain GET of the same URL.
func storedAfter(t *testing.T, status int, req func() *http.Request, header ...string) bool {
	t.Helper()
	c := New(0, newClock().now)
	o := newOrigin("x", header...)
	o.status = status
	do(t, c, req(), o)
	_, hit := do(t, c, get("/"), o)
	if n := o.calls.Load(); hit != (n == 1) {
		t.Fatalf("hit = %v after %d fetches", hit, n)
	}
	return hit
}

func TestCacheability(t *testing.T) {
	plain := func() *http.Request { return get("/") }
	withCookie := func() *http.Request { return get("/", "Cookie", "sid=1") }
	withAuth := func() *http.Request { return get("/", "Authorization", "Bearer t") }
	cases := []struct {
		name   string
		status int
		req    func() *http.Request
		header []string
		want   bool
	}{
		{"max-age", 200, plain, []string{"Cache-Control", "max-age=60"}, true},
		{"public max-age", 200, plain, []string{"Cache-Control", "public, max-age=60"}, true},
		{"203", 203, plain, []string{"Cache-Control", "max-age=60"}, true},
		{"204", 204, plain, []string{"Cache-Control", "max-age=60"}, true},
		{"300", 300, plain, []string{"Cache-Control", "max-age=60"}, true},
		{"301", 301, plain, []string{"Cache-Control", "max-age=60"}, true},
		{"404", 404, plain, []string{"Cache-Control", "max-age=60"}, true},
		{"410", 410, plain, []string{"Cache-Control", "max-age=60"}, true},
		{"500", 500, plain, []string{"Cache-Control", "max-age=60"}, false},
		{"206", 206, plain, []string{"Cache-Control", "max-age=60"}, false},
		{"302", 302, plain, []string{"Cache-Control", "max-age=60"}, false},
		{"no lifetime", 200, plain, []string{"Content-Type", "text/html"}, false},
		{"public without lifetime", 200, plain, []string{"Cache-Control", "public"}, false},
		{"max-age=0", 200, plain, []string{"Cache-Control", "max-age=0"}, false},
		{"bad max-age", 200, plain, []string{"Cache-Control", "max-age=soon"}, false},
		{"Set-Cookie", 200, plain, []string{"Cache-Control", "public, max-age=60", "Set-Cookie", "sid=2"}, false},
		{"private", 200, plain, []string{"Cache-Control", "private, max-age=60"}, false},
		{"qualified private", 200, plain, []string{"Cache-Control", `max-age=60, private="X-User"`}, false},
		{"no-store", 200, plain, []string{"Cache-Control", "max-age=60, no-store"}, false},
		{"no-cache", 200, plain, []string{"Cache-Control", "max-age=60, no-cache"}, false},
		{"directives case-insensitive", 200, plain, []string{"Cache-Control", "Max-Age=60, No-Store"}, false},
		{"second Cache-Control line", 200, plain, []string{"Cache-Control", "max-age=60", "Cache-Control", "private"}, false},
		{"Vary *", 200, plain, []string{"Cache-Control", "max-age=60", "Vary", "Accept-Encoding, *"}, false},
		{"Authorization", 200, withAuth, []string{"Cache-Control", "max-age=60"}, false},
		{"Authorization, public", 200, withAuth, []string{"Cache-Control", "public, max-age=60"}, true},
		{"Authorization, s-maxage", 200, withAuth, []string{"Cache-Control", "s-maxage=60"}, true},
		{"Cookie", 200, withCookie, []string{"Cache-Control", "max-age=60"}, false},
		{"Cookie, public", 200, withCookie, []string{"Cache-Control", "public, max-age=60"}, true},
		{"Cookie, s-maxage", 200, withCookie, []string{"Cache-Control", "s-maxage=60"}, true},
		{"request no-store", 200, func() *http.Request { return get("/", "Cache-Control", "no-store") }, []string{"Cache-Control", "max-age=60"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := storedAfter(t, tc.status, tc.req, tc.header...); got != tc.want {
				t.Errorf("cached = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestCredentialedLookup: a request with credentials is answered only from
// responses the app marked public, and a not-public entry is kept for the
// requests without.
func TestCredentialedLookup(t *testing.T) {
	c := New(0, newClock().now)
	do(t, c, get("/anon"), newOrigin("anon", "Cache-Control", "max-age=60"))
	do(t, c, get("/pub"), newOrigin("pub", "Cache-Control", "public, max-age=60"))

	user := newOrigin("user page")
	resp, hit := do(t, c, get("/anon", "Cookie", "sid=1"), user)
	if hit || string(resp.Body) != "user page" {
		t.Errorf("cookie request answered from a not-public entry: %q", resp.Body)
	}
	if _, hit := do(t, c, get("/anon", "Authorization", "Basic x"), user); hit {
		t.Error("Authorization request answered from a not-public entry")
	}
	if _, hit := do(t, c, get("/pub", "Cookie", "sid=1"), user); !hit {
		t.Error("cookie request not answered from a public entry")
	}
	if _, hit := do(t, c, get("/anon"), user); !hit {
		t.Error("the anonymous entry was dropped")
	}
}

func TestFreshnessLifetime(t *testing.T) {
	date := t0.Format(http.TimeFormat)
	cases := []struct {
		name   string
		header []string
		fresh  time.Duration // hit just before, miss at
	}{
		{"max-age", []string{"Cache-Control", "max-age=100"}, 100 * time.Second},
		{"s-maxage wins over a longer max-age", []string{"Cache-Control", "max-age=100, s-maxage=10"}, 10 * time.Second},
		{"s-maxage wins over a shorter max-age", []string{"Cache-Control", "max-age=10, s-maxage=100"}, 100 * time.Second},
		{"max-age wins over Expires", []string{"Cache-Control", "max-age=10", "Expires", t0.Add(time.Hour).Format(http.TimeFormat)}, 10 * time.Second},
		{"Expires with Date", []string{"Date", date, "Expires", t0.Add(100 * time.Second).Format(http.TimeFormat)}, 100 * time.Second},
		// The origin's clock is an hour behind: Expires - Date still
		// gives 100s, where Expires - now would have expired it.
		{"Expires with a skewed Date", []string{"Date", t0.Add(-time.Hour).Format(http.TimeFormat), "Expires", t0.Add(-time.Hour + 100*time.Second).Format(http.TimeFormat)}, 100 * time.Second},
		{"Expires without Date", []string{"Expires", t0.Add(50 * time.Second).Format(http.TimeFormat)}, 50 * time.Second},
		{"Age subtracted", []string{"Cache-Control", "max-age=100", "Age", "30"}, 70 * time.Second},
		{"Age subtracted from Expires", []string{"Date", date, "Expires", t0.Add(100 * time.Second).Format(http.TimeFormat), "Age", "40"}, 60 * time.Second},
		{"first max-age counts", []string{"Cache-Control", "max-age=20, max-age=100"}, 20 * time.Second},
		{"quoted max-age", []string{"Cache-Control", `max-age="30"`}, 30 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			c := New(0, clk.now)
			o := newOrigin("x", tc.header...)
			do(t, c, get("/"), o)
			clk.advance(tc.fresh - time.Second)
			if _, hit := do(t, c, get("/"), o); !hit {
				t.Fatalf("miss at %v", tc.fresh-time.Second)
			}
			clk.advance(time.Second)
			if _, hit := do(t, c, get("/"), o); hit {
				t.Fatalf("hit at %v", tc.fresh)
			}
		})
	}
}

func TestNotStoredWhenAlreadyStale(t *testing.T) {
	date := t0.Format(http.TimeFormat)
	for name, header := range map[string][]string{
		"Age over max-age":   {"Cache-Control", "max-age=30", "Age", "30"},
		"Expires before now": {"Expires", t0.Add(-time.Second).Format(http.TimeFormat)},
		"Expires = Date":     {"Date", date, "Expires", date},
		"invalid Expires":    {"Expires", "0"},
	} {
		t.Run(name, func(t *testing.T) {
			if storedAfter(t, 200, func() *http.Request { return get("/") }, header...) {
				t.Error("a stale response was stored")
			}
		})
	}
}

func TestAgeHeaderOnHits(t *testing.T) {
	clk := newClock()
	c := New(0, clk.now)
	o := newOrigin("x", "Cache-Control", "max-age=100", "Age", "30")
	first, _ := do(t, c, get("/"), o)
	if got := first.Header.Get("Age"); got != "30" {
		t.Errorf("fetched response Age = %q, want the origin's 30", got)
	}
	for _, step := range []struct {
		advance time.Duration
		want    string
	}{{0, "30"}, {10 * time.Second, "40"}, {1500 * time.Millisecond, "41"}, {27 * time.Second, "68"}} {
		clk.advance(step.advance)
		resp, hit := do(t, c, get("/"), o)
		if !hit || resp.Header.Get("Age") != step.want {
			t.Errorf("at %v: hit=%v Age=%q, want %s", clk.now().Sub(t0), hit, resp.Header.Get("Age"), step.want)
		}
	}
}

func TestRequestDirectives(t *testing.T) {
	clk := newClock()
	c := New(0, clk.now)
	do(t, c, get("/"), newOrigin("old", "Cache-Control", "max-age=100"))
	clk.advance(10 * time.Second)

	cases := []struct {
		name   string
		header []string
		hit    bool
	}{
		{"plain", nil, true},
		{"max-age above the age", []string{"Cache-Control", "max-age=20"}, true},
		{"max-age equal to the age", []string{"Cache-Control", "max-age=10"}, true},
		{"max-age below the age", []string{"Cache-Control", "max-age=5"}, false},
		{"min-fresh within the lifetime", []string{"Cache-Control", "min-fresh=90"}, true},
		{"min-fresh beyond the lifetime", []string{"Cache-Control", "min-fresh=91"}, false},
		{"no-store", []string{"Cache-Control", "no-store"}, false},
		{"Pragma ignored beside Cache-Control", []string{"Cache-Control", "max-age=60", "Pragma", "no-cache"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := newOrigin("uncacheable") // no lifetime: never replaces the entry
			resp, hit := do(t, c, get("/", tc.header...), o)
			if hit != tc.hit || hit == (string(resp.Body) == "uncacheable") {
				t.Errorf("hit = %v, body %q; want hit = %v", hit, resp.Body, tc.hit)
			}
		})
	}
}

// TestRequestNoCacheRefetches: no-cache (and Pragma: no-cache) skip the
// lookup, and the fresh response replaces the stored one.
func TestRequestNoCacheRefetches(t *testing.T) {
	for name, header := range map[string][]string{
		"Cache-Control": {"Cache-Control", "no-cache"},
		"Pragma":        {"Pragma", "no-cache"},
	} {
		t.Run(name, func(t *testing.T) {
			c := New(0, newClock().now)
			do(t, c, get("/"), newOrigin("old", "Cache-Control", "max-age=100"))
			resp, hit := do(t, c, get("/", header...), newOrigin("new", "Cache-Control", "max-age=100"))
			if hit || string(resp.Body) != "new" {
				t.Fatalf("no-cache request: hit=%v body=%q", hit, resp.Body)
			}
			resp, hit = do(t, c, get("/"), newOrigin("unused"))
			if !hit || string(resp.Body) != "new" || c.Len() != 1 {
				t.Fatalf("after no-cache: hit=%v body=%q Len=%d, want the new response stored", hit, resp.Body, c.Len())
			}
		})
	}
}

func TestRequestNoStoreDoesNotStore(t *testing.T) {
	c := New(0, newClock().now)
	o := newOrigin("x", "Cache-Control", "max-age=100")
	do(t, c, get("/", "Cache-Control", "no-store"), o)
	if c.Len() != 0 {
		t.Fatal("response to a no-store request was stored")
	}
}

func TestDeltaSeconds(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"0":                     0,
		"60":                    time.Minute,
		" 5 ":                   5 * time.Second,
		"-1":                    0,
		"1.5":                   0,
		"":                      0,
		"+5":                    0,
		"99999999999":           maxDelta,
		"999999999999999999999": maxDelta,
	} {
		if got := deltaSeconds(in); got != want {
			t.Errorf("deltaSeconds(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestParseCacheControl(t *testing.T) {
	h := http.Header{"Cache-Control": {`Public, max-age="60", , private="Set-Cookie, X"`, "max-age=5, no-cache"}}
	d := parseCacheControl(h)
	for name, want := range map[string]string{"public": "", "max-age": "60", "private": "Set-Cookie", "no-cache": ""} {
		if got, ok := d[name]; !ok || got != want {
			t.Errorf("%s = %q (present %v), want %q", name, got, ok, want)
		}
	}
	if parseCacheControl(http.Header{}) != nil {
		t.Error("no header gave directives")
	}
}

func TestWithoutHopByHop(t *testing.T) {
	h := http.Header{
		"Connection":    {"close, x-private-hop"},
		"X-Private-Hop": {"1"},
		"Proxy-Foo":     {"1"},
		"Te":            {"trailers"},
		"Content-Type":  {"text/html"},
		"Vary":          {"Accept-Encoding"},
	}
	got := withoutHopByHop(h)
	if len(got) != 2 || got.Get("Content-Type") != "text/html" || got.Get("Vary") != "Accept-Encoding" {
		t.Fatalf("got %v", got)
	}
	got["Content-Type"][0] = "changed"
	if h.Get("Content-Type") != "text/html" {
		t.Fatal("the copy shares values with the original")
	}
}
