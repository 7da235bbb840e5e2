// Package proxy is herd-front's request path: it routes a request by Host and
// path prefix to an app, picks one of the app's ready endpoints, and
// forwards the request, retrying another endpoint when a connection could
// not be made (the request never reached the app).
package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"sync/atomic"
	"time"
)

// maxAttempts bounds how many endpoints one request tries.
const maxAttempts = 3

// Proxy is an http.Handler. SetRoutes may be called at any time; requests in
// flight finish on the table they started with.
type Proxy struct {
	log       *slog.Logger
	table     atomic.Pointer[table]
	transport *http.Transport
	rp        *httputil.ReverseProxy
}

// New returns a proxy with no routes (every request gets 404).
func New(log *slog.Logger) *Proxy {
	p := &Proxy{log: log}
	p.transport = &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 64,
		// Below Gunicorn's default keep-alive of 2 s, so a pooled
		// connection is never closed by the worker under a new request.
		IdleConnTimeout:       1500 * time.Millisecond,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			// The host is set per attempt by the retrying transport.
			pr.Out.URL.Host = "upstream"
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport:    retrying{p},
		ErrorHandler: p.fail,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	p.table.Store(newTable(nil))
	return p
}

// SetRoutes replaces the routing table.
func (p *Proxy) SetRoutes(routes []Route) {
	old := p.table.Swap(newTable(routes))
	if withdrawn(old, routes) {
		// Idle connections to workers that are going away would only fail
		// later; closing all idle ones costs a few reconnects.
		p.transport.CloseIdleConnections()
	}
}

func withdrawn(old *table, routes []Route) bool {
	now := map[string]bool{}
	for _, r := range routes {
		for _, e := range r.Endpoints {
			now[e] = true
		}
	}
	for _, rs := range old.exact {
		for _, r := range rs {
			if slices.ContainsFunc(r.Endpoints, func(e string) bool { return !now[e] }) {
				return true
			}
		}
	}
	for _, w := range old.wild {
		for _, r := range w.routes {
			if slices.ContainsFunc(r.Endpoints, func(e string) bool { return !now[e] }) {
				return true
			}
		}
	}
	return false
}

type routeKey struct{}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := p.table.Load().match(r.Host, r.URL.Path)
	if rt == nil {
		http.Error(w, "404 not found", http.StatusNotFound)
		return
	}
	if len(rt.Endpoints) == 0 {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "503 no ready workers for app "+rt.App, http.StatusServiceUnavailable)
		return
	}
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeKey{}, rt)))
}

// retrying is the proxy's RoundTripper: it tries the route's endpoints in
// turn while connecting fails.
type retrying struct{ p *Proxy }

func (t retrying) RoundTrip(req *http.Request) (*http.Response, error) {
	rt := req.Context().Value(routeKey{}).(*route)
	n := len(rt.Endpoints)
	first := rt.pick()
	var err error
	for i := 0; i < n && i < maxAttempts; i++ {
		req.URL.Host = rt.Endpoints[(first+i)%n]
		var resp *http.Response
		resp, err = t.p.transport.RoundTrip(req)
		if err == nil {
			return resp, nil
		}
		// A body may have been partly sent; only a request without one
		// can be replayed.
		if !isDialError(err) || (req.Body != nil && req.Body != http.NoBody) {
			return nil, err
		}
		t.p.log.Debug("upstream connect failed; trying another endpoint", "endpoint", req.URL.Host, "err", err)
	}
	return nil, err
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// fail is the one place where an upstream error becomes a status.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusBadGateway
	var ne net.Error
	switch {
	case r.Context().Err() != nil:
		// The client went away (nginx's 499); nobody reads the answer.
		status = 499
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		status = http.StatusGatewayTimeout
	}
	p.log.Warn("upstream request failed", "host", r.Host, "path", r.URL.Path, "status", status, "err", err)
	w.WriteHeader(status)
}
