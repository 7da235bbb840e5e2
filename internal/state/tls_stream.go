package state

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/herd-run/herd/internal/pki"
)

const (
	// tlsHandshakeTimeout bounds an incoming handshake, so that a peer
	// that connects and then stalls is dropped.
	tlsHandshakeTimeout = 10 * time.Second
	// maxTLSHandshakes bounds the incoming handshakes in progress at once;
	// beyond it the listener waits for one to end before accepting more.
	maxTLSHandshakes = 64
)

// TLSStream is Raft's transport over mutual TLS, for fronts that talk to
// each other across a network others can reach. Raft carries the cluster's
// whole desired state (every app, release and node assignment) and any
// member of the configuration can vote and, as leader, rewrite it; so each
// side proves to the other, with a certificate from the cluster CA, that
// it is a front:
//
//   - Accept completes a TLS handshake (pki.ServerTLS) on each incoming
//     connection and keeps it only if the client presented a certificate
//     of role pki.RoleFront (pki.PeerIdentity); nodes, operators, clients
//     of another cluster and clients without a certificate are refused
//     with a TLS alert and the connection closed.
//   - Dial accepts only a server with a front certificate of the cluster
//     (pki.ClientTLS) and presents b's own certificate.
//
// lis accepts, advertise is the host:port others dial (lis's own address
// when empty). b must hold a front certificate.
//
// Handshakes run concurrently, each within a deadline, so a peer that
// connects and stalls, or sends garbage, neither blocks the others nor
// makes Accept fail: Accept returns an error only when the listener itself
// does (it is closed, or out of file descriptors), as Raft expects. A
// refused peer is not logged (anyone can connect to the port; Raft would
// log each at error level).
func TLSStream(lis net.Listener, advertise string, b *pki.Bundle) (raft.StreamLayer, error) {
	cert, err := b.TLSCertificate()
	if err != nil {
		return nil, fmt.Errorf("raft tls: %w", err)
	}
	if cert.Leaf == nil {
		return nil, errors.New("raft tls: bundle certificate could not be parsed")
	}
	if role, name, err := pki.Identity(cert.Leaf); err != nil {
		return nil, fmt.Errorf("raft tls: %w", err)
	} else if role != pki.RoleFront {
		return nil, fmt.Errorf("raft tls: certificate of %q has role %q; only a front takes part in Raft", name, role)
	}
	pool, err := b.Pool()
	if err != nil {
		return nil, fmt.Errorf("raft tls: %w", err)
	}
	server, err := pki.ServerTLS(b)
	if err != nil {
		return nil, fmt.Errorf("raft tls: %w", err)
	}
	// ServerTLS lets a client without a certificate finish the handshake;
	// Raft has no error message to give it, so refuse it (and any peer
	// that is not a front) in the handshake itself: the peer gets a TLS
	// alert that says why rather than a bare EOF.
	server.VerifyConnection = func(cs tls.ConnectionState) error {
		return requireFront(cs, pool)
	}
	client, err := pki.ClientTLS(b, pki.RoleFront)
	if err != nil {
		return nil, fmt.Errorf("raft tls: %w", err)
	}
	var addr net.Addr = lis.Addr()
	if advertise != "" {
		addr = advertiseAddr(advertise)
	}
	return &tlsStream{
		lis:              lis,
		addr:             addr,
		server:           server,
		client:           client,
		handshakeTimeout: tlsHandshakeTimeout,
		accepted:         make(chan net.Conn),
		failed:           make(chan error),
		dead:             make(chan struct{}),
		closed:           make(chan struct{}),
		sem:              make(chan struct{}, maxTLSHandshakes),
	}, nil
}

// requireFront accepts a client certificate of the cluster CA with the
// front role.
func requireFront(cs tls.ConnectionState, pool *x509.CertPool) error {
	role, name, err := pki.PeerIdentity(cs, pool)
	if err != nil {
		return fmt.Errorf("raft tls: %w", err)
	}
	if role != pki.RoleFront {
		return fmt.Errorf("raft tls: peer %q has role %q, only fronts take part in Raft", name, role)
	}
	return nil
}

// tlsStream is the raft.StreamLayer of TLSStream. A goroutine, started by
// the first Accept, accepts TCP connections and hands each to its own
// handshake goroutine; those that pass reach Accept through accepted.
type tlsStream struct {
	lis            net.Listener
	addr           net.Addr
	server, client *tls.Config

	// Set before the first Accept only (tests change them).
	handshakeTimeout time.Duration
	onReject         func(remote net.Addr, err error) // a debug hook

	start    sync.Once
	accepted chan net.Conn // handshaken connections of fronts
	failed   chan error    // listener errors that may pass
	dead     chan struct{} // closed when the accept loop ends for good
	deadErr  error         // why, set before dead is closed
	closed   chan struct{} // closed by Close
	stop     sync.Once
	sem      chan struct{} // handshakes in progress
}

// Accept returns the next connection from a front whose TLS handshake is
// complete. It fails only when the listener does.
func (s *tlsStream) Accept() (net.Conn, error) {
	s.start.Do(func() { go s.acceptLoop() })
	select {
	case <-s.dead:
		return nil, s.deadErr
	default:
	}
	select {
	case c := <-s.accepted:
		return c, nil
	case err := <-s.failed:
		return nil, err
	case <-s.dead:
		return nil, s.deadErr
	}
}

func (s *tlsStream) acceptLoop() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // interrupts the handshakes in progress
	for {
		c, err := s.lis.Accept()
		if err != nil {
			select {
			case <-s.closed:
			default:
				if !errors.Is(err, net.ErrClosed) {
					// Maybe temporary (out of file descriptors, say):
					// Accept returns it and Raft backs off before it
					// calls again.
					select {
					case s.failed <- err:
						continue
					case <-s.closed:
					}
				}
			}
			s.deadErr = err
			close(s.dead)
			return
		}
		s.sem <- struct{}{}
		go s.handshake(ctx, c)
	}
}

// handshake completes the TLS handshake of an incoming connection, which
// refuses any peer but a front (see TLSStream), and passes it to Accept.
func (s *tlsStream) handshake(ctx context.Context, raw net.Conn) {
	defer func() { <-s.sem }()
	ctx, cancel := context.WithTimeout(ctx, s.handshakeTimeout)
	defer cancel()
	c := tls.Server(raw, s.server)
	if err := c.HandshakeContext(ctx); err != nil {
		if s.onReject != nil {
			s.onReject(raw.RemoteAddr(), err)
		}
		raw.Close()
		return
	}
	select {
	case s.accepted <- c:
	case <-s.dead:
		c.Close()
	}
}

// Dial connects to another front and completes the TLS handshake, both
// within timeout; the server must show a front certificate of the cluster.
func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := tls.Dialer{Config: s.client}
	return d.DialContext(ctx, "tcp", string(addr))
}

// Addr is the address other fronts dial.
func (s *tlsStream) Addr() net.Addr { return s.addr }

// Close closes the listener; Accept then fails and the handshakes in
// progress are dropped.
func (s *tlsStream) Close() error {
	s.stop.Do(func() { close(s.closed) })
	return s.lis.Close()
}
