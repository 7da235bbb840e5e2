package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-run/herd/internal/balance"
)

// newFront starts a proxy with cfg (a nil Logger discards) behind a real
// listener and returns it with its base URL.
func newFront(t *testing.T, cfg Config, routes ...Route) (*Proxy, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := New(cfg)
	p.SetRoutes(routes)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	// Withdrawing every endpoint closes the proxy's pools to the backends.
	t.Cleanup(func() { p.SetRoutes(nil) })
	return p, srv.URL
}

// endpoints makes the Route.Endpoints for addrs.
func endpoints(addrs ...string) []Endpoint {
	eps := make([]Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = Endpoint{Addr: a, Node: "node1", Worker: fmt.Sprintf("w%d", i)}
	}
	return eps
}

// shop is a route for host shop.test to addrs, balanced by policy.
func shop(policy string, addrs ...string) Route {
	return Route{App: "shop", Hosts: []string{"shop.test"}, Endpoints: endpoints(addrs...), Balance: policy}
}

// countDials counts the proxy's connection attempts to addr. Call it
// before the first request to addr.
func countDials(t *testing.T, p *Proxy, addr string) *atomic.Int64 {
	t.Helper()
	p.mu.Lock()
	ep := p.endpoints[addr]
	p.mu.Unlock()
	if ep == nil {
		t.Fatalf("no endpoint %s", addr)
	}
	n := new(atomic.Int64)
	dial := ep.Transport.DialContext
	ep.Transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		n.Add(1)
		return dial(ctx, network, addr)
	}
	return n
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// eventually polls cond until it holds or 5 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// backend is an upstream that counts its requests.
type backend struct {
	addr string
	hits atomic.Int64
}

func newBackend(t *testing.T, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	b.addr = srv.Listener.Addr().String()
	return b
}

// named is a backend answering its name.
func named(t *testing.T, name string) *backend {
	return newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, name)
	})
}

// deadAddr is the address of a listener that was closed: connecting to it
// is refused.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// do sends a request for host through the front and returns status,
// response header and body.
func do(t *testing.T, method, front, host, path, body string) (int, http.Header, string) {
	t.Helper()
	return doHeader(t, method, front, host, path, body, nil)
}

// doHeader is do with request headers.
func doHeader(t *testing.T, method, front, host, path, body string, h http.Header) (int, http.Header, string) {
	t.Helper()
	status, rh, b, err := send(method, front, host, path, body, h)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	return status, rh, b
}

// send is doHeader for goroutines other than the test's: it returns the
// error.
func send(method, front, host, path, body string, h http.Header) (int, http.Header, string, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, front+path, rd)
	if err != nil {
		return 0, nil, "", err
	}
	req.Host = host
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, "", fmt.Errorf("read body: %w", err)
	}
	return resp.StatusCode, resp.Header, string(b), nil
}

func TestRoundRobin(t *testing.T) {
	a, b, c := named(t, "a"), named(t, "b"), named(t, "c")
	_, front := newFront(t, Config{}, shop(balance.RoundRobin, a.addr, b.addr, c.addr))
	var got []string
	for range 9 {
		status, _, body := do(t, "GET", front, "shop.test", "/", "")
		if status != http.StatusOK {
			t.Fatalf("status %d, want 200", status)
		}
		got = append(got, body)
	}
	// Whichever endpoint comes first, the rest follow in list order.
	order := "abc"
	start := strings.Index(order, got[0])
	for i, name := range got {
		if want := string(order[(start+i)%3]); name != want {
			t.Fatalf("backends in order %q, want a rotation of %q", strings.Join(got, ""), "abcabcabc")
		}
	}
	for _, be := range []*backend{a, b, c} {
		if n := be.hits.Load(); n != 3 {
			t.Errorf("backend %s got %d of 9 requests, want 3", be.addr, n)
		}
	}
}

