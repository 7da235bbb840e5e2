package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// newFront starts the proxy behind a real listener and returns it with its
// base URL.
func newFront(t *testing.T, routes ...Route) (*Proxy, string) {
	t.Helper()
	p := New(slog.New(slog.DiscardHandler))
	p.SetRoutes(routes)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	t.Cleanup(p.transport.CloseIdleConnections)
	return p, srv.URL
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

// do sends a request for host through the front and returns status and body.
func do(t *testing.T, method, front, host, path, body string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, front+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s%s: read body: %v", method, host, path, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func TestRoundRobin(t *testing.T) {
	a, b, c := named(t, "a"), named(t, "b"), named(t, "c")
	_, front := newFront(t, Route{App: "shop", Hosts: []string{"shop.test"}, Endpoints: []string{a.addr, b.addr, c.addr}})
	var got []string
	for range 9 {
		status, _, body := do(t, "GET", front, "shop.test", "/", "")
		if status != http.StatusOK {
			t.Fatalf("status %d, want 200", status)
		}
		got = append(got, body)
	}
	if s := strings.Join(got, ""); s != "abcabcabc" {
		t.Fatalf("backends in order %q, want %q", s, "abcabcabc")
	}
}

func TestForwardedHeaders(t *testing.T) {
	type seen struct {
		host, xff, xfh, xfp, forwarded string
	}
	got := make(chan seen, 1)
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		got <- seen{
			host:      r.Host,
			xff:       strings.Join(r.Header.Values("X-Forwarded-For"), ","),
			xfh:       strings.Join(r.Header.Values("X-Forwarded-Host"), ","),
			xfp:       strings.Join(r.Header.Values("X-Forwarded-Proto"), ","),
			forwarded: r.Header.Get("Forwarded"),
		}
	})
	_, front := newFront(t, Route{App: "shop", Hosts: []string{"shop.test"}, Endpoints: []string{b.addr}})

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
	want := seen{host: "Shop.test:8080", xff: "127.0.0.1", xfh: "Shop.test:8080", xfp: "http"}
	if s := <-got; s != want {
		t.Fatalf("upstream saw %+v, want %+v", s, want)
	}
}

func TestNoRoute(t *testing.T) {
	b := named(t, "b")
	_, front := newFront(t, Route{App: "shop", Hosts: []string{"shop.test"}, Endpoints: []string{b.addr}})
	if status, _, _ := do(t, "GET", front, "other.test", "/", ""); status != http.StatusNotFound {
		t.Fatalf("unknown host: status %d, want 404", status)
	}
	if n := b.hits.Load(); n != 0 {
		t.Fatalf("backend got %d requests for an unknown host", n)
	}
}

func TestNoEndpoints(t *testing.T) {
	_, front := newFront(t, Route{App: "shop", Hosts: []string{"shop.test"}})
	status, h, body := do(t, "GET", front, "shop.test", "/", "")
	if status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", status)
	}
	if h.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if !strings.Contains(body, "shop") {
		t.Errorf("body %q does not name the app", body)
	}
}

func TestGetRetriedOnRefusedConnection(t *testing.T) {
	live := named(t, "live")
	dead := deadAddr(t)
	_, front := newFront(t, Route{App: "shop", Hosts: []string{"shop.test"}, Endpoints: []string{dead, live.addr}})
	// Round-robin starts every other request on the dead endpoint.
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
}

func TestRetriesAreBounded(t *testing.T) {
	live := named(t, "live")
	_, front := newFront(t, Route{App: "shop", Hosts: []string{"shop.test"},
		Endpoints: []string{deadAddr(t), deadAddr(t), deadAddr(t), live.addr}})
	// The first request starts at endpoint 0 and gives up after three dead ones.
	if status, _, _ := do(t, "GET", front, "shop.test", "/", ""); status != http.StatusBadGateway {
		t.Fatalf("first request: status %d, want 502 after %d attempts", status, maxAttempts)
	}
	if got := live.hits.Load(); got != 0 {
		t.Fatalf("live backend reached after %d dead endpoints", maxAttempts)
	}
	// The second starts at endpoint 1 and reaches the live one third.
	if status, _, body := do(t, "GET", front, "shop.test", "/", ""); status != http.StatusOK || body != "live" {
		t.Fatalf("second request: %d %q, want 200 \"live\"", status, body)
	}
}

