// Package proxy is herd-front's request path: it routes a request by Host and
// path prefix to an app, picks one of the app's ready endpoints (package
// balance: policies, per-worker concurrency limits, queueing, passive
// health), and forwards the request over a keep-alive pool per endpoint,
// retrying where that is safe.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herd-run/herd/internal/balance"
	"github.com/herd-run/herd/internal/cache"
	"github.com/herd-run/herd/internal/compress"
	"github.com/herd-run/herd/internal/static"
)

// Config is the proxy's configuration. A zero field means its default.
type Config struct {
	Logger *slog.Logger
	// TrustedProxies are peers whose X-Forwarded-* and Forwarded headers
	// are kept (and appended to); everyone else's are replaced. (A sane
	// X-Request-ID is kept from anyone: it only correlates logs.)
	TrustedProxies []netip.Prefix
	// AccessLog receives one line per request; nil means no access log.
	AccessLog io.Writer
	// AccessLogFormat is "combined" (default) or "json".
	AccessLogFormat string
	// Metrics, if set, is where the proxy's Prometheus metrics go.
	Metrics *Metrics
	// DialTimeout bounds connecting to a worker (default 5 s).
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a worker's response
	// headers (default 60 s).
	ResponseHeaderTimeout time.Duration
	// TempDir is where bodies too big for memory are held ("": the
	// system's).
	TempDir string
	// HTTPSPort is the front's HTTPS port, for redirects (0: no HTTPS;
	// 443 is left out of the URL).
	HTTPSPort int
	// CacheBytes bounds the response cache of the apps with Cache on
	// (default 64 MiB).
	CacheBytes int64
	// IdleConnTimeout closes pooled worker connections idle this long
	// (default 1.5 s, below Gunicorn's 2 s keep-alive, so a worker never
	// closes a connection just as a request goes out on it).
	IdleConnTimeout time.Duration
}

// Proxy is an http.Handler. SetRoutes may be called at any time; requests in
// flight finish on the table they started with.
type Proxy struct {
	cfg   Config
	log   *slog.Logger
	table atomic.Pointer[table]
	rp    *httputil.ReverseProxy
	trust []netip.Prefix

	mu        sync.Mutex // serializes SetRoutes
	endpoints map[string]*balance.Endpoint
	apps      map[string]*appStats
	cache     *cache.Cache
	tunnels   wsTunnels
}

// New returns a proxy with no routes (every request gets 404).
func New(cfg Config) *Proxy {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.ResponseHeaderTimeout <= 0 {
		cfg.ResponseHeaderTimeout = 60 * time.Second
	}
	if cfg.IdleConnTimeout <= 0 {
		cfg.IdleConnTimeout = 1500 * time.Millisecond
	}
	p := &Proxy{
		cfg:       cfg,
		log:       cfg.Logger,
		trust:     cfg.TrustedProxies,
		endpoints: map[string]*balance.Endpoint{},
		apps:      map[string]*appStats{},
		cache:     cache.New(cfg.CacheBytes, nil),
		tunnels:   wsTunnels{open: map[*wsTunnel]struct{}{}, gone: make(chan struct{}, 1)},
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:      p.rewrite,
		Transport:    upstream{p},
		ErrorHandler: p.fail,
		ErrorLog:     slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		// Zero: ReverseProxy flushes at once for streams (no length, or
		// text/event-stream) and lets a response of known length go out in
		// as few writes as possible (one syscall for a small one).
		FlushInterval: 0,
		BufferPool:    copyBuffers{},
	}
	p.table.Store(newTable(nil))
	return p
}

