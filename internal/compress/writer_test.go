package compress

import (
	"bytes"
	stdgzip "compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
)

// page returns n bytes of HTML-ish text that compresses like a real page
// (repetitive, but not one string repeated).
func page(n int) []byte {
	words := []string{"herd", "<div class=\"row\">", "proxy", "</div>", "upstream", "<p>", "worker", "</p>\n", "release", "node"}
	var b bytes.Buffer
	b.WriteString("<!doctype html><html><body>\n")
	x := uint32(1)
	for b.Len() < n {
		x = x*1664525 + 1013904223
		b.WriteString(words[x>>28%uint32(len(words))])
		b.WriteString(strconv.Itoa(int(x >> 24)))
		b.WriteByte(' ')
	}
	return b.Bytes()[:n]
}

// newServer starts a loopback server whose handler h is wrapped with
// NewWriter.
func newServer(t *testing.T, opts *Options, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw, done := NewWriter(w, r, opts)
		defer func() {
			if err := done(); err != nil {
				t.Errorf("close: %v", err)
			}
		}()
		h(cw, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// fetch sends a request and returns the response with its raw
// (still encoded) body. header is added to the request.
func fetch(t *testing.T, srv *httptest.Server, method string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := rawClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// rawClient does not ask for or decode compression itself.
func rawClient(t *testing.T) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func decode(t *testing.T, coding string, body []byte) []byte {
	t.Helper()
	var r io.Reader
	switch coding {
	case "gzip":
		zr, err := stdgzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("gzip header: %v", err)
		}
		r = zr
	case "br":
		r = brotli.NewReader(bytes.NewReader(body))
	default:
		t.Fatalf("unexpected coding %q", coding)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decode %s: %v", coding, err)
	}
	return out
}

func varyCount(h http.Header) int {
	n := 0
	for _, v := range h.Values("Vary") {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), "Accept-Encoding") {
				n++
			}
		}
	}
	return n
}

func TestCompressesLargeBody(t *testing.T) {
	body := page(10 << 10)
	for _, coding := range []string{"br", "gzip"} {
		for _, length := range []string{"known", "unknown"} {
			t.Run(coding+"/"+length, func(t *testing.T) {
				srv := newServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
					h := w.Header()
					h.Set("Content-Type", "text/html; charset=utf-8")
					h.Set("ETag", `"v1"`)
					h.Set("Accept-Ranges", "bytes")
					if length == "known" {
						h.Set("Content-Length", strconv.Itoa(len(body)))
					}
					w.Write(body)
				})
				resp, raw := fetch(t, srv, "GET", "Accept-Encoding", "gzip, deflate, br;q="+map[string]string{"br": "1", "gzip": "0.5"}[coding])
				if got := resp.Header.Get("Content-Encoding"); got != coding {
					t.Fatalf("Content-Encoding = %q, want %q", got, coding)
				}
				if resp.ContentLength != -1 || resp.Header.Get("Content-Length") != "" {
					t.Errorf("Content-Length kept: %d", resp.ContentLength)
				}
				if n := varyCount(resp.Header); n != 1 {
					t.Errorf("Vary: Accept-Encoding %d times, want 1 (%q)", n, resp.Header.Values("Vary"))
				}
				if got := resp.Header.Get("ETag"); got != `W/"v1"` {
					t.Errorf("ETag = %q, want W/\"v1\"", got)
				}
				if got := resp.Header.Get("Accept-Ranges"); got != "" {
					t.Errorf("Accept-Ranges = %q, want none", got)
				}
				if len(raw) >= len(body)/2 {
					t.Errorf("compressed to %d of %d bytes", len(raw), len(body))
				}
				if got := decode(t, coding, raw); !bytes.Equal(got, body) {
					t.Errorf("decoded body differs: %d bytes, want %d", len(got), len(body))
				}
			})
		}
	}
}

