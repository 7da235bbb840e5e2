package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// wsFrame makes one frame: masked as a client's if mask, else as a
// server's.
func wsFrame(op byte, payload []byte, mask bool) []byte {
	f := []byte{0x80 | op}
	var m byte
	if mask {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		f = append(f, m|byte(n))
	case n <= 0xffff:
		f = binary.BigEndian.AppendUint16(append(f, m|126), uint16(n))
	default:
		f = binary.BigEndian.AppendUint64(append(f, m|127), uint64(n))
	}
	if !mask {
		return append(f, payload...)
	}
	key := [4]byte{1, 2, 3, 4}
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}

func TestWSFramesBoundaries(t *testing.T) {
	frames := [][]byte{
		wsFrame(0x1, []byte("hello"), false),
		wsFrame(0x9, nil, false), // a ping without payload
		wsFrame(0x2, bytes.Repeat([]byte("x"), 300), false),
		wsFrame(0x1, []byte("masked"), true),
		wsFrame(0x2, bytes.Repeat([]byte("y"), 70000), true),
		wsFrame(0x8, []byte{0x03, 0xe8}, false),
	}
	var stream []byte
	var want []int // offsets where a frame ends
	for _, f := range frames {
		stream = append(stream, f...)
		want = append(want, len(stream))
	}
	for _, chunk := range []int{1, 2, 3, 7, 64, 1000, len(stream)} {
		var f wsFrames
		var got []int
		off := 0
		for start := 0; start < len(stream); start += chunk {
			p := stream[start:min(start+chunk, len(stream))]
			for len(p) > 0 {
				if f.closed {
					t.Fatalf("chunks of %d: closing frame seen at %d, before its end", chunk, off)
				}
				n := f.advance(p)
				p, off = p[n:], off+n
				if f.atBoundary() {
					got = append(got, off)
				}
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) || !f.closed {
			t.Errorf("chunks of %d: frames end at %v (closed %v), want %v (closed)", chunk, got, f.closed, want)
		}
	}
}

// wsBackend is a worker's WebSocket: it switches protocols and hands the
// connection to serve.
func wsBackend(t *testing.T, serve func(conn net.Conn)) *backend {
	return newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		serve(conn)
	})
}

// wsOpen opens a WebSocket through the front.
func wsOpen(t *testing.T, front string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(front, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	return conn, br
}

// tunnel waits for the proxy's one open tunnel.
func tunnel(t *testing.T, p *Proxy) *wsTunnel {
	t.Helper()
	for range 100 {
		p.tunnels.mu.Lock()
		for c := range p.tunnels.open {
			p.tunnels.mu.Unlock()
			return c
		}
		p.tunnels.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no tunnel open")
	return nil
}

// closeWebSockets runs CloseWebSockets and returns when it returned and how
// long it took.
func closeWebSockets(p *Proxy, timeout time.Duration) <-chan time.Duration {
	took := make(chan time.Duration, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		start := time.Now()
		p.CloseWebSockets(ctx)
		took <- time.Since(start)
	}()
	return took
}

// TestCloseWebSocketsAfterFrameInProgress: shutdown catches the worker in
// the middle of a big frame. The client gets the whole frame, then the
// closing frame (1001), and nothing the worker sent after; its answer
// reaches the worker, and the tunnel ends at once.
func TestCloseWebSocketsAfterFrameInProgress(t *testing.T) {
	big := wsFrame(0x2, bytes.Repeat([]byte("z"), 200<<10), false)
	half := len(big) / 2
	goOn := make(chan struct{})
	fromClient := make(chan []byte, 1)
	b := wsBackend(t, func(conn net.Conn) {
		conn.Write(big[:half])
		<-goOn
		conn.Write(big[half:])
		conn.Write(wsFrame(0x1, []byte("after the close"), false))
		got, _ := io.ReadAll(conn)
		fromClient <- got
	})
	p, front := newFront(t, Config{}, shop("", b.addr))
	conn, br := wsOpen(t, front)
	if _, err := br.Peek(10); err != nil { // the big frame has begun
		t.Fatal(err)
	}
	c := tunnel(t, p)
	took := closeWebSockets(p, 5*time.Second)
	for {
		c.mu.Lock()
		going := c.goingAway
		c.mu.Unlock()
		if going {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(goOn)

	got := make([]byte, len(big))
	if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("the frame in progress: %v (intact %v)", err, bytes.Equal(got, big))
	}
	next := make([]byte, len(wsGoingAway))
	if _, err := io.ReadFull(br, next); err != nil || !bytes.Equal(next, wsGoingAway) {
		t.Fatalf("after the frame: %q, %v; want the closing frame %q", next, err, wsGoingAway)
	}
	answer := wsFrame(0x8, wsGoingAway[2:4], true)
	conn.Write(answer)
	if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
		t.Errorf("after the closing frame: %q, %v; want the end", rest, err)
	}
	select {
	case d := <-took:
		if d >= wsCloseGrace {
			t.Errorf("CloseWebSockets took %v: it waited out the grace after the handshake", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("CloseWebSockets did not return")
	}
	if got := <-fromClient; !bytes.Equal(got, answer) {
		t.Errorf("the worker got %q from the client, want its closing frame %q", got, answer)
	}
}

// TestCloseWebSocketsSilentClient: a client that never answers the
// closing frame loses its tunnel after wsCloseGrace, or sooner when the
// shutdown's time is up.
func TestCloseWebSocketsSilentClient(t *testing.T) {
	for _, tc := range []struct {
		timeout       time.Duration
		least, before time.Duration
	}{
		{timeout: 10 * time.Second, least: wsCloseGrace, before: wsCloseGrace + time.Second},
		{timeout: 200 * time.Millisecond, least: 200 * time.Millisecond, before: wsCloseGrace},
	} {
		t.Run(fmt.Sprint("shutdown timeout ", tc.timeout), func(t *testing.T) {
			b := wsBackend(t, func(conn net.Conn) { io.Copy(io.Discard, conn) })
			p, front := newFront(t, Config{}, shop("", b.addr))
			_, br := wsOpen(t, front)
			tunnel(t, p)
			took := closeWebSockets(p, tc.timeout)
			next := make([]byte, len(wsGoingAway))
			if _, err := io.ReadFull(br, next); err != nil || !bytes.Equal(next, wsGoingAway) {
				t.Fatalf("got %q, %v; want the closing frame %q", next, err, wsGoingAway)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("after the closing frame: %v, want EOF", err)
			}
			if d := <-took; d < tc.least || d >= tc.before {
				t.Errorf("CloseWebSockets took %v, want [%v, %v)", d, tc.least, tc.before)
			}
		})
	}
}

// TestWebSocketToCachedApp: an app with the cache on still gets its
// WebSocket handshakes, past the cache.
func TestWebSocketToCachedApp(t *testing.T) {
	b := wsBackend(t, func(conn net.Conn) { conn.Write(wsFrame(0x1, []byte("hi"), false)) })
	rt := shop("", b.addr)
	rt.Cache = true
	_, front := newFront(t, Config{}, rt)
	_, br := wsOpen(t, front)
	want := wsFrame(0x1, []byte("hi"), false)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("through the tunnel: %q, %v; want %q", got, err, want)
	}
}