// SetRoutes replaces the routing table. Endpoints that stay keep their
// counters and pooled connections; the pools of withdrawn ones are closed.
func (p *Proxy) SetRoutes(routes []Route) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[string]bool{}
	apps := map[string]bool{}
	rs := make([]*route, 0, len(routes))
	for _, rt := range routes {
		rt.Prefix = normPrefix(rt.Prefix)
		r := &route{Route: rt}
		r.policy, r.stickyName, _ = strings.Cut(rt.Balance, "=")
		if r.policy == "" {
			r.policy = balance.P2C
		}
		r.app = p.appStatsLocked(rt.App)
		r.app.limit.set(rt.RateLimit, rt.RateBurst)
		apps[rt.App] = true
		r.retry = r.app.retry
		eps := make([]*balance.Endpoint, 0, len(rt.Endpoints))
		r.releases = map[string]bool{}
		for _, e := range rt.Endpoints {
			r.releases[e.Release] = true
			ep := p.endpoints[e.Addr]
			if ep != nil && (ep.Release != e.Release || ep.Node != e.Node) {
				// The port now belongs to another worker.
				ep.Transport.CloseIdleConnections()
				ep = nil
			}
			if ep == nil {
				ep = balance.NewEndpoint(e.Addr, e.Node, e.Worker, rt.Concurrency)
				ep.Release = e.Release
				ep.Transport = p.newTransport()
				p.endpoints[e.Addr] = ep
			}
			ep.SetLimit(rt.Concurrency)
			seen[e.Addr] = true
			eps = append(eps, ep)
		}
		app := r.app
		r.set = app.set
		// The app's Set outlives tables, so requests queued on it pick
		// from the new endpoints at once.
		r.set.Update(eps, balance.Options{
			Policy:       r.policy,
			MaxQueue:     rt.MaxQueue,
			QueueTimeout: rt.QueueTimeout,
			OnEject: func(e *balance.Endpoint) {
				app.ejected()
				p.log.Warn("endpoint ejected by passive health checks", "app", app.name, "endpoint", e.Addr, "node", e.Node)
			},
		})
		if rt.Cache {
			p.cache.DropReleases(rt.App, r.live)
		}
		rs = append(rs, r)
	}
	p.table.Store(newTable(rs))
	for addr, ep := range p.endpoints {
		if !seen[addr] {
			delete(p.endpoints, addr)
			// Idle connections go now; those of requests still in flight
			// idle out after IdleConnTimeout.
			ep.Transport.CloseIdleConnections()
		}
	}
	for name, a := range p.apps {
		if !apps[name] {
			delete(p.apps, name)
			a.set.Update(nil, balance.Options{}) // queued requests get 503 now
		}
	}
}

func (p *Proxy) newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: p.cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       p.cfg.IdleConnTimeout,
		ResponseHeaderTimeout: p.cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		// Workers speak HTTP/1.1; compression is the front's business.
		DisableCompression: true,
	}
}

type ctxKey struct{}

// reqState is what one request carries through the ReverseProxy.
type reqState struct {
	route *route
	key   string // sticky key
	start time.Time
	ep    *balance.Endpoint // the endpoint that answered
	wait  time.Duration     // time spent queued
	tries int
	lw    *logWriter // what the client was sent, for the error handler
}

var statePool = sync.Pool{New: func() any { return new(reqState) }}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	lw := newLogWriter(w)
	defer lw.release()
	var rt *route
	defer func() { p.finish(lw, r, rt, start) }()

	id := p.requestID(r)
	lw.reqID = id
	lw.Header().Set("X-Request-ID", id)
	rt = p.table.Load().match(r.Host, r.URL.Path)
	if rt == nil {
		http.Error(lw, "404 not found", http.StatusNotFound)
		return
	}
	if rt.RateLimit > 0 {
		if ok, wait := rt.app.limit.allow(p.clientAddr(r), start); !ok {
			tooMany(lw, wait)
			return
		}
	}
	if r.TLS == nil && rt.HTTPSRedirect && p.cfg.HTTPSPort != 0 {
		p.redirectHTTPS(lw, r)
		return
	}
	if r.TLS != nil && rt.HSTS {
		lw.Header().Set("Strict-Transport-Security", "max-age=31536000")
	}
	// Compressed on the way out when the client takes it and it pays (see
	// package compress); precompressed static files are sent as they are.
	cw, closeCompress := compress.NewWriter(lw, r, nil)
	defer closeCompress()
	for _, m := range rt.Static {
		if rel, ok := strings.CutPrefix(r.URL.Path, m.Prefix); ok {
			serveStatic(cw, r, m, rel)
			return
		}
	}

	st := statePool.Get().(*reqState)
	*st = reqState{route: rt, start: start, lw: lw}
	defer statePool.Put(st)
	if rt.policy == balance.StickyCookie || rt.policy == balance.StickyHeader {
		st.key = balance.StickyKey(rt.policy, rt.stickyName, r)
		if st.key == "" && rt.policy == balance.StickyCookie {
			st.key = newID()
			http.SetCookie(lw, &http.Cookie{Name: rt.stickyName, Value: st.key, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		}
	}
	if !p.takeBody(cw, r, rt) {
		return
	}
	rt.app.active.Add(1)
	defer rt.app.active.Add(-1)
	// An upgrade is no cacheable GET: the cache's writer cannot hijack.
	if rt.Cache && (r.Method == http.MethodGet || r.Method == http.MethodHead) && r.Header["Upgrade"] == nil {
		p.serveCached(cw, r, rt, st)
	} else {
		w := cw
		if isWebSocket(r) {
			w = wsWriter{cw, &p.tunnels} // for CloseWebSockets
		}
		p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, st)))
	}
	lw.ep, lw.wait = st.ep, st.wait
}

