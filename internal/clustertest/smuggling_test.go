package clustertest

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestMalformedRequestsRefused: requests that could be framed two ways
// get 400 from the front and a closed connection; the app never sees them.
func TestMalformedRequestsRefused(t *testing.T) {
	c := Start(t, 1)
	if r := deployHello(c, c.HelloDir(nil), "--workers", "1", "--concurrency", "0"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	h := "Host: " + helloHost + "\r\n"
	cases := map[string]string{
		"CL and TE":      "POST /echo HTTP/1.1\r\n" + h + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"duplicate CL":   "POST /echo HTTP/1.1\r\n" + h + "Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
		"differing CL":   "POST /echo HTTP/1.1\r\n" + h + "Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
		"invalid CL":     "POST /echo HTTP/1.1\r\n" + h + "Content-Length: +4\r\n\r\nabcd",
		"obs-fold":       "GET / HTTP/1.1\r\n" + h + "X-A: b\r\n c\r\n\r\n",
		"bare LF":        "GET / HTTP/1.1\n" + h + "\n",
		"bare CR":        "GET / HTTP/1.1\r\n" + h + "X: y\rz\r\n\r\n",
		"invalid Host":   "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
		"TE not chunked": "POST /echo HTTP/1.1\r\n" + h + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	}
	for name, req := range cases {
		t.Run(name, func(t *testing.T) {
			conn, err := net.Dial("tcp", c.Front.Addrs["http"])
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(conn, req)
			br := bufio.NewReader(conn)
			status, err := br.ReadString('\n')
			if err != nil || !(strings.HasPrefix(status, "HTTP/1.1 400") || strings.HasPrefix(status, "HTTP/1.1 501")) {
				t.Fatalf("status line %q, %v; want 400", status, err)
			}
			rest, _ := io.ReadAll(br)
			if strings.Contains(string(rest), `"app":"hello"`) {
				t.Fatalf("the app answered: %q", rest)
			}
		})
	}
	// A good request still works on a fresh connection.
	if _, err := c.GetHello(helloHost); err != nil {
		t.Fatal(err)
	}
}
