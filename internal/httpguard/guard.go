// Package httpguard refuses HTTP/1.x requests whose framing nginx treats as
// a request-smuggling risk but net/http serves: Content-Length together with
// Transfer-Encoding, repeated Content-Length, obs-fold continuation lines and
// bare LF line endings, among others (see inspector for the full list).
//
// net/http parses a request head before any handler sees it and keeps no
// trace of how the bytes looked, so the check sits below it: Listener wraps
// each accepted connection in a Conn whose Read passes the bytes through
// unchanged while a small state machine follows the request framing.
// Handler then answers 400 to any request on a connection the machine has
// flagged. Wire it up as
//
//	srv := &http.Server{Handler: httpguard.Handler(h), ConnContext: httpguard.ConnContext}
//	srv.Serve(httpguard.Listener(ln))
//
// The listener must carry plaintext HTTP/1.x. Under ServeTLS the Conn would
// sit beneath TLS and see ciphertext; wrapping a TLS listener instead hides
// the *tls.Conn from net/http, which then loses HTTP/2 and Request.TLS.
// Requests whose connection is not a Conn pass through Handler untouched.
package httpguard

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
)

// Listener wraps l; every accepted conn is a *Conn.
func Listener(l net.Listener) net.Listener { return listener{l} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c}, nil
}

// Conn is a net.Conn whose Read watches request framing. Read must not be
// called concurrently (net/http never does); Bad may be called at any time.
type Conn struct {
	net.Conn
	in     inspector     // owned by the goroutine in Read
	bad    atomic.Uint32 // a reason, published once the inspector fails
	tunnel atomic.Bool   // the inspector stopped at an upgrade
}

// Read reads from the connection and shows the bytes to the inspector.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.in.stopped() {
		c.in.feed(p[:n])
		switch c.in.state {
		case stBad:
			c.bad.Store(uint32(c.in.why))
		case stTunnel:
			c.tunnel.Store(true)
		}
	}
	return n, err
}

// Bad reports why the connection's request stream is unsafe ("" if it is
// not): once set it stays set.
func (c *Conn) Bad() string { return reasonText[c.bad.Load()] }

// ReadFrom keeps sendfile and splice for responses: net/http uses the
// connection's ReadFrom when it has one.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

// CloseWrite half-closes the connection when the underlying one can. net/http
// uses it to deliver an error response before closing on a client that is
// still sending.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

type ctxKey struct{}

// ConnContext is meant for http.Server.ConnContext: it records c in ctx when
// c is a *Conn.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if gc, ok := c.(*Conn); ok {
		return context.WithValue(ctx, ctxKey{}, gc)
	}
	return ctx
}

// FromContext finds the *Conn of a request recorded by ConnContext; nil if
// none.
func FromContext(ctx context.Context) *Conn {
	c, _ := ctx.Value(ctxKey{}).(*Conn)
	return c
}