// finish records the request in metrics and the access log.
func (p *Proxy) finish(lw *logWriter, r *http.Request, rt *route, start time.Time) {
	d := time.Since(start)
	app := ""
	if rt != nil {
		app = rt.App
		rt.app.observe(lw.status(), d, lw.wait)
	}
	if p.cfg.Metrics != nil {
		p.cfg.Metrics.observe(app, lw.status(), d)
	}
	if p.cfg.AccessLog != nil {
		p.writeAccessLog(lw, r, app, d)
	}
}

// serveStatic answers from release files: the app never sees requests
// under a static prefix (as with nginx's alias: no file, 404).
func serveStatic(w http.ResponseWriter, r *http.Request, m StaticMount, rel string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !static.Serve(w, r, m.Dirs, rel) {
		http.Error(w, "404 not found", http.StatusNotFound)
	}
}

// copyBuffers recycles ReverseProxy's 32 KiB copy buffers, which would
// otherwise be allocated per request.
type copyBuffers struct{}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (copyBuffers) Get() []byte { return *(copyBufPool.Get().(*[]byte)) }

func (copyBuffers) Put(b []byte) {
	if cap(b) >= 32<<10 {
		b = b[:32<<10]
		copyBufPool.Put(&b)
	}
}

const (
	defaultMaxBody = 16 << 20
	// Bodies up to these sizes are held in memory; beyond, in a file.
	requestMem  = 64 << 10
	responseMem = 256 << 10
	// maxResponseSpool bounds a buffered answer (nginx's
	// proxy_max_temp_file_size is 1 GiB too).
	maxResponseSpool = 1 << 30
)

// takeBody enforces the app's body limit (413) and, with buffering, reads
// the whole request body before a worker is picked, so a slow upload
// costs the front a goroutine, not a worker. The body can then be sent
// again, so a POST is retried after a connect failure too. It reports
// whether to go on; if not, the answer was written.
func (p *Proxy) takeBody(w http.ResponseWriter, r *http.Request, rt *route) bool {
	max := rt.MaxBody
	if max <= 0 {
		max = defaultMaxBody
	}
	if r.ContentLength > max {
		tooLarge(w, max)
		return false
	}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return true
	}
	if rt.NoBuffering || r.Header.Get("Upgrade") != "" {
		r.Body = http.MaxBytesReader(w, r.Body, max)
		return true
	}
	sp, err := newSpool(r.Body, r.ContentLength, requestMem, max, p.cfg.TempDir, false)
	switch {
	case errors.Is(err, errTooLarge):
		tooLarge(w, max)
		return false
	case err != nil:
		// The client went away or sent a broken body.
		w.Header().Set("Connection", "close")
		http.Error(w, "400 bad request body", http.StatusBadRequest)
		return false
	}
	context.AfterFunc(r.Context(), func() { sp.Close() })
	r.Body = sp.Reader()
	r.GetBody = func() (io.ReadCloser, error) { return sp.Reader(), nil }
	r.ContentLength = sp.size
	r.TransferEncoding = nil
	return true
}

func tooLarge(w http.ResponseWriter, max int64) {
	w.Header().Set("Connection", "close")
	http.Error(w, fmt.Sprintf("413 request body larger than %d bytes", max), http.StatusRequestEntityTooLarge)
}

// redirectHTTPS answers 308 (the method and body are kept) to the same URL
// over HTTPS.
func (p *Proxy) redirectHTTPS(w http.ResponseWriter, r *http.Request) {
	host := stripPort(r.Host)
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if p.cfg.HTTPSPort != 443 {
		host += ":" + strconv.Itoa(p.cfg.HTTPSPort)
	}
	http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
}
