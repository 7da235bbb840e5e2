package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/herd-run/herd/internal/cluster"
	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/state"
)

// The day-to-day operations: rollback, scale, restart, destroy, history,
// drain and undrain. Writes run on the leader (a follower relays them).

// relay passes a forwarded stream's messages back to the caller.
func relay[T any](up grpc.ServerStreamingClient[T], err error, down grpc.ServerStreamingServer[T]) error {
	if err != nil {
		return err
	}
	started := false
	for {
		msg, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if started && status.Code(err) == codes.Unavailable {
				// Not "try another front": the leader began it, and the
				// next leader resumes it.
				return status.Errorf(codes.Aborted, "the Raft leader went away mid-way (the next leader resumes the rollout; herdctl history tells how it ended): %s", status.Convert(err).Message())
			}
			return err
		}
		started = true
		if err := down.Send(msg); err != nil {
			return err
		}
	}
}

// current is the app's current release, or NotFound naming the app.
func (s *Service) current(app string) (*herdv1.Release, error) {
	rel, err := s.State.Get(app)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "no app %q (herdctl status lists them)", app)
	}
	return rel, nil
}

// Rollback rolls back to the release before the current one (the last
// that rolled out and differs from it) or to --to, as a new release,
// without health waits.
func (s *Service) Rollback(req *herdv1.RollbackRequest, stream herdv1.Control_RollbackServer) error {
	if _, err := batchSize(req.GetBatch(), math.MaxInt); err != nil {
		return toStatus(err)
	}
	leader, ctx, self, err := s.leaderControl(stream.Context())
	if err != nil {
		return err
	}
	if !self {
		up, err := leader.Rollback(ctx, req)
		return relay(up, err, stream)
	}
	cur, err := s.current(req.GetApp())
	if err != nil {
		return err
	}
	var target *herdv1.Release
	hist := s.State.History(req.GetApp())
	for i := len(hist) - 1; i >= 0 && target == nil; i-- {
		r := hist[i].GetRelease()
		switch {
		case req.GetTo() != "":
			if r.GetId() == req.GetTo() {
				target = r
			}
		case hist[i].GetOk() && r.GetId() != cur.GetId() && (r.GetDigest() != cur.GetDigest() || !proto.Equal(r.GetSpec(), cur.GetSpec())):
			target = r
		}
	}
	if target == nil {
		if req.GetTo() != "" {
			return status.Errorf(codes.NotFound, "%s has no release %s in its history (herdctl history %s)", req.GetApp(), req.GetTo(), req.GetApp())
		}
		return status.Errorf(codes.FailedPrecondition, "%s has no earlier release to roll back to (herdctl history %s)", req.GetApp(), req.GetApp())
	}
	if _, ok := s.Artifacts.Has(target.GetDigest()); !ok {
		if _, err := s.replicate(ctx, target.GetDigest()); err != nil {
			return status.Errorf(codes.FailedPrecondition, "the artifact of %s %s is gone from the fronts: %v", req.GetApp(), target.GetId(), status.Convert(err).Message())
		}
	}
	spec := proto.CloneOf(target.GetSpec())
	// The worker count stays what it is now: a rollback is about code.
	spec.Workers = cur.GetSpec().GetWorkers()
	return s.rollout(ctx, plan{
		begin:      &herdv1.BeginRollout{Spec: spec, Digest: target.GetDigest(), Force: req.GetForce(), Note: "rollback to " + target.GetId()},
		batch:      req.GetBatch(),
		autoRevert: true,
	}, func(p *herdv1.DeployProgress, r *herdv1.DeployResult) error {
		if r != nil {
			return stream.Send(&herdv1.RollbackResponse{Event: &herdv1.RollbackResponse_Result{Result: r}})
		}
		return stream.Send(&herdv1.RollbackResponse{Event: &herdv1.RollbackResponse_Progress{Progress: p}})
	})
}