func TestForwardedHeaders(t *testing.T) {
	type seen struct {
		host, xff, xfh, xfp, forwarded, requestID string
	}
	got := make(chan seen, 1)
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		got <- seen{
			host:      r.Host,
			xff:       strings.Join(r.Header.Values("X-Forwarded-For"), ","),
			xfh:       strings.Join(r.Header.Values("X-Forwarded-Host"), ","),
			xfp:       strings.Join(r.Header.Values("X-Forwarded-Proto"), ","),
			forwarded: strings.Join(r.Header.Values("Forwarded"), ","),
			requestID: r.Header.Get("X-Request-ID"),
		}
	})
	_, front := newFront(t, Config{}, shop("", b.addr))

	req, err := http.NewRequest("GET", front+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "Shop.test:8080"
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("X-Forwarded-Host", "evil.test")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("Forwarded", "for=6.6.6.6")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	s := <-got
	id := resp.Header.Get("X-Request-ID")
	if !isGeneratedID(id) || s.requestID != id {
		t.Errorf("X-Request-ID: upstream saw %q, client got %q; want the same 32 hex digits", s.requestID, id)
	}
	want := seen{host: "Shop.test:8080", xff: "127.0.0.1", xfh: "Shop.test:8080", xfp: "http",
		forwarded: `for=127.0.0.1;host="Shop.test:8080";proto=http`, requestID: s.requestID}
	if s != want {
		t.Fatalf("upstream saw %+v, want %+v", s, want)
	}
}

var generatedID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func isGeneratedID(id string) bool { return generatedID.MatchString(id) }

func TestTrustedProxies(t *testing.T) {
	type seen struct {
		xff, xfh, xfp, forwarded string
	}
	cases := []struct {
		name    string
		trusted string // the test client connects from 127.0.0.1
		want    seen
	}{
		{"trusted", "127.0.0.0/8", seen{
			xff:       "203.0.113.7, 127.0.0.1",
			xfh:       "shop.example.com",
			xfp:       "https",
			forwarded: "for=203.0.113.7;proto=https, for=127.0.0.1;host=shop.test;proto=http",
		}},
		{"untrusted", "10.0.0.0/8", seen{
			xff:       "127.0.0.1",
			xfh:       "shop.test",
			xfp:       "http",
			forwarded: "for=127.0.0.1;host=shop.test;proto=http",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan seen, 1)
			b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
				got <- seen{
					xff:       strings.Join(r.Header.Values("X-Forwarded-For"), ","),
					xfh:       strings.Join(r.Header.Values("X-Forwarded-Host"), ","),
					xfp:       strings.Join(r.Header.Values("X-Forwarded-Proto"), ","),
					forwarded: strings.Join(r.Header.Values("Forwarded"), ","),
				}
			})
			cfg := Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix(tc.trusted)}}
			_, front := newFront(t, cfg, shop("", b.addr))
			h := http.Header{}
			h.Set("X-Forwarded-For", "203.0.113.7")
			h.Set("X-Forwarded-Host", "shop.example.com")
			h.Set("X-Forwarded-Proto", "https")
			h.Set("Forwarded", "for=203.0.113.7;proto=https")
			if status, _, _ := doHeader(t, "GET", front, "shop.test", "/", "", h); status != http.StatusOK {
				t.Fatalf("status %d, want 200", status)
			}
			if s := <-got; s != tc.want {
				t.Errorf("upstream saw %+v, want %+v", s, tc.want)
			}
		})
	}
}

func TestRequestID(t *testing.T) {
	cases := []struct {
		name, in string
		keep     bool
	}{
		{"none", "", false},
		{"sane", "req-42.abc_DEF:1", true},
		{"128 chars", strings.Repeat("a", 128), true},
		{"129 chars", strings.Repeat("a", 129), false},
		{"space", "a b", false},
		{"quote", `a"b`, false},
		{"backslash", `a\b`, false},
		{"non-ASCII", "caf\xc3\xa9", false},
	}
	got := make(chan string, 1)
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		got <- strings.Join(r.Header.Values("X-Request-ID"), ",")
	})
	_, front := newFront(t, Config{}, shop("", b.addr))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.in != "" {
				h.Set("X-Request-ID", tc.in)
			}
			status, rh, _ := doHeader(t, "GET", front, "shop.test", "/", "", h)
			if status != http.StatusOK {
				t.Fatalf("status %d, want 200", status)
			}
			upstream, resp := <-got, rh.Get("X-Request-ID")
			if upstream != resp {
				t.Errorf("upstream saw X-Request-ID %q, the client got %q", upstream, resp)
			}
			switch {
			case tc.keep && resp != tc.in:
				t.Errorf("X-Request-ID %q became %q, want it kept", tc.in, resp)
			case !tc.keep && !isGeneratedID(resp):
				t.Errorf("X-Request-ID %q became %q, want 32 new hex digits", tc.in, resp)
			}
		})
	}
}

