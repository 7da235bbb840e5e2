package clustertest

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestWebSocketAndSSEThroughTheFront: with response buffering on (the
// default), the front still passes a WebSocket and an event stream through
// as they happen, and a node's stop reaches an open WebSocket as hello's
// closing frame.
func TestWebSocketAndSSEThroughTheFront(t *testing.T) {
	c := Start(t, 1)
	if r := deployHello(c, c.HelloDir(nil)); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}

	t.Run("websocket echo", func(t *testing.T) {
		conn, br := wsDial(t, c)
		msgs := []string{"one", "two: " + strings.Repeat("x", 200), "three"}
		for _, m := range msgs {
			wsSend(t, conn, wsText, []byte(m))
		}
		for _, m := range msgs {
			op, got, err := wsRecv(br)
			if err != nil {
				t.Fatalf("waiting for the echo of %.10q: %v", m, err)
			}
			if op != wsText || !strings.HasPrefix(string(got), "node-1/") || !strings.HasSuffix(string(got), ": "+m) {
				t.Fatalf("echo opcode %d %.60q; want a text %q from node-1", op, got, "node-1/WORKER: "+m)
			}
		}
		// The front counts the open WebSocket.
		if m := frontMetrics(t, c); !strings.Contains(m, `herd_upgraded_connections{app="hello"} 1`) {
			t.Errorf("/metrics does not count the open WebSocket")
		}
		wsSend(t, conn, wsClose, binary.BigEndian.AppendUint16(nil, 1000))
		if op, got, err := wsRecv(br); err != nil || op != wsClose || len(got) < 2 || binary.BigEndian.Uint16(got) != 1000 {
			t.Fatalf("answer to our close: opcode %d %q, err %v; want close 1000", op, got, err)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("after the closing handshake: %v, want EOF", err)
		}
	})

	t.Run("event stream", func(t *testing.T) {
		const n, ms = 5, 200
		req, err := http.NewRequest("GET", "http://"+c.Front.Addrs["http"]+"/events?n=5&ms=200", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = helloHost
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("status %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
		}
		// A buffered answer would have been given a length.
		if resp.ContentLength != -1 {
			t.Errorf("Content-Length %d: the front buffered the event stream", resp.ContentLength)
		}
		br := bufio.NewReader(resp.Body)
		var arrived []time.Duration
		var from string // NODE/WORKER, from the first event
		for i := 1; i <= n; i++ {
			event, err := readEvent(br)
			if err != nil {
				t.Fatalf("event %d: %q, %v", i, event, err)
			}
			arrived = append(arrived, time.Since(start))
			if i == 1 {
				_, from, _ = strings.Cut(strings.TrimSuffix(event, "\n\n"), " from ")
				if !strings.HasPrefix(from, "node-1/") {
					t.Fatalf("first event %q is not from node-1", event)
				}
			}
			if want := fmt.Sprintf("id: %d\ndata: event %d of %d from %s\n\n", i, i, n, from); event != want {
				t.Fatalf("event %d: %q, want %q", i, event, want)
			}
		}
		if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
			t.Errorf("after %d events: %q, %v; want the end", n, rest, err)
		}
		t.Logf("events arrived at %v", arrived)
		// The first event is sent at once and the last (n-1)*ms later; a
		// front that held the answer would deliver them all at the end.
		if arrived[0] >= 500*time.Millisecond {
			t.Errorf("first event after %v, want it before 500ms", arrived[0])
		}
		if arrived[n-1] < (n-1)*ms*time.Millisecond {
			t.Errorf("last event after %v, want at least %v", arrived[n-1], (n-1)*ms*time.Millisecond)
		}
	})

	t.Run("node stop closes websocket", func(t *testing.T) {
		conn, br := wsDial(t, c)
		wsSend(t, conn, wsText, []byte("before stop"))
		if _, got, err := wsRecv(br); err != nil || !strings.HasSuffix(string(got), ": before stop") {
			t.Fatalf("echo before the stop: %q, %v", got, err)
		}
		const stopTimeout = 15 * time.Second
		conn.SetDeadline(time.Now().Add(stopTimeout))
		start := time.Now()
		stopped := make(chan bool, 1)
		go func() { stopped <- c.Nodes[0].Stop(stopTimeout) }()

		// The node withdraws its endpoints, then SIGTERMs hello, whose
		// shutdown sends each WebSocket a closing frame (1001); the front
		// relays it like any other bytes of the upgraded connection.
		op, payload, err := wsRecv(br)
		took := time.Since(start)
		switch {
		case err == nil && op == wsClose && len(payload) >= 2 && binary.BigEndian.Uint16(payload) == 1001:
			t.Logf("close frame 1001 %q %v after SIGTERM to the node", payload[2:], took)
			wsSend(t, conn, wsClose, payload[:2])
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("after answering the close: %v, want EOF", err)
			}
		case err == nil:
			t.Errorf("after SIGTERM to the node: opcode %d %q; want close 1001", op, payload)
		default:
			t.Errorf("after SIGTERM to the node: %v after %v; want close 1001", err, took)
		}
		if !<-stopped {
			t.Error("node-1 did not stop gracefully")
		}
		t.Logf("node-1 stopped %v after SIGTERM", time.Since(start))
	})
}

// A client's half of RFC 6455, just enough to talk to hello's /ws.

const (
	wsText  = 0x1
	wsClose = 0x8
)

// wsDial opens a WebSocket to hello through the front and checks the 101.
// Reads and writes on it fail after 10 s.
func wsDial(t *testing.T, c *Cluster) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", c.Front.Addrs["http"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	nonce := make([]byte, 16)
	rand.Read(nonce)
	key := base64.StdEncoding.EncodeToString(nonce)
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n", helloHost, key)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("handshake answer %s %v; want 101 with the accept key for %q", resp.Status, resp.Header, key)
	}
	return conn, br
}

// wsSend writes one whole masked frame (payload under 64 KiB).
func wsSend(t *testing.T, conn net.Conn, op byte, payload []byte) {
	t.Helper()
	f := []byte{0x80 | op}
	if n := len(payload); n <= 125 {
		f = append(f, 0x80|byte(n))
	} else {
		f = binary.BigEndian.AppendUint16(append(f, 0x80|126), uint16(n))
	}
	mask := [4]byte{0xa1, 0x5c, 0x07, 0xee}
	f = append(f, mask[:]...)
	for i, b := range payload {
		f = append(f, b^mask[i%4])
	}
	if _, err := conn.Write(f); err != nil {
		t.Fatalf("sending opcode %d: %v", op, err)
	}
}

// wsRecv reads one whole, unmasked server frame.
func wsRecv(br *bufio.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0xf0 != 0x80 || h[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("frame header %#x %#x: want FIN, no reserved bits, unmasked", h[0], h[1])
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		_, err = io.ReadFull(br, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		_, err = io.ReadFull(br, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	if err == nil && n > 1<<21 {
		err = errors.New("frame larger than hello sends")
	}
	if err != nil {
		return 0, nil, err
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(br, payload)
	return h[0] & 0x0f, payload, err
}

// readEvent reads one server-sent event up to and including its blank line.
func readEvent(br *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		line, err := br.ReadString('\n')
		sb.WriteString(line)
		if err != nil {
			return sb.String(), err
		}
		if line == "\n" {
			return sb.String(), nil
		}
	}
}

func frontMetrics(t *testing.T, c *Cluster) string {
	t.Helper()
	resp, err := http.Get("http://" + c.Front.Addrs["admin"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