// TestSmallWrites crosses MinSize in many small writes, so the held-back
// bytes and the rest go through the encoder in order.
func TestSmallWrites(t *testing.T) {
	body := page(5000)
	srv := newServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for p := body; len(p) > 0; {
			n := min(len(p), 37)
			w.Write(p[:n])
			p = p[n:]
		}
	})
	resp, raw := fetch(t, srv, "GET", "Accept-Encoding", "gzip")
	if got := resp.Header.Get("Content-Encoding"); got != "gzip" {
		t.Fatalf("Content-Encoding = %q, want gzip", got)
	}
	if got := decode(t, "gzip", raw); !bytes.Equal(got, body) {
		t.Errorf("decoded body differs")
	}
}

func TestSmallBody(t *testing.T) {
	body := page(100)
	for _, length := range []string{"known", "unknown"} {
		t.Run(length, func(t *testing.T) {
			srv := newServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				w.Header().Set("ETag", `"v1"`)
				if length == "known" {
					w.Header().Set("Content-Length", "100")
				}
				w.Write(body)
			})
			resp, raw := fetch(t, srv, "GET", "Accept-Encoding", "br, gzip")
			if got := resp.Header.Get("Content-Encoding"); got != "" {
				t.Errorf("Content-Encoding = %q, want none", got)
			}
			if resp.ContentLength != 100 {
				t.Errorf("ContentLength = %d, want 100", resp.ContentLength)
			}
			if n := varyCount(resp.Header); n != 1 {
				t.Errorf("Vary: Accept-Encoding %d times, want 1", n)
			}
			if got := resp.Header.Get("ETag"); got != `"v1"` {
				t.Errorf("ETag = %q, want it strong", got)
			}
			if !bytes.Equal(raw, body) {
				t.Errorf("body changed")
			}
		})
	}
}

func TestMinSizeOption(t *testing.T) {
	body := page(100)
	srv := newServer(t, &Options{MinSize: 50}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})
	resp, raw := fetch(t, srv, "GET", "Accept-Encoding", "gzip")
	if got := resp.Header.Get("Content-Encoding"); got != "gzip" {
		t.Fatalf("Content-Encoding = %q, want gzip with MinSize 50", got)
	}
	if got := decode(t, "gzip", raw); !bytes.Equal(got, body) {
		t.Errorf("decoded body differs")
	}
}

// TestPassThrough checks responses that must reach the client byte for
// byte, with their headers as the handler set them.
func TestPassThrough(t *testing.T) {
	body := page(10 << 10)
	cases := []struct {
		name    string
		header  []string // response headers
		status  int
		request []string // request headers besides Accept-Encoding
		ae      string
	}{
		{name: "image/png", header: []string{"Content-Type", "image/png"}},
		{name: "already gzip", header: []string{"Content-Type", "text/html", "Content-Encoding", "gzip"}},
		{name: "already identity-named coding", header: []string{"Content-Type", "text/html", "Content-Encoding", "zstd"}},
		{name: "range request", header: []string{"Content-Type", "text/html"}, request: []string{"Range", "bytes=0-99"}},
		{name: "206 response", header: []string{"Content-Type", "text/html", "Content-Range", "bytes 0-10239/20000"}, status: http.StatusPartialContent},
		{name: "content-range on 200", header: []string{"Content-Type", "text/html", "Content-Range", "bytes 0-10239/20000"}},
		{name: "no-transform", header: []string{"Content-Type", "text/html", "Cache-Control", "public, No-Transform"}},
		{name: "event stream", header: []string{"Content-Type", "text/event-stream"}},
		{name: "type suppressed", header: []string{"Content-Type", ""}},
		{name: "no accept-encoding", header: []string{"Content-Type", "text/html"}, ae: "-"},
		{name: "identity only", header: []string{"Content-Type", "text/html"}, ae: "identity"},
		{name: "refused", header: []string{"Content-Type", "text/html"}, ae: "gzip;q=0, br;q=0"},
		{name: "websocket upgrade", header: []string{"Content-Type", "text/html"}, request: []string{"Upgrade", "websocket", "Connection", "Upgrade"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
				for i := 0; i < len(tc.header); i += 2 {
					w.Header().Set(tc.header[i], tc.header[i+1])
				}
				if tc.status != 0 {
					w.WriteHeader(tc.status)
				}
				w.Write(body)
			})
			req := tc.request
			switch tc.ae {
			case "":
				req = append(req, "Accept-Encoding", "br, gzip")
			case "-":
			default:
				req = append(req, "Accept-Encoding", tc.ae)
			}
			resp, raw := fetch(t, srv, "GET", req...)
			want := ""
			for i := 0; i < len(tc.header); i += 2 {
				if tc.header[i] == "Content-Encoding" {
					want = tc.header[i+1]
				}
			}
			if got := resp.Header.Get("Content-Encoding"); got != want {
				t.Errorf("Content-Encoding = %q, want %q", got, want)
			}
			if !bytes.Equal(raw, body) {
				t.Errorf("body changed: %d bytes, want %d", len(raw), len(body))
			}
			if resp.Header.Get("Vary") != "" {
				t.Errorf("Vary = %q, want none", resp.Header.Get("Vary"))
			}
		})
	}
}