func TestNoRoute(t *testing.T) {
	b := named(t, "b")
	_, front := newFront(t, Config{}, shop("", b.addr))
	if status, _, _ := do(t, "GET", front, "other.test", "/", ""); status != http.StatusNotFound {
		t.Fatalf("unknown host: status %d, want 404", status)
	}
	if n := b.hits.Load(); n != 0 {
		t.Fatalf("backend got %d requests for an unknown host", n)
	}
}

func TestNoEndpoints(t *testing.T) {
	_, front := newFront(t, Config{}, shop(""))
	status, h, body := do(t, "GET", front, "shop.test", "/", "")
	if status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", status)
	}
	if got := h.Get("Retry-After"); got != "1" {
		t.Errorf("503 with Retry-After %q, want 1", got)
	}
	if body != "Service Unavailable\n" {
		t.Errorf("body %q, want the status text", body)
	}
	if !isGeneratedID(h.Get("X-Request-ID")) {
		t.Errorf("503 with X-Request-ID %q", h.Get("X-Request-ID"))
	}
}

func TestGetRetriedOnRefusedConnection(t *testing.T) {
	live := named(t, "live")
	dead := deadAddr(t)
	p, front := newFront(t, Config{}, shop(balance.RoundRobin, dead, live.addr))
	dials := countDials(t, p, dead)
	// Round-robin starts every other request on the dead endpoint (until
	// passive health ejects it).
	const n = 6
	for i := range n {
		status, _, body := do(t, "GET", front, "shop.test", "/", "")
		if status != http.StatusOK || body != "live" {
			t.Fatalf("request %d: %d %q, want 200 \"live\"", i, status, body)
		}
	}
	if got := live.hits.Load(); got != n {
		t.Fatalf("live backend got %d requests, want %d", got, n)
	}
	if dials.Load() == 0 {
		t.Fatal("no request tried the dead endpoint: nothing was retried")
	}
}

func TestRetriesAreBounded(t *testing.T) {
	dead := []string{deadAddr(t), deadAddr(t), deadAddr(t), deadAddr(t)}
	p, front := newFront(t, Config{}, shop(balance.RoundRobin, dead...))
	var dials []*atomic.Int64
	for _, addr := range dead {
		dials = append(dials, countDials(t, p, addr))
	}
	if status, _, _ := do(t, "GET", front, "shop.test", "/", ""); status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502 after %d attempts", status, maxAttempts)
	}
	var total int64
	for i, n := range dials {
		if n.Load() > 1 {
			t.Errorf("dead endpoint %d tried %d times by one request", i, n.Load())
		}
		total += n.Load()
	}
	if total != maxAttempts {
		t.Fatalf("one request tried %d of 4 dead endpoints, want %d", total, maxAttempts)
	}
}

func TestOnlyDeadEndpoint(t *testing.T) {
	_, front := newFront(t, Config{}, shop("", deadAddr(t)))
	if status, _, _ := do(t, "GET", front, "shop.test", "/", ""); status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", status)
	}
}

// Without buffering a POST's body streams to the worker, so it cannot be
// sent again: a connect failure is a 502.
func TestPostWithBodyNotRetried(t *testing.T) {
	live := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "live got %s", b)
	})
	dead := deadAddr(t)
	rt := shop(balance.RoundRobin, dead, live.addr)
	rt.NoBuffering = true
	p, front := newFront(t, Config{}, rt)
	dials := countDials(t, p, dead)
	// Round-robin sends one of two requests to each endpoint first.
	var failed, served int
	for range 2 {
		switch status, _, body := do(t, "POST", front, "shop.test", "/orders", "hello"); {
		case status == http.StatusBadGateway:
			failed++
		case status == http.StatusOK && body == "live got hello":
			served++
		default:
			t.Fatalf("POST: %d %q, want 502, or 200 \"live got hello\"", status, body)
		}
	}
	if failed != 1 || served != 1 || dials.Load() != 1 {
		t.Fatalf("2 POSTs: %d got 502, %d got 200, dead endpoint dialed %d times; want 1 each", failed, served, dials.Load())
	}
	if got := live.hits.Load(); got != 1 {
		t.Fatalf("POST with a body was replayed on another endpoint (live backend got %d requests, want 1)", got)
	}
}

