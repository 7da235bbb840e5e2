package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// WebSockets at shutdown.
//
// http.Server.Shutdown forgets hijacked connections, so an open WebSocket
// would just be cut when herd-front exits. The proxy keeps the client side
// of every WebSocket tunnel instead, and CloseWebSockets sends each client
// a closing frame with 1001 (going away), as the server of the WebSocket
// would. The client's answer is passed on to the worker, so the app sees
// the closing handshake too, and the tunnel is closed once it has been, or
// after wsCloseGrace.
//
// The closing frame must not land inside a frame the worker is sending.
// ReverseProxy copies worker to client in buffers that need not end on a
// frame boundary (one big message takes several writes; several small ones
// may share one), so a write boundary is not enough. Every write to the
// client therefore goes through wsTunnel.Write under one mutex, which
// follows the frame headers going by (the payload is only counted): the
// closing frame is written at once if the stream is between frames, or
// else right after the bytes that finish the frame in progress, and what
// the worker sends after it is dropped (a closing frame is the last frame,
// RFC 6455 section 5.5.1). Sending a closing frame to the worker instead,
// for the app to answer, would need the same care in the other direction
// and leave the outcome to each app.

// wsCloseGrace is how long a client has to answer the front's closing
// frame before its tunnel is closed anyway.
const wsCloseGrace = time.Second

// wsGoingAway is the closing frame a server sends: unmasked, status 1001.
var wsGoingAway = func() []byte {
	const reason = "front shutting down"
	return append([]byte{0x88, byte(2 + len(reason)), 1001 >> 8, 1001 & 0xff}, reason...)
}()

// isWebSocket tells a WebSocket handshake (RFC 6455 section 4.1) from
// other upgrades, whose framing the front does not know.
func isWebSocket(r *http.Request) bool {
	return r.ProtoMajor == 1 && strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// CloseWebSockets starts the closing handshake on every open WebSocket
// tunnel, and on every one that opens from now on, and waits until they
// are closed: by the handshake, after wsCloseGrace, or when ctx ends, which
// closes the rest. Call it once, at shutdown.
func (p *Proxy) CloseWebSockets(ctx context.Context) {
	t := &p.tunnels
	t.mu.Lock()
	t.closing = true
	open := make([]*wsTunnel, 0, len(t.open))
	for c := range t.open {
		open = append(open, c)
	}
	t.mu.Unlock()
	if len(open) > 0 {
		p.log.Info("closing WebSockets", "open", len(open))
		for _, c := range open {
			// Each may wait for a write to a slow client to end.
			go c.goAway()
		}
	}
	for {
		t.mu.Lock()
		n := len(t.open)
		t.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-t.gone:
		case <-ctx.Done():
			t.mu.Lock()
			for c := range t.open {
				c.Conn.Close()
			}
			t.mu.Unlock()
			return
		}
	}
}

// wsTunnels are the open WebSocket tunnels.
type wsTunnels struct {
	mu      sync.Mutex
	open    map[*wsTunnel]struct{}
	closing bool
	gone    chan struct{} // a tunnel closed (buffered: a missed signal waits)
}

func (t *wsTunnels) add(conn net.Conn) *wsTunnel {
	c := &wsTunnel{Conn: conn, tunnels: t}
	t.mu.Lock()
	t.open[c] = struct{}{}
	closing := t.closing
	t.mu.Unlock()
	if closing {
		c.goAway()
	}
	return c
}

func (t *wsTunnels) remove(c *wsTunnel) {
	t.mu.Lock()
	delete(t.open, c)
	t.mu.Unlock()
	select {
	case t.gone <- struct{}{}:
	default:
	}
}

// wsWriter is the ResponseWriter of a WebSocket handshake: it hands
// ReverseProxy a tracked client connection when it switches protocols.
type wsWriter struct {
	http.ResponseWriter
	tunnels *wsTunnels
}

func (w wsWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return w.tunnels.add(conn), brw, nil
}