func TestVaryNotDuplicated(t *testing.T) {
	cases := []struct {
		preset string
		want   []string
	}{
		{"accept-encoding", []string{"accept-encoding"}},
		{"Origin, Accept-Encoding", []string{"Origin, Accept-Encoding"}},
		{"Origin", []string{"Origin", "Accept-Encoding"}},
		{"*", []string{"*"}},
	}
	body := page(10 << 10)
	for _, tc := range cases {
		t.Run(tc.preset, func(t *testing.T) {
			srv := newServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				w.Header().Set("Vary", tc.preset)
				w.Write(body)
			})
			resp, _ := fetch(t, srv, "GET", "Accept-Encoding", "gzip")
			if got := resp.Header.Values("Vary"); strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("Vary = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestSniffedType: with no Content-Type, the type is sniffed as net/http
// would, and decides.
func TestSniffedType(t *testing.T) {
	html := page(10 << 10)
	png := append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 10<<10)...)
	cases := []struct {
		name     string
		body     []byte
		wantType string
		wantEnc  string
	}{
		{"html", html, "text/html; charset=utf-8", "gzip"},
		{"png", png, "image/png", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
				w.Write(tc.body)
			})
			resp, raw := fetch(t, srv, "GET", "Accept-Encoding", "gzip")
			if got := resp.Header.Get("Content-Type"); got != tc.wantType {
				t.Errorf("Content-Type = %q, want %q", got, tc.wantType)
			}
			if got := resp.Header.Get("Content-Encoding"); got != tc.wantEnc {
				t.Fatalf("Content-Encoding = %q, want %q", got, tc.wantEnc)
			}
			if tc.wantEnc != "" {
				raw = decode(t, tc.wantEnc, raw)
			}
			if !bytes.Equal(raw, tc.body) {
				t.Errorf("body differs")
			}
		})
	}
}

// TestStreaming: a flushed chunk reaches the client, decodable, while the
// handler still waits to write the next one.
func TestStreaming(t *testing.T) {
	first := []byte("first chunk, well below MinSize\n")
	second := page(4 << 10)
	for _, coding := range []string{"gzip", "br"} {
		t.Run(coding, func(t *testing.T) {
			next := make(chan struct{})
			srv := newServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/x-ndjson+json")
				w.Write(first)
				if err := http.NewResponseController(w).Flush(); err != nil {
					t.Errorf("flush: %v", err)
				}
				select {
				case <-next:
				case <-r.Context().Done():
					return
				}
				w.Write(second)
			})
			req, _ := http.NewRequest("GET", srv.URL, nil)
			req.Header.Set("Accept-Encoding", coding)
			resp, err := rawClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if got := resp.Header.Get("Content-Encoding"); got != coding {
				t.Fatalf("Content-Encoding = %q, want %q", got, coding)
			}

			var zr io.Reader
			got := make([]byte, len(first))
			read := make(chan error, 1)
			go func() {
				if coding == "gzip" {
					r, err := stdgzip.NewReader(resp.Body)
					if err != nil {
						read <- err
						return
					}
					zr = r
				} else {
					zr = brotli.NewReader(resp.Body)
				}
				_, err := io.ReadFull(zr, got)
				read <- err
			}()
			select {
			case err := <-read:
				if err != nil {
					t.Fatalf("reading first chunk: %v", err)
				}
			case <-time.After(5 * time.Second):
				close(next)
				t.Fatal("first chunk did not arrive before the second was written")
			}
			if !bytes.Equal(got, first) {
				t.Fatalf("first chunk = %q, want %q", got, first)
			}
			close(next)
			rest, err := io.ReadAll(zr)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(rest, second) {
				t.Errorf("second chunk differs: %d bytes, want %d", len(rest), len(second))
			}
		})
	}
}

