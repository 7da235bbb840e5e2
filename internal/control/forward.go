package control

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/herd-run/herd/internal/cluster"
	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// forwardedKey marks a call a follower forwarded to the leader, so that a
// call never bounces between fronts that disagree on who leads.
const forwardedKey = "herd-forwarded-by"

// leaderWait is how long a write waits for an election to end.
const leaderWait = 10 * time.Second

// leaderControl returns a Control client for the leader and the context to
// call it with. It waits for an election in progress (up to leaderWait).
// self is true when this front is the leader.
func (s *Service) leaderControl(ctx context.Context) (c herdv1.ControlClient, out context.Context, self bool, err error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedKey)) > 0 {
		// Forwarded to us as the leader: act here, or fail (the leader
		// changed meanwhile; the caller can retry).
		if s.State.IsLeader() {
			return nil, ctx, true, nil
		}
		return nil, nil, false, status.Errorf(codes.Unavailable, "front %s forwarded this call to %s as the Raft leader, which it no longer is; retry", md.Get(forwardedKey)[0], s.Name)
	}
	deadline := time.Now().Add(leaderWait)
	for {
		if s.State.IsLeader() {
			return nil, ctx, true, nil
		}
		if id := s.State.Leader(); id != "" {
			if m, ok := s.front(id); ok && m.GRPCAddr != "" {
				c, err := s.Agents.Control(m.GRPCAddr)
				if err != nil {
					return nil, nil, false, err
				}
				return c, metadata.AppendToOutgoingContext(ctx, forwardedKey, s.Name), false, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, nil, false, status.Errorf(codes.Unavailable, "no Raft leader among the fronts that front %s can reach (is a quorum of fronts up?): the call changes nothing", s.Name)
		}
		select {
		case <-ctx.Done():
			return nil, nil, false, toStatus(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// front finds a front member by name.
func (s *Service) front(name string) (cluster.Member, bool) {
	for _, m := range s.Cluster.Members() {
		if m.Name == name && m.Role == herdv1.Role_ROLE_FRONT {
			return m, true
		}
	}
	return cluster.Member{}, false
}

// liveFronts are the fronts gossip sees alive and not leaving, this one
// first.
func (s *Service) liveFronts() []cluster.Member {
	var out []cluster.Member
	for _, m := range s.Cluster.LiveFronts() {
		if m.Name == s.Name {
			out = append([]cluster.Member{m}, out...)
		} else {
			out = append(out, m)
		}
	}
	return out
}

// forwardDeploy relays a deploy to the leader and its progress back. A
// leader that cannot be reached before it answered anything (it just died
// and the election is not over) is looked up again, until leaderWait.
// Once the deploy succeeded, the answer waits (briefly) until this front's
// copy of the state shows it, so the caller reads its own write here.
func (s *Service) forwardDeploy(ctx context.Context, c herdv1.ControlClient, req *herdv1.DeployRequest, stream herdv1.Control_DeployServer) error {
	deadline := time.Now().Add(leaderWait)
	for {
		release, err := s.relayDeploy(ctx, c, req, stream)
		started := release != ""
		if started && status.Code(err) == codes.Unavailable {
			// The leader went away mid-rollout: the next leader resumes
			// it, and its verdict reaches this front through Raft.
			return s.awaitVerdict(stream.Context(), req.GetSpec().GetName(), release, stream)
		}
		if err == nil || started || status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			if err != nil && status.Code(err) == codes.Unavailable {
				// Not "front unreachable": this front answered; the leader
				// it forwarded to went away.
				return status.Errorf(codes.Aborted, "front %s forwarded the deploy to the Raft leader, which failed: %s (retry once a new leader is elected)",
					s.Name, status.Convert(err).Message())
			}
			return err
		}
		select {
		case <-ctx.Done():
			return toStatus(ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
		var self bool
		c, ctx, self, err = s.leaderControl(stream.Context())
		if err != nil {
			return err
		}
		if self {
			return s.Deploy(req, stream)
		}
	}
}

// relayDeploy makes one attempt; it returns the release the leader said it
// rolls out ("" if it said nothing yet).
func (s *Service) relayDeploy(ctx context.Context, c herdv1.ControlClient, req *herdv1.DeployRequest, stream herdv1.Control_DeployServer) (release string, err error) {
	up, err := c.Deploy(ctx, req)
	if err != nil {
		return "", err
	}
	for {
		msg, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return release, nil
		}
		if err != nil {
			return release, err
		}
		if id := msg.GetProgress().GetRelease(); id != "" {
			release = id
		}
		if r := msg.GetResult(); r != nil {
			release = r.GetRelease().GetId()
			s.awaitRelease(r.GetRelease(), 3*time.Second)
		}
		if err := stream.Send(msg); err != nil {
			return release, err
		}
	}
}

// awaitVerdict waits until the rollout of app's release is no longer in
// progress in this front's state and reports how it ended.
func (s *Service) awaitVerdict(ctx context.Context, app, release string, stream herdv1.Control_DeployServer) error {
	stream.Send(&herdv1.DeployResponse{Event: &herdv1.DeployResponse_Progress{Progress: &herdv1.DeployProgress{
		Release: release, Message: "the Raft leader went away; waiting for the next leader to finish the rollout",
	}}})
	// The rollout's beginning may not have reached this front yet (the
	// leader died before telling followers the entry committed; the next
	// leader's first commit does).
	for wait := time.Now().Add(15 * time.Second); s.State.Release(app, release) == nil && time.Now().Before(wait); {
		select {
		case <-ctx.Done():
			return toStatus(ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	for {
		inProgress := false
		for _, r := range s.State.Rollouts() {
			if r.GetRelease().GetApp() == app && r.GetRelease().GetId() == release {
				inProgress = true
			}
		}
		if !inProgress {
			break
		}
		select {
		case <-ctx.Done():
			return toStatus(ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	hist := s.State.History(app)
	for i := len(hist) - 1; i >= 0; i-- {
		h := hist[i]
		if h.GetRelease().GetId() != release {
			continue
		}
		if !h.GetOk() {
			return status.Errorf(codes.Aborted, "deploy of %s %s %s", app, release, h.GetError())
		}
		return stream.Send(&herdv1.DeployResponse{Event: &herdv1.DeployResponse_Result{Result: &herdv1.DeployResult{Release: Redact(h.GetRelease()), Changed: true}}})
	}
	if cur, err := s.State.Get(app); err == nil && cur.GetId() == release {
		// Only a scale or an unchanged deploy leaves no history entry.
		return stream.Send(&herdv1.DeployResponse{Event: &herdv1.DeployResponse_Result{Result: &herdv1.DeployResult{Release: Redact(cur)}}})
	}
	return status.Errorf(codes.Aborted, "deploy of %s %s: the rollout ended without a verdict (herdctl history %s)", app, release, app)
}

// awaitRelease waits until this front's state has rel as its app's release.
func (s *Service) awaitRelease(rel *herdv1.Release, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cur, err := s.State.Get(rel.GetApp()); err == nil && cur.GetId() == rel.GetId() && proto.Equal(Redact(cur).GetSpec(), rel.GetSpec()) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
