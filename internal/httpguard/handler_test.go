package httpguard

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// guarded is a real http.Server wired as the package doc says, on a
// loopback port chosen by the kernel, counting the calls that reach h.
type guarded struct {
	addr  string
	calls atomic.Int32
}

func serve(t *testing.T, h http.HandlerFunc, opts ...func(*http.Server)) *guarded {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &guarded{addr: ln.Addr().String()}
	srv := &http.Server{
		Handler: Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			g.calls.Add(1)
			h(w, r)
		})),
		ConnContext:       ConnContext,
		ReadHeaderTimeout: 10 * time.Second,
	}
	for _, o := range opts {
		o(srv)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(Listener(ln)) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return g
}

// echo answers with the method, path and body it got.
func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
}

type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func (g *guarded) dial(t *testing.T) *client {
	t.Helper()
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t, c, bufio.NewReader(c)}
}

func (c *client) send(raw string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, raw); err != nil {
		c.t.Fatal(err)
	}
}

// response reads one response and its body.
func (c *client) response() (*http.Response, string) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.t.Fatalf("reading response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("reading body: %v", err)
	}
	return resp, string(body)
}

func (c *client) expect(status int, body string) {
	c.t.Helper()
	resp, got := c.response()
	if resp.StatusCode != status || got != body {
		c.t.Fatalf("got %d %q, want %d %q", resp.StatusCode, got, status, body)
	}
}

// closed checks that the server closed the connection: a reset counts,
// since the server may close with bytes of ours unread.
func (c *client) closed() {
	c.t.Helper()
	b, err := c.br.ReadByte()
	if err == nil {
		c.t.Fatalf("connection still open: read %q", b)
	}
	if err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("want the connection closed, got %v", err)
	}
}

func TestRefusesAmbiguousFraming(t *testing.T) {
	big := "X-Big: " + strings.Repeat("a", maxHead) + "\r\n"
	for _, tc := range []struct {
		name   string
		req    string
		status int
		body   string // "" when net/http answers itself
	}{
		// net/http serves these.
		{"Content-Length and chunked", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			400, "bad request: Content-Length with Transfer-Encoding\n"},
		{"equal Content-Lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
			400, "bad request: duplicate Content-Length\n"},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400, "bad request: obs-fold\n"},
		{"bare LF", "GET / HTTP/1.1\nHost: x\n\n", 400, "bad request: bare LF\n"},
		{"one bare LF", "GET / HTTP/1.1\r\nHost: x\nX-A: a\r\n\r\n", 400, "bad request: bare LF\n"},
		{"header too large", "GET / HTTP/1.1\r\nHost: x\r\n" + big + "\r\n", 400, "bad request: header too large\n"},
		// net/http refuses these itself; they must stay refused.
		{"different Content-Lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", 400, ""},
		{"Content-Length with a sign", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd", 400, ""},
		{"bare CR", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400, ""},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400, ""},
		{"gzip", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := serve(t, echo)
			c := g.dial(t)
			c.send(tc.req)
			resp, body := c.response()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%q)", resp.StatusCode, tc.status, body)
			}
			if tc.body != "" && body != tc.body {
				t.Fatalf("body %q, want %q", body, tc.body)
			}
			c.closed()
			if n := g.calls.Load(); n != 0 {
				t.Fatalf("handler called %d times", n)
			}
		})
	}
}

func TestBadRequestEndsKeepAlive(t *testing.T) {
	g := serve(t, echo)
	c := g.dial(t)
	c.send("GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
	c.expect(200, "GET /first ")
	c.send("POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx")
	c.expect(400, "bad request: duplicate Content-Length\n")
	c.closed()
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("handler called %d times, want 1", n)
	}
}

func TestLargeHeadLeftToNetHTTP(t *testing.T) {
	g := serve(t, echo, func(s *http.Server) { s.MaxHeaderBytes = 16 << 10 })
	c := g.dial(t)
	c.send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2*maxHead) + "\r\n\r\n")
	if resp, _ := c.response(); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
	if n := g.calls.Load(); n != 0 {
		t.Fatalf("handler called %d times", n)
	}
}

func TestServesGoodRequests(t *testing.T) {
	const (
		get   = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
		post  = "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
		chunk = "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"4;name=val\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Sum: 1\r\n\r\n"
		// A body that would be a smuggling attempt as a head.
		smuggle = "Transfer-Encoding: chunked\r\nContent-Length: 4\n x\r\n\r\n"
	)
	looksBad := fmt.Sprintf("POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(smuggle), smuggle)
	want := []string{"GET /a ", "POST /b hello", "POST /c wikipedia", "POST /d " + smuggle}

	t.Run("one at a time", func(t *testing.T) {
		t.Parallel()
		g := serve(t, echo)
		c := g.dial(t)
		for i, req := range []string{get, post, chunk, looksBad, get} {
			c.send(req)
			c.expect(200, want[i%len(want)])
		}
		if n := g.calls.Load(); n != 5 {
			t.Fatalf("handler called %d times, want 5", n)
		}
	})
	t.Run("pipelined", func(t *testing.T) {
		t.Parallel()
		g := serve(t, echo)
		c := g.dial(t)
		c.send(get + post + chunk + looksBad)
		for _, w := range want {
			c.expect(200, w)
		}
		if n := g.calls.Load(); n != 4 {
			t.Fatalf("handler called %d times, want 4", n)
		}
	})
}

func TestUpgradeBecomesTunnel(t *testing.T) {
	verdict := make(chan string, 1)
	g := serve(t, func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		io.Copy(conn, rw) // echo until the client closes
		verdict <- FromContext(r.Context()).Bad()
	})
	c := g.dial(t)
	c.send("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	if resp, _ := c.response(); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	frames := "\x81\x05\n\r\x00 obs\r\n fold\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"
	c.send(frames)
	got := make([]byte, len(frames))
	if _, err := io.ReadFull(c.br, got); err != nil || string(got) != frames {
		t.Fatalf("echo %q, %v", got, err)
	}
	c.c.Close()
	if why := <-verdict; why != "" {
		t.Fatalf("tunnel flagged: %q", why)
	}
}

func TestIgnoredUpgradeEndsConnection(t *testing.T) {
	g := serve(t, echo)
	c := g.dial(t)
	// Were the inspection to stay off after an upgrade nobody performed, the
	// request behind it would reach the handler.
	c.send("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" +
		"POST /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	resp, body := c.response()
	if resp.StatusCode != 200 || body != "GET /ws " || !resp.Close {
		t.Fatalf("got %d %q close=%v, want 200 %q and Connection: close", resp.StatusCode, body, resp.Close, "GET /ws ")
	}
	c.closed()
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("handler called %d times, want 1", n)
	}
}

func TestHandlerWithoutConn(t *testing.T) {
	var called bool
	h := Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if !called {
		t.Fatal("a request without a Conn did not reach the handler")
	}
}
