package clustertest

import (
	"net/http"
	"testing"
	"time"
)

// TestRateLimit: each client address gets --rate-burst requests at once
// and --rate-limit per second after that; beyond, 429 with Retry-After.
func TestRateLimit(t *testing.T) {
	c := Start(t, 1)
	if r := deployHello(c, c.HelloDir(nil), "--concurrency", "0", "--rate-limit", "5", "--rate-burst", "3"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	var codes []int
	for range 6 {
		resp, _, err := c.Do("GET", helloHost, "/", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
	}
	ok := 0
	for _, c := range codes {
		if c == 200 {
			ok++
		}
	}
	// 3 at once, perhaps one more refilled while the six went out.
	if ok < 3 || ok > 4 || codes[5] != http.StatusTooManyRequests {
		t.Fatalf("six quick requests got %v; want the burst of 3 (or 4) and then 429s", codes)
	}
	time.Sleep(450 * time.Millisecond) // two tokens at 5/s
	if code, _, err := c.Get(helloHost, "/"); err != nil || code != 200 {
		t.Fatalf("after the bucket refilled: %d %v", code, err)
	}
}