// With buffering (the default) the front holds the whole body, so a POST
// whose first worker refused the connection is sent to another.
func TestBufferedPostRetriedOnConnectFailure(t *testing.T) {
	live := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "live got %s (%d)", b, r.ContentLength)
	})
	dead := deadAddr(t)
	p, front := newFront(t, Config{}, shop(balance.RoundRobin, dead, live.addr))
	dials := countDials(t, p, dead)
	for range 2 {
		if status, _, body := do(t, "POST", front, "shop.test", "/orders", "hello"); status != 200 || body != "live got hello (5)" {
			t.Fatalf("POST: %d %q", status, body)
		}
	}
	if dials.Load() != 1 || live.hits.Load() != 2 {
		t.Fatalf("dead endpoint dialed %d times, live got %d requests; want 1 and 2", dials.Load(), live.hits.Load())
	}
}

// A body above MaxBody is refused with 413 before any worker sees it,
// whether its length is declared or not.
func TestMaxBody(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) })
	rt := shop("", b.addr)
	rt.MaxBody = 1000
	_, front := newFront(t, Config{}, rt)
	if status, _, _ := do(t, "POST", front, "shop.test", "/", strings.Repeat("x", 1001)); status != http.StatusRequestEntityTooLarge {
		t.Fatalf("declared 1001 bytes: %d, want 413", status)
	}
	req, _ := http.NewRequest("POST", front+"/", io.MultiReader(strings.NewReader(strings.Repeat("x", 600)), strings.NewReader(strings.Repeat("y", 600))))
	req.Host = "shop.test"
	req.ContentLength = -1 // chunked
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || b.hits.Load() != 0 {
		t.Fatalf("chunked 1200 bytes: %d, backend hits %d; want 413 and 0", resp.StatusCode, b.hits.Load())
	}
	if status, _, _ := do(t, "POST", front, "shop.test", "/", strings.Repeat("x", 1000)); status != 200 {
		t.Fatalf("1000 bytes: %d, want 200", status)
	}
}

// A big body goes to a temporary file and still arrives whole.
func TestBigBodySpooled(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Write([]byte(strings.Repeat("z", int(n))))
	})
	dir := t.TempDir()
	_, front := newFront(t, Config{TempDir: dir}, shop("", b.addr))
	size := requestMem*3 + 17
	status, _, body := do(t, "POST", front, "shop.test", "/", strings.Repeat("a", size))
	if status != 200 || len(body) != size {
		t.Fatalf("spooled request and answer: %d, %d bytes back, want %d", status, len(body), size)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

func TestBackendClosesBeforeResponse(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		conn.Close()
	})
	_, front := newFront(t, Config{}, shop("", b.addr))
	if status, _, _ := do(t, "GET", front, "shop.test", "/", ""); status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", status)
	}
	if got := b.hits.Load(); got != 1 {
		t.Fatalf("backend got %d requests, want 1 (a request that reached the app is not retried)", got)
	}
}

func TestBackendClosesMidBody(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
		buf.Flush()
		conn.Close()
	})
	_, front := newFront(t, Config{}, shop("", b.addr))
	req, err := http.NewRequest("GET", front+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "shop.test"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		// The front may abort before the client has read the header.
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	// Buffered (the default), the front sees the truncation before it
	// answers: 502, never a short 200.
	if err == nil && resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("truncated upstream body reached the client as complete: %d %q", resp.StatusCode, body)
	}
}

func TestResponseHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) })
	_, front := newFront(t, Config{ResponseHeaderTimeout: 100 * time.Millisecond}, shop("", b.addr))
	if status, _, _ := do(t, "GET", front, "shop.test", "/", ""); status != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", status)
	}
}

