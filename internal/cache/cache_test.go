package cache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is an injected time source that moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: t0} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// origin is a fake upstream that counts fetches and answers with a fixed
// response.
type origin struct {
	calls   atomic.Int64
	status  int
	header  http.Header
	body    string
	release string
}

// newOrigin answers 200 with body and the header pairs, from release v1.
func newOrigin(body string, header ...string) *origin {
	o := &origin{status: http.StatusOK, header: http.Header{}, body: body, release: "v1"}
	for i := 0; i < len(header); i += 2 {
		o.header.Add(header[i], header[i+1])
	}
	return o
}

func (o *origin) fetch() (*Response, bool, error) {
	o.calls.Add(1)
	return &Response{Status: o.status, Header: o.header.Clone(), Body: []byte(o.body), Release: o.release}, false, nil
}

// request builds a request to http://example.com + target with the header
// pairs.
func request(method, target string, header ...string) *http.Request {
	r := httptest.NewRequest(method, "http://example.com"+target, nil)
	for i := 0; i < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	return r
}

func get(target string, header ...string) *http.Request {
	return request(http.MethodGet, target, header...)
}

func allLive(string) bool { return true }

// do serves r from c for app "web" with every release live.
func do(t *testing.T, c *Cache, r *http.Request, o *origin) (*Response, bool) {
	t.Helper()
	resp, hit, err := c.Do("web", r, allLive, o.fetch)
	if err != nil {
		t.Fatalf("%s %s: %v", r.Method, r.URL, err)
	}
	return resp, hit
}

// checkAccounting fails if the cache's size, LRU and variant index
// disagree.
func checkAccounting(t *testing.T, c *Cache) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var size int64
	for el := c.lru.Front(); el != nil; el = el.Next() {
		size += el.Value.(*entry).size
	}
	variants := 0
	for _, vs := range c.entries {
		variants += len(vs)
	}
	if size != c.size || variants != c.lru.Len() || c.size > c.maxBytes {
		t.Fatalf("size %d (counted %d, max %d), %d variants indexed, %d in LRU", c.size, size, c.maxBytes, variants, c.lru.Len())
	}
}

func TestHitAndMiss(t *testing.T) {
	clk := newClock()
	c := New(0, clk.now)
	o := newOrigin("hello", "Cache-Control", "max-age=60", "Content-Type", "text/plain")

	resp, hit := do(t, c, get("/a"), o)
	if hit || string(resp.Body) != "hello" || resp.Status != 200 {
		t.Fatalf("first: hit=%v status=%d body=%q", hit, resp.Status, resp.Body)
	}
	clk.advance(10 * time.Second)
	resp, hit = do(t, c, get("/a"), o)
	if !hit || string(resp.Body) != "hello" || resp.Release != "v1" || !resp.Stored.Equal(t0) {
		t.Fatalf("second: hit=%v body=%q release=%q stored=%v", hit, resp.Body, resp.Release, resp.Stored)
	}
	if got := resp.Header.Get("Age"); got != "10" {
		t.Errorf("Age = %q, want 10", got)
	}
	if _, hit := do(t, c, get("/b"), o); hit {
		t.Error("another path hit")
	}
	if _, hit := do(t, c, get("/a?x=1"), o); hit {
		t.Error("another query hit")
	}
	if n := o.calls.Load(); n != 3 {
		t.Errorf("fetches = %d, want 3", n)
	}
	if c.Len() != 3 || c.Size() <= 0 {
		t.Errorf("Len = %d, Size = %d", c.Len(), c.Size())
	}
	checkAccounting(t, c)
}

