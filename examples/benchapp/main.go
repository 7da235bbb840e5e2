// Command benchapp is the backend of scripts/bench.sh: a minimal HTTP server
// that answers as fast as it can, so a benchmark measures the proxy in
// front of it, not the app.
//
// It binds $HOST:$PORT, like every herd worker (HOST may be empty: all
// addresses). Endpoints:
//
//   - GET /healthz: 200 "ok".
//   - GET /bytes/N: 200 with exactly N bytes (0 <= N <= 1 MiB), served from
//     a buffer made at start, as application/octet-stream with
//     Content-Length; anything else after /bytes/ is a 400.
//
// Keep-alive is on; idle connections are closed after 5 s. Nothing is
// logged per request. SIGTERM or SIGINT stops it gracefully.
package main

import (
	"context"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

const maxBytes = 1 << 20

// payload is served by /bytes/N (its first N bytes).
var payload = func() []byte {
	b := make([]byte, maxBytes)
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	for i := range b {
		b[i] = alphabet[i%len(alphabet)]
	}
	return b
}()

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", "2")
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("GET /bytes/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.PathValue("n"))
		if err != nil || n < 0 || n > maxBytes {
			http.Error(w, "want /bytes/N with 0 <= N <= 1048576", http.StatusBadRequest)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.Itoa(n))
		_, _ = w.Write(payload[:n])
	})

	if os.Getenv("PORT") == "" {
		log.Fatal("benchapp: PORT is not set")
	}
	srv := &http.Server{
		Addr:              net.JoinHostPort(os.Getenv("HOST"), os.Getenv("PORT")),
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Second,
	}
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		log.Fatalf("benchapp: %v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()

	select {
	case err := <-done:
		log.Fatalf("benchapp: %v", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Printf("benchapp: shutdown: %v", err)
		os.Exit(1)
	}
}
