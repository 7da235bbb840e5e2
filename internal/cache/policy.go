package cache

import (
	"errors"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// maxDelta caps delta-seconds values, as RFC 9111 section 1.2.2 allows.
const maxDelta = (1 << 31) * time.Second

// requestRules is what a GET or HEAD request allows the cache to do.
type requestRules struct {
	// lookup: a stored response may answer the request. Off for
	// "no-store" and for "no-cache" (or "Pragma: no-cache" without
	// Cache-Control), which ask for a response from the origin.
	lookup bool
	// store: the response fetched for the request may be stored. Off for
	// "no-store" and for HEAD, whose response has no body to give a GET.
	store bool
	// credentialed: the request carries Authorization or Cookie. Only
	// responses the app marked "public" or "s-maxage" may be stored for it
	// or answer it. RFC 9111 requires this for Authorization; for Cookie it
	// is our choice, because apps often personalise by cookie without
	// saying "Vary: Cookie", and the cost of caching such a page is one
	// user's page shown to everyone.
	credentialed bool
	// maxAge is the request's max-age (the oldest response it accepts),
	// in whole seconds; -1 if it has none.
	maxAge int64
	// minFresh is the request's min-fresh: how long a response must stay
	// fresh to answer it.
	minFresh time.Duration
}

func rulesOf(r *http.Request) requestRules {
	rr := requestRules{
		lookup:       true,
		store:        r.Method == http.MethodGet,
		credentialed: r.Header.Get("Authorization") != "" || r.Header.Get("Cookie") != "",
		maxAge:       -1,
	}
	d := parseCacheControl(r.Header)
	if d.has("no-store") {
		rr.lookup, rr.store = false, false
	}
	if d.has("no-cache") {
		rr.lookup = false
	}
	// RFC 9111 section 5.4: Pragma counts only without Cache-Control.
	if len(r.Header.Values("Cache-Control")) == 0 && hasToken(r.Header, "Pragma", "no-cache") {
		rr.lookup = false
	}
	if v, ok := d["max-age"]; ok {
		rr.maxAge = int64(deltaSeconds(v) / time.Second)
	}
	if v, ok := d["min-fresh"]; ok {
		rr.minFresh = deltaSeconds(v)
	}
	return rr
}

// freshness is how long a stored response may answer requests.
type freshness struct {
	// lifetime is the freshness lifetime: the response is fresh while its
	// age is below it.
	lifetime time.Duration
	// initialAge is the response's Age when it arrived.
	initialAge time.Duration
	// shared: the response says "public" or "s-maxage", so it may answer
	// requests that carry credentials.
	shared bool
}

// cacheableStatus lists the statuses stored. It is narrower than RFC
// 9110's heuristically cacheable set on purpose: 206 needs range
// handling, and 405, 414 and 501 are rare enough not to matter.
func cacheableStatus(status int) bool {
	switch status {
	case http.StatusOK, http.StatusNonAuthoritativeInfo, http.StatusNoContent,
		http.StatusMultipleChoices, http.StatusMovedPermanently,
		http.StatusNotFound, http.StatusGone:
		return true
	}
	return false
}

// storable reports whether resp, fetched at now for a request with rules
// rr, may be stored, and for how long it stays fresh. It is conservative:
// a response that must be revalidated before use ("no-cache") is not
// stored at all, and a response without an explicit lifetime is not
// stored (no heuristic freshness).
func storable(rr requestRules, resp *Response, now time.Time) (freshness, bool) {
	if !rr.store || resp == nil || !cacheableStatus(resp.Status) {
		return freshness{}, false
	}
	h := resp.Header
	if len(h.Values("Set-Cookie")) > 0 || hasToken(h, "Vary", "*") {
		return freshness{}, false
	}
	d := parseCacheControl(h)
	if d.has("no-store") || d.has("no-cache") || d.has("private") {
		return freshness{}, false
	}
	f := freshness{shared: d.has("public") || d.has("s-maxage")}
	if rr.credentialed && !f.shared {
		return freshness{}, false
	}
	f.lifetime = lifetime(d, h, now)
	if v := h.Get("Age"); v != "" {
		f.initialAge = deltaSeconds(v)
	}
	if f.lifetime <= f.initialAge {
		return freshness{}, false
	}
	return f, true
}

// lifetime is the response's explicit freshness lifetime: s-maxage (we are
// a shared cache), else max-age, else Expires minus Date (or minus now
// without a Date). Invalid values count as already expired, as RFC 9111
// asks.
func lifetime(d directives, h http.Header, now time.Time) time.Duration {
	if v, ok := d["s-maxage"]; ok {
		return deltaSeconds(v)
	}
	if v, ok := d["max-age"]; ok {
		return deltaSeconds(v)
	}
	v := h.Get("Expires")
	if v == "" {
		return 0
	}
	expires, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	if date, err := http.ParseTime(h.Get("Date")); err == nil {
		now = date
	}
	return max(expires.Sub(now), 0)
}

// directives are parsed Cache-Control directives: lower-case name to
// unquoted value ("" for a bare directive).
type directives map[string]string

func (d directives) has(name string) bool {
	_, ok := d[name]
	return ok
}

// parseCacheControl parses every Cache-Control line of h. Of a repeated
// directive the first counts (RFC 9111 section 4.2.1). Qualified forms
// such as private="Set-Cookie" count as the bare directive, which is the
// conservative reading.
func parseCacheControl(h http.Header) directives {
	var d directives
	for _, line := range h.Values("Cache-Control") {
		for part := range strings.SplitSeq(line, ",") {
			name, value, _ := strings.Cut(part, "=")
			name = strings.ToLower(strings.TrimSpace(name))
			if name == "" {
				continue
			}
			if d == nil {
				d = make(directives)
			}
			if _, dup := d[name]; !dup {
				d[name] = strings.Trim(strings.TrimSpace(value), `"`)
			}
		}
	}
	return d
}

// deltaSeconds parses a delta-seconds value. An invalid one is 0, which
// makes a lifetime expired and a request's max-age the strictest.
func deltaSeconds(v string) time.Duration {
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return maxDelta
	case err != nil:
		return 0
	case n >= uint64(maxDelta/time.Second):
		return maxDelta
	}
	return time.Duration(n) * time.Second
}

// hasToken reports whether a comma-separated header has token, ignoring
// case.
func hasToken(h http.Header, name, token string) bool {
	for _, line := range h.Values(name) {
		for t := range strings.SplitSeq(line, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// withoutHopByHop returns a copy of h without the hop-by-hop headers of
// RFC 9110 section 7.6.1 (and those its Connection names): they describe
// one connection, not the response, so they are not stored.
func withoutHopByHop(h http.Header) http.Header {
	listed := map[string]bool{}
	for _, line := range h.Values("Connection") {
		for name := range strings.SplitSeq(line, ",") {
			if name = strings.TrimSpace(name); name != "" {
				listed[textproto.CanonicalMIMEHeaderKey(name)] = true
			}
		}
	}
	out := make(http.Header, len(h))
	for name, values := range h {
		canonical := textproto.CanonicalMIMEHeaderKey(name)
		if hopByHop(canonical) || listed[canonical] {
			continue
		}
		out[name] = append([]string(nil), values...)
	}
	return out
}

func hopByHop(canonical string) bool {
	switch canonical {
	case "Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Te", "Trailer":
		return true
	}
	return strings.HasPrefix(canonical, "Proxy-")
}