// Unwrap lets http.ResponseController reach the other optional methods.
func (w wsWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// wsTunnel is the client's side of a WebSocket tunnel. ReverseProxy reads
// from it (client to worker) in one goroutine and writes to it (worker to
// client) in another; goAway comes from a third.
type wsTunnel struct {
	net.Conn
	tunnels *wsTunnels

	mu sync.Mutex // held by every write to the client
	// started: ReverseProxy has sent the 101 (through the hijacked
	// connection's buffer, not Write) and begun copying, so frames may go.
	started   bool
	out       wsFrames // what went to the client
	goingAway bool
	// closeSent: nothing more goes to the client. Set under mu; the reader
	// loads it without, so that a write blocked on a slow client never
	// holds up the other direction.
	closeSent atomic.Bool

	reading bool     // the reader has begun (reader only)
	in      wsFrames // what came from the client (reader only)
}

func (c *wsTunnel) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.startLocked()
	if c.closeSent.Load() {
		return len(p), nil
	}
	if !c.goingAway {
		c.out.feed(p)
		return c.Conn.Write(p)
	}
	// Finish the frame in progress, then go away.
	n := c.out.advance(p)
	if m, err := c.Conn.Write(p[:n]); err != nil {
		return m, err
	}
	if c.out.atBoundary() {
		c.sendCloseLocked()
	}
	return len(p), nil
}

func (c *wsTunnel) Read(p []byte) (int, error) {
	if !c.reading {
		c.reading = true
		c.mu.Lock()
		c.startLocked()
		c.mu.Unlock()
	}
	if c.in.closed && c.closeSent.Load() {
		// The closing handshake is over, and the client's closing frame
		// went on to the worker with the previous read: end the tunnel.
		return 0, io.EOF
	}
	n, err := c.Conn.Read(p)
	c.in.feed(p[:n])
	return n, err
}

// CloseWrite passes on the worker's end of the stream.
func (c *wsTunnel) CloseWrite() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeSent.Store(true)
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// Close is ReverseProxy's when the tunnel ends.
func (c *wsTunnel) Close() error {
	err := c.Conn.Close()
	c.tunnels.remove(c)
	return err
}

func (c *wsTunnel) startLocked() {
	if c.started {
		return
	}
	c.started = true
	if c.goingAway {
		c.sendCloseLocked()
	}
}

// goAway starts the closing handshake and gives the client wsCloseGrace
// to finish it.
func (c *wsTunnel) goAway() {
	time.AfterFunc(wsCloseGrace, func() { c.Conn.Close() })
	c.mu.Lock()
	defer c.mu.Unlock()
	c.goingAway = true
	if c.started && c.out.atBoundary() {
		c.sendCloseLocked()
	}
}

// sendCloseLocked sends the closing frame unless the worker's went out
// already; either way it is the last frame.
func (c *wsTunnel) sendCloseLocked() {
	if c.closeSent.Swap(true) {
		return
	}
	if c.out.closed {
		return
	}
	c.Conn.SetWriteDeadline(time.Now().Add(wsCloseGrace))
	c.Conn.Write(wsGoingAway)
}

// wsFrames follows the frame boundaries of one direction of a WebSocket
// (RFC 6455 section 5.2) from the frame headers.
type wsFrames struct {
	head   [14]byte // the header coming in
	nhead  int
	left   uint64 // payload bytes of the current frame still to come
	op     byte   // the current frame's opcode
	closed bool   // a whole closing frame went by
}

func (f *wsFrames) atBoundary() bool { return f.nhead == 0 && f.left == 0 }

func (f *wsFrames) feed(p []byte) {
	for len(p) > 0 {
		p = p[f.advance(p):]
	}
}

// advance follows p to the end of the current frame (the next one if
// between frames) and returns how many bytes that took: len(p) if the
// frame goes on.
func (f *wsFrames) advance(p []byte) int {
	i := 0
	for i < len(p) {
		if f.left > 0 {
			n := min(f.left, uint64(len(p)-i))
			i += int(n)
			f.left -= n
			if f.left == 0 {
				f.end()
			}
			return i
		}
		f.head[f.nhead] = p[i]
		f.nhead++
		i++
		if f.nhead < 2 || f.nhead < f.headLen() {
			continue
		}
		f.op = f.head[0] & 0x0f
		f.left = f.payloadLen()
		f.nhead = 0
		if f.left == 0 {
			f.end()
			return i
		}
	}
	return i
}

// headLen is the length of the header whose first two bytes are in.
func (f *wsFrames) headLen() int {
	n := 2
	switch f.head[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if f.head[1]&0x80 != 0 {
		n += 4 // masking key
	}
	return n
}

func (f *wsFrames) payloadLen() uint64 {
	switch n := f.head[1] & 0x7f; n {
	case 126:
		return uint64(binary.BigEndian.Uint16(f.head[2:]))
	case 127:
		return binary.BigEndian.Uint64(f.head[2:])
	default:
		return uint64(n)
	}
}

func (f *wsFrames) end() {
	if f.op == 0x8 {
		f.closed = true
	}
}