func TestMaxAgeExpiry(t *testing.T) {
	clk := newClock()
	c := New(0, clk.now)
	o := newOrigin("x", "Cache-Control", "max-age=60")
	do(t, c, get("/"), o)
	clk.advance(59 * time.Second)
	if _, hit := do(t, c, get("/"), o); !hit {
		t.Fatal("miss at 59s of 60")
	}
	clk.advance(time.Second)
	if _, hit := do(t, c, get("/"), o); hit {
		t.Fatal("hit at 60s of 60")
	}
	if n := o.calls.Load(); n != 2 {
		t.Errorf("fetches = %d, want 2", n)
	}
	clk.advance(time.Second)
	if _, hit := do(t, c, get("/"), o); !hit {
		t.Error("the refetched response was not stored")
	}
}

func TestHeadUsesGetEntry(t *testing.T) {
	c := New(0, newClock().now)
	o := newOrigin("body", "Cache-Control", "max-age=60", "Content-Length", "4")
	do(t, c, get("/"), o)
	resp, hit := do(t, c, request(http.MethodHead, "/"), o)
	if !hit || resp.Status != 200 || resp.Header.Get("Content-Length") != "4" || len(resp.Body) != 0 {
		t.Fatalf("HEAD after GET: hit=%v status=%d headers=%v body=%q", hit, resp.Status, resp.Header, resp.Body)
	}

	// A HEAD miss is not stored: its response has no body for a GET.
	head := newOrigin("", "Cache-Control", "max-age=60")
	do(t, c, request(http.MethodHead, "/other"), head)
	if _, hit := do(t, c, get("/other"), head); hit {
		t.Fatal("GET answered from a HEAD response")
	}
	if n := head.calls.Load(); n != 2 {
		t.Errorf("fetches = %d, want 2", n)
	}
}

func TestOtherMethodsBypass(t *testing.T) {
	c := New(0, newClock().now)
	o := newOrigin("x", "Cache-Control", "max-age=60")
	for i := range 3 {
		if _, hit := do(t, c, request(http.MethodPost, "/form"), o); hit {
			t.Fatalf("POST %d hit", i)
		}
	}
	if n := o.calls.Load(); n != 3 || c.Len() != 0 {
		t.Fatalf("fetches = %d (want 3), Len = %d (want 0)", n, c.Len())
	}
}

func TestUnsafeMethodInvalidates(t *testing.T) {
	c := New(0, newClock().now)
	page := newOrigin("page", "Cache-Control", "max-age=60")
	do(t, c, get("/item", "Accept-Encoding", "gzip"), page)
	do(t, c, get("/item"), page)
	do(t, c, get("/keep"), page)

	failed := newOrigin("boom")
	failed.status = http.StatusInternalServerError
	do(t, c, request(http.MethodPost, "/item"), failed)
	if _, hit := do(t, c, get("/item"), page); !hit {
		t.Fatal("a failed POST dropped the entry")
	}

	do(t, c, request(http.MethodDelete, "/item"), newOrigin(""))
	if _, hit := do(t, c, get("/item"), page); hit {
		t.Fatal("GET hit after a successful DELETE")
	}
	if _, hit := do(t, c, get("/keep"), page); !hit {
		t.Fatal("DELETE of another URL dropped /keep")
	}
	checkAccounting(t, c)
}

func TestStoredCopyIsIndependent(t *testing.T) {
	c := New(0, newClock().now)
	o := newOrigin("abc", "Cache-Control", "max-age=60", "X-Id", "1")
	resp, _ := do(t, c, get("/"), o)
	resp.Header.Set("X-Id", "changed")
	resp.Body[0] = 'Z'
	hit1, _ := do(t, c, get("/"), o)
	hit1.Header.Set("X-Id", "changed again")
	hit2, _ := do(t, c, get("/"), o)
	if string(hit2.Body) != "abc" || hit2.Header.Get("X-Id") != "1" {
		t.Fatalf("stored response changed by its callers: body %q, X-Id %q", hit2.Body, hit2.Header.Get("X-Id"))
	}
}

