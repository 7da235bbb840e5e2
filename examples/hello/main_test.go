package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var testID = identity{App: "hello", Release: "v7", Node: "node-a", Worker: "hello-v7-2", PID: 4242}

// startServer serves a fresh server over httptest. Hung requests are freed
// before the test server closes, because Close waits for every handler.
func startServer(t *testing.T, cfg config) (*server, *httptest.Server) {
	t.Helper()
	cfg.id = testID
	s := newServer(cfg, log.New(t.Output(), "hello: ", 0))
	ts := httptest.NewServer(s.handler())
	t.Cleanup(ts.Close)
	t.Cleanup(func() { close(s.unhang) })
	// Hijacked WebSockets outlive ts.Close; their handlers must end with
	// the test.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.sockets.wait(ctx); err != nil {
			t.Errorf("websocket handlers still running after the test: %v", err)
		}
	})
	return s, ts
}

func do(t *testing.T, ts *httptest.Server, method, path string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, string(b)
}

func get(t *testing.T, ts *httptest.Server, path string) (*http.Response, string) {
	t.Helper()
	return do(t, ts, http.MethodGet, path, nil)
}

func wantStatus(t *testing.T, resp *http.Response, body string, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body %q", resp.Request.Method, resp.Request.URL.RequestURI(), resp.StatusCode, want, body)
	}
}

// decodeReply checks that body is one JSON object on one line carrying the
// identity of testID for the given request, and returns all its fields.
func decodeReply(t *testing.T, resp *http.Response, body, method, path string) map[string]any {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if !strings.HasSuffix(body, "}\n") || strings.Count(body, "\n") != 1 {
		t.Errorf("body %q is not one JSON line ending in a newline", body)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	want := map[string]any{
		"app":     testID.App,
		"release": testID.Release,
		"node":    testID.Node,
		"worker":  testID.Worker,
		"pid":     float64(testID.PID),
		"host":    resp.Request.Host,
		"path":    path,
		"method":  method,
	}
	if resp.Request.Host == "" {
		want["host"] = resp.Request.URL.Host
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v (body %s)", k, m[k], v, body)
		}
	}
	return m
}

func TestIdentity(t *testing.T) {
	_, ts := startServer(t, config{})
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/"},
		{http.MethodGet, "/any/other/path?q=1"},
		{http.MethodGet, "/healthz/not-exactly"},
		{http.MethodPost, "/"},
		{http.MethodDelete, "/x"},
	} {
		resp, body := do(t, ts, tc.method, tc.path, nil)
		wantStatus(t, resp, body, http.StatusOK)
		path, _, _ := strings.Cut(tc.path, "?")
		m := decodeReply(t, resp, body, tc.method, path)
		if keys, want := slices.Sorted(maps.Keys(m)), []string{"app", "host", "inflight", "method", "node", "path", "pid", "release", "worker"}; !slices.Equal(keys, want) {
			t.Errorf("%s %s: keys %v, want %v", tc.method, tc.path, keys, want)
		}
	}
}