// TestFlushFirst: a Flush before any Write sends the headers and leaves the
// response streaming.
func TestFlushFirst(t *testing.T) {
	body := page(300)
	srv := newServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.(http.Flusher).Flush()
		w.Write(body)
	})
	resp, raw := fetch(t, srv, "GET", "Accept-Encoding", "gzip")
	if got := resp.Header.Get("Content-Encoding"); got != "gzip" {
		t.Fatalf("Content-Encoding = %q, want gzip (a flush decides)", got)
	}
	if got := decode(t, "gzip", raw); !bytes.Equal(got, body) {
		t.Errorf("decoded body differs")
	}
}

func TestNoBody(t *testing.T) {
	cases := []struct {
		name    string
		status  int // 0: handler writes nothing at all
		header  []string
		wantLen string // Content-Length header
	}{
		{"204", http.StatusNoContent, nil, ""},
		{"304", http.StatusNotModified, []string{"ETag", `"v1"`}, ""},
		{"nothing written", 0, []string{"Content-Type", "text/html"}, "0"},
		{"404 empty", http.StatusNotFound, []string{"Content-Type", "text/html"}, "0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
				for i := 0; i < len(tc.header); i += 2 {
					w.Header().Set(tc.header[i], tc.header[i+1])
				}
				if tc.status != 0 {
					w.WriteHeader(tc.status)
				}
			})
			resp, raw := fetch(t, srv, "GET", "Accept-Encoding", "gzip, br")
			want := tc.status
			if want == 0 {
				want = http.StatusOK
			}
			if resp.StatusCode != want {
				t.Errorf("status = %d, want %d", resp.StatusCode, want)
			}
			if got := resp.Header.Get("Content-Encoding"); got != "" {
				t.Errorf("Content-Encoding = %q, want none", got)
			}
			if len(raw) != 0 {
				t.Errorf("body = %q, want empty", raw)
			}
			if got := resp.Header.Get("Content-Length"); got != tc.wantLen {
				t.Errorf("Content-Length = %q, want %q", got, tc.wantLen)
			}
			if tc.status == http.StatusNotModified && resp.Header.Get("ETag") != `"v1"` {
				t.Errorf("304 ETag = %q, want it untouched", resp.Header.Get("ETag"))
			}
		})
	}
}

func TestHead(t *testing.T) {
	body := page(10 << 10)
	srv := newServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	resp, raw := fetch(t, srv, "HEAD", "Accept-Encoding", "gzip, br")
	if got := resp.Header.Get("Content-Encoding"); got != "" {
		t.Errorf("Content-Encoding = %q, want none", got)
	}
	if resp.ContentLength != int64(len(body)) {
		t.Errorf("ContentLength = %d, want %d", resp.ContentLength, len(body))
	}
	if len(raw) != 0 {
		t.Errorf("HEAD body of %d bytes", len(raw))
	}
}