func TestHopByHopHeadersNotStored(t *testing.T) {
	c := New(0, newClock().now)
	o := newOrigin("x",
		"Cache-Control", "max-age=60",
		"Content-Type", "text/plain",
		"Connection", "keep-alive, X-Conn-Only",
		"X-Conn-Only", "1",
		"Keep-Alive", "timeout=5",
		"Transfer-Encoding", "chunked",
		"Upgrade", "h2c",
		"Proxy-Authenticate", "Basic",
		"Proxy-Connection", "keep-alive",
		"TE", "trailers",
		"Trailer", "X-Sum",
	)
	do(t, c, get("/"), o)
	resp, hit := do(t, c, get("/"), o)
	if !hit {
		t.Fatal("not stored")
	}
	for _, name := range []string{"Connection", "X-Conn-Only", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Proxy-Authenticate", "Proxy-Connection", "Te", "Trailer"} {
		if v, ok := resp.Header[name]; ok {
			t.Errorf("%s stored: %q", name, v)
		}
	}
	if resp.Header.Get("Content-Type") != "text/plain" || resp.Header.Get("Cache-Control") != "max-age=60" {
		t.Errorf("end-to-end headers lost: %v", resp.Header)
	}
}

// fill stores n responses of bodySize bytes at /0 .. /n-1.
func fill(t *testing.T, c *Cache, n, bodySize int) {
	t.Helper()
	o := newOrigin(strings.Repeat("x", bodySize), "Cache-Control", "max-age=600")
	for i := range n {
		do(t, c, get(fmt.Sprintf("/%d", i)), o)
	}
}

func TestLRUEviction(t *testing.T) {
	// Entries of ~9 KB in 80 KB: eight fit, a ninth evicts one.
	c := New(80_000, newClock().now)
	fill(t, c, 8, 9_000)
	if c.Len() != 8 {
		t.Fatalf("Len = %d after 8 stores, want 8", c.Len())
	}
	// Use /0 so /1 becomes the least recently used.
	miss := newOrigin("")
	if _, hit := do(t, c, get("/0"), miss); !hit {
		t.Fatal("/0 not stored")
	}
	o := newOrigin(strings.Repeat("y", 9_000), "Cache-Control", "max-age=600")
	do(t, c, get("/8"), o)
	do(t, c, get("/9"), o)
	if c.Len() != 8 {
		t.Fatalf("Len = %d, want 8", c.Len())
	}
	checkAccounting(t, c)

	for _, path := range []string{"/0", "/3", "/4", "/5", "/6", "/7", "/8", "/9"} {
		if _, hit := do(t, c, get(path), miss); !hit {
			t.Errorf("%s evicted", path)
		}
	}
	for _, path := range []string{"/1", "/2"} {
		if _, hit := do(t, c, get(path), miss); hit {
			t.Errorf("%s kept; the least recently used should go first", path)
		}
	}
}

func TestOversizedNotStored(t *testing.T) {
	c := New(80_000, newClock().now)
	fill(t, c, 1, 10_001) // over 80_000/8 with its overhead
	if c.Len() != 0 || c.Size() != 0 {
		t.Fatalf("oversized entry stored: Len %d Size %d", c.Len(), c.Size())
	}
	fill(t, c, 1, 5_000)
	if c.Len() != 1 {
		t.Fatalf("a 5 KB entry was not stored in 80 KB")
	}
}

func TestTooBigNotStored(t *testing.T) {
	c := New(0, newClock().now)
	calls := 0
	fetch := func() (*Response, bool, error) {
		calls++
		return &Response{Status: 200, Header: http.Header{"Cache-Control": {"max-age=60"}}, Body: []byte("partial")}, true, nil
	}
	for range 2 {
		resp, hit, err := c.Do("web", get("/"), allLive, fetch)
		if err != nil || hit || string(resp.Body) != "partial" {
			t.Fatalf("resp %v hit %v err %v", resp, hit, err)
		}
	}
	if calls != 2 || c.Len() != 0 {
		t.Fatalf("calls = %d, Len = %d: a too-big response was stored", calls, c.Len())
	}
}

