package control

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-run/herd/internal/certs"
	"github.com/herd-run/herd/internal/cluster"
	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/pki"
	"github.com/herd-run/herd/internal/state"
)

// leaderState is what the leader's loops keep between rounds.
type leaderState struct {
	mu       sync.Mutex
	goneFrom map[string]time.Time // front -> since when gossip lost it
	applying map[string]bool      // node/app being converged now
	retryAt  map[string]time.Time // node/app -> next attempt after a failure
	backoff  map[string]time.Duration
}

// RunLeader does the leader's duties until ctx ends (the front stops
// leading): it resumes the rollouts a previous leader left unfinished, keeps
// the Raft configuration in step with the fronts gossip sees, and makes
// every live node run the releases assigned to it (assigning the app's
// current release to a node that matches its selector and has none).
func (s *Service) RunLeader(ctx context.Context) {
	log := s.Log.With("raft", "leader")
	log.Info("this front leads the cluster")
	// Act only on the whole log: until the barrier, this front's state
	// may be behind what the previous leader committed.
	for {
		err := s.State.Barrier(10 * time.Second)
		if err == nil {
			break
		}
		log.Warn("raft barrier", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	s.lead.mu.Lock()
	s.lead.goneFrom = map[string]time.Time{}
	s.lead.applying = map[string]bool{}
	s.lead.retryAt = map[string]time.Time{}
	s.lead.backoff = map[string]time.Duration{}
	s.lead.mu.Unlock()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		// A rollout nobody here drives (its leader is gone) is resumed;
		// checked every round, as a deploy starting here may have held
		// off the first look.
		for _, r := range s.State.Rollouts() {
			if !s.isRunning(r.GetRelease().GetApp()) {
				done := s.markRunning(r.GetRelease().GetApp())
				go func() {
					defer done()
					s.resume(ctx, r)
				}()
			}
		}
		s.reconcilePeers(ctx, log)
		s.reconcileNodes(ctx, log)
		select {
		case <-ctx.Done():
			log.Info("this front no longer leads")
			return
		case <-tick.C:
		}
	}
}

// reconcilePeers adds the fronts gossip sees to the Raft configuration (as
// voters up to MaxVoters, then as non-voters, promoted when a voter goes)
// and removes those gone for longer than RemoveAfter, as Consul's
// autopilot does.
func (s *Service) reconcilePeers(ctx context.Context, log *slog.Logger) {
	if ctx.Err() != nil {
		return
	}
	peers, err := s.State.Peers()
	if err != nil {
		return
	}
	maxVoters := s.MaxVoters
	if maxVoters <= 0 {
		maxVoters = 3
	}
	removeAfter := s.RemoveAfter
	if removeAfter <= 0 {
		removeAfter = 10 * time.Minute
	}
	voters := 0
	byID := map[string]state.Peer{}
	for _, p := range peers {
		byID[p.ID] = p
		if p.Voter {
			voters++
		}
	}
	members := map[string]cluster.Member{}
	for _, m := range s.Cluster.Members() {
		if m.Role == herdv1.Role_ROLE_FRONT {
			members[m.Name] = m
		}
	}
	for _, m := range members {
		if m.State != herdv1.MemberState_MEMBER_STATE_ALIVE || m.Leaving || m.RaftAddr == "" || m.Name == s.Name {
			continue
		}
		p, ok := byID[m.Name]
		switch {
		case !ok || p.Address != m.RaftAddr:
			voter := voters < maxVoters || (ok && p.Voter)
			if err := s.State.AddPeer(m.Name, m.RaftAddr, voter); err != nil {
				log.Warn("add front to raft", "front", m.Name, "err", err)
				continue
			}
			if voter && !(ok && p.Voter) {
				voters++
			}
			log.Info("front added to raft", "front", m.Name, "address", m.RaftAddr, "voter", voter)
		case !p.Voter && voters < maxVoters:
			if err := s.State.AddPeer(m.Name, m.RaftAddr, true); err != nil {
				log.Warn("promote front to voter", "front", m.Name, "err", err)
				continue
			}
			voters++
			log.Info("front promoted to raft voter", "front", m.Name)
		}
	}
	s.lead.mu.Lock()
	defer s.lead.mu.Unlock()
	for _, p := range peers {
		if p.ID == s.Name {
			continue
		}
		m, ok := members[p.ID]
		if ok && m.State == herdv1.MemberState_MEMBER_STATE_ALIVE {
			delete(s.lead.goneFrom, p.ID)
			continue
		}
		since, seen := s.lead.goneFrom[p.ID]
		if !seen {
			s.lead.goneFrom[p.ID] = time.Now()
			continue
		}
		if time.Since(since) < removeAfter {
			continue
		}
		if err := s.State.RemovePeer(p.ID); err != nil {
			log.Warn("remove departed front from raft", "front", p.ID, "err", err)
			continue
		}
		delete(s.lead.goneFrom, p.ID)
		log.Warn("front removed from raft: gone too long", "front", p.ID, "gone_for", time.Since(since).Round(time.Second))
	}
}

// reconcileNodes makes each live node match the desired state: drained or
// not as its flag says; running what it is assigned (a node that matches
// an app's selector and has no assignment gets the app's current release);
// not running destroyed apps. Apps with a rollout in progress are the
// rollout's business.
func (s *Service) reconcileNodes(ctx context.Context, log *slog.Logger) {
	busy := map[string]bool{}
	for _, r := range s.State.Rollouts() {
		busy[r.GetRelease().GetApp()] = true
	}
	apps := s.State.List()
	for _, n := range s.liveNodes() {
		if ctx.Err() != nil {
			return
		}
		rec := s.State.Node(n.Name)
		if want := rec.GetDrained(); want != n.State.GetDrained() {
			keep := rec.GetKeepWorkers()
			s.converge(ctx, log, n.Name+"/drain", func(ctx context.Context) error {
				log.Info("converging node on its drain flag", "node", n.Name, "drained", want)
				return s.setDrainedOn(ctx, n, want, keep)
			})
			continue
		}
		if rec.GetDrained() {
			continue
		}
		running := map[string]*herdv1.AppState{}
		for _, a := range n.State.GetApps() {
			running[a.GetApp()] = a
			if app := a.GetApp(); !busy[app] && s.State.Destroyed(app) {
				s.converge(ctx, log, n.Name+"/"+app, func(ctx context.Context) error {
					log.Info("removing a destroyed app from a node", "node", n.Name, "app", app)
					return s.removeOn(ctx, n, app)
				})
			}
		}
		for _, cur := range apps {
			app := cur.GetApp()
			if busy[app] {
				continue
			}
			want := s.State.Assigned(n.Name, app)
			if !matches(cur.GetSpec().GetSelector(), n.State.GetLabels()) {
				// The app's selector no longer picks this node (narrowed,
				// or the node's labels changed): it stops the app.
				if want != nil {
					if err := s.State.Assign(n.Name, app, ""); err != nil {
						log.Warn("unassign app from node", "node", n.Name, "app", app, "err", err)
						continue
					}
				}
				if running[app] != nil {
					s.converge(ctx, log, n.Name+"/"+app, func(ctx context.Context) error {
						log.Info("removing an app whose selector no longer picks the node", "node", n.Name, "app", app)
						return s.removeOn(ctx, n, app)
					})
				}
				continue
			}
			if want == nil {
				if err := s.State.Assign(n.Name, app, cur.GetId()); err != nil {
					log.Warn("assign release to node", "node", n.Name, "app", app, "err", err)
					continue
				}
				log.Info("node assigned the app's release", "node", n.Name, "app", app, "release", cur.GetId())
				want = cur
			}
			// The release and its worker count: a scale keeps the id.
			if r := running[app]; r.GetRelease() == want.GetId() && r.GetDesired() == want.GetSpec().GetWorkers() {
				continue
			}
			s.converge(ctx, log, n.Name+"/"+app, func(ctx context.Context) error {
				var sources []string
				for _, f := range s.liveFronts() {
					sources = append(sources, f.GRPCAddr)
				}
				timeout := s.DeployTimeout
				if timeout <= 0 {
					timeout = 60 * time.Second
				}
				log.Info("converging node on its assignment", "node", n.Name, "app", app, "release", want.GetId())
				return s.applyOn(ctx, n, want, sources, timeout)
			})
		}
	}
}

// converge runs fix in the background, one at a time per key (node/app),
// backing off after failures.
func (s *Service) converge(ctx context.Context, log *slog.Logger, key string, fix func(context.Context) error) {
	s.lead.mu.Lock()
	if s.lead.applying[key] || time.Now().Before(s.lead.retryAt[key]) {
		s.lead.mu.Unlock()
		return
	}
	s.lead.applying[key] = true
	s.lead.mu.Unlock()
	go func() {
		err := fix(ctx)
		s.lead.mu.Lock()
		defer s.lead.mu.Unlock()
		delete(s.lead.applying, key)
		if err != nil {
			b := min(max(2*s.lead.backoff[key], 2*time.Second), time.Minute)
			s.lead.backoff[key] = b
			s.lead.retryAt[key] = time.Now().Add(b)
			if status.Code(err) != codes.Canceled {
				log.Warn("node did not converge", "what", key, "retry_in", b, "err", status.Convert(err).Message())
			}
			return
		}
		delete(s.lead.backoff, key)
		delete(s.lead.retryAt, key)
	}()
}

// GetAssignment returns what the desired state assigns to a node. The
// leader answers (a follower forwards the call): a follower that is behind
// could send a node back to an older release.
func (s *Service) GetAssignment(ctx context.Context, req *herdv1.GetAssignmentRequest) (*herdv1.GetAssignmentResponse, error) {
	if req.GetNode() == "" {
		return nil, toStatus(fmt.Errorf("%w: no node name", errInvalid))
	}
	if id := certs.IdentityFrom(ctx); id.Role == pki.RoleNode && id.Name != req.GetNode() {
		return nil, status.Errorf(codes.PermissionDenied, "node %s may ask only for its own assignment, not %s's", id.Name, req.GetNode())
	}
	leader, ctx, self, err := s.leaderControl(ctx)
	if err != nil {
		return nil, err
	}
	if !self {
		return leader.GetAssignment(ctx, req)
	}
	resp := &herdv1.GetAssignmentResponse{Releases: s.State.Assignment(req.GetNode())}
	for _, f := range s.liveFronts() {
		resp.ArtifactSources = append(resp.ArtifactSources, f.GRPCAddr)
	}
	return resp, nil
}

// ListPeers lists the Raft configuration with gossip's view of each front.
func (s *Service) ListPeers(context.Context, *herdv1.ListPeersRequest) (*herdv1.ListPeersResponse, error) {
	peers, err := s.State.Peers()
	if err != nil {
		return nil, toStatus(err)
	}
	leader := s.State.Leader()
	resp := &herdv1.ListPeersResponse{}
	for _, p := range peers {
		ms := herdv1.MemberState_MEMBER_STATE_UNSPECIFIED
		if m, ok := s.front(p.ID); ok {
			ms = m.State
		}
		resp.Peers = append(resp.Peers, &herdv1.Peer{Name: p.ID, Address: p.Address, Voter: p.Voter, Leader: p.ID == leader, MemberState: ms})
	}
	return resp, nil
}

// RemovePeer removes a front from the Raft configuration (on the leader).
func (s *Service) RemovePeer(ctx context.Context, req *herdv1.RemovePeerRequest) (*herdv1.RemovePeerResponse, error) {
	leader, ctx, self, err := s.leaderControl(ctx)
	if err != nil {
		return nil, err
	}
	if !self {
		return leader.RemovePeer(ctx, req)
	}
	peers, err := s.State.Peers()
	if err != nil {
		return nil, toStatus(err)
	}
	found := false
	for _, p := range peers {
		found = found || p.ID == req.GetName()
	}
	switch {
	case !found:
		return nil, status.Errorf(codes.NotFound, "no front %q in the raft configuration (herdctl raft peers lists them)", req.GetName())
	case req.GetName() == s.Name:
		return nil, status.Errorf(codes.FailedPrecondition, "front %s is the leader: stop it (it hands leadership over) and remove it from another front", s.Name)
	}
	if m, ok := s.front(req.GetName()); ok && m.State == herdv1.MemberState_MEMBER_STATE_ALIVE && !m.Leaving {
		return nil, status.Errorf(codes.FailedPrecondition, "front %s is alive: stop it first, or the leader adds it back", req.GetName())
	}
	if err := s.State.RemovePeer(req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	s.Log.Warn("front removed from raft by an operator", "front", req.GetName())
	return &herdv1.RemovePeerResponse{}, nil
}
