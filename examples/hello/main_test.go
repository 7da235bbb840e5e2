package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
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