func TestNotLiveReleaseIsMissAndDropped(t *testing.T) {
	c := New(0, newClock().now)
	o := newOrigin("old", "Cache-Control", "max-age=60")
	do(t, c, get("/"), o)

	onlyV2 := func(release string) bool { return release == "v2" }
	nostore := newOrigin("new", "Cache-Control", "no-store")
	nostore.release = "v2"
	resp, hit, err := c.Do("web", get("/"), onlyV2, nostore.fetch)
	if err != nil || hit || string(resp.Body) != "new" {
		t.Fatalf("hit=%v body=%q err=%v, want a fetch from v2", hit, resp.Body, err)
	}
	if c.Len() != 0 || c.Size() != 0 {
		t.Fatalf("v1 entry kept: Len %d Size %d", c.Len(), c.Size())
	}
}

func TestDropReleases(t *testing.T) {
	c := New(0, newClock().now)
	for _, x := range []struct{ app, path, release string }{
		{"web", "/a", "v1"}, {"web", "/b", "v2"}, {"web", "/c", "v1"}, {"api", "/a", "v1"},
	} {
		o := newOrigin(x.release, "Cache-Control", "max-age=60")
		o.release = x.release
		if _, _, err := c.Do(x.app, get(x.path), allLive, o.fetch); err != nil {
			t.Fatal(err)
		}
	}
	c.DropReleases("web", func(release string) bool { return release == "v2" })
	if c.Len() != 2 {
		t.Fatalf("Len = %d, want 2 (web /b and api /a)", c.Len())
	}
	checkAccounting(t, c)

	none := newOrigin("")
	for _, x := range []struct {
		app, path string
		hit       bool
	}{{"web", "/a", false}, {"web", "/b", true}, {"web", "/c", false}, {"api", "/a", true}} {
		if _, hit, _ := c.Do(x.app, get(x.path), allLive, none.fetch); hit != x.hit {
			t.Errorf("%s %s: hit = %v, want %v", x.app, x.path, hit, x.hit)
		}
	}
}

func TestAppsAreSeparate(t *testing.T) {
	c := New(0, newClock().now)
	o := newOrigin("x", "Cache-Control", "max-age=60")
	if _, _, err := c.Do("web", get("/"), allLive, o.fetch); err != nil {
		t.Fatal(err)
	}
	if _, hit, _ := c.Do("api", get("/"), allLive, o.fetch); hit {
		t.Fatal("app api answered from app web's entry")
	}
}

// runStampede runs n concurrent Do calls, each with its own fetch, and
// fails the test if they do not all return within a deadline.
func runStampede(t *testing.T, n int, do func(i int)) {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			do(i)
		})
	}
	close(start)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("stampede did not finish: deadlock?")
	}
}

func TestStampedeFetchesOnce(t *testing.T) {
	c := New(0, newClock().now)
	var calls atomic.Int64
	fetch := func() (*Response, bool, error) {
		calls.Add(1)
		time.Sleep(50 * time.Millisecond)
		return &Response{Status: 200, Header: http.Header{"Cache-Control": {"max-age=60"}}, Body: []byte("shared"), Release: "v1"}, false, nil
	}
	const n = 50
	bodies := make([]string, n)
	errs := make([]error, n)
	runStampede(t, n, func(i int) {
		resp, _, err := c.Do("web", get("/hot"), allLive, fetch)
		errs[i] = err
		if resp != nil {
			bodies[i] = string(resp.Body)
		}
	})
	if got := calls.Load(); got != 1 {
		t.Errorf("fetches = %d, want 1", got)
	}
	for i := range n {
		if errs[i] != nil || bodies[i] != "shared" {
			t.Errorf("caller %d: body %q err %v", i, bodies[i], errs[i])
		}
	}
}

