package clustertest

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// TestSlowClientsHoldNoWorker: with one sync worker (concurrency 1), a
// client uploading slowly and a client reading slowly each leave the
// worker free for everyone else, because the front holds the bodies.
func TestSlowClientsHoldNoWorker(t *testing.T) {
	c := Start(t, 1)
	buffering := "on"
	if os.Getenv("HERD_TEST_BUFFERING_OFF") != "" {
		buffering = "off" // to see this test fail without buffering
	}
	if r := deployHello(c, c.HelloDir(nil), "--workers", "1", "--concurrency", "1", "--buffering", buffering); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	quick := func(t *testing.T) {
		t.Helper()
		start := time.Now()
		if _, err := c.GetHello(helloHost); err != nil {
			t.Fatalf("GET: %v", err)
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("a quick GET took %v: the worker was held", took)
		}
	}
	dial := func(t *testing.T) net.Conn {
		conn, err := net.Dial("tcp", c.Front.Addrs["http"])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}

	t.Run("slow upload", func(t *testing.T) {
		// 20 bytes, one every 100 ms.
		up := dial(t)
		fmt.Fprintf(up, "POST /echo HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: 20\r\n\r\n", helloHost)
		done := make(chan string, 1)
		go func() {
			for range 20 {
				up.Write([]byte("x"))
				time.Sleep(100 * time.Millisecond)
			}
			b, _ := io.ReadAll(io.LimitReader(up, 4096))
			done <- string(b)
		}()
		time.Sleep(300 * time.Millisecond)
		quick(t)
		if got := <-done; !strings.HasPrefix(got, "HTTP/1.1 200") || !strings.Contains(got, `"bytes":20`) {
			t.Fatalf("slow upload's answer: %q", got)
		}
	})

	t.Run("slow reader", func(t *testing.T) {
		// 16 MB, far more than the socket buffers between the front and a
		// client that reads nothing for a while.
		down := dial(t)
		fmt.Fprintf(down, "GET /stream?n=1000&ms=0&pad=16000 HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", helloHost)
		time.Sleep(3 * time.Second)
		quick(t)
		b, _ := io.ReadAll(down)
		if !strings.Contains(string(b), "line 1000 of 1000 ") {
			t.Fatalf("slow reader got %d bytes, not the whole answer", len(b))
		}
	})
}
