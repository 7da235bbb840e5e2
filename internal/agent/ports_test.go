package agent

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// A freed port is handed out again only after the whole range went round,
// a port someone else holds is skipped, and an exhausted range says so.
func TestPortPool(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	lo := busy - 1
	p := newPortPool("127.0.0.1", lo, busy+1)

	a, err := p.get()
	if err != nil || a != lo {
		t.Fatalf("first port %d %v, want %d", a, err, lo)
	}
	b, err := p.get()
	if err != nil || b != busy+1 {
		t.Fatalf("second port %d %v, want %d (skipping %d, which is taken)", b, err, busy+1, busy)
	}
	if _, err := p.get(); err == nil || !strings.Contains(err.Error(), "no free port in --port-range "+strconv.Itoa(lo)) {
		t.Fatalf("exhausted range: %v", err)
	}
	p.put(a)
	p.put(b)
	if c, _ := p.get(); c != lo {
		t.Fatalf("after going round, got %d, want %d", c, lo)
	}
}
