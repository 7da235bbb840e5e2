package clustertest

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// load sends requests from conc goroutines until stop is closed and
// reports every answer to check; it returns the number of requests and the
// failures (transport errors, non-200s, or answers check refused).
func load(c *Cluster, conc int, path string, stop <-chan struct{}, check func(Hello) error) (total int64, failures []string) {
	var mu sync.Mutex
	var n atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				n.Add(1)
				code, body, err := c.Get(helloHost, path)
				var h Hello
				if err == nil && code == http.StatusOK {
					if strings.HasPrefix(path, "/stream") {
						h, err = parseStream(body)
					} else {
						err = json.Unmarshal(body, &h)
					}
					if err == nil && check != nil {
						err = check(h)
					}
				} else if err == nil {
					err = fmt.Errorf("status %d: %s", code, strings.TrimSpace(string(body)))
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return n.Load(), failures
}

// parseStream checks a complete /stream answer ("line i of N NODE WORKER
// RELEASE" lines, all from one worker) and returns who sent it.
func parseStream(body []byte) (Hello, error) {
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	var first Hello
	for i, l := range lines {
		var n, k int
		var h Hello
		if _, err := fmt.Sscanf(l, "line %d of %d %s %s %s", &k, &n, &h.Node, &h.Worker, &h.Release); err != nil || n != len(lines) || k != i+1 {
			return h, fmt.Errorf("stream line %d of %d is %q", i+1, len(lines), l)
		}
		if i == 0 {
			first = h
		} else if h != first {
			return h, fmt.Errorf("one stream came from two workers: %+v and %+v", first, h)
		}
	}
	first.App = "hello"
	return first, nil
}

// TestSyncWorkerOneAtATime: with --concurrency 1 a worker never gets a
// second request while it serves one; the front queues the rest.
func TestSyncWorkerOneAtATime(t *testing.T) {
	c := Start(t, 2)
	if r := deployHello(c, c.HelloDir(nil), "--workers", "1", "--concurrency", "1"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	const n = 16
	var wg sync.WaitGroup
	results := make(chan string, n)
	start := time.Now()
	for range n {
		wg.Go(func() {
			code, body, err := c.Get(helloHost, "/sleep?ms=100")
			var h Hello
			if err == nil {
				err = json.Unmarshal(body, &h)
			}
			switch {
			case err != nil:
				results <- err.Error()
			case code != 200:
				results <- fmt.Sprintf("status %d", code)
			case h.InFlight != 1:
				results <- fmt.Sprintf("worker %s/%s had %d requests in flight", h.Node, h.Worker, h.InFlight)
			}
		})
	}
	wg.Wait()
	close(results)
	for r := range results {
		t.Error(r)
	}
	// Two workers, one request at a time each: at least n/2 rounds.
	if took := time.Since(start); took < n/2*100*time.Millisecond {
		t.Errorf("%d requests of 100 ms on 2 sync workers took only %v", n, took)
	}
}

// TestQueueBounds: beyond the queue's size, and after its timeout, a
// request gets 503 with Retry-After instead of waiting forever.
func TestQueueBounds(t *testing.T) {
	c := Start(t, 1)
	if r := deployHello(c, c.HelloDir(nil), "--workers", "1", "--concurrency", "1",
		"--queue", "1", "--queue-timeout", "300ms"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	type answer struct {
		code       int
		retryAfter string
		took       time.Duration
	}
	answers := make(chan answer, 3)
	for i := range 3 {
		go func() {
			time.Sleep(time.Duration(i) * 50 * time.Millisecond) // arrive in order
			start := time.Now()
			resp, _, err := c.Do("GET", helloHost, "/sleep?ms=1500", nil, nil)
			if err != nil {
				answers <- answer{code: -1}
				return
			}
			answers <- answer{resp.StatusCode, resp.Header.Get("Retry-After"), time.Since(start)}
		}()
	}
	var ok, busy int
	for range 3 {
		a := <-answers
		switch {
		case a.code == 200:
			ok++
		case a.code == 503 && a.retryAfter != "":
			busy++
			if a.took > 1200*time.Millisecond {
				t.Errorf("a 503 came after %v: the queue timeout is 300ms", a.took)
			}
		default:
			t.Errorf("unexpected answer %+v", a)
		}
	}
	if ok != 1 || busy != 2 {
		t.Fatalf("want 1 answer and 2 busy 503s, got %d and %d", ok, busy)
	}
}

// TestKilledWorkerCostsNoGET: kill -9 of a worker under load of quick,
// slow and streaming requests fails no request but a stream the worker had
// already started (those are counted apart); the node restarts the worker.
func TestKilledWorkerCostsNoGET(t *testing.T) {
	c := Start(t, 2)
	if r := deployHello(c, c.HelloDir(nil), "--workers", "2", "--concurrency", "4"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	var victim Hello
	for victim.Node != "node-2" {
		var err error
		if victim, err = c.GetHello(helloHost); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	type res struct {
		path     string
		total    int64
		failures []string
	}
	results := make(chan res, 3)
	for _, path := range []string{"/", "/sleep?ms=300", "/stream?n=10&ms=50"} {
		go func() {
			n, f := load(c, 3, path, stop, releaseIs("v1"))
			results <- res{path, n, f}
		}()
	}
	time.Sleep(time.Second)
	if err := syscall.Kill(victim.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	for range 3 {
		r := <-results
		if strings.HasPrefix(r.path, "/stream") {
			// A stream the killed worker had begun cannot be replayed: its
			// client sees the body cut short. Anything else is a failure.
			for _, f := range r.failures {
				if !strings.Contains(f, "unexpected EOF") {
					t.Errorf("stream failed other than by being cut short: %s", f)
				}
			}
			t.Logf("%s: %d requests, %d streams cut short by the kill", r.path, r.total, len(r.failures))
			continue
		}
		if len(r.failures) > 0 {
			t.Errorf("%s: %d of %d requests failed after a worker was killed: %v", r.path, len(r.failures), r.total, r.failures[:min(5, len(r.failures))])
		}
		t.Logf("%s: %d requests, none failed", r.path, r.total)
	}
	if !Eventually(15*time.Second, func() bool {
		h, err := c.GetHello(helloHost)
		return err == nil && h.Node == victim.Node && h.Worker == victim.Worker && h.Pid != victim.Pid
	}) {
		t.Fatalf("worker %s/%s was not restarted", victim.Node, victim.Worker)
	}
}

// TestStoppingNodeLosesNothing: SIGTERM of a node under load (quick, slow
// and streaming requests) fails no request, and the node gets no new
// request once it is gone.
func TestStoppingNodeLosesNothing(t *testing.T) {
	c := Start(t, 2)
	if r := deployHello(c, c.HelloDir(nil), "--workers", "2"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	stop := make(chan struct{})
	type res struct {
		total    int64
		failures []string
	}
	quick, slow := make(chan res, 1), make(chan res, 1)
	go func() { t, f := mixedLoad(c, stop, releaseIs("v1")); quick <- res{t, f} }()
	go func() { t, f := load(c, 3, "/sleep?ms=300", stop, releaseIs("v1")); slow <- res{t, f} }()
	time.Sleep(time.Second)
	if !c.Nodes[1].Stop(30 * time.Second) {
		t.Fatal("node-2 did not stop gracefully")
	}
	var after atomic.Int64
	afterStop, afterDone := make(chan struct{}), make(chan res, 1)
	go func() {
		t, f := load(c, 2, "/", afterStop, func(h Hello) error {
			after.Add(1)
			if h.Node == "node-2" {
				return fmt.Errorf("node-2 answered after it stopped")
			}
			return nil
		})
		afterDone <- res{t, f}
	}()
	time.Sleep(time.Second)
	close(stop)
	close(afterStop)
	for _, ch := range []chan res{quick, slow, afterDone} {
		r := <-ch
		if len(r.failures) > 0 {
			t.Errorf("%d of %d requests failed: %v", len(r.failures), r.total, r.failures[:min(5, len(r.failures))])
		}
	}
	if after.Load() == 0 {
		t.Fatal("no request was answered after node-2 stopped")
	}
}

// TestProxyHeadersMetricsLogAndSticky checks what the front adds to a
// request and reports about it.
func TestProxyHeadersMetricsLogAndSticky(t *testing.T) {
	accessLog := filepath.Join(t.TempDir(), "access.log")
	c := Start(t, 2, "--access-log", accessLog)
	if r := deployHello(c, c.HelloDir(nil), "--workers", "2", "--balance", "sticky-cookie=herd_s"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}

	t.Run("forwarding headers", func(t *testing.T) {
		hdr := http.Header{"X-Forwarded-For": {"6.6.6.6"}, "Forwarded": {"for=6.6.6.6"}, "X-Request-Id": {"my-id-1"}}
		resp, body, err := c.Do("GET", helloHost, "/headers", hdr, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /headers: %v %v", resp, err)
		}
		var got struct{ Headers http.Header }
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		h := got.Headers
		if xff := h.Values("X-Forwarded-For"); len(xff) != 1 || xff[0] != "127.0.0.1" {
			t.Errorf("X-Forwarded-For %q: a client's own value must be replaced by its address", xff)
		}
		if f := h.Get("Forwarded"); f != "for=127.0.0.1;host=hello.test;proto=http" {
			t.Errorf("Forwarded %q", f)
		}
		if h.Get("X-Forwarded-Host") != helloHost || h.Get("X-Forwarded-Proto") != "http" {
			t.Errorf("X-Forwarded-Host %q, -Proto %q", h.Get("X-Forwarded-Host"), h.Get("X-Forwarded-Proto"))
		}
		if h.Get("X-Request-Id") != "my-id-1" || resp.Header.Get("X-Request-Id") != "my-id-1" {
			t.Errorf("X-Request-ID not propagated: upstream %q, client %q", h.Get("X-Request-Id"), resp.Header.Get("X-Request-Id"))
		}

		resp, body, _ = c.Do("GET", helloHost, "/headers", nil, nil)
		json.Unmarshal(body, &got)
		id := resp.Header.Get("X-Request-Id")
		if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) || got.Headers.Get("X-Request-Id") != id {
			t.Errorf("generated X-Request-ID: client %q, upstream %q", id, got.Headers.Get("X-Request-Id"))
		}
	})

	t.Run("sticky cookie", func(t *testing.T) {
		resp, body, err := c.Do("GET", helloHost, "/", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		var first Hello
		json.Unmarshal(body, &first)
		var cookie *http.Cookie
		for _, ck := range resp.Cookies() {
			if ck.Name == "herd_s" {
				cookie = ck
			}
		}
		if cookie == nil {
			t.Fatalf("no herd_s cookie set: %v", resp.Header)
		}
		for range 20 {
			_, body, err := c.Do("GET", helloHost, "/", http.Header{"Cookie": {"herd_s=" + cookie.Value}}, nil)
			var h Hello
			if err == nil {
				err = json.Unmarshal(body, &h)
			}
			if err != nil || h.Node != first.Node || h.Worker != first.Worker {
				t.Fatalf("sticky request went to %s/%s (err %v), first went to %s/%s", h.Node, h.Worker, err, first.Node, first.Worker)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get("http://" + c.Front.Addrs["admin"] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var sb strings.Builder
		buf := make([]byte, 1<<16)
		for {
			n, err := resp.Body.Read(buf)
			sb.Write(buf[:n])
			if err != nil {
				break
			}
		}
		m := sb.String()
		for _, want := range []string{
			`herd_http_requests_total{app="hello",code="200"}`,
			`herd_http_request_duration_seconds_bucket{app="hello"`,
			`herd_upstream_in_flight{app="hello",endpoint="127.0.0.1`,
			`herd_upstream_requests_total{app="hello"`,
			`herd_queue_length{app="hello"} 0`,
		} {
			if !strings.Contains(m, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})

	t.Run("access log", func(t *testing.T) {
		b, err := os.ReadFile(accessLog)
		if err != nil {
			t.Fatal(err)
		}
		line := regexp.MustCompile(`(?m)^127\.0\.0\.1 - - \[[^\]]+\] "GET /headers HTTP/1\.1" 200 \d+ "-" "Go-http-client/1\.1" rt=\d+\.\d{3} app=hello upstream=127\.0\.0\.1\d:\d+ rid=my-id-1$`)
		if !line.Match(b) {
			t.Fatalf("access log has no combined line for the /headers request:\n%s", b)
		}
	})
}

// TestFrontStopsGracefully: on SIGTERM the front lets a request in flight
// finish and, meanwhile, sends an open WebSocket's client a closing frame
// (1001), which http.Server's shutdown would not (it forgets upgraded
// connections); the tunnel ends once the client answered, and the front
// exits 0 within --shutdown-timeout.
func TestFrontStopsGracefully(t *testing.T) {
	const shutdownTimeout = 10 * time.Second
	c := Start(t, 1, "--shutdown-timeout", shutdownTimeout.String())
	if r := deployHello(c, c.HelloDir(nil)); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	conn, br := wsDial(t, c)
	wsSend(t, conn, wsText, []byte("before stop"))
	if _, got, err := wsRecv(br); err != nil || !strings.HasSuffix(string(got), ": before stop") {
		t.Fatalf("echo before the stop: %q, %v", got, err)
	}
	got := make(chan string, 1)
	go func() {
		code, _, err := c.Get(helloHost, "/sleep?ms=2000")
		got <- fmt.Sprint(code, err)
	}()
	time.Sleep(300 * time.Millisecond)
	conn.SetDeadline(time.Now().Add(shutdownTimeout))
	start := time.Now()
	stopped := make(chan bool, 1)
	go func() { stopped <- c.Front.Stop(shutdownTimeout) }()

	op, payload, err := wsRecv(br)
	took := time.Since(start)
	// hello's own closing frame would say "server shutting down"; the
	// worker is not stopping here.
	if err != nil || op != wsClose || len(payload) < 2 || binary.BigEndian.Uint16(payload) != 1001 || string(payload[2:]) != "front shutting down" {
		t.Fatalf("WebSocket after SIGTERM to the front: opcode %d %q, %v after %v; want close 1001 \"front shutting down\"", op, payload, err, took)
	}
	t.Logf("close frame 1001 %q %v after SIGTERM", payload[2:], took)
	select {
	case g := <-got:
		t.Errorf("the closing frame came after the request in flight ended (%s), not while it drained", g)
	default:
	}
	wsSend(t, conn, wsClose, payload[:2])
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after answering the close: %v, want EOF", err)
	}
	if !<-stopped {
		t.Errorf("the front did not exit 0 within --shutdown-timeout %v of SIGTERM", shutdownTimeout)
	}
	t.Logf("the front exited %v after SIGTERM", time.Since(start))
	if g := <-got; g != "200 <nil>" {
		t.Fatalf("request in flight during the front's stop: %s", g)
	}
}