// TestNewWriterUnwrapped: requests that cannot be compressed get the
// ResponseWriter itself, at no cost.
func TestNewWriterUnwrapped(t *testing.T) {
	cases := []struct {
		name   string
		method string
		header []string
		wrap   bool
	}{
		{"GET gzip", "GET", []string{"Accept-Encoding", "gzip"}, true},
		{"POST br", "POST", []string{"Accept-Encoding", "br"}, true},
		{"HEAD", "HEAD", []string{"Accept-Encoding", "gzip"}, false},
		{"Range", "GET", []string{"Accept-Encoding", "gzip", "Range", "bytes=0-1"}, false},
		{"Upgrade", "GET", []string{"Accept-Encoding", "gzip", "Upgrade", "websocket"}, false},
		{"no Accept-Encoding", "GET", nil, false},
		{"deflate only", "GET", []string{"Accept-Encoding", "deflate"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "/", nil)
			for i := 0; i < len(tc.header); i += 2 {
				r.Header.Set(tc.header[i], tc.header[i+1])
			}
			rec := httptest.NewRecorder()
			w, done := NewWriter(rec, r, nil)
			_, wrapped := w.(*Writer)
			if wrapped != tc.wrap {
				t.Errorf("wrapped = %v, want %v", wrapped, tc.wrap)
			}
			if !wrapped && w != http.ResponseWriter(rec) {
				t.Errorf("got another writer %T", w)
			}
			if err := done(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
	}
}

// TestEarlyHints: 1xx responses go out at once, and the final response
// is still compressed.
func TestEarlyHints(t *testing.T) {
	body := page(10 << 10)
	srv := newServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Content-Type", "text/html")
		w.Write(body)
	})
	var hints []int
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
		hints = append(hints, code)
		return nil
	}}
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := rawClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if fmt.Sprint(hints) != "[103]" {
		t.Errorf("1xx responses = %v, want [103]", hints)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("final response %d %q, want 200 gzip", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	if got := decode(t, "gzip", raw); !bytes.Equal(got, body) {
		t.Errorf("decoded body differs")
	}
}

// TestTrailers: a small body with announced trailers is not given a
// Content-Length, so the trailers still reach the client.
func TestTrailers(t *testing.T) {
	srv := newServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Trailer", "X-Sum")
		w.Write([]byte("short"))
		w.Header().Set("X-Sum", "42")
	})
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := rawClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	io.ReadAll(resp.Body)
	if got := resp.Trailer.Get("X-Sum"); got != "42" {
		t.Errorf("trailer X-Sum = %q, want 42", got)
	}
}

// TestConcurrent runs many responses at once through the pooled encoders
// and buffers; each must decode to its own body.
func TestConcurrent(t *testing.T) {
	srv := newServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Type", "text/plain")
		body := bytes.Repeat([]byte(r.URL.Query().Get("n")+" "), n)
		for p := body; len(p) > 0; {
			k := min(len(p), 700)
			w.Write(p[:k])
			p = p[k:]
		}
	})
	client := rawClient(t)
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			coding := []string{"gzip", "br"}[i%2]
			n := 300 + i*97 // "300 " * 300 is above MinSize
			req, _ := http.NewRequest("GET", fmt.Sprintf("%s/?n=%d", srv.URL, n), nil)
			req.Header.Set("Accept-Encoding", coding)
			resp, err := client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			want := bytes.Repeat([]byte(strconv.Itoa(n)+" "), n)
			if resp.Header.Get("Content-Encoding") != coding {
				t.Errorf("n=%d: Content-Encoding %q, want %q", n, resp.Header.Get("Content-Encoding"), coding)
				return
			}
			if got := decode(t, coding, raw); !bytes.Equal(got, want) {
				t.Errorf("n=%d %s: body differs", n, coding)
			}
		})
	}
	wg.Wait()
}

func TestWriteAfterClose(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Accept-Encoding", "gzip")
	w, done := NewWriter(httptest.NewRecorder(), r, nil)
	w.Header().Set("Content-Type", "text/plain")
	w.Write(page(2000))
	if err := done(); err != nil {
		t.Fatal(err)
	}
	if err := done(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if _, err := w.Write([]byte("late")); err == nil {
		t.Error("write after close succeeded")
	}
}

// TestSmallBodyContentLength: a body held back and sent as is gets a
// Content-Length even from a ResponseWriter that would not add one.
func TestSmallBodyContentLength(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Accept-Encoding", "gzip")
	rec := httptest.NewRecorder()
	w, done := NewWriter(rec, r, nil)
	w.Header().Set("Content-Type", "text/plain")
	w.Write(page(60))
	w.Write(page(40))
	if rec.Body.Len() != 0 {
		t.Fatalf("%d bytes sent before the size was decided", rec.Body.Len())
	}
	if err := done(); err != nil {
		t.Fatal(err)
	}
	if got := rec.Header().Get("Content-Length"); got != "100" {
		t.Errorf("Content-Length = %q, want 100", got)
	}
	if rec.Body.Len() != 100 {
		t.Errorf("body of %d bytes, want 100", rec.Body.Len())
	}
}
