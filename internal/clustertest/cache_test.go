package clustertest

import (
	"encoding/json"

	"sync"
	"testing"
	"time"
)

type cacheAnswer struct {
	Pid     int    `json:"pid"`
	Release string `json:"release"`
	Served  int    `json:"served"`
	xcache  string
}

func getCached(t *testing.T, c *Cluster, path string) cacheAnswer {
	t.Helper()
	resp, body, err := c.Do("GET", helloHost, path, nil, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %v %v", path, resp, err)
	}
	var a cacheAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatal(err)
	}
	a.xcache = resp.Header.Get("X-Cache")
	return a
}

// TestResponseCache: with --cache on the front stores cacheable answers,
// fetches once for a stampede of misses, never stores Set-Cookie answers,
// and drops entries of a release that no longer serves.
func TestResponseCache(t *testing.T) {
	c := Start(t, 1)
	if r := deployHello(c, c.HelloDir(nil), "--workers", "1", "--concurrency", "0", "--cache", "on"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}

	// A stampede of 20 concurrent misses makes one request to the worker.
	const n = 20
	answers := make([]cacheAnswer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { answers[i] = getCached(t, c, "/cache?ms=300") })
	}
	wg.Wait()
	for _, a := range answers {
		if a.Served != answers[0].Served || a.Pid != answers[0].Pid {
			t.Fatalf("stampede reached the worker more than once: %+v", answers)
		}
	}
	hit := getCached(t, c, "/cache?ms=300")
	if hit.xcache != "HIT" || hit.Served != answers[0].Served {
		t.Fatalf("after the stampede: %+v, want a HIT of served=%d", hit, answers[0].Served)
	}
	// Another URL is another entry.
	if other := getCached(t, c, "/cache?ms=0"); other.xcache != "MISS" || other.Served == hit.Served {
		t.Fatalf("another URL: %+v", other)
	}
	// An answer with Set-Cookie is never stored.
	a1, a2 := getCached(t, c, "/cache?cookie=1"), getCached(t, c, "/cache?cookie=1")
	if a1.xcache != "MISS" || a2.xcache != "MISS" || a1.Served == a2.Served {
		t.Fatalf("Set-Cookie answers were cached: %+v %+v", a1, a2)
	}
	// Not cacheable (no Cache-Control): every request reaches the worker.
	resp, _, _ := c.Do("GET", helloHost, "/", nil, nil)
	if resp.Header.Get("X-Cache") != "MISS" {
		t.Errorf("uncacheable answer: X-Cache %q", resp.Header.Get("X-Cache"))
	}
	if resp, _, _ := c.Do("POST", helloHost, "/echo", nil, nil); resp.Header.Get("X-Cache") != "" {
		t.Errorf("POST went through the cache: %v", resp.Header)
	}

	// A new release: entries of v1 are gone once no worker runs it.
	if r := deployHello(c, c.HelloDir(map[string]string{"v": "2"}), "--workers", "1", "--concurrency", "0", "--cache", "on"); r.Code != 0 {
		t.Fatalf("deploy v2: %s", r.Stderr)
	}
	if !Eventually(10*time.Second, func() bool {
		a := getCached(t, c, "/cache?ms=300")
		return a.Release == "v2" && a.xcache == "MISS"
	}) {
		t.Fatal("v1's cached answer outlived v1")
	}
}
