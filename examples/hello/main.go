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
//   - GET /events?n=N&ms=M: N Server-Sent Events, each flushed, M ms apart
//     (defaults 5 and 100).
//   - GET /ws: a WebSocket (RFC 6455) that echoes every text or binary
//     message back prefixed with "NODE/WORKER: ".
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
// to finish and open WebSockets are sent a closing frame (1001, going away),
// then it exits 0. A hung worker's requests never finish, so it
// exits 1 only after the full 30 s, unless killed sooner.
package main

import (
	"bufio"
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
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"
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
	s := newServer(cfg, logger)
	srv := &http.Server{
		Handler:           s.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// herd-front drops pooled connections sooner than this, so the app
		// never closes a connection just as the front reuses it. There is no
		// WriteTimeout because /sleep and /stream legitimately run long.
		IdleTimeout: 5 * time.Second,
		ErrorLog:    logger,
	}
	// Shutdown forgets hijacked connections, so the WebSockets are told to
	// go away by a hook, while the plain requests drain.
	srv.RegisterOnShutdown(s.sockets.goAway)
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
	if err := s.sockets.wait(ctx); err != nil {
		logger.Printf("shutdown: websockets still open: %v", err)
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

	sockets wsRegistry
}

func newServer(cfg config, logger *log.Logger) *server {
	return &server{
		id:           cfg.id,
		neverHealthy: cfg.neverHealthy,
		log:          logger,
		hung:         make(chan struct{}),
		unhang:       make(chan struct{}),
		sockets:      wsRegistry{conns: map[*wsConn]struct{}{}},
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
	mux.HandleFunc("/events", s.serveEvents)
	mux.HandleFunc("/ws", s.serveWebSocket)
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
	n, d, err := queryStream(r, 10, 100*time.Millisecond)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
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

// serveEvents sends Server-Sent Events; the front must pass them through
// as they come although it buffers other answers.
func (s *server) serveEvents(w http.ResponseWriter, r *http.Request) {
	n, d, err := queryStream(r, 5, 100*time.Millisecond)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	for i := 1; i <= n; i++ {
		if i > 1 && !sleep(r.Context(), d) {
			return
		}
		if _, err := fmt.Fprintf(w, "id: %d\ndata: event %d of %d from %s/%s\n\n", i, i, n, s.id.Node, s.id.Worker); err != nil {
			return
		}
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

// queryStream reads n (capped at maxStreamLines) and ms for the streaming
// endpoints, with defaults for those not given.
func queryStream(r *http.Request, defaultN int, defaultDelay time.Duration) (int, time.Duration, error) {
	n, ok, err := queryInt(r, "n")
	if err != nil {
		return 0, 0, err
	}
	if !ok {
		n = defaultN
	}
	d, ok, err := queryDelay(r)
	if err != nil {
		return 0, 0, err
	}
	if !ok {
		d = defaultDelay
	}
	return min(n, maxStreamLines), d, nil
}

// queryDelay reads the ms query parameter of /sleep, /cache and the streams.
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

// The WebSocket endpoint is a minimal RFC 6455 server: unfragmented text
// and binary messages up to wsMaxMessage, ping, pong and close; no
// extensions and no subprotocols.

// wsGUID is appended to the client's key to make Sec-WebSocket-Accept.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

const (
	wsMaxMessage = 1 << 20
	// wsWriteTimeout bounds every write, so a client that stops reading
	// cannot hold a handler, or the shutdown waiting on it, for ever.
	wsWriteTimeout = 10 * time.Second
	// wsCloseWait is how long a connection that sent its closing frame
	// waits for the client's before it drops the socket.
	wsCloseWait = 5 * time.Second
)

// Opcodes (RFC 6455 section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// Close status codes (RFC 6455 section 7.4.1).
const (
	closeGoingAway     = 1001
	closeProtocolError = 1002
	closeUnsupported   = 1003
	closeInvalidData   = 1007
	closeTooBig        = 1009
)

// wsError is a frame the server refuses; the connection is closed with
// code after it.
type wsError struct {
	code   int
	reason string
}

func (e *wsError) Error() string { return fmt.Sprintf("websocket: %s (close %d)", e.reason, e.code) }

func (s *server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	key, status, err := checkUpgrade(r)
	if err != nil {
		switch status {
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", http.MethodGet)
		case http.StatusUpgradeRequired:
			w.Header().Set("Sec-WebSocket-Version", "13")
		}
		http.Error(w, err.Error(), status)
		return
	}
	if !s.sockets.enter() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	defer s.sockets.leave()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "websocket: "+err.Error(), http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
	if _, err := io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Accept: "+wsAccept(key)+"\r\n\r\n"); err != nil {
		return
	}
	c := &wsConn{conn: conn}
	s.sockets.track(c)
	defer s.sockets.untrack(c)
	s.echo(c, brw.Reader)
}

// checkUpgrade validates a WebSocket opening handshake and returns the
// client's key, or the status to refuse it with.
func checkUpgrade(r *http.Request) (key string, status int, err error) {
	switch {
	case r.Method != http.MethodGet:
		return "", http.StatusMethodNotAllowed, errors.New("a WebSocket handshake is a GET")
	case !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket"):
		return "", http.StatusBadRequest, errors.New("want Connection: Upgrade and Upgrade: websocket")
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		return "", http.StatusUpgradeRequired, errors.New("want Sec-WebSocket-Version: 13")
	}
	key = r.Header.Get("Sec-WebSocket-Key")
	if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) != 16 {
		return "", http.StatusBadRequest, errors.New("Sec-WebSocket-Key must be 16 bytes in base64")
	}
	return key, 0, nil
}

// headerHasToken reports whether the comma-separated header name lists
// token, ignoring case.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func wsAccept(key string) string {
	sum := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// echo answers c's frames until it closes: each message comes back with
// the worker's identity in front, pings get pongs and a close is echoed.
func (s *server) echo(c *wsConn, br *bufio.Reader) {
	prefix := s.id.Node + "/" + s.id.Worker + ": "
	for {
		op, payload, err := readFrame(br)
		if err != nil {
			// A refused frame fails the connection; anything else (EOF, or no
			// closing frame within wsCloseWait) means the client is gone.
			if we, ok := errors.AsType[*wsError](err); ok {
				c.sendClose(we.code, we.reason)
				c.drain(br)
			}
			return
		}
		switch op {
		case opText, opBinary:
			msg := make([]byte, 0, len(prefix)+len(payload))
			msg = append(append(msg, prefix...), payload...)
			if c.send(op, msg) != nil {
				return
			}
		case opPing:
			if c.send(opPong, payload) != nil {
				return
			}
		case opClose:
			// Either the client starts the closing handshake, and its code
			// is echoed, or it answers the server's own closing frame.
			c.sendCloseRaw(payload[:min(len(payload), 2)])
			return
		}
		// Unsolicited pongs are allowed and ignored.
	}
}

// readFrame reads one client frame and unmasks its payload. Frames this
// server does not accept are a *wsError.
func readFrame(br *bufio.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, err
	}
	fin, op, masked := h[0]&0x80 != 0, h[0]&0x0f, h[1]&0x80 != 0
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	switch {
	case h[0]&0x70 != 0:
		return 0, nil, &wsError{closeProtocolError, "reserved bits set without an extension"}
	case op == opContinuation || !fin && op < opClose:
		return 0, nil, &wsError{closeUnsupported, "fragmented messages are not supported"}
	case op != opText && op != opBinary && op != opClose && op != opPing && op != opPong:
		return 0, nil, &wsError{closeProtocolError, fmt.Sprintf("unknown opcode %#x", op)}
	case op >= opClose && (!fin || n > 125):
		return 0, nil, &wsError{closeProtocolError, "control frames must be whole and at most 125 bytes"}
	case op == opClose && n == 1:
		return 0, nil, &wsError{closeProtocolError, "a close payload of one byte"}
	case !masked:
		return 0, nil, &wsError{closeProtocolError, "client frames must be masked"}
	case n > wsMaxMessage:
		return 0, nil, &wsError{closeTooBig, fmt.Sprintf("messages are limited to %d bytes", wsMaxMessage)}
	}
	var mask [4]byte
	if _, err := io.ReadFull(br, mask[:]); err != nil {
		return 0, nil, err
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		return 0, nil, err
	}
	for i := range payload {
		payload[i] ^= mask[i%4]
	}
	if op == opText && !utf8.Valid(payload) {
		return 0, nil, &wsError{closeInvalidData, "text message is not UTF-8"}
	}
	return op, payload, nil
}

// wsConn is one open WebSocket. Its handler reads; writes come from the
// handler and from shutdown, so they hold mu.
type wsConn struct {
	conn net.Conn

	mu        sync.Mutex
	closeSent bool
}

// send writes one unmasked, unfragmented frame, or nothing once the
// closing frame has gone: it must be the last (RFC 6455 section 5.5.1).
func (c *wsConn) send(op byte, payload []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent {
		return nil
	}
	return c.writeLocked(op, payload)
}

func (c *wsConn) writeLocked(op byte, payload []byte) error {
	frame := make([]byte, 0, 10+len(payload))
	frame = append(frame, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		frame = append(frame, byte(n))
	case n <= 0xffff:
		frame = binary.BigEndian.AppendUint16(append(frame, 126), uint16(n))
	default:
		frame = binary.BigEndian.AppendUint64(append(frame, 127), uint64(n))
	}
	c.conn.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
	_, err := c.conn.Write(append(frame, payload...))
	return err
}

// sendClose sends the closing frame with code and reason unless one was
// sent already, and reports whether it did.
func (c *wsConn) sendClose(code int, reason string) bool {
	return c.sendCloseRaw(append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...))
}

func (c *wsConn) sendCloseRaw(payload []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent {
		return false
	}
	c.closeSent = true
	_ = c.writeLocked(opClose, payload)
	return true
}

// drain half-closes the connection and reads what the client still sends
// for a moment: closing a socket with unread input sends a reset, which can
// destroy the closing frame before the client has read it.
func (c *wsConn) drain(br *bufio.Reader) {
	if tc, ok := c.conn.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	}
	c.conn.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, br)
}

