package proxy

import (
	"encoding/hex"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
)

// rewrite prepares the request to a worker. ReverseProxy has already
// removed hop-by-hop headers and every incoming Forwarded and
// X-Forwarded-* header; they come back only from a trusted proxy.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = "upstream" // set per attempt by the upstream RoundTripper
	pr.Out.Host = pr.In.Host
	proto := "http"
	if pr.In.TLS != nil {
		proto = "https"
	}
	clientIP, _, _ := net.SplitHostPort(pr.In.RemoteAddr)
	trusted := p.trusted(clientIP)
	if trusted {
		pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
	}
	pr.SetXForwarded()
	if trusted {
		if v := pr.In.Header.Get("X-Forwarded-Host"); v != "" {
			pr.Out.Header.Set("X-Forwarded-Host", v)
		}
		if v := pr.In.Header.Get("X-Forwarded-Proto"); v != "" {
			pr.Out.Header.Set("X-Forwarded-Proto", v)
		}
	}
	fwd := "for=" + forwardedNode(clientIP) + ";host=" + quoteForwarded(pr.In.Host) + ";proto=" + proto
	if prior := pr.In.Header.Values("Forwarded"); trusted && len(prior) > 0 {
		fwd = strings.Join(prior, ", ") + ", " + fwd
	}
	pr.Out.Header.Set("Forwarded", fwd)
	pr.Out.Header.Set("X-Request-ID", pr.In.Header.Get("X-Request-ID"))
}

func (p *Proxy) trusted(ip string) bool {
	if len(p.trust) == 0 {
		return false
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	for _, pfx := range p.trust {
		if pfx.Contains(addr) {
			return true
		}
	}
	return false
}

// requestID keeps a sane incoming X-Request-ID (any client may set one, as
// with nginx's $http_x_request_id; it is only a correlation id) and
// otherwise makes one. The request's header is updated so the worker sees
// the same id.
func (p *Proxy) requestID(r *http.Request) string {
	id := r.Header.Get("X-Request-ID")
	if !validRequestID(id) {
		id = newID()
		r.Header.Set("X-Request-ID", id)
	}
	return id
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// newID is 128 random bits in hex.
func newID() string {
	var b [16]byte
	a, c := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		b[i] = byte(a >> (8 * i))
		b[8+i] = byte(c >> (8 * i))
	}
	return hex.EncodeToString(b[:])
}

// forwardedNode formats an IP for RFC 7239 (IPv6 quoted and bracketed).
func forwardedNode(ip string) string {
	if strings.Contains(ip, ":") {
		return `"[` + ip + `]"`
	}
	if ip == "" {
		return "unknown"
	}
	return ip
}

func quoteForwarded(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
		}
	}
	return s
}