func TestIdentityReportsHostHeader(t *testing.T) {
	_, ts := startServer(t, config{})
	req, err := http.NewRequest(http.MethodGet, ts.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "app.example.test"
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	if m["host"] != "app.example.test" {
		t.Errorf("host = %#v, want the Host header app.example.test", m["host"])
	}
}

func TestHealth(t *testing.T) {
	_, ts := startServer(t, config{})

	resp, body := get(t, ts, "/healthz")
	wantStatus(t, resp, body, http.StatusOK)
	if body != "ok\n" {
		t.Errorf("healthy /healthz body %q, want %q", body, "ok\n")
	}

	for range 2 { // a second call must not undo the first
		resp, body = get(t, ts, "/fail-health")
		wantStatus(t, resp, body, http.StatusOK)
		if body != "health now failing\n" {
			t.Errorf("/fail-health body %q", body)
		}
		resp, body = get(t, ts, "/healthz")
		wantStatus(t, resp, body, http.StatusServiceUnavailable)
	}

	resp, body = get(t, ts, "/")
	wantStatus(t, resp, body, http.StatusOK)
}

func TestNeverHealthy(t *testing.T) {
	_, ts := startServer(t, config{neverHealthy: true})
	resp, body := get(t, ts, "/healthz")
	wantStatus(t, resp, body, http.StatusServiceUnavailable)
	resp, body = get(t, ts, "/")
	wantStatus(t, resp, body, http.StatusOK)
	decodeReply(t, resp, body, http.MethodGet, "/")
}

func TestSleep(t *testing.T) {
	_, ts := startServer(t, config{})
	for _, ms := range []int{0, 150} {
		start := time.Now()
		resp, body := get(t, ts, "/sleep?ms="+strconv.Itoa(ms))
		elapsed := time.Since(start)
		wantStatus(t, resp, body, http.StatusOK)
		if elapsed < time.Duration(ms)*time.Millisecond {
			t.Errorf("/sleep?ms=%d answered after %v", ms, elapsed)
		}
		m := decodeReply(t, resp, body, http.MethodGet, "/sleep")
		if got, ok := m["slept_ms"]; !ok || got != float64(ms) {
			t.Errorf("slept_ms = %#v (present %v), want %d", got, ok, ms)
		}
	}
}

func TestSleepRejectsBadMS(t *testing.T) {
	_, ts := startServer(t, config{})
	for _, q := range []string{"", "?ms=", "?ms=abc", "?ms=-1", "?ms=1.5", "?ms=3600001", "?ms=99999999999999999999"} {
		resp, body := get(t, ts, "/sleep"+q)
		wantStatus(t, resp, body, http.StatusBadRequest)
		if !strings.HasSuffix(body, "\n") || strings.Count(body, "\n") != 1 {
			t.Errorf("/sleep%s: body %q is not one line", q, body)
		}
	}
}

func TestSleepStopsWhenClientLeaves(t *testing.T) {
	s := newServer(config{id: testID}, log.New(t.Output(), "hello: ", 0))
	h := s.handler()
	returned := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		close(returned)
	}))
	defer ts.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/sleep?ms=60000", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := ts.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("/sleep?ms=60000 answered %s within 100ms", resp.Status)
	}
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("handler still sleeping 5s after the client left")
	}
}

func TestStream(t *testing.T) {
	_, ts := startServer(t, config{})
	const n, ms = 4, 200
	resp, err := ts.Client().Get(ts.URL + "/stream?n=4&ms=200")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	if !slices.Equal(resp.TransferEncoding, []string{"chunked"}) {
		t.Errorf("TransferEncoding = %v, want chunked", resp.TransferEncoding)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want text/plain", ct)
	}

	br := bufio.NewReader(resp.Body)
	var arrived []time.Time
	for i := 1; i <= n; i++ {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading line %d: %v", i, err)
		}
		arrived = append(arrived, time.Now())
		if want := "line " + strconv.Itoa(i) + " of 4 node-a hello-v7-2 v7\n"; line != want {
			t.Errorf("line %d = %q, want %q", i, line, want)
		}
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
		t.Errorf("after %d lines: %q, %v; want clean EOF", n, rest, err)
	}
	// Unflushed lines would all arrive together at the end.
	if spread, want := arrived[n-1].Sub(arrived[0]), (n-1)*ms*time.Millisecond/2; spread < want {
		t.Errorf("lines arrived within %v of each other, want at least %v: not flushed one by one", spread, want)
	}
}

func TestStreamDefaultsAndCap(t *testing.T) {
	_, ts := startServer(t, config{})
	for _, tc := range []struct {
		query string
		lines int
	}{
		{"?ms=0", 10},
		{"?n=0", 0},
		{"?n=200000&ms=0", maxStreamLines},
	} {
		resp, body := get(t, ts, "/stream"+tc.query)
		wantStatus(t, resp, body, http.StatusOK)
		lines := strings.SplitAfter(body, "\n")
		lines = lines[:len(lines)-1] // SplitAfter leaves "" after the final newline
		if len(lines) != tc.lines {
			t.Errorf("/stream%s: %d lines, want %d", tc.query, len(lines), tc.lines)
			continue
		}
		if tc.lines > 0 {
			want := "line " + strconv.Itoa(tc.lines) + " of " + strconv.Itoa(tc.lines) + " node-a hello-v7-2 v7\n"
			if last := lines[len(lines)-1]; last != want {
				t.Errorf("/stream%s: last line %q, want %q", tc.query, last, want)
			}
		}
	}
}