// Scale sets the workers per node of the current release, in place.
func (s *Service) Scale(req *herdv1.ScaleRequest, stream herdv1.Control_ScaleServer) error {
	if req.GetWorkers() < 1 || req.GetWorkers() > 1024 {
		return toStatus(fmt.Errorf("%w: workers %d: want 1..1024", errInvalid, req.GetWorkers()))
	}
	leader, ctx, self, err := s.leaderControl(stream.Context())
	if err != nil {
		return err
	}
	if !self {
		up, err := leader.Scale(ctx, req)
		return relay(up, err, stream)
	}
	cur, err := s.current(req.GetApp())
	if err != nil {
		return err
	}
	spec := proto.CloneOf(cur.GetSpec())
	spec.Workers = req.GetWorkers()
	return s.rollout(ctx, plan{
		begin:      &herdv1.BeginRollout{Spec: spec, Digest: cur.GetDigest(), Force: req.GetForce(), Note: fmt.Sprintf("scale to %d", req.GetWorkers())},
		autoRevert: true,
	}, func(p *herdv1.DeployProgress, r *herdv1.DeployResult) error {
		if r != nil {
			return stream.Send(&herdv1.ScaleResponse{Event: &herdv1.ScaleResponse_Result{Result: r}})
		}
		return stream.Send(&herdv1.ScaleResponse{Event: &herdv1.ScaleResponse_Progress{Progress: p}})
	})
}

// Restart replaces every worker of the app (same release), batch by batch:
// on each node new workers start and get healthy before the old ones go.
func (s *Service) Restart(req *herdv1.RestartRequest, stream herdv1.Control_RestartServer) error {
	if _, err := batchSize(req.GetBatch(), math.MaxInt); err != nil {
		return toStatus(err)
	}
	leader, ctx, self, err := s.leaderControl(stream.Context())
	if err != nil {
		return err
	}
	if !self {
		up, err := leader.Restart(ctx, req)
		return relay(up, err, stream)
	}
	cur, err := s.current(req.GetApp())
	if err != nil {
		return err
	}
	return s.rollout(ctx, plan{
		begin: &herdv1.BeginRollout{Spec: cur.GetSpec(), Digest: cur.GetDigest(), Force: req.GetForce(), Restart: true, Note: "restart"},
		batch: req.GetBatch(),
	}, func(p *herdv1.DeployProgress, r *herdv1.DeployResult) error {
		if r != nil {
			return stream.Send(&herdv1.RestartResponse{Event: &herdv1.RestartResponse_Result{Result: r}})
		}
		return stream.Send(&herdv1.RestartResponse{Event: &herdv1.RestartResponse_Progress{Progress: p}})
	})
}

