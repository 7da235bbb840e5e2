// Command hello is the sample app that herd runs in its demo and in its
// integration and fault tests. Every answer names the worker that produced
// it (app, release, node, worker, pid), so a caller can see where herd-front
// routed a request, and the app can be told to misbehave the way real apps
// do: boot slowly, crash at boot, never become healthy, start failing health
// checks, or stop answering altogether.
//
// herd-node starts it with PORT (and optionally HOST) set, plus the worker's
// identity in HERD_APP, HERD_RELEASE, HERD_NODE and HERD_WORKER.
//
// Endpoints:
//
//   - GET /healthz: 200 "ok", or 503 once unhealthy.
//   - /sleep?ms=N: answers after N ms, or gives up when the client leaves.
//   - /stream?n=N&ms=M: N lines, each flushed, M ms apart (defaults 10 and 100).
//   - POST /echo: reports the body's length and SHA-256.
//   - /fail-health: /healthz answers 503 from then on.
//   - /hang: no request, this one included, is ever answered again.
//   - anything else: the worker's identity as JSON.
//
// Switches for fault tests:
//
//   - HELLO_CRASH_AT_BOOT=1: exit with status 3 before listening.
//   - HELLO_NEVER_HEALTHY=1: /healthz always answers 503.
//   - HELLO_BOOT_DELAY_MS=N: wait N ms before listening.
//
// SIGTERM or SIGINT stops it gracefully: in-flight requests get up to 30 s
// to finish, then it exits 0. A hung worker's requests never finish, so it
// exits 1 only after the full 30 s, unless killed sooner.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// maxDelayMS bounds every millisecond setting so a typo cannot park a
	// request or a boot for years.
	maxDelayMS     = 3_600_000
	maxStreamLines = 100_000
	shutdownGrace  = 30 * time.Second
)

func main() {
	os.Exit(run(os.Getenv, os.Stderr))
}

// run is the whole program; it returns the exit status: 0 after a graceful
// stop, 1 on a runtime failure, 2 on bad configuration and 3 for a crash
// requested by HELLO_CRASH_AT_BOOT.
func run(getenv func(string) string, stderr io.Writer) int {
	logger := log.New(stderr, "hello: ", 0)

	// Checked before anything else so the crash happens whatever the rest of
	// the environment says.
	crash, err := envFlag(getenv, "HELLO_CRASH_AT_BOOT")
	if err != nil {
		logger.Print(err)
		return 2
	}
	if crash {
		logger.Print("crashing at boot as asked (HELLO_CRASH_AT_BOOT)")
		return 3
	}

	cfg, err := loadConfig(getenv)
	if err != nil {
		logger.Print(err)
		return 2
	}

	// Subscribed before the boot delay, so a worker stopped while it is
	// still booting exits promptly instead of starting to listen.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(sigs)

	if cfg.bootDelay > 0 {
		logger.Printf("delaying boot by %v (HELLO_BOOT_DELAY_MS)", cfg.bootDelay)
		select {
		case sig := <-sigs:
			logger.Printf("got %v while booting, exiting", sig)
			return 0
		case <-time.After(cfg.bootDelay):
		}
	}

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		logger.Print(err)
		return 1
	}
	srv := &http.Server{
		Handler:           newServer(cfg, logger).handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// herd-front drops pooled connections sooner than this, so the app
		// never closes a connection just as the front reuses it. There is no
		// WriteTimeout because /sleep and /stream legitimately run long.
		IdleTimeout: 5 * time.Second,
		ErrorLog:    logger,
	}
	logger.Printf("listening on %s (app=%s release=%s worker=%s)",
		ln.Addr(), cfg.id.App, cfg.id.Release, cfg.id.Worker)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		logger.Printf("serve: %v", err)
		return 1
	case sig := <-sigs:
		logger.Printf("got %v, shutting down; in-flight requests get up to %v", sig, shutdownGrace)
	}
	// A second signal now gets the default action and kills the process, for
	// whoever does not want to wait.
	signal.Stop(sigs)

	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		logger.Printf("shutdown: %v", err)
		return 1
	}
	logger.Print("stopped")
	return 0
}

type config struct {
	addr         string
	id           identity
	neverHealthy bool
	bootDelay    time.Duration
}