func TestStreamRejectsBadInput(t *testing.T) {
	_, ts := startServer(t, config{})
	for _, q := range []string{"?n=abc", "?n=-1", "?n=1.5", "?n=", "?ms=x", "?ms=-5", "?ms=3600001"} {
		resp, body := get(t, ts, "/stream"+q)
		wantStatus(t, resp, body, http.StatusBadRequest)
	}
}

func TestEcho(t *testing.T) {
	_, ts := startServer(t, config{})
	big := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{1}).Read(big)
	for _, payload := range [][]byte{nil, []byte("hello\n"), big} {
		resp, body := do(t, ts, http.MethodPost, "/echo", bytes.NewReader(payload))
		wantStatus(t, resp, body, http.StatusOK)
		m := decodeReply(t, resp, body, http.MethodPost, "/echo")
		sum := sha256.Sum256(payload)
		if m["bytes"] != float64(len(payload)) {
			t.Errorf("bytes = %#v, want %d", m["bytes"], len(payload))
		}
		if want := hex.EncodeToString(sum[:]); m["sha256"] != want {
			t.Errorf("sha256 = %#v, want %s", m["sha256"], want)
		}
	}
}

func TestEchoRejectsOtherMethods(t *testing.T) {
	_, ts := startServer(t, config{})
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		resp, body := do(t, ts, method, "/echo", nil)
		wantStatus(t, resp, body, http.StatusMethodNotAllowed)
		if allow := resp.Header.Get("Allow"); allow != http.MethodPost {
			t.Errorf("%s /echo: Allow = %q, want POST", method, allow)
		}
	}
}

func TestHang(t *testing.T) {
	s, ts := startServer(t, config{})
	resp, body := get(t, ts, "/healthz")
	wantStatus(t, resp, body, http.StatusOK)

	// Buffered so the goroutine can finish once cleanup frees the handler.
	hangReturned := make(chan error, 1)
	go func() {
		resp, err := ts.Client().Get(ts.URL + "/hang")
		if err == nil {
			resp.Body.Close()
		}
		hangReturned <- err
	}()
	select {
	case <-s.hung:
	case <-time.After(5 * time.Second):
		t.Fatal("/hang never reached its handler")
	}

	impatient := &http.Client{Transport: ts.Client().Transport, Timeout: 300 * time.Millisecond}
	for _, path := range []string{"/healthz", "/", "/fail-health", "/hang"} {
		resp, err := impatient.Get(ts.URL + path)
		var uerr *url.Error
		switch {
		case err == nil:
			resp.Body.Close()
			t.Errorf("GET %s answered %s after /hang; want no answer", path, resp.Status)
		case !errors.As(err, &uerr) || !uerr.Timeout():
			t.Errorf("GET %s after /hang: %v; want a client timeout", path, err)
		}
	}
	select {
	case err := <-hangReturned:
		t.Errorf("/hang itself returned (err %v); want it to block", err)
	default:
	}
}

