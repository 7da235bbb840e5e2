// Package control is the Control gRPC API on a front: artifact upload and
// fetch, deploy, status and the member list; and the leader's duties (the
// Raft configuration follows gossip, nodes converge on their assignments).
//
// Writes to the desired state happen on the Raft leader only: a follower
// forwards a write call (a deploy) to the leader and relays its answer.
package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/herd-run/herd/internal/certs"
	"github.com/herd-run/herd/internal/cluster"
	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/pki"
	"github.com/herd-run/herd/internal/release"
	"github.com/herd-run/herd/internal/state"
)

// Service implements herdv1.ControlServer.
type Service struct {
	herdv1.UnimplementedControlServer

	Log *slog.Logger
	// Name is this front's member name (its Raft server id).
	Name string
	// CA signs operator credentials.
	CA        *pki.CA
	State     *state.Store
	Artifacts *release.Store
	Cluster   *cluster.Cluster
	Agents    *Agents
	// Self is this front's gRPC address, which nodes fetch artifacts from.
	Self string
	// DeployTimeout bounds how long a node may take to run a release
	// healthy when the request does not say; default 60 s.
	DeployTimeout time.Duration
	// OnCommit is called after an app's release changed (the front then
	// rebuilds its routes). May be nil.
	OnCommit func()
	// Prepare readies the front for a release before any node moves; an
	// error fails the deploy. May be nil.
	Prepare func(*herdv1.Release) error
	// MaxVoters is how many fronts vote in Raft (default 3); more fronts
	// join as non-voters and are promoted when a voter goes.
	MaxVoters int
	// RemoveAfter is how long a front may be gone from gossip before the
	// leader removes it from the Raft configuration (default 10 min).
	RemoveAfter time.Duration

	// running counts the rollouts of each app this process runs now (from
	// before they are recorded), so a new leader tells them from those an
	// old leader left behind.
	runMu   sync.Mutex
	running map[string]int
	lead    leaderState
}

// Agents keeps one gRPC connection per node or front address. Safe for
// concurrent use.
type Agents struct {
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	// toNodes and toFronts carry this front's credentials and check the
	// other side's role (set once the front has its certificate).
	toNodes, toFronts grpc.DialOption
}

// SetCredentials sets how to dial nodes and fronts.
func (a *Agents) SetCredentials(toNodes, toFronts grpc.DialOption) {
	a.mu.Lock()
	a.toNodes, a.toFronts = toNodes, toFronts
	a.mu.Unlock()
}

// FrontDial is how to dial another front (nil before the certificate).
func (a *Agents) FrontDial() grpc.DialOption {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.toFronts
}

// Client returns an Agent client for a node's gRPC address.
func (a *Agents) Client(addr string) (herdv1.AgentClient, error) {
	conn, err := a.conn("node", addr)
	if err != nil {
		return nil, err
	}
	return herdv1.NewAgentClient(conn), nil
}

// Control returns a Control client for another front's gRPC address.
func (a *Agents) Control(addr string) (herdv1.ControlClient, error) {
	conn, err := a.conn("front", addr)
	if err != nil {
		return nil, err
	}
	return herdv1.NewControlClient(conn), nil
}

func (a *Agents) conn(role, addr string) (*grpc.ClientConn, error) {
	key := role + "/" + addr
	a.mu.Lock()
	defer a.mu.Unlock()
	dial := a.toNodes
	if role == "front" {
		dial = a.toFronts
	}
	if dial == nil {
		return nil, fmt.Errorf("no credentials to call a %s yet", role)
	}
	if a.conns == nil {
		a.conns = map[string]*grpc.ClientConn{}
	}
	conn := a.conns[key]
	if conn == nil {
		var err error
		conn, err = grpc.NewClient(addr, dial)
		if err != nil {
			return nil, err
		}
		a.conns[key] = conn
	}
	return conn, nil
}

// FetchState gets a node's state over gRPC; it is the cluster's Fetch hook.
func (a *Agents) FetchState(ctx context.Context, m cluster.Member) (*herdv1.NodeState, error) {
	c, err := a.Client(m.GRPCAddr)
	if err != nil {
		return nil, err
	}
	resp, err := c.GetState(ctx, &herdv1.GetStateRequest{})
	return resp.GetState(), err
}

// Close closes every connection.
func (a *Agents) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.conns {
		c.Close()
	}
	a.conns = nil
}

// ListNodes lists the members as gossip sees them.
func (s *Service) ListNodes(context.Context, *herdv1.ListNodesRequest) (*herdv1.ListNodesResponse, error) {
	resp := &herdv1.ListNodesResponse{}
	for _, m := range s.Cluster.Members() {
		resp.Members = append(resp.Members, &herdv1.Member{
			Name:          m.Name,
			Role:          m.Role,
			GossipAddress: m.GossipAddr,
			GrpcAddress:   m.GRPCAddr,
			State:         m.State,
		})
	}
	return resp, nil
}

