package state

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/herd-run/herd/internal/pki"
)

func testCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func testBundle(t *testing.T, ca *pki.CA, role, name string) *pki.Bundle {
	t.Helper()
	b, err := ca.IssueBundle(role, name, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// listenTLS opens a TLSStream with b on a new loopback listener, closed
// when the test ends.
func listenTLS(t *testing.T, b *pki.Bundle) *tlsStream {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := TLSStream(lis, "", b)
	if err != nil {
		lis.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(*tlsStream)
}

// acceptAll calls Accept until it fails and delivers the connections;
// when the test ends it closes s and them.
func acceptAll(t *testing.T, s raft.StreamLayer) <-chan net.Conn {
	ch := make(chan net.Conn, 16)
	go func() {
		defer close(ch)
		for {
			c, err := s.Accept()
			if err != nil {
				return
			}
			ch <- c
		}
	}()
	t.Cleanup(func() {
		s.Close()
		for c := range ch {
			c.Close()
		}
	})
	return ch
}

func nextConn(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("Accept failed")
		}
		return c
	case <-time.After(3 * time.Second):
		t.Fatal("timed out waiting for Accept")
		return nil
	}
}

// exchange sends a line each way between the dialing end and the
// accepted end.
func exchange(t *testing.T, dialed, accepted net.Conn) {
	t.Helper()
	for _, p := range []struct {
		from, to net.Conn
		msg      string
	}{{dialed, accepted, "ping\n"}, {accepted, dialed, "pong\n"}} {
		errc := make(chan error, 1)
		go func() {
			_, err := io.WriteString(p.from, p.msg)
			errc <- err
		}()
		buf := make([]byte, len(p.msg))
		p.to.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.ReadFull(p.to, buf); err != nil || string(buf) != p.msg {
			t.Fatalf("read %q, %v; want %q", buf, err, p.msg)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

func TestTLSStreamFronts(t *testing.T) {
	t.Parallel()
	ca := testCA(t)
	s1 := listenTLS(t, testBundle(t, ca, pki.RoleFront, "f1"))
	s2 := listenTLS(t, testBundle(t, ca, pki.RoleFront, "f2"))
	acc1, acc2 := acceptAll(t, s1), acceptAll(t, s2)

	for _, tt := range []struct {
		from, to *tlsStream
		acc      <-chan net.Conn
		fromName string
	}{{s2, s1, acc1, "f2"}, {s1, s2, acc2, "f1"}} {
		c, err := tt.from.Dial(raft.ServerAddress(tt.to.Addr().String()), 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		a := nextConn(t, tt.acc)
		exchange(t, c, a)
		// The accepted end knows which front it talks to.
		role, name, err := pki.PeerIdentity(a.(*tls.Conn).ConnectionState(), ca.Pool())
		if err != nil || role != pki.RoleFront || name != tt.fromName {
			t.Errorf("accepted peer = %s %s, %v; want front %s", role, name, err, tt.fromName)
		}
	}
}

func TestTLSStreamAddr(t *testing.T) {
	t.Parallel()
	b := testBundle(t, testCA(t), pki.RoleFront, "f1")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	for advertise, want := range map[string]string{"": lis.Addr().String(), "10.1.2.3:7000": "10.1.2.3:7000"} {
		s, err := TLSStream(lis, advertise, b)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Addr().String(); got != want {
			t.Errorf("Addr with advertise %q = %s, want %s", advertise, got, want)
		}
	}
}

func TestTLSStreamBadBundle(t *testing.T) {
	t.Parallel()
	ca := testCA(t)
	front := testBundle(t, ca, pki.RoleFront, "f1")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	for name, tt := range map[string]struct {
		b    *pki.Bundle
		want string
	}{
		"node":           {testBundle(t, ca, pki.RoleNode, "n1"), `role "node"`},
		"operator":       {testBundle(t, ca, pki.RoleOperator, "alice"), `role "operator"`},
		"no certificate": {&pki.Bundle{CAPEM: ca.CertPEM}, "certificate"},
		"no CA":          {&pki.Bundle{CertPEM: front.CertPEM, KeyPEM: front.KeyPEM}, "CA"},
	} {
		if _, err := TLSStream(lis, "", tt.b); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: TLSStream error %v, want one mentioning %s", name, err, tt.want)
		}
	}
}

// dialTLS connects to addr as a client with cfg and reads from the
// connection until the server answers: nil if the connection stays open
// (no answer within wait), else why it ended.
func dialTLS(addr string, cfg *tls.Config, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	// In TLS 1.3 the client's handshake ends before the server has checked
	// the client certificate: the refusal comes as an alert on read.
	c.SetReadDeadline(time.Now().Add(wait))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return err
}

func TestTLSStreamRefusesOthers(t *testing.T) {
	t.Parallel()
	ca := testCA(t)
	s := listenTLS(t, testBundle(t, ca, pki.RoleFront, "f1"))
	rejected := make(chan error, 16)
	s.onReject = func(_ net.Addr, err error) { rejected <- err }
	acc := acceptAll(t, s)
	addr := s.Addr().String()

	clientTLS := func(b *pki.Bundle) *tls.Config {
		cfg, err := pki.ClientTLS(b, pki.RoleFront)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	for _, tt := range []struct {
		name       string
		cfg        *tls.Config
		serverSays string // in the error onReject gets
	}{
		{"a node", clientTLS(testBundle(t, ca, pki.RoleNode, "n1")), `role "node"`},
		{"an operator", clientTLS(testBundle(t, ca, pki.RoleOperator, "alice")), `role "operator"`},
		// It refuses our server's certificate before it sends its own.
		{"another cluster's front", clientTLS(testBundle(t, testCA(t), pki.RoleFront, "f1")), "bad certificate"},
		{"no certificate", clientTLS(&pki.Bundle{CAPEM: ca.CertPEM}), "no client certificate"},
	} {
		if err := dialTLS(addr, tt.cfg, 3*time.Second); err == nil {
			t.Errorf("%s: connection was not refused", tt.name)
		}
		select {
		case err := <-rejected:
			if !strings.Contains(err.Error(), tt.serverSays) {
				t.Errorf("%s: refused with %q, want it to mention %s", tt.name, err, tt.serverSays)
			}
		case <-time.After(3 * time.Second):
			t.Errorf("%s: the server did not refuse it", tt.name)
		}
	}

	// The listener still accepts a front, and only it.
	other := listenTLS(t, testBundle(t, ca, pki.RoleFront, "f2"))
	c, err := other.Dial(raft.ServerAddress(addr), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := nextConn(t, acc)
	if a.RemoteAddr().String() != c.LocalAddr().String() {
		t.Fatalf("Accept returned a connection from %s, want the front's (%s)", a.RemoteAddr(), c.LocalAddr())
	}
	exchange(t, c, a)
}

// Peers that connect and stall, or send garbage, neither hold up the
// others nor stay connected for long.
func TestTLSStreamStalledPeers(t *testing.T) {
	t.Parallel()
	ca := testCA(t)
	s := listenTLS(t, testBundle(t, ca, pki.RoleFront, "f1"))
	s.handshakeTimeout = 1500 * time.Millisecond
	rejected := make(chan error, 16)
	s.onReject = func(_ net.Addr, err error) { rejected <- err }
	acc := acceptAll(t, s)
	addr := s.Addr().String()

	var stalled []net.Conn
	for _, send := range []string{
		"",                 // silent
		"\x16\x03\x01\x40", // the start of a TLS record, and no more
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, send); err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
	}
	garbage, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	if _, err := io.WriteString(garbage, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Give the listener time to take them all in before the front dials.
	time.Sleep(100 * time.Millisecond)

	front := listenTLS(t, testBundle(t, ca, pki.RoleFront, "f2"))
	start := time.Now()
	c, err := front.Dial(raft.ServerAddress(addr), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := nextConn(t, acc)
	if d := time.Since(start); d >= s.handshakeTimeout {
		t.Errorf("the front was accepted after %v, behind the stalled peers", d)
	}
	exchange(t, c, a)

	// The garbage was refused at once, the stalled peers at the deadline:
	// the server hangs up on each.
	for _, c := range append(stalled, garbage) {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("the server did not hang up on %s", c.LocalAddr())
		}
	}
	for range 3 {
		select {
		case <-rejected:
		case <-time.After(time.Second):
			t.Fatal("fewer than 3 refusals reported")
		}
	}
}

func TestTLSStreamClose(t *testing.T) {
	t.Parallel()
	s := listenTLS(t, testBundle(t, testCA(t), pki.RoleFront, "f1"))
	errc := make(chan error, 1)
	go func() {
		_, err := s.Accept()
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
	if _, err := s.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Accept after Close: %v, want net.ErrClosed", err)
	}
}

// openTLSMember is openMember over TLSStream with a front certificate
// from ca.
func openTLSMember(t *testing.T, ca *pki.CA, id string, bootstrap bool) member {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stream, err := TLSStream(lis, "", testBundle(t, ca, pki.RoleFront, id))
	if err != nil {
		lis.Close()
		t.Fatal(err)
	}
	s, err := Open(Config{Dir: t.TempDir(), ID: id, Stream: stream, Bootstrap: bootstrap, Logger: quiet})
	if err != nil {
		lis.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return member{Store: s, addr: lis.Addr().String()}
}

func TestThreeMembersTLS(t *testing.T) {
	t.Parallel()
	ca := testCA(t)
	f1 := openTLSMember(t, ca, "f1", true)
	waitLeader(t, f1.Store)
	deploy(t, f1.Store, spec("shop", 2), "sha256:aaa", "v1", "n1")
	f2 := openTLSMember(t, ca, "f2", false)
	f3 := openTLSMember(t, ca, "f3", false)
	for _, f := range []member{f2, f3} {
		if err := f1.AddPeer(f.ID(), f.addr, true); err != nil {
			t.Fatal(err)
		}
	}
	deploy(t, f1.Store, spec("blog", 1), "sha256:bbb", "v1", "n1")
	deploy(t, f1.Store, spec("shop", 2), "sha256:ccc", "v2", "n1")
	want := []string{"blog/v1", "shop/v2"}
	for _, f := range []member{f2, f3} {
		waitFor(t, 5*time.Second, f.ID()+" to catch up", func() bool { return slices.Equal(ids(f.List()), want) })
		if got := ids(f.Assignment("n1")); !slices.Equal(got, want) {
			t.Errorf("Assignment(n1) on %s = %v", f.ID(), got)
		}
		waitFor(t, 5*time.Second, f.ID()+" to know the leader", func() bool { return f.Leader() == "f1" })
	}
}