func TestFailStatus(t *testing.T) {
	p := New(Config{Logger: slog.New(slog.DiscardHandler)})
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	bg := context.Background()
	tests := []struct {
		name       string
		ctx        context.Context
		err        error
		want       int
		retryAfter bool
	}{
		{"refused", bg, &net.OpError{Op: "dial", Err: errors.New("connection refused")}, http.StatusBadGateway, false},
		{"eof", bg, io.EOF, http.StatusBadGateway, false},
		{"deadline", bg, fmt.Errorf("wrapped: %w", context.DeadlineExceeded), http.StatusGatewayTimeout, false},
		{"net timeout", bg, &net.OpError{Op: "read", Err: timeoutErr{}}, http.StatusGatewayTimeout, false},
		{"no endpoint", bg, balance.ErrNoEndpoint, http.StatusServiceUnavailable, true},
		{"queue full", bg, fmt.Errorf("wrapped: %w", balance.ErrQueueFull), http.StatusServiceUnavailable, true},
		{"queue timeout", bg, balance.ErrQueueTimeout, http.StatusServiceUnavailable, true},
		{"client gone", gone, context.Canceled, statusClientClosed, false},
		{"client gone beats timeout", gone, context.DeadlineExceeded, statusClientClosed, false},
		{"client gone beats queue", gone, balance.ErrQueueTimeout, statusClientClosed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			lw := newLogWriter(rec)
			defer lw.release()
			// The error handler finds the request's log writer through its
			// state, as ServeHTTP sets it up.
			st := &reqState{route: &route{Route: Route{App: "shop"}}, lw: lw}
			r := httptest.NewRequestWithContext(context.WithValue(tt.ctx, ctxKey{}, st), "GET", "http://shop.test/", nil)
			p.fail(lw, r, tt.err)
			if got := lw.status(); got != tt.want {
				t.Fatalf("fail(%v) logged %d, want %d", tt.err, got, tt.want)
			}
			if lw.err != tt.err {
				t.Errorf("logged error %v, want %v", lw.err, tt.err)
			}
			if tt.want == statusClientClosed {
				if rec.Body.Len() != 0 || len(rec.Header()) != 0 {
					t.Errorf("sent %d %q to a client that is gone", rec.Code, rec.Body)
				}
				return
			}
			if rec.Code != tt.want {
				t.Errorf("fail(%v) sent %d, want %d", tt.err, rec.Code, tt.want)
			}
			if got := rec.Header().Get("Retry-After"); (got == "1") != tt.retryAfter || (got != "" && got != "1") {
				t.Errorf("Retry-After %q (want it: %v)", got, tt.retryAfter)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestSetRoutesWhileInFlight(t *testing.T) {
	arrived := make(chan struct{})
	release := make(chan struct{})
	old := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "old")
	})
	next := named(t, "new")
	p, front := newFront(t, Config{}, shop("", old.addr))

	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("GET", front+"/", nil)
		req.Host = "shop.test"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- result{resp.StatusCode, string(b), err}
	}()
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("slow request never reached the old backend")
	}

	// The old endpoint is withdrawn, which also closes idle connections.
	p.SetRoutes([]Route{shop("", next.addr)})
	if status, _, body := do(t, "GET", front, "shop.test", "/", ""); status != http.StatusOK || body != "new" {
		t.Fatalf("request after SetRoutes: %d %q, want 200 \"new\"", status, body)
	}
	close(release)

	select {
	case r := <-done:
		if r.err != nil || r.status != http.StatusOK || r.body != "old" {
			t.Fatalf("in-flight request: %d %q %v, want 200 \"old\"", r.status, r.body, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight request never finished")
	}
	if got := old.hits.Load(); got != 1 {
		t.Fatalf("old backend got %d requests, want 1", got)
	}
}

// A stream marked X-Accel-Buffering: no (or an event stream) passes
// through as the worker writes it, buffering or not.
func TestStreaming(t *testing.T) {
	firstRead := make(chan struct{})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Accel-Buffering", "no")
		io.WriteString(w, "first\n")
		http.NewResponseController(w).Flush()
		select {
		case <-firstRead:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "second\n")
	})
	_, front := newFront(t, Config{}, shop("", b.addr))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", front+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "shop.test"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	// The backend holds the second chunk back until the first arrived, so a
	// buffering proxy makes this read time out.
	line, err := rd.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first chunk: %q, %v", line, err)
	}
	close(firstRead)
	rest, err := io.ReadAll(rd)
	if err != nil || string(rest) != "second\n" {
		t.Fatalf("rest: %q, %v", rest, err)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	var cur, peak atomic.Int64
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		n := cur.Add(1)
		defer cur.Add(-1)
		for m := peak.Load(); n > m && !peak.CompareAndSwap(m, n); m = peak.Load() {
		}
		time.Sleep(10 * time.Millisecond)
		io.WriteString(w, "ok")
	})
	rt := shop("", b.addr)
	rt.Concurrency = 1
	_, front := newFront(t, Config{}, rt)
	const n = 10
	var wg sync.WaitGroup
	statuses := make(chan int, n)
	for range n {
		wg.Go(func() {
			status, _, _, err := send("GET", front, "shop.test", "/", "", nil)
			if err != nil {
				t.Error(err)
			}
			statuses <- status
		})
	}
	wg.Wait()
	close(statuses)
	for status := range statuses {
		if status != http.StatusOK {
			t.Errorf("status %d, want 200", status)
		}
	}
	if m := peak.Load(); m != 1 {
		t.Errorf("backend with concurrency 1 served %d requests at once", m)
	}
	if h := b.hits.Load(); h != n {
		t.Errorf("backend got %d requests, want %d", h, n)
	}
}

