package httpguard

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// accepted returns both ends of a loopback connection accepted by Listener.
func accepted(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	c, err := Listener(ln).Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	gc, ok := c.(*Conn)
	if !ok {
		t.Fatalf("Accept returned %T", c)
	}
	client.SetDeadline(time.Now().Add(10 * time.Second))
	return gc, client
}

func TestConnReadsThrough(t *testing.T) {
	c, client := accepted(t)
	const sent = "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\nHost: x\n\n"
	if _, err := io.WriteString(client, sent); err != nil {
		t.Fatal(err)
	}
	client.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != sent {
		t.Fatalf("read %q, %v; want the bytes unchanged", got, err)
	}
	if why := c.Bad(); why != "bare LF" {
		t.Fatalf("Bad() = %q, want %q", why, "bare LF")
	}
}

func TestConnKeepsTCPMethods(t *testing.T) {
	c, client := accepted(t)
	if n, err := c.ReadFrom(strings.NewReader("hello")); n != 5 || err != nil {
		t.Fatalf("ReadFrom: %d, %v", n, err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "hello" {
		t.Fatalf("client read %q, %v; want %q then EOF", got, err, "hello")
	}
}

func TestContext(t *testing.T) {
	c, client := accepted(t)
	if got := FromContext(ConnContext(context.Background(), c)); got != c {
		t.Fatalf("FromContext = %p, want %p", got, c)
	}
	if got := FromContext(ConnContext(context.Background(), client)); got != nil {
		t.Fatalf("FromContext for a plain conn = %p, want nil", got)
	}
}
