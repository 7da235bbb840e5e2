package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// pullAssignment asks the fronts, once the node has joined, which releases
// the desired state assigns to it, and runs those it does not run yet (the
// node's data dir was lost, or deploys happened while it was down). The
// leader also pushes assignments; both go through apply, which does nothing
// for a release already running. It retries until one front answers.
func (m *manager) pullAssignment(ctx context.Context) {
	delay := 500 * time.Millisecond
	for {
		if m.tryPull(ctx) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

func (m *manager) tryPull(ctx context.Context) bool {
	if m.drainMode() != "" {
		// A drained node starts nothing; undrain brings its apps back and
		// the leader converges them.
		return true
	}
	for _, f := range m.cl.LiveFronts() {
		resp, err := m.getAssignment(ctx, f.GRPCAddr)
		if err != nil {
			m.log.Debug("get assignment", "front", f.Name, "err", err)
			continue
		}
		for _, rel := range resp.GetReleases() {
			m.mu.Lock()
			cur := m.apps[rel.GetApp()]
			running := cur != nil && cur.rel.GetId() == rel.GetId() && cur.rel.GetSpec().GetWorkers() == rel.GetSpec().GetWorkers()
			m.mu.Unlock()
			if running {
				continue
			}
			m.log.Info("running the release assigned to this node", "app", rel.GetApp(), "release", rel.GetId(), "front", f.Name)
			actx, cancel := context.WithTimeout(ctx, defaultApplyTimeout)
			err := m.apply(actx, rel, resp.GetArtifactSources())
			cancel()
			if err != nil {
				m.log.Warn("assigned release did not start", "app", rel.GetApp(), "release", rel.GetId(), "err", err)
			}
		}
		return true
	}
	return false
}

func (m *manager) getAssignment(ctx context.Context, addr string) (*herdv1.GetAssignmentResponse, error) {
	c, err := m.controlClient(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return c.GetAssignment(ctx, &herdv1.GetAssignmentRequest{Node: m.cfg.Name})
}

// frontConns keeps one gRPC connection per front address.
type frontConns struct {
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	dial  grpc.DialOption // the node's credentials (nil before it has them)
}

func (m *manager) setFrontDial(d grpc.DialOption) {
	m.fronts.mu.Lock()
	m.fronts.dial = d
	m.fronts.mu.Unlock()
}

func (m *manager) frontDial() grpc.DialOption {
	m.fronts.mu.Lock()
	defer m.fronts.mu.Unlock()
	return m.fronts.dial
}

// controlClient returns a Control client for a front's gRPC address.
func (m *manager) controlClient(addr string) (herdv1.ControlClient, error) {
	m.fronts.mu.Lock()
	defer m.fronts.mu.Unlock()
	if m.fronts.conns == nil {
		m.fronts.conns = map[string]*grpc.ClientConn{}
	}
	conn := m.fronts.conns[addr]
	if conn == nil {
		if m.fronts.dial == nil {
			return nil, errors.New("no certificate yet to call fronts with")
		}
		var err error
		if conn, err = grpc.NewClient(addr, m.fronts.dial); err != nil {
			return nil, err
		}
		m.fronts.conns[addr] = conn
	}
	return herdv1.NewControlClient(conn), nil
}

func (m *manager) closeFrontConns() {
	m.fronts.mu.Lock()
	defer m.fronts.mu.Unlock()
	for _, c := range m.fronts.conns {
		c.Close()
	}
	m.fronts.conns = nil
}