func TestLoadConfig(t *testing.T) {
	cfg, err := loadConfig(env(map[string]string{
		"PORT": "8080", "HERD_APP": "a", "HERD_RELEASE": "r", "HERD_NODE": "n", "HERD_WORKER": "w",
		"HELLO_NEVER_HEALTHY": "1", "HELLO_BOOT_DELAY_MS": "250",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.addr != "127.0.0.1:8080" {
		t.Errorf("addr = %q, want HOST to default to 127.0.0.1", cfg.addr)
	}
	if want := (identity{"a", "r", "n", "w", cfg.id.PID}); cfg.id != want || cfg.id.PID == 0 {
		t.Errorf("identity = %+v, want %+v with a pid", cfg.id, want)
	}
	if !cfg.neverHealthy || cfg.bootDelay != 250*time.Millisecond {
		t.Errorf("neverHealthy = %v, bootDelay = %v; want true, 250ms", cfg.neverHealthy, cfg.bootDelay)
	}

	cfg, err = loadConfig(env(map[string]string{"PORT": "8080", "HOST": "::1"}))
	if err != nil || cfg.addr != "[::1]:8080" {
		t.Errorf("HOST=::1: addr %q, err %v; want [::1]:8080", cfg.addr, err)
	}

	for _, bad := range []map[string]string{
		{},
		{"PORT": "8080", "HELLO_NEVER_HEALTHY": "yes please"},
		{"PORT": "8080", "HELLO_BOOT_DELAY_MS": "-1"},
		{"PORT": "8080", "HELLO_BOOT_DELAY_MS": "soon"},
	} {
		if _, err := loadConfig(env(bad)); err == nil {
			t.Errorf("loadConfig(%v) succeeded, want an error", bad)
		}
	}
}

func TestRunWithoutPort(t *testing.T) {
	var stderr bytes.Buffer
	if code := run(env(nil), &stderr); code != 2 {
		t.Errorf("exit status %d, want 2", code)
	}
	if got := stderr.String(); !strings.HasPrefix(got, "hello: PORT is not set") || strings.Count(got, "\n") != 1 {
		t.Errorf("stderr %q, want one line about PORT", got)
	}
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// buildHello compiles the real binary, for the tests that need process
// behaviour: exit statuses and signals.
func buildHello(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := filepath.Join(t.TempDir(), "hello")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func TestBinaryCrashAtBoot(t *testing.T) {
	bin := buildHello(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{"HELLO_CRASH_AT_BOOT=1", "PORT=" + freePort(t)}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("run: %v; want exit status 3", err)
	}
	if got, want := stderr.String(), "hello: crashing at boot as asked (HELLO_CRASH_AT_BOOT)\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}

func TestBinaryGracefulStop(t *testing.T) {
	bin := buildHello(t)
	port := freePort(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{"PORT=" + port, "HERD_APP=hello", "HERD_RELEASE=v2", "HERD_NODE=node-1", "HERD_WORKER=hello-v2-1"}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var logged []string
	// next returns the next stderr line, or false once stderr is closed.
	next := func() (string, bool) {
		select {
		case line, ok := <-lines:
			if ok {
				t.Logf("stderr: %s", line)
				logged = append(logged, line)
			}
			return line, ok
		case <-time.After(10 * time.Second):
			t.Fatal("no stderr output for 10s")
			return "", false
		}
	}
	waited := false
	t.Cleanup(func() {
		if !waited {
			_ = cmd.Process.Kill()
			for range lines {
			}
			_ = cmd.Wait()
		}
	})

	listening := "hello: listening on 127.0.0.1:" + port + " (app=hello release=v2 worker=hello-v2-1)"
	for line, ok := next(); line != listening; line, ok = next() {
		if !ok {
			t.Fatalf("stderr closed without %q", listening)
		}
	}

	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	base := "http://127.0.0.1:" + port
	resp, err := client.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	var id map[string]any
	err = json.NewDecoder(resp.Body).Decode(&id)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if id["app"] != "hello" || id["release"] != "v2" || id["node"] != "node-1" || id["worker"] != "hello-v2-1" || id["pid"] != float64(cmd.Process.Pid) {
		t.Errorf("identity %v, want hello/v2/node-1/hello-v2-1 with pid %d", id, cmd.Process.Pid)
	}

	type result struct {
		status int
		body   string
		err    error
	}
	slept := make(chan result, 1)
	start := time.Now()
	go func() {
		resp, err := client.Get(base + "/sleep?ms=500")
		if err != nil {
			slept <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		slept <- result{resp.StatusCode, string(b), err}
	}()
	time.Sleep(150 * time.Millisecond) // let the request reach the handler
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	r := <-slept
	if r.err != nil || r.status != http.StatusOK || !strings.Contains(r.body, `"slept_ms":500`) {
		t.Errorf("/sleep?ms=500 across SIGTERM: status %d, body %q, err %v; want 200 with slept_ms 500", r.status, r.body, r.err)
	}
	if elapsed := time.Since(start); elapsed < 500*time.Millisecond {
		t.Errorf("/sleep?ms=500 answered after %v", elapsed)
	}

	for _, ok := next(); ok; _, ok = next() {
	}
	waited = true
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit: %v; want status 0", err)
	}
	if !slices.ContainsFunc(logged, func(l string) bool { return strings.Contains(l, "shutting down") }) ||
		logged[len(logged)-1] != "hello: stopped" {
		t.Errorf("stderr %q, want a shutdown line and a final %q", logged, "hello: stopped")
	}
}

// TestInFlightAndHeaders: overlapping requests see the count of requests in
// flight (health checks aside), and /headers shows what the request carried.
func TestInFlightAndHeaders(t *testing.T) {
	s := newServer(config{id: identity{App: "hello"}}, log.New(io.Discard, "", 0))
	srv := httptest.NewServer(s.handler())
	defer srv.Close()

	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(srv.URL + "/sleep?ms=300")
		if err == nil {
			resp.Body.Close()
		}
	}()
	var got struct {
		InFlight int64       `json:"inflight"`
		Headers  http.Header `json:"headers"`
	}
	deadline := time.Now().Add(2 * time.Second)
	for got.InFlight < 2 && time.Now().Before(deadline) {
		req, _ := http.NewRequest("GET", srv.URL+"/headers", nil)
		req.Header.Set("X-Test", "yes")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
	}
	<-done
	if got.InFlight != 2 {
		t.Fatalf("a request beside a /sleep saw inflight %d, want 2", got.InFlight)
	}
	if got.Headers.Get("X-Test") != "yes" {
		t.Fatalf("/headers did not show the request's header: %v", got.Headers)
	}
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := s.inflight.Load(); n != 0 {
		t.Fatalf("inflight is %d after every request finished", n)
	}
}

func TestCacheEndpoint(t *testing.T) {
	s := newServer(config{id: identity{App: "hello"}}, log.New(io.Discard, "", 0))
	srv := httptest.NewServer(s.handler())
	defer srv.Close()
	var served []int64
	for _, path := range []string{"/cache?max-age=30", "/cache?cookie=1"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Served int64 `json:"served"`
		}
		json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		served = append(served, got.Served)
		cookie := resp.Header.Get("Set-Cookie") != ""
		if resp.Header.Get("Cache-Control") == "" || cookie != strings.Contains(path, "cookie") {
			t.Errorf("%s: Cache-Control %q, Set-Cookie %v", path, resp.Header.Get("Cache-Control"), cookie)
		}
	}
	if served[0] != 1 || served[1] != 2 {
		t.Errorf("served counts %v, want [1 2]", served)
	}
	if resp, _ := http.Get(srv.URL + "/cache?max-age=x"); resp.StatusCode != 400 {
		t.Errorf("bad max-age: %d", resp.StatusCode)
	}
}

func TestEvents(t *testing.T) {
	_, ts := startServer(t, config{})
	const n, ms = 3, 200
	start := time.Now()
	resp, err := ts.Client().Get(ts.URL + "/events?n=3&ms=200")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	if ct, cc := resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"); ct != "text/event-stream" || cc != "no-cache" {
		t.Errorf("Content-Type %q, Cache-Control %q; want text/event-stream, no-cache", ct, cc)
	}
	br := bufio.NewReader(resp.Body)
	var arrived []time.Duration
	for i := 1; i <= n; i++ {
		var event string
		for line := ""; line != "\n"; {
			if line, err = br.ReadString('\n'); err != nil {
				t.Fatalf("reading event %d: %v (so far %q)", i, err, event)
			}
			event += line
		}
		arrived = append(arrived, time.Since(start))
		if want := fmt.Sprintf("id: %d\ndata: event %d of 3 from node-a/hello-v7-2\n\n", i, i); event != want {
			t.Errorf("event %d = %q, want %q", i, event, want)
		}
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
		t.Errorf("after %d events: %q, %v; want clean EOF", n, rest, err)
	}
	// Events held back would all arrive at the end, (n-1)*ms in.
	if first, last := arrived[0], arrived[n-1]; first > ms*time.Millisecond || last < (n-1)*ms*time.Millisecond {
		t.Errorf("events arrived at %v; want the first at once and the last after %v", arrived, (n-1)*ms*time.Millisecond)
	}
}

func TestEventsDefaultsAndBadInput(t *testing.T) {
	_, ts := startServer(t, config{})
	resp, body := get(t, ts, "/events?ms=0")
	wantStatus(t, resp, body, http.StatusOK)
	if got := strings.Count(body, "\n\n"); got != 5 || !strings.HasSuffix(body, "id: 5\ndata: event 5 of 5 from node-a/hello-v7-2\n\n") {
		t.Errorf("/events?ms=0: %d events, body %q; want 5", got, body)
	}
	for _, q := range []string{"?n=x", "?n=-1", "?ms=-5", "?ms=3600001"} {
		resp, body := get(t, ts, "/events"+q)
		wantStatus(t, resp, body, http.StatusBadRequest)
	}
}

// The client half of RFC 6455, written apart from the server's so that a
// misreading of the RFC is not shared by both.

const wsTestGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// wsDial opens a WebSocket to addr's /ws and checks the server's 101. Every
// read and write on it must finish within 10 s.
func wsDial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var nonce [16]byte
	rand.NewChaCha8([32]byte{2}).Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: hello.test\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n", key)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	sum := sha1.Sum([]byte(key + wsTestGUID))
	if resp.StatusCode != http.StatusSwitchingProtocols ||
		!strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") ||
		!strings.EqualFold(resp.Header.Get("Connection"), "upgrade") ||
		resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("handshake answer %s %v; want 101 with the accept key for %q", resp.Status, resp.Header, key)
	}
	return conn, br
}

// wsFrame builds one frame; a client's frames must be masked.
func wsFrame(fin bool, op byte, payload []byte, masked bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	var maskBit byte
	if masked {
		maskBit = 0x80
	}
	f := []byte{b0}
	switch n := len(payload); {
	case n <= 125:
		f = append(f, maskBit|byte(n))
	case n <= 0xffff:
		f = binary.BigEndian.AppendUint16(append(f, maskBit|126), uint16(n))
	default:
		f = binary.BigEndian.AppendUint64(append(f, maskBit|127), uint64(n))
	}
	if !masked {
		return append(f, payload...)
	}
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	f = append(f, mask[:]...)
	for i, b := range payload {
		f = append(f, b^mask[i%4])
	}
	return f
}

func wsSend(t *testing.T, conn net.Conn, op byte, payload []byte) {
	t.Helper()
	if _, err := conn.Write(wsFrame(true, op, payload, true)); err != nil {
		t.Fatalf("sending opcode %d: %v", op, err)
	}
}

// wsRecv reads one server frame, which must be whole and unmasked.
func wsRecv(t *testing.T, br *bufio.Reader) (op byte, payload []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	if h[0]&0xf0 != 0x80 || h[1]&0x80 != 0 {
		t.Fatalf("frame header %#x %#x: want FIN, no reserved bits, unmasked", h[0], h[1])
	}
	n := uint64(h[1] & 0x7f)
	if n >= 126 {
		ext := make([]byte, 2+6*(n-126))
		if _, err := io.ReadFull(br, ext); err != nil {
			t.Fatal(err)
		}
		n = 0
		for _, b := range ext {
			n = n<<8 | uint64(b)
		}
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		t.Fatalf("reading a payload of %d bytes: %v", n, err)
	}
	return h[0] & 0x0f, payload
}

// wsWantClose reads a closing frame with code, then the end of the stream.
func wsWantClose(t *testing.T, br *bufio.Reader, code int) {
	t.Helper()
	op, payload := wsRecv(t, br)
	if op != 8 || len(payload) < 2 || int(binary.BigEndian.Uint16(payload)) != code {
		t.Fatalf("got opcode %d payload %q; want a close frame with code %d", op, payload, code)
	}
	if b, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the close frame: byte %#x, err %v; want EOF", b, err)
	}
}

func closePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

func TestWebSocketAcceptKey(t *testing.T) {
	// The example of RFC 6455 section 1.3.
	if got := wsAccept("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("wsAccept = %q", got)
	}
}

func TestWebSocketEcho(t *testing.T) {
	_, ts := startServer(t, config{})
	conn, br := wsDial(t, ts.Listener.Addr().String())
	big := make([]byte, wsMaxMessage)
	rand.NewChaCha8([32]byte{3}).Read(big)
	for _, tc := range []struct {
		name string
		op   byte
		msg  []byte
	}{
		{"7-bit length", opText, []byte("hello")},
		{"empty", opText, nil},
		{"16-bit length", opText, bytes.Repeat([]byte("é"), 150)},
		{"64-bit length", opBinary, big[:70000]},
		{"largest message", opBinary, big},
	} {
		wsSend(t, conn, tc.op, tc.msg)
		op, got := wsRecv(t, br)
		want := append([]byte("node-a/hello-v7-2: "), tc.msg...)
		if op != tc.op || !bytes.Equal(got, want) {
			t.Errorf("%s: echo opcode %d, %d bytes %.40q; want opcode %d, %d bytes %.40q", tc.name, op, len(got), got, tc.op, len(want), want)
		}
	}
	wsSend(t, conn, opPing, []byte("are you there"))
	if op, got := wsRecv(t, br); op != opPong || string(got) != "are you there" {
		t.Errorf("ping answered with opcode %d %q; want a pong with the ping's payload", op, got)
	}
	// An unsolicited pong gets no answer; the next echo shows nothing came first.
	wsSend(t, conn, opPong, nil)
	wsSend(t, conn, opText, []byte("after pong"))
	if op, got := wsRecv(t, br); op != opText || string(got) != "node-a/hello-v7-2: after pong" {
		t.Errorf("after a pong: opcode %d %q", op, got)
	}
	wsSend(t, conn, opClose, closePayload(1000, "bye"))
	wsWantClose(t, br, 1000)
}

func TestWebSocketHandshakeRefused(t *testing.T) {
	_, ts := startServer(t, config{})
	good := http.Header{
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
	}
	for _, tc := range []struct {
		name   string
		method string
		change func(http.Header)
		status int
	}{
		{"POST", http.MethodPost, func(http.Header) {}, http.StatusMethodNotAllowed},
		{"no Upgrade", http.MethodGet, func(h http.Header) { h.Del("Upgrade") }, http.StatusBadRequest},
		{"other protocol", http.MethodGet, func(h http.Header) { h.Set("Upgrade", "h2c") }, http.StatusBadRequest},
		{"Connection without upgrade", http.MethodGet, func(h http.Header) { h.Set("Connection", "keep-alive") }, http.StatusBadRequest},
		{"version 8", http.MethodGet, func(h http.Header) { h.Set("Sec-Websocket-Version", "8") }, http.StatusUpgradeRequired},
		{"no key", http.MethodGet, func(h http.Header) { h.Del("Sec-Websocket-Key") }, http.StatusBadRequest},
		{"short key", http.MethodGet, func(h http.Header) { h.Set("Sec-Websocket-Key", "c2hvcnQ=") }, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, ts.URL+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header = good.Clone()
			tc.change(req.Header)
			resp, err := ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantStatus(t, resp, string(body), tc.status)
			if tc.status == http.StatusUpgradeRequired && resp.Header.Get("Sec-WebSocket-Version") != "13" {
				t.Errorf("426 without Sec-WebSocket-Version: 13: %v", resp.Header)
			}
		})
	}
}