// goAway starts the closing handshake with 1001 and gives the client
// wsCloseWait to answer it.
func (c *wsConn) goAway() {
	if c.sendClose(closeGoingAway, "server shutting down") {
		c.conn.SetReadDeadline(time.Now().Add(wsCloseWait))
	}
}

// wsRegistry knows the open WebSockets, which http.Server forgets once
// they are hijacked, so that shutdown can close them.
type wsRegistry struct {
	mu      sync.Mutex
	conns   map[*wsConn]struct{}
	closing bool
	// handlers counts the WebSocket handlers from before their hijack, so
	// one that Shutdown has stopped tracking is still waited for.
	handlers sync.WaitGroup
}

// enter admits a handshake unless shutdown has begun; each true must be
// matched by a leave when the handler returns.
func (r *wsRegistry) enter() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false
	}
	r.handlers.Add(1)
	return true
}

func (r *wsRegistry) leave() { r.handlers.Done() }

// track registers an open connection; one opened while shutdown began is
// told to go away at once.
func (r *wsRegistry) track(c *wsConn) {
	r.mu.Lock()
	r.conns[c] = struct{}{}
	closing := r.closing
	r.mu.Unlock()
	if closing {
		c.goAway()
	}
}

func (r *wsRegistry) untrack(c *wsConn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
}

// goAway refuses new WebSockets and sends every open one a closing frame
// (1001). It returns without waiting for the clients to answer, as
// http.Server's RegisterOnShutdown asks; calling it again is harmless.
func (r *wsRegistry) goAway() {
	r.mu.Lock()
	r.closing = true
	conns := slices.Collect(maps.Keys(r.conns))
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(c.goAway)
	}
	wg.Wait()
}

// wait sends the closing frames itself, since Shutdown may return before
// its hooks have run, and waits until every WebSocket handler has ended.
// When ctx ends first the remaining connections are dropped.
func (r *wsRegistry) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		r.goAway()
		r.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		r.mu.Lock()
		for c := range r.conns {
			c.conn.Close()
		}
		r.mu.Unlock()
		return ctx.Err()
	}
}
