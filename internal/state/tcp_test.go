package state

import (
	"context"
	"net"
	"time"

	"github.com/hashicorp/raft"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// Plain TCP for Raft, for the tests of the state machine; fronts always
// use TLSStream.

// TCPStream is Raft's transport without TLS: lis accepts, advertise is the
// host:port others dial (lis's own address when empty).
func TCPStream(lis net.Listener, advertise string) raft.StreamLayer {
	var addr net.Addr = lis.Addr()
	if advertise != "" {
		addr = advertiseAddr(advertise)
	}
	return &tcpStream{Listener: lis, addr: addr}
}

type tcpStream struct {
	net.Listener
	addr net.Addr
}

func (t *tcpStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	var d net.Dialer
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, "tcp", string(addr))
}

func (t *tcpStream) Addr() net.Addr { return t.addr }

// Begin is BeginRollout of a plain deploy.
func (s *Store) Begin(spec *herdv1.AppSpec, digest, front string, force bool) (*herdv1.Rollout, error) {
	return s.BeginRollout(&herdv1.BeginRollout{Spec: spec, Digest: digest, Front: front, Force: force})
}