func TestQueueOverflow(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	var log lockedBuffer
	rt := shop("", b.addr)
	rt.Concurrency, rt.MaxQueue, rt.QueueTimeout = 1, 1, 100*time.Millisecond
	p, front := newFront(t, Config{Logger: slog.New(slog.NewTextHandler(&log, nil))}, rt)
	set := p.table.Load().match("shop.test", "/").set

	type result struct {
		status     int
		retryAfter string
	}
	send := func() <-chan result {
		c := make(chan result, 1)
		go func() {
			status, h, _, err := send("GET", front, "shop.test", "/", "", nil)
			if err != nil {
				t.Error(err)
			}
			c <- result{status, h.Get("Retry-After")}
		}()
		return c
	}
	busy := send()
	<-arrived
	queued := send()
	eventually(t, "a queued request", func() bool { return set.Queued() == 1 })

	overflow := <-send()
	if overflow.status != http.StatusServiceUnavailable || overflow.retryAfter != "1" {
		t.Errorf("request beyond MaxQueue: %d with Retry-After %q, want 503 with 1", overflow.status, overflow.retryAfter)
	}
	if !strings.Contains(log.String(), balance.ErrQueueFull.Error()) {
		t.Errorf("the overflow was not refused for a full queue; log:\n%s", log.String())
	}
	r := <-queued
	if r.status != http.StatusServiceUnavailable || r.retryAfter != "1" {
		t.Errorf("queued request: %d with Retry-After %q, want 503 with 1 after the queue timeout", r.status, r.retryAfter)
	}
	if !strings.Contains(log.String(), balance.ErrQueueTimeout.Error()) {
		t.Errorf("the queued request did not time out; log:\n%s", log.String())
	}
	if h := b.hits.Load(); h != 1 {
		t.Errorf("backend with concurrency 1 got %d requests", h)
	}
	close(release)
	if r := <-busy; r.status != http.StatusOK {
		t.Errorf("request being served: %d, want 200", r.status)
	}
}