func TestStampedeNotCacheableIsNotShared(t *testing.T) {
	c := New(0, newClock().now)
	var calls atomic.Int64
	const n = 50
	bodies := make([]string, n)
	cookies := make([]string, n)
	errs := make([]error, n)
	runStampede(t, n, func(i int) {
		fetch := func() (*Response, bool, error) {
			calls.Add(1)
			time.Sleep(50 * time.Millisecond)
			h := http.Header{"Cache-Control": {"max-age=60"}, "Set-Cookie": {fmt.Sprintf("sid=%d", i)}}
			return &Response{Status: 200, Header: h, Body: fmt.Appendf(nil, "for %d", i), Release: "v1"}, false, nil
		}
		resp, _, err := c.Do("web", get("/login"), allLive, fetch)
		errs[i] = err
		if resp != nil {
			bodies[i], cookies[i] = string(resp.Body), resp.Header.Get("Set-Cookie")
		}
	})
	for i := range n {
		if errs[i] != nil || bodies[i] != fmt.Sprintf("for %d", i) || cookies[i] != fmt.Sprintf("sid=%d", i) {
			t.Errorf("caller %d got body %q cookie %q err %v: another client's response", i, bodies[i], cookies[i], errs[i])
		}
	}
	// Each caller had to make its own fetch.
	if got := calls.Load(); got != n {
		t.Errorf("fetches = %d, want %d", got, n)
	}
	if c.Len() != 0 {
		t.Errorf("Len = %d, want 0", c.Len())
	}
}

func TestStampedeVariantsAreNotMixed(t *testing.T) {
	c := New(0, newClock().now)
	encodings := []string{"gzip", "br", "identity"}
	var calls atomic.Int64
	const n = 30
	bodies := make([]string, n)
	runStampede(t, n, func(i int) {
		enc := encodings[i%len(encodings)]
		fetch := func() (*Response, bool, error) {
			calls.Add(1)
			time.Sleep(50 * time.Millisecond)
			h := http.Header{"Cache-Control": {"max-age=60"}, "Vary": {"Accept-Encoding"}, "Content-Encoding": {enc}}
			return &Response{Status: 200, Header: h, Body: []byte(enc), Release: "v1"}, false, nil
		}
		resp, _, err := c.Do("web", get("/app.js", "Accept-Encoding", enc), allLive, fetch)
		if err == nil {
			bodies[i] = string(resp.Body)
		}
	})
	for i := range n {
		if want := encodings[i%len(encodings)]; bodies[i] != want {
			t.Errorf("caller %d asked for %s, got %q", i, want, bodies[i])
		}
	}
	if got := calls.Load(); got > n {
		t.Errorf("fetches = %d for %d callers", got, n)
	}
}

func TestWaiterContextCanceled(t *testing.T) {
	c := New(0, newClock().now)
	release := make(chan struct{})
	fetching := make(chan struct{})
	leaderDone := make(chan struct{})
	go func() {
		defer close(leaderDone)
		c.Do("web", get("/slow"), allLive, func() (*Response, bool, error) {
			close(fetching)
			<-release
			return &Response{Status: 200, Header: http.Header{"Cache-Control": {"max-age=60"}}}, false, nil
		})
	}()
	<-fetching

	ctx, cancel := context.WithCancel(context.Background())
	r := get("/slow").WithContext(ctx)
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.Do("web", r, allLive, func() (*Response, bool, error) {
			t.Error("the waiter fetched")
			return nil, false, nil
		})
		errc <- err
	}()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter did not return after its context was canceled")
	}
	close(release)
	<-leaderDone
}