// TestWebSocketRefusesBadFrames: a frame the server does not take fails
// the connection with the close code that says why.
func TestWebSocketRefusesBadFrames(t *testing.T) {
	_, ts := startServer(t, config{})
	tooBig := wsFrame(true, opBinary, nil, true)[:1]
	tooBig = binary.BigEndian.AppendUint64(append(tooBig, 0x80|127), wsMaxMessage+1)
	for _, tc := range []struct {
		name  string
		frame []byte
		code  int
	}{
		{"unmasked", wsFrame(true, opText, []byte("hi"), false), closeProtocolError},
		{"reserved bit", append([]byte{0x80 | 0x40 | opText}, wsFrame(true, opText, []byte("hi"), true)[1:]...), closeProtocolError},
		{"unknown opcode", wsFrame(true, 0x3, nil, true), closeProtocolError},
		{"long ping", wsFrame(true, opPing, make([]byte, 126), true), closeProtocolError},
		{"fragmented ping", wsFrame(false, opPing, nil, true), closeProtocolError},
		{"one-byte close", wsFrame(true, opClose, []byte{3}, true), closeProtocolError},
		{"first fragment", wsFrame(false, opText, []byte("hi"), true), closeUnsupported},
		{"continuation", wsFrame(true, opContinuation, []byte("hi"), true), closeUnsupported},
		{"not UTF-8", wsFrame(true, opText, []byte{0xff, 0xfe}, true), closeInvalidData},
		{"too big", tooBig, closeTooBig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, br := wsDial(t, ts.Listener.Addr().String())
			if _, err := conn.Write(tc.frame); err != nil {
				t.Fatal(err)
			}
			wsWantClose(t, br, tc.code)
		})
	}
}

