package cache

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestKeyOf(t *testing.T) {
	same := []struct{ a, b *http.Request }{
		{get("/p?q=1"), request(http.MethodHead, "/p?q=1")},
		{get("/p"), httptest.NewRequest(http.MethodGet, "http://EXAMPLE.com/p", nil)},
		{get(""), get("/")},
	}
	for _, tc := range same {
		if keyOf("web", tc.a) != keyOf("web", tc.b) {
			t.Errorf("%s %s and %s %s have different keys: %+v, %+v", tc.a.Method, tc.a.URL, tc.b.Method, tc.b.URL, keyOf("web", tc.a), keyOf("web", tc.b))
		}
	}
	tlsReq := get("/p")
	tlsReq.TLS = &tls.ConnectionState{}
	otherHost := get("/p")
	otherHost.Host = "other.example.com"
	different := []struct{ a, b *http.Request }{
		{get("/p"), get("/P")},
		{get("/p?q=1"), get("/p?q=2")},
		{get("/p?q=1&r=2"), get("/p?r=2&q=1")},
		{get("/p"), get("/p?")},
		{get("/a%2Fb"), get("/a/b")},
		{get("/p"), tlsReq},
		{get("/p"), otherHost},
	}
	for _, tc := range different {
		if keyOf("web", tc.a) == keyOf("web", tc.b) {
			t.Errorf("%s and %s share the key %+v", tc.a.URL, tc.b.URL, keyOf("web", tc.a))
		}
	}
	if keyOf("web", get("/")) == keyOf("api", get("/")) {
		t.Error("two apps share a key")
	}
	if got := keyOf("web", get("/a%2Fb?x=%20")); got.uri != "/a%2Fb?x=%20" {
		t.Errorf("uri = %q, want the request's escaped path and raw query", got.uri)
	}
}

func TestVaryKeepsVariantsApart(t *testing.T) {
	c := New(0, newClock().now)
	encodings := []string{"gzip", "br", "identity", ""}
	for _, enc := range encodings {
		o := newOrigin("body:"+enc, "Cache-Control", "max-age=60", "Vary", "Accept-Encoding")
		var r *http.Request
		if enc == "" {
			r = get("/app.js")
		} else {
			r = get("/app.js", "Accept-Encoding", enc)
		}
		if _, hit := do(t, c, r, o); hit {
			t.Fatalf("%q hit before it was stored", enc)
		}
	}
	if c.Len() != len(encodings) {
		t.Fatalf("Len = %d, want %d variants", c.Len(), len(encodings))
	}
	miss := newOrigin("miss")
	for _, enc := range encodings {
		r := get("/app.js")
		if enc != "" {
			r.Header.Set("Accept-Encoding", "  "+enc+" ") // surrounding spaces do not matter
		}
		resp, hit := do(t, c, r, miss)
		if !hit || string(resp.Body) != "body:"+enc {
			t.Errorf("Accept-Encoding %q: hit=%v body=%q", enc, hit, resp.Body)
		}
	}
	// Tokens are compared as sent, not parsed.
	if _, hit := do(t, c, get("/app.js", "Accept-Encoding", "br, gzip"), miss); hit {
		t.Error(`"br, gzip" answered from a single-token variant`)
	}
}

func TestVaryReplacesSameVariant(t *testing.T) {
	c := New(0, newClock().now)
	do(t, c, get("/", "Accept-Language", "en"), newOrigin("en 1", "Cache-Control", "max-age=60", "Vary", "accept-language"))
	do(t, c, get("/", "Accept-Language", "fr"), newOrigin("fr", "Cache-Control", "max-age=60", "Vary", "Accept-Language"))
	// A no-cache request refetches and replaces the en variant only.
	do(t, c, get("/", "Accept-Language", "en", "Cache-Control", "no-cache"), newOrigin("en 2", "Cache-Control", "max-age=60", "Vary", "Accept-Language"))
	if c.Len() != 2 {
		t.Fatalf("Len = %d, want 2", c.Len())
	}
	miss := newOrigin("miss")
	for lang, want := range map[string]string{"en": "en 2", "fr": "fr"} {
		if resp, hit := do(t, c, get("/", "Accept-Language", lang), miss); !hit || string(resp.Body) != want {
			t.Errorf("%s: hit=%v body=%q, want %q", lang, hit, resp.Body, want)
		}
	}
	checkAccounting(t, c)
}

func TestVaryManyHeaders(t *testing.T) {
	c := New(0, newClock().now)
	o := newOrigin("x", "Cache-Control", "max-age=60", "Vary", "Accept-Encoding", "Vary", "Accept-Language, Accept-Encoding")
	do(t, c, get("/", "Accept-Encoding", "gzip", "Accept-Language", "en"), o)
	for _, tc := range []struct {
		header []string
		hit    bool
	}{
		{[]string{"Accept-Encoding", "gzip", "Accept-Language", "en"}, true},
		{[]string{"Accept-Encoding", "gzip", "Accept-Language", "en", "User-Agent", "curl"}, true},
		{[]string{"Accept-Encoding", "gzip"}, false},
		{[]string{"Accept-Encoding", "gzip", "Accept-Language", "de"}, false},
	} {
		if _, hit := do(t, c, get("/", tc.header...), newOrigin("")); hit != tc.hit {
			t.Errorf("%v: hit = %v, want %v", tc.header, hit, tc.hit)
		}
	}
}

func TestVariantsPerKeyBounded(t *testing.T) {
	c := New(0, newClock().now)
	for i := range maxVariants + 3 {
		lang := fmt.Sprintf("l%d", i)
		do(t, c, get("/", "Accept-Language", lang), newOrigin(lang, "Cache-Control", "max-age=60", "Vary", "Accept-Language"))
	}
	if c.Len() != maxVariants {
		t.Fatalf("Len = %d, want %d", c.Len(), maxVariants)
	}
	// The oldest went first.
	if _, hit := do(t, c, get("/", "Accept-Language", "l0"), newOrigin("")); hit {
		t.Error("oldest variant kept")
	}
	last := fmt.Sprintf("l%d", maxVariants+2)
	if _, hit := do(t, c, get("/", "Accept-Language", last), newOrigin("")); !hit {
		t.Error("newest variant dropped")
	}
	checkAccounting(t, c)
}

func TestHeaderValue(t *testing.T) {
	h := http.Header{"Accept-Language": {" en ", "fr"}, "Accept-Encoding": {"gzip, br"}}
	for name, want := range map[string]string{"Accept-Language": "en, fr", "Accept-Encoding": "gzip, br", "Cookie": ""} {
		if got := headerValue(h, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}