func TestOnlyDeadEndpoint(t *testing.T) {
	_, front := newFront(t, Route{App: "shop", Hosts: []string{"shop.test"}, Endpoints: []string{deadAddr(t)}})
	if status, _, _ := do(t, "GET", front, "shop.test", "/", ""); status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", status)
	}
}

func TestPostWithBodyNotRetried(t *testing.T) {
	live := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "live got %s", b)
	})
	_, front := newFront(t, Route{App: "shop", Hosts: []string{"shop.test"}, Endpoints: []string{deadAddr(t), live.addr}})
	// The first request starts on the dead endpoint.
	if status, _, _ := do(t, "POST", front, "shop.test", "/orders", "hello"); status != http.StatusBadGateway {
		t.Fatalf("POST to a dead endpoint: status %d, want 502", status)
	}
	if got := live.hits.Load(); got != 0 {
		t.Fatalf("POST with a body was replayed on another endpoint (%d requests)", got)
	}
	// The second starts on the live one, with its body intact.
	if status, _, body := do(t, "POST", front, "shop.test", "/orders", "hello"); status != http.StatusOK || body != "live got hello" {
		t.Fatalf("POST to a live endpoint: %d %q, want 200 \"live got hello\"", status, body)
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
	_, front := newFront(t, Route{App: "shop", Hosts: []string{"shop.test"}, Endpoints: []string{b.addr}})
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
	_, front := newFront(t, Route{App: "shop", Hosts: []string{"shop.test"}, Endpoints: []string{b.addr}})
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
	if err == nil {
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
	p, front := newFront(t, Route{App: "shop", Hosts: []string{"shop.test"}, Endpoints: []string{b.addr}})
	p.transport.ResponseHeaderTimeout = 100 * time.Millisecond
	if status, _, _ := do(t, "GET", front, "shop.test", "/", ""); status != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", status)
	}
}

func TestFailStatus(t *testing.T) {
	p := New(slog.New(slog.DiscardHandler))
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want int
	}{
		{"refused", context.Background(), &net.OpError{Op: "dial", Err: errors.New("connection refused")}, http.StatusBadGateway},
		{"eof", context.Background(), io.EOF, http.StatusBadGateway},
		{"deadline", context.Background(), fmt.Errorf("wrapped: %w", context.DeadlineExceeded), http.StatusGatewayTimeout},
		{"net timeout", context.Background(), &net.OpError{Op: "read", Err: timeoutErr{}}, http.StatusGatewayTimeout},
		{"client gone", gone, context.Canceled, 499},
		{"client gone beats timeout", gone, context.DeadlineExceeded, 499},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequestWithContext(tt.ctx, "GET", "http://shop.test/", nil)
			w := httptest.NewRecorder()
			p.fail(w, r, tt.err)
			if w.Code != tt.want {
				t.Fatalf("fail(%v) = %d, want %d", tt.err, w.Code, tt.want)
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
	p, front := newFront(t, Route{App: "shop", Hosts: []string{"shop.test"}, Endpoints: []string{old.addr}})

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
	p.SetRoutes([]Route{{App: "shop", Hosts: []string{"shop.test"}, Endpoints: []string{next.addr}}})
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

func TestStreaming(t *testing.T) {
	firstRead := make(chan struct{})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		http.NewResponseController(w).Flush()
		select {
		case <-firstRead:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "second\n")
	})
	_, front := newFront(t, Route{App: "shop", Hosts: []string{"shop.test"}, Endpoints: []string{b.addr}})

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