// Status reports each app's release and, for every live node, what it runs
// of the app; with workers, each node's worker slots too.
func (s *Service) Status(ctx context.Context, req *herdv1.StatusRequest) (*herdv1.StatusResponse, error) {
	nodes := s.liveNodes()
	var workers map[string][]*herdv1.WorkerStatus
	if req.GetWorkers() {
		workers = s.nodeWorkers(ctx, nodes)
	}
	resp := &herdv1.StatusResponse{State: s.State.Info()}
	for _, rel := range s.State.List() {
		as := &herdv1.AppStatus{Release: Redact(rel)}
		for _, n := range nodes {
			ns := &herdv1.AppNodeStatus{Node: n.Name}
			for _, a := range n.State.GetApps() {
				if a.GetApp() == rel.GetApp() {
					ns.Release = a.GetRelease()
					ns.Ready = uint32(len(a.GetEndpoints()))
					ns.Desired = a.GetDesired()
					ns.Error = a.GetError()
				}
			}
			for _, w := range workers[n.Name] {
				if w.GetApp() == rel.GetApp() {
					ns.Workers = append(ns.Workers, w)
				}
			}
			as.Nodes = append(as.Nodes, ns)
		}
		resp.Apps = append(resp.Apps, as)
	}
	return resp, nil
}

// nodeWorkers asks every node for its workers at once; a node that does
// not answer within 2 s is left out (its ready/desired still shows).
func (s *Service) nodeWorkers(ctx context.Context, nodes []cluster.NodeView) map[string][]*herdv1.WorkerStatus {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := map[string][]*herdv1.WorkerStatus{}
	for _, n := range nodes {
		wg.Go(func() {
			c, err := s.Agents.Client(n.GRPCAddr)
			if err != nil {
				return
			}
			resp, err := c.ListWorkers(ctx, &herdv1.ListWorkersRequest{})
			if err != nil {
				s.Log.Warn("list workers", "node", n.Name, "err", err)
				return
			}
			mu.Lock()
			out[n.Name] = resp.GetWorkers()
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// liveNodes are the nodes that can take work: alive, not leaving.
func (s *Service) liveNodes() []cluster.NodeView {
	var out []cluster.NodeView
	for _, n := range s.Cluster.Nodes() {
		if n.State == nil {
			n.State = &herdv1.NodeState{}
		}
		if n.Member.State == herdv1.MemberState_MEMBER_STATE_ALIVE && !n.Leaving {
			out = append(out, n)
		}
	}
	return out
}

// toStatus is the one place where control errors become gRPC codes; an
// error that already is a status passes through.
func toStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	var notLeader *state.NotLeaderError
	var busy *state.BusyError
	switch {
	case errors.As(err, &notLeader):
		return status.Error(codes.Unavailable, err.Error())
	case errors.As(err, &busy):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, state.ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, errInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, state.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// ReportState takes a node's state from the node itself (see the Agent's
// report loop). It must come from a known node and name the node's own
// address; an older generation than the one known changes nothing.
func (s *Service) ReportState(ctx context.Context, req *herdv1.ReportStateRequest) (*herdv1.ReportStateResponse, error) {
	st := req.GetState()
	if id := certs.IdentityFrom(ctx); id.Role == pki.RoleNode && id.Name != st.GetNode() {
		return nil, status.Errorf(codes.PermissionDenied, "node %s may report only its own state, not %s's", id.Name, st.GetNode())
	}
	for _, m := range s.Cluster.Members() {
		if m.Name == st.GetNode() && m.Role == herdv1.Role_ROLE_NODE {
			if st.GetAddress() != m.Addr {
				return nil, status.Errorf(codes.PermissionDenied, "node %s reports address %s, gossip says %s", st.GetNode(), st.GetAddress(), m.Addr)
			}
			s.Cluster.PutState(st)
			return &herdv1.ReportStateResponse{}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "no node %q in this front's view of the cluster yet", st.GetNode())
}

// markRunning counts a rollout of app as run by this process until the
// returned func is called.
func (s *Service) markRunning(app string) func() {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.running == nil {
		s.running = map[string]int{}
	}
	s.running[app]++
	return func() {
		s.runMu.Lock()
		defer s.runMu.Unlock()
		if s.running[app]--; s.running[app] <= 0 {
			delete(s.running, app)
		}
	}
}

func (s *Service) isRunning(app string) bool {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	return s.running[app] > 0
}

// Redacted stands for a secret env value in answers to operators.
const Redacted = "<redacted>"

// Redact returns rel with its secret env values replaced (rel itself is
// not changed).
func Redact(rel *herdv1.Release) *herdv1.Release {
	if len(rel.GetSpec().GetSecretEnv()) == 0 {
		return rel
	}
	out := proto.CloneOf(rel)
	for k := range out.Spec.SecretEnv {
		out.Spec.SecretEnv[k] = Redacted
	}
	return out
}