// Destroy removes the app from the desired state (every front drops its
// routes), then from every node that runs it.
func (s *Service) Destroy(ctx context.Context, req *herdv1.DestroyRequest) (*herdv1.DestroyResponse, error) {
	leader, ctx, self, err := s.leaderControl(ctx)
	if err != nil {
		return nil, err
	}
	if !self {
		return leader.Destroy(ctx, req)
	}
	if err := s.State.Destroy(req.GetApp()); err != nil {
		if errors.Is(err, state.ErrNotFound) {
			return nil, status.Errorf(codes.NotFound, "no app %q (herdctl status lists them)", req.GetApp())
		}
		return nil, toStatus(err)
	}
	s.Log.Info("app destroyed", "app", req.GetApp())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for _, n := range s.liveNodes() {
		if !runs(n, req.GetApp()) {
			continue
		}
		wg.Go(func() {
			if err := s.removeOn(ctx, n, req.GetApp()); err != nil {
				mu.Lock()
				failed = append(failed, n.Name+": "+status.Convert(err).Message())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		// The leader keeps removing it from them (reconcileNodes).
		s.Log.Warn("destroyed app still on nodes; retrying", "app", req.GetApp(), "nodes", failed)
	}
	return &herdv1.DestroyResponse{}, nil
}

func runs(n cluster.NodeView, app string) bool {
	for _, a := range n.State.GetApps() {
		if a.GetApp() == app {
			return true
		}
	}
	return false
}

// History lists the app's finished rollouts from this front's copy.
func (s *Service) History(_ context.Context, req *herdv1.HistoryRequest) (*herdv1.HistoryResponse, error) {
	entries := s.State.History(req.GetApp())
	cur, err := s.State.Get(req.GetApp())
	if len(entries) == 0 && err != nil {
		return nil, status.Errorf(codes.NotFound, "no app %q (herdctl status lists them)", req.GetApp())
	}
	resp := &herdv1.HistoryResponse{Current: cur.GetId()}
	for _, e := range entries {
		note := e.GetNote()
		if e.GetError() != "" {
			note = e.GetError()
			if e.GetNote() != "" {
				note = e.GetNote() + ": " + note
			}
		}
		resp.Items = append(resp.Items, &herdv1.HistoryItem{Release: Redact(e.GetRelease()), Finished: e.GetFinished(), Ok: e.GetOk(), Note: note})
	}
	return resp, nil
}

// Drain marks a node drained (every front stops sending it requests as
// soon as it applies that), then tells the node, which withdraws its
// endpoints and, once every front acknowledged, stops its workers unless
// kept. The flag is in the desired state: it holds across node restarts,
// and a node that is unreachable now is drained when it is back.
func (s *Service) Drain(ctx context.Context, req *herdv1.DrainRequest) (*herdv1.DrainResponse, error) {
	leader, ctx, self, err := s.leaderControl(ctx)
	if err != nil {
		return nil, err
	}
	if !self {
		return leader.Drain(ctx, req)
	}
	if err := s.knownNode(req.GetNode()); err != nil {
		return nil, err
	}
	if err := s.State.SetDrain(&herdv1.SetDrain{Node: req.GetNode(), Drained: true, KeepWorkers: req.GetKeepWorkers()}); err != nil {
		return nil, toStatus(err)
	}
	s.Log.Info("node drained", "node", req.GetNode(), "keep_workers", req.GetKeepWorkers())
	if n, ok := s.node(req.GetNode()); ok {
		if err := s.setDrainedOn(ctx, n, true, req.GetKeepWorkers()); err != nil {
			s.Log.Warn("node did not drain yet; the leader retries", "node", n.Name, "err", err)
		}
	}
	return &herdv1.DrainResponse{}, nil
}

// Undrain clears the flag; the node starts its apps again, and the leader
// moves it to the releases assigned to it meanwhile.
func (s *Service) Undrain(ctx context.Context, req *herdv1.UndrainRequest) (*herdv1.UndrainResponse, error) {
	leader, ctx, self, err := s.leaderControl(ctx)
	if err != nil {
		return nil, err
	}
	if !self {
		return leader.Undrain(ctx, req)
	}
	if err := s.knownNode(req.GetNode()); err != nil {
		return nil, err
	}
	if err := s.State.SetDrain(&herdv1.SetDrain{Node: req.GetNode(), Drained: false}); err != nil {
		return nil, toStatus(err)
	}
	s.Log.Info("node undrained", "node", req.GetNode())
	if n, ok := s.node(req.GetNode()); ok {
		if err := s.setDrainedOn(ctx, n, false, false); err != nil {
			s.Log.Warn("node did not undrain yet; the leader retries", "node", n.Name, "err", err)
		}
	}
	return &herdv1.UndrainResponse{}, nil
}

// knownNode fails with NotFound unless gossip or the state knows the node.
func (s *Service) knownNode(name string) error {
	if _, ok := s.node(name); ok || s.State.Node(name) != nil {
		return nil
	}
	for _, m := range s.Cluster.Members() {
		if m.Name == name && m.Role == herdv1.Role_ROLE_NODE {
			return nil
		}
	}
	return status.Errorf(codes.NotFound, "no node %q (herdctl nodes lists them)", name)
}

// node finds a live node by name.
func (s *Service) node(name string) (cluster.NodeView, bool) {
	for _, n := range s.liveNodes() {
		if n.Name == name {
			return n, true
		}
	}
	return cluster.NodeView{}, false
}

func (s *Service) setDrainedOn(ctx context.Context, n cluster.NodeView, drained, keep bool) error {
	c, err := s.Agents.Client(n.GRPCAddr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := c.SetDrained(ctx, &herdv1.SetDrainedRequest{Drained: drained, KeepWorkers: keep})
	if err != nil {
		return err
	}
	s.Cluster.PutState(resp.GetState())
	return nil
}

// undrained keeps the nodes that neither the state nor the node itself
// says are drained.
func (s *Service) undrained(nodes []cluster.NodeView) []cluster.NodeView {
	drained := s.State.Drained()
	var out []cluster.NodeView
	for _, n := range nodes {
		if !drained[n.Name] && !n.State.GetDrained() {
			out = append(out, n)
		}
	}
	return out
}