func loadConfig(getenv func(string) string) (config, error) {
	port := getenv("PORT")
	if port == "" {
		return config{}, errors.New("PORT is not set; herd-node sets it to the port this worker must listen on")
	}
	host := getenv("HOST")
	if host == "" {
		host = "127.0.0.1"
	}
	neverHealthy, err := envFlag(getenv, "HELLO_NEVER_HEALTHY")
	if err != nil {
		return config{}, err
	}
	var delayMS int
	if v := getenv("HELLO_BOOT_DELAY_MS"); v != "" {
		delayMS, err = strconv.Atoi(v)
		if err != nil || delayMS < 0 || delayMS > maxDelayMS {
			return config{}, fmt.Errorf("HELLO_BOOT_DELAY_MS=%q: want milliseconds from 0 to %d", v, maxDelayMS)
		}
	}
	return config{
		addr: net.JoinHostPort(host, port),
		id: identity{
			App:     getenv("HERD_APP"),
			Release: getenv("HERD_RELEASE"),
			Node:    getenv("HERD_NODE"),
			Worker:  getenv("HERD_WORKER"),
			PID:     os.Getpid(),
		},
		neverHealthy: neverHealthy,
		bootDelay:    time.Duration(delayMS) * time.Millisecond,
	}, nil
}

// envFlag reads an on/off switch. Unset means off; a value strconv.ParseBool
// rejects is an error, so a misspelt switch cannot silently do nothing.
func envFlag(getenv func(string) string, name string) (bool, error) {
	v := getenv(name)
	if v == "" {
		return false, nil
	}
	on, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q: want 1 or 0", name, v)
	}
	return on, nil
}

type identity struct {
	App     string `json:"app"`
	Release string `json:"release"`
	Node    string `json:"node"`
	Worker  string `json:"worker"`
	PID     int    `json:"pid"`
}

// reply is the JSON body of every identity answer; endpoints that report
// more embed it.
type reply struct {
	identity
	Host   string `json:"host"`
	Path   string `json:"path"`
	Method string `json:"method"`
	// InFlight is how many requests (health checks aside) this process was
	// serving when this one arrived, itself included: a front that keeps a
	// sync worker to one request at a time never makes it exceed 1.
	InFlight int64 `json:"inflight"`
}

type headersReply struct {
	reply
	Headers http.Header `json:"headers"`
}

type sleepReply struct {
	reply
	SleptMS int64 `json:"slept_ms"`
}

type echoReply struct {
	reply
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// server holds the worker's identity and the state the fault endpoints flip.
type server struct {
	id           identity
	neverHealthy bool
	log          *log.Logger

	healthFailing atomic.Bool
	inflight      atomic.Int64
	cacheServed   atomic.Int64

	hangOnce sync.Once
	hung     chan struct{} // closed by the first /hang
	// unhang is never closed in production, so hung requests wait until the
	// process dies; tests close it to free the goroutines parked on it.
	unhang chan struct{}
}

func newServer(cfg config, logger *log.Logger) *server {
	return &server{
		id:           cfg.id,
		neverHealthy: cfg.neverHealthy,
		log:          logger,
		hung:         make(chan struct{}),
		unhang:       make(chan struct{}),
	}
}

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", s.serveIdentity)
	mux.HandleFunc("/healthz", s.serveHealth)
	mux.HandleFunc("/sleep", s.serveSleep)
	mux.HandleFunc("/stream", s.serveStream)
	mux.HandleFunc("/echo", s.serveEcho)
	mux.HandleFunc("/fail-health", s.serveFailHealth)
	mux.HandleFunc("/hang", s.serveHang)
	mux.HandleFunc("/headers", s.serveHeaders)
	mux.HandleFunc("/cache", s.serveCache)
	return s.stallIfHung(s.countInFlight(mux))
}

type inflightKey struct{}

// countInFlight tracks concurrent requests; health checks come from the
// node, not through the front, so they are not counted.
func (s *server) countInFlight(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		n := s.inflight.Add(1)
		defer s.inflight.Add(-1)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), inflightKey{}, n)))
	})
}

type cacheReply struct {
	reply
	// Served counts the /cache requests this process answered, so a test
	// sees whether an answer came from the worker or from a cache.
	Served int64 `json:"served"`
}

// serveCache answers with Cache-Control: public, max-age=N (from ?max-age=N,
// default 60) after ?ms=M of work, and with a Set-Cookie if ?cookie=1.
func (s *server) serveCache(w http.ResponseWriter, r *http.Request) {
	maxAge, given, err := queryInt(r, "max-age")
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !given {
		maxAge = 60
	}
	d, _, err := queryDelay(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !sleep(r.Context(), d) {
		return
	}
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(maxAge))
	if r.URL.Query().Get("cookie") == "1" {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: strconv.FormatInt(s.cacheServed.Load(), 10)})
	}
	writeJSON(w, cacheReply{reply: s.reply(r), Served: s.cacheServed.Add(1)})
}