// TestWebSocketGoingAway: at shutdown every open WebSocket gets a closing
// frame (1001); a client that answers it is let go, one that does not is
// dropped when the shutdown deadline passes, and no new one is accepted.
func TestWebSocketGoingAway(t *testing.T) {
	s, ts := startServer(t, config{})
	addr := ts.Listener.Addr().String()
	var conns []net.Conn
	var readers []*bufio.Reader
	for range 3 {
		conn, br := wsDial(t, addr)
		// An echo shows the connection is registered.
		wsSend(t, conn, opText, []byte("hi"))
		if _, got := wsRecv(t, br); string(got) != "node-a/hello-v7-2: hi" {
			t.Fatalf("echo %q", got)
		}
		conns, readers = append(conns, conn), append(readers, br)
	}

	s.sockets.goAway()
	for i, br := range readers {
		op, payload := wsRecv(t, br)
		if op != opClose || len(payload) < 2 || binary.BigEndian.Uint16(payload) != closeGoingAway {
			t.Fatalf("conn %d: opcode %d %q after goAway; want close 1001", i, op, payload)
		}
	}
	// Messages after the server's closing frame are not answered.
	wsSend(t, conns[0], opText, []byte("late"))
	wsSend(t, conns[0], opClose, closePayload(closeGoingAway, ""))
	wsSend(t, conns[1], opClose, closePayload(closeGoingAway, ""))
	for i := range 2 {
		if b, err := readers[i].ReadByte(); err != io.EOF {
			t.Errorf("conn %d after its close answer: byte %#x, err %v; want EOF", i, b, err)
		}
	}

	resp, body := do(t, ts, http.MethodGet, "/ws", nil)
	wantStatus(t, resp, body, http.StatusBadRequest) // not even a handshake
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/ws", nil)
	req.Header = http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"},
		"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
	if resp, err := ts.Client().Do(req); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("handshake after goAway: %v %v; want 503", resp, err)
	} else {
		resp.Body.Close()
	}

	// The third client never answers; shutdown's deadline drops it.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := s.sockets.wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wait with a silent client: %v; want the deadline", err)
	}
	if b, err := readers[2].ReadByte(); err != io.EOF {
		t.Errorf("silent client after the deadline: byte %#x, err %v; want EOF", b, err)
	}
}

