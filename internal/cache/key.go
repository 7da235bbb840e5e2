package cache

import (
	"net/http"
	"net/textproto"
	"slices"
	"strings"
)

// key identifies a cached resource. The method is not part of it: only GET
// responses are stored and HEAD is answered from GET's entry. The scheme is,
// because apps commonly answer http with a redirect to https, and serving
// that redirect to an https request would loop.
type key struct {
	app, scheme, host, uri string
}

func keyOf(app string, r *http.Request) key {
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return key{app: app, scheme: scheme, host: strings.ToLower(host), uri: r.URL.RequestURI()}
}

// field is one request header a response varies on, with the value the
// request that produced the response had for it.
type field struct {
	name, value string
}

// variant is what tells apart the stored responses of one key: the request
// header values named by the response's Vary.
type variant []field

// variantOf records r's values for the headers named in h's Vary. The
// caller has already refused "Vary: *".
func variantOf(h http.Header, r *http.Request) variant {
	var names []string
	for _, line := range h.Values("Vary") {
		for name := range strings.SplitSeq(line, ",") {
			if name = strings.TrimSpace(name); name != "" {
				names = append(names, textproto.CanonicalMIMEHeaderKey(name))
			}
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	v := make(variant, len(names))
	for i, name := range names {
		v[i] = field{name: name, value: headerValue(r.Header, name)}
	}
	return v
}

// matches reports whether r has the values the variant was stored for.
func (v variant) matches(r *http.Request) bool {
	for _, f := range v {
		if headerValue(r.Header, f.name) != f.value {
			return false
		}
	}
	return true
}

// headerValue is the normalised value of a request header for Vary: lines
// joined, each trimmed. Tokens are compared as they are (no reordering, no
// q-value parsing), so "gzip, br" and "br, gzip" are different variants: a
// few extra misses, never a wrong answer.
func headerValue(h http.Header, name string) string {
	vs := h.Values(name)
	switch len(vs) {
	case 0:
		return ""
	case 1:
		return strings.TrimSpace(vs[0])
	}
	trimmed := make([]string, len(vs))
	for i, v := range vs {
		trimmed[i] = strings.TrimSpace(v)
	}
	return strings.Join(trimmed, ", ")
}

func (v variant) size() int {
	n := 0
	for _, f := range v {
		n += len(f.name) + len(f.value)
	}
	return n
}