func (s *server) serveHeaders(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, headersReply{reply: s.reply(r), Headers: r.Header})
}

// stallIfHung parks every request once /hang has been called, before any
// handler sees it, so a hung worker looks dead to health checks and traffic
// alike while its process and sockets stay up.
func (s *server) stallIfHung(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-s.hung:
			<-s.unhang
		default:
			next.ServeHTTP(w, r)
		}
	})
}

func (s *server) serveHang(w http.ResponseWriter, r *http.Request) {
	s.hangOnce.Do(func() {
		s.log.Print("/hang called: no request will be answered from now on")
		close(s.hung)
	})
	<-s.unhang
}

func (s *server) serveIdentity(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, s.reply(r))
}

func (s *server) serveHealth(w http.ResponseWriter, r *http.Request) {
	switch {
	case s.neverHealthy:
		http.Error(w, "unhealthy: HELLO_NEVER_HEALTHY is set", http.StatusServiceUnavailable)
	case s.healthFailing.Load():
		http.Error(w, "unhealthy: /fail-health was called", http.StatusServiceUnavailable)
	default:
		writeText(w, "ok\n")
	}
}

func (s *server) serveFailHealth(w http.ResponseWriter, r *http.Request) {
	if !s.healthFailing.Swap(true) {
		s.log.Print("/fail-health called: /healthz answers 503 from now on")
	}
	writeText(w, "health now failing\n")
}

func (s *server) serveSleep(w http.ResponseWriter, r *http.Request) {
	d, ok, err := queryDelay(r)
	if err == nil && !ok {
		err = errors.New("missing ms: use /sleep?ms=N")
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !sleep(r.Context(), d) {
		return // the client has gone; there is no one to answer
	}
	writeJSON(w, sleepReply{reply: s.reply(r), SleptMS: d.Milliseconds()})
}

func (s *server) serveStream(w http.ResponseWriter, r *http.Request) {
	n, ok, err := queryInt(r, "n")
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !ok {
		n = 10
	}
	n = min(n, maxStreamLines)
	d, ok, err := queryDelay(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !ok {
		d = 100 * time.Millisecond
	}
	// pad=N adds N bytes to every line, for big answers.
	pad, _, err := queryInt(r, "pad")
	if err != nil || pad > 1<<16 {
		http.Error(w, "pad must be 0..65536", http.StatusBadRequest)
		return
	}
	padding := strings.Repeat(".", pad)

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for i := 1; i <= n; i++ {
		if i > 1 && !sleep(r.Context(), d) {
			return
		}
		if _, err := fmt.Fprintf(w, "line %d of %d %s %s %s%s\n", i, n, s.id.Node, s.id.Worker, s.id.Release, padding); err != nil {
			return
		}
		// Without the flush lines would sit in the server's buffer, and a
		// proxy that buffers responses could not be told from one that
		// streams them.
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func (s *server) serveEcho(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST /echo", http.StatusMethodNotAllowed)
		return
	}
	// Hashing as the body streams in keeps memory flat for large uploads.
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	writeJSON(w, echoReply{reply: s.reply(r), Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))})
}

func (s *server) reply(r *http.Request) reply {
	n, _ := r.Context().Value(inflightKey{}).(int64)
	return reply{identity: s.id, Host: r.Host, Path: r.URL.Path, Method: r.Method, InFlight: n}
}

// queryInt reads a non-negative integer query parameter and reports whether
// it was given at all.
func queryInt(r *http.Request, name string) (int, bool, error) {
	q := r.URL.Query()
	if !q.Has(name) {
		return 0, false, nil
	}
	v := q.Get(name)
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, true, fmt.Errorf("%s must be a non-negative integer, got %q", name, v)
	}
	return n, true, nil
}

// queryDelay reads the ms query parameter shared by /sleep and /stream.
func queryDelay(r *http.Request) (time.Duration, bool, error) {
	ms, ok, err := queryInt(r, "ms")
	if err == nil && ms > maxDelayMS {
		err = fmt.Errorf("ms must be at most %d", maxDelayMS)
	}
	return time.Duration(ms) * time.Millisecond, ok, err
}

// sleep waits for d and reports whether it did; it returns false as soon as
// ctx is done, so a request whose client has left stops holding the worker.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	// Encode ends the body with the newline curl users expect. A failed
	// write means the client has gone, so there is no one to tell.
	_ = json.NewEncoder(w).Encode(v)
}

func writeText(w http.ResponseWriter, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, text)
}