func TestAccessLogJSON(t *testing.T) {
	b := named(t, "b")
	var buf lockedBuffer
	_, front := newFront(t, Config{AccessLog: &buf, AccessLogFormat: "json"}, shop("", b.addr))

	type want struct {
		app, upstream, requestID string
		status                   int
	}
	var wants []want
	for _, id := range []string{"", "client-id-1"} {
		h := http.Header{}
		if id != "" {
			h.Set("X-Request-ID", id)
		}
		status, rh, _ := doHeader(t, "GET", front, "shop.test", "/x?y=1", "", h)
		wants = append(wants, want{"shop", b.addr, rh.Get("X-Request-ID"), status})
	}
	// A 404 gets a request id too, so even a miss can be found in the log.
	status, rh404, _ := doHeader(t, "GET", front, "other.test", "/", "", http.Header{})
	wants = append(wants, want{"", "-", rh404.Get("X-Request-ID"), status})

	// The line is written after the response, so it may come a little later.
	eventually(t, "3 access log lines", func() bool { return strings.Count(buf.String(), "\n") >= 3 })
	var got []want
	for line := range strings.Lines(buf.String()) {
		var e struct {
			App       string  `json:"app"`
			Status    float64 `json:"status"`
			Upstream  string  `json:"upstream"`
			RequestID string  `json:"request_id"`
			URI       string  `json:"uri"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		got = append(got, want{e.App, e.Upstream, e.RequestID, int(e.Status)})
	}
	if len(got) != len(wants) {
		t.Fatalf("access log has %d lines for %d requests:\n%s", len(got), len(wants), buf.String())
	}
	for _, w := range wants {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			t.Errorf("no access log line %+v in\n%s", w, buf.String())
		}
	}
	if wants[0].requestID == "" || wants[1].requestID != "client-id-1" || wants[2].requestID == "" || wants[0].status != 200 || wants[2].status != 404 {
		t.Errorf("responses: %+v", wants)
	}
}

// TestSetRoutesClosesIdleConnections withdraws an endpoint with an idle
// pooled connection: the proxy must close it at once, not at its idle
// timeout.
func TestSetRoutesClosesIdleConnections(t *testing.T) {
	states := make(chan http.ConnState, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) { states <- s }
	srv.Start()
	t.Cleanup(srv.Close)
	other := named(t, "other")
	addr := srv.Listener.Addr().String()
	p, front := newFront(t, Config{IdleConnTimeout: time.Minute}, shop("", addr))

	if status, _, body := do(t, "GET", front, "shop.test", "/", ""); status != http.StatusOK || body != "ok" {
		t.Fatalf("request: %d %q, want 200 \"ok\"", status, body)
	}
	// next is the backend connection's next state, failing after 5 s.
	next := func() http.ConnState {
		t.Helper()
		select {
		case s := <-states:
			return s
		case <-time.After(5 * time.Second):
			t.Fatal("backend connection did not change state in 5s")
			return 0
		}
	}
	for _, want := range []http.ConnState{http.StateNew, http.StateActive, http.StateIdle} {
		if s := next(); s != want {
			t.Fatalf("backend connection went to %v, want %v", s, want)
		}
	}
	select {
	case s := <-states:
		t.Fatalf("idle pooled connection went to %v before SetRoutes", s)
	case <-time.After(50 * time.Millisecond):
	}

	p.SetRoutes([]Route{shop("", other.addr)})
	if s := next(); s != http.StateClosed {
		t.Fatalf("after SetRoutes withdrew the endpoint its idle connection went to %v, want %v", s, http.StateClosed)
	}
}

// TestSetRoutesWithdrawsBusyEndpoint withdraws an endpoint while a request
// on it is in flight, with nothing after SetRoutes ordering it before the
// transport's goroutines (the backend answers on its own time): the
// request must finish, its connection must then close, and -race must stay
// quiet.
func TestSetRoutesWithdrawsBusyEndpoint(t *testing.T) {

	arrived := make(chan struct{}, 1)
	states := make(chan http.ConnState, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		time.Sleep(100 * time.Millisecond)
		io.WriteString(w, "old")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) { states <- s }
	srv.Start()
	t.Cleanup(srv.Close)
	next := named(t, "new")
	p, front := newFront(t, Config{IdleConnTimeout: time.Minute}, shop("", srv.Listener.Addr().String()))

	type result struct {
		status int
		body   string
	}
	done := make(chan result, 1)
	go func() {
		status, _, body, err := send("GET", front, "shop.test", "/", "", nil)
		if err != nil {
			t.Error(err)
		}
		done <- result{status, body}
	}()
	<-arrived
	p.SetRoutes([]Route{shop("", next.addr)})
	if r := <-done; r.status != http.StatusOK || r.body != "old" {
		t.Fatalf("in-flight request: %d %q, want 200 \"old\"", r.status, r.body)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case s := <-states:
			if s == http.StateClosed {
				return
			}
		case <-deadline:
			t.Fatal("the withdrawn endpoint's connection stayed open after its request finished")
		}
	}
}