// TestBinaryWebSocketGoingAway: SIGTERM sends the real process's open
// WebSockets a closing frame before it exits 0.
func TestBinaryWebSocketGoingAway(t *testing.T) {
	bin := buildHello(t)
	port := freePort(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{"PORT=" + port, "HERD_NODE=node-1", "HERD_WORKER=2"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	addr := "127.0.0.1:" + port
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hello not listening after 10s: %v", err)
		}
	}

	conn, br := wsDial(t, addr)
	wsSend(t, conn, opText, []byte("hi"))
	if _, got := wsRecv(t, br); string(got) != "node-1/2: hi" {
		t.Fatalf("echo %q, want %q", got, "node-1/2: hi")
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	op, payload := wsRecv(t, br)
	if op != opClose || len(payload) < 2 || binary.BigEndian.Uint16(payload) != closeGoingAway {
		t.Fatalf("after SIGTERM: opcode %d %q; want close 1001", op, payload)
	}
	t.Logf("close frame %q %v after SIGTERM", payload[2:], time.Since(start))
	wsSend(t, conn, opClose, payload[:2])
	if b, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after answering the close: byte %#x, err %v; want EOF", b, err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil || !strings.HasSuffix(stderr.String(), "hello: stopped\n") {
			t.Errorf("exit %v, stderr %q; want status 0 after %q", err, stderr.String(), "hello: stopped")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("hello still running 10s after its last WebSocket closed")
	}
}