func TestWaiterLockTimeout(t *testing.T) {
	c := New(0, newClock().now)
	c.lockTimeout = 20 * time.Millisecond
	release := make(chan struct{})
	fetching := make(chan struct{})
	leaderDone := make(chan struct{})
	go func() {
		defer close(leaderDone)
		c.Do("web", get("/slow"), allLive, func() (*Response, bool, error) {
			close(fetching)
			<-release
			return &Response{Status: 200, Header: http.Header{"Cache-Control": {"max-age=60"}}, Body: []byte("leader")}, false, nil
		})
	}()
	<-fetching
	o := newOrigin("own")
	resp, hit := do(t, c, get("/slow"), o)
	if hit || string(resp.Body) != "own" || o.calls.Load() != 1 {
		t.Fatalf("after the lock timeout: hit=%v body=%q own fetches=%d", hit, resp.Body, o.calls.Load())
	}
	close(release)
	<-leaderDone
}

func TestLeaderPanicReleasesWaiters(t *testing.T) {
	c := New(0, newClock().now)
	panicNow := make(chan struct{})
	fetching := make(chan struct{})
	leaderDone := make(chan any)
	go func() {
		defer func() { leaderDone <- recover() }()
		c.Do("web", get("/"), allLive, func() (*Response, bool, error) {
			close(fetching)
			<-panicNow
			panic("upstream handler bug")
		})
	}()
	<-fetching
	type result struct {
		resp *Response
		err  error
	}
	waiter := make(chan result, 1)
	go func() {
		resp, _, err := c.Do("web", get("/"), allLive, newOrigin("own").fetch)
		waiter <- result{resp, err}
	}()
	time.Sleep(20 * time.Millisecond) // let the waiter join the flight
	close(panicNow)
	if p := <-leaderDone; p == nil {
		t.Fatal("the leader's panic was swallowed")
	}
	select {
	case w := <-waiter:
		if w.err != nil || string(w.resp.Body) != "own" {
			t.Fatalf("waiter: %v %v", w.resp, w.err)
		}
	case <-time.After(defaultLockTimeout / 2):
		t.Fatal("waiter not released by the leader's panic")
	}
}

func TestLeaderErrorIsNotShared(t *testing.T) {
	c := New(0, newClock().now)
	fetching := make(chan struct{})
	fail := make(chan struct{})
	leaderErr := make(chan error, 1)
	go func() {
		_, _, err := c.Do("web", get("/"), allLive, func() (*Response, bool, error) {
			close(fetching)
			<-fail
			return nil, false, context.Canceled // the leader's client went away
		})
		leaderErr <- err
	}()
	<-fetching
	waiter := make(chan *Response, 1)
	go func() {
		resp, _, err := c.Do("web", get("/"), allLive, newOrigin("own").fetch)
		if err != nil {
			t.Errorf("waiter got the leader's error: %v", err)
		}
		waiter <- resp
	}()
	time.Sleep(20 * time.Millisecond)
	close(fail)
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Errorf("leader err = %v", err)
	}
	if resp := <-waiter; resp == nil || string(resp.Body) != "own" {
		t.Fatalf("waiter response %v", resp)
	}
}

func TestConcurrentDoAndDropReleases(t *testing.T) {
	c := New(200_000, nil)
	var current atomic.Int64
	live := func(release string) bool { return release == fmt.Sprintf("v%d", current.Load()) }
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				rel := fmt.Sprintf("v%d", current.Load())
				fetch := func() (*Response, bool, error) {
					h := http.Header{"Cache-Control": {"max-age=60"}, "Vary": {"Accept-Encoding"}}
					return &Response{Status: 200, Header: h, Body: make([]byte, 1000+i%3000), Release: rel}, false, nil
				}
				method := http.MethodGet
				if i%7 == 0 {
					method = http.MethodHead
				}
				r := request(method, fmt.Sprintf("/%d", (i*w)%40), "Accept-Encoding", []string{"gzip", "br"}[i%2])
				if _, _, err := c.Do("web", r, live, fetch); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 50 {
		current.Add(1)
		c.DropReleases("web", live)
		_ = c.Len()
		_ = c.Size()
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	checkAccounting(t, c)
}
