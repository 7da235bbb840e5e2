package control

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/herd-run/herd/internal/cluster"
	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// plan is one rollout: what to begin in the state, and how to move nodes.
type plan struct {
	begin *herdv1.BeginRollout
	// batch is "" (all nodes at once), "N" or "P%".
	batch string
	// minHealthy is how long each batch must stay healthy before the next
	// moves; deadline bounds a batch (becoming ready, then staying
	// healthy); timeout bounds a node's apply (0: the front's default).
	minHealthy, deadline, timeout time.Duration
	autoRevert                    bool
}

// sink receives a rollout's progress, then its result.
type sink func(*herdv1.DeployProgress, *herdv1.DeployResult) error

// batchSize reads --batch for n nodes: "" is all of them, "N" is N, "P%"
// is that share rounded up. A batch larger than the cluster is refused.
func batchSize(batch string, n int) (int, error) {
	switch {
	case batch == "":
		return n, nil
	case strings.HasSuffix(batch, "%"):
		p, err := strconv.ParseFloat(strings.TrimSuffix(batch, "%"), 64)
		if err != nil || p <= 0 || p > 100 {
			return 0, fmt.Errorf("%w: --batch %q: want N (nodes) or P%% with 0 < P <= 100", errInvalid, batch)
		}
		return max(1, int(math.Ceil(p*float64(n)/100))), nil
	}
	b, err := strconv.Atoi(batch)
	if err != nil || b < 1 {
		return 0, fmt.Errorf("%w: --batch %q: want N (nodes) or P%% with 0 < P <= 100", errInvalid, batch)
	}
	if b > n {
		return 0, fmt.Errorf("%w: --batch %d is larger than the %d node(s) the app runs on", errInvalid, b, n)
	}
	return b, nil
}

// rollout runs a plan on the leader: copy the artifact to the fronts,
// record the rollout (one per app), run the release command, then move
// the nodes batch by batch. A batch must be ready within the deadline and
// stay healthy for minHealthy; a failing batch stops the rollout and, with
// autoRevert, moves every node already moved back to what it ran. The
// verdict goes into the state either way.
func (s *Service) rollout(ctx context.Context, p plan, send sink) error {
	spec := p.begin.GetSpec()
	app := spec.GetName()
	done := s.markRunning(app)
	defer done()
	sources, err := s.replicate(ctx, p.begin.GetDigest())
	if err != nil {
		return err
	}
	nodes, err := s.rolloutNodes(spec)
	if err != nil {
		return err
	}
	if _, err := batchSize(p.batch, len(nodes)); err != nil {
		return toStatus(err)
	}
	p.begin.Front = s.Name
	p.begin.Plan = &herdv1.RolloutPlan{
		Batch: p.batch, MinHealthy: durationpb.New(p.minHealthy), Deadline: durationpb.New(p.deadline),
		AutoRevert: p.autoRevert, Timeout: durationpb.New(p.timeout),
	}
	ro, err := s.State.BeginRollout(p.begin)
	if err != nil {
		return toStatus(err)
	}
	// The rollout runs to its verdict even if the client goes away.
	return s.run(context.WithoutCancel(ctx), ro, sources, nodes, false, send)
}

// rolloutNodes are the live, undrained nodes an app's selector picks.
func (s *Service) rolloutNodes(spec *herdv1.AppSpec) ([]cluster.NodeView, error) {
	nodes := selectNodes(s.undrained(s.liveNodes()), spec.GetSelector())
	if len(nodes) == 0 {
		if len(spec.GetSelector()) > 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "no live, undrained node has the labels %s (--selector)", formatLabels(spec.GetSelector()))
		}
		return nil, status.Error(codes.FailedPrecondition, "no live, undrained nodes in the cluster to deploy to")
	}
	return nodes, nil
}

// resume takes over a rollout that a previous leader left in progress: the
// same plan, on the nodes not yet moved; the release command is not run
// again once it succeeded. The caller marks the app as running.
func (s *Service) resume(ctx context.Context, ro *herdv1.Rollout) {
	rel := ro.GetRelease()
	log := s.Log.With("app", rel.GetApp(), "release", rel.GetId())
	log.Warn("resuming a rollout the previous leader left unfinished", "started_by", ro.GetFront())
	fail := func(cause string) {
		if s.stillOurs(ctx, ro) != "" {
			return
		}
		err := s.State.Finish(&herdv1.FinishRollout{App: rel.GetApp(), Rollout: ro.GetId(), Error: "interrupted: " + cause})
		if err != nil {
			log.Warn("end an interrupted rollout", "err", err)
		}
	}
	sources, err := s.replicate(ctx, rel.GetDigest())
	if err != nil {
		fail(status.Convert(err).Message())
		return
	}
	nodes, err := s.rolloutNodes(rel.GetSpec())
	if err != nil {
		fail(status.Convert(err).Message())
		return
	}
	err = s.run(ctx, ro, sources, nodes, true, func(p *herdv1.DeployProgress, _ *herdv1.DeployResult) error {
		if p != nil {
			log.Info("resumed rollout", "node", p.GetNode(), "batch", p.GetBatch(), "batches", p.GetBatches(), "msg", p.GetMessage())
		}
		return nil
	})
	if err != nil {
		log.Warn("resumed rollout failed", "err", status.Convert(err).Message())
	}
}

// run moves the nodes of a recorded rollout, batch by batch, and records
// the verdict. On a resumed rollout, nodes that already run the release
// count as moved.
func (s *Service) run(ctx context.Context, ro *herdv1.Rollout, sources []string, nodes []cluster.NodeView, resumed bool, send sink) error {
	rel := ro.GetRelease()
	spec := rel.GetSpec()
	app := rel.GetApp()
	pl := ro.GetPlan()
	p := plan{batch: pl.GetBatch(), minHealthy: pl.GetMinHealthy().AsDuration(), deadline: pl.GetDeadline().AsDuration(),
		timeout: pl.GetTimeout().AsDuration(), autoRevert: pl.GetAutoRevert()}
	restart := rel.GetRestart() > 0 && ro.GetNote() == "restart"
	// What each node ran when the rollout began, to move it back to.
	previous := map[string]*herdv1.Release{}
	for node, id := range ro.GetPrevious() {
		if r := s.State.Release(app, id); r != nil {
			previous[node] = r
		}
	}
	log := s.Log.With("app", app, "release", rel.GetId())
	alive := true
	say := func(pr *herdv1.DeployProgress) {
		pr.Release = rel.GetId()
		if alive && send(pr, nil) != nil {
			alive = false
		}
	}
	var moved []cluster.NodeView
	if resumed {
		var rest []cluster.NodeView
		for _, n := range nodes {
			if runsRelease(n, rel) && !restart {
				moved = append(moved, n)
			} else {
				rest = append(rest, n)
			}
		}
		nodes = rest
	}
	size, err := batchSize(p.batch, len(nodes)+len(moved))
	if err != nil {
		size = len(nodes)
	}
	size = max(1, min(size, len(nodes)))
	finish := func(results []*herdv1.NodeResult, cause string) error {
		if why := s.stillOurs(ctx, ro); why != "" {
			return status.Errorf(codes.Aborted, "%s %s: %s", app, rel.GetId(), why)
		}
		err := s.State.Finish(&herdv1.FinishRollout{App: app, Rollout: ro.GetId(), Ok: cause == "", Nodes: results, Error: cause})
		if err != nil {
			return status.Errorf(codes.Aborted, "%s %s: recording the outcome failed (herdctl history %s tells how it ended): %v", app, rel.GetId(), app, err)
		}
		return nil
	}
	if s.Prepare != nil {
		if err := s.Prepare(rel); err != nil {
			cause := fmt.Sprintf("refused by front %s: %v", s.Name, err)
			if ferr := finish(nil, cause); ferr != nil {
				return ferr
			}
			return status.Errorf(codes.FailedPrecondition, "deploy of %s %s %s", app, rel.GetId(), cause)
		}
	}
	timeout := s.DeployTimeout
	if p.timeout > 0 {
		timeout = p.timeout
	}
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	// The first word names the release, so a front relaying this can
	// follow the rollout through Raft if this leader goes away.
	say(&herdv1.DeployProgress{Message: fmt.Sprintf("rolling out %s %s to %d node(s)", app, rel.GetId(), len(nodes)+len(moved))})
	// The release command runs for new code only: not for a scale or a
	// restart (same release id), nor for a rollback (old code).
	cur, _ := s.State.Get(app)
	newCode := ro.GetChanged() && cur.GetId() != rel.GetId() && !strings.HasPrefix(ro.GetNote(), "rollback")
	if cmd := spec.GetReleaseCommand(); cmd != "" && newCode && !ro.GetReleaseCommandDone() && len(nodes) > 0 {
		say(&herdv1.DeployProgress{Node: nodes[0].Name, Message: "running the release command: " + cmd})
		if cause := s.releaseCommand(ctx, nodes[0], rel, cmd, sources, timeout); cause != "" {
			log.Warn("release command failed: nothing moves", "node", nodes[0].Name, "err", cause)
			if err := finish(nil, "release command failed: "+cause); err != nil {
				return err
			}
			return status.Errorf(codes.Aborted, "deploy of %s %s: the release command failed on %s, no node moved: %s", app, rel.GetId(), nodes[0].Name, cause)
		}
		if err := s.State.Step(&herdv1.RolloutStep{App: app, Rollout: ro.GetId(), ReleaseCommandDone: true}); err != nil {
			return status.Errorf(status.Code(toStatus(err)), "%s %s: recording the release command failed: %v", app, rel.GetId(), err)
		}
		say(&herdv1.DeployProgress{Node: nodes[0].Name, Message: "release command succeeded"})
	}
	batches := (len(nodes) + size - 1) / size
	log.Info("rolling out", "nodes", len(nodes), "batches", batches, "digest", rel.GetDigest(), "already_moved", len(moved))
	res := &herdv1.DeployResult{Release: Redact(rel), Changed: ro.GetChanged()}
	for _, n := range moved {
		res.Nodes = append(res.Nodes, &herdv1.NodeResult{Node: n.Name, Ok: true})
	}
	var cause string
	for b := 0; b < batches && cause == ""; b++ {
		if why := s.stillOurs(ctx, ro); why != "" {
			log.Warn("rollout stops here", "why", why)
			return status.Errorf(codes.Aborted, "%s %s: %s", app, rel.GetId(), why)
		}
		// A node drained since the rollout began is left alone.
		batch := s.undrained(nodes[b*size : min((b+1)*size, len(nodes))])
		if len(batch) == 0 {
			continue
		}
		var names []string
		for _, n := range batch {
			names = append(names, n.Name)
		}
		if batches > 1 {
			say(&herdv1.DeployProgress{Batch: uint32(b + 1), Batches: uint32(batches), Message: "moving " + strings.Join(names, ", ")})
		}
		applyTimeout := timeout
		if p.deadline > 0 {
			applyTimeout = min(timeout, p.deadline)
		}
		started := time.Now()
		type outcome struct {
			node cluster.NodeView
			err  error
		}
		results := make(chan outcome, len(batch))
		for _, n := range batch {
			go func() { results <- outcome{n, s.applyOn(ctx, n, rel, sources, applyTimeout)} }()
		}
		var failed []string
		for range batch {
			o := <-results
			nr := &herdv1.NodeResult{Node: o.node.Name, Ok: o.err == nil}
			msg := "running " + rel.GetId()
			if o.err != nil {
				nr.Error = status.Convert(o.err).Message()
				msg = "failed: " + nr.Error
				failed = append(failed, o.node.Name+": "+nr.Error)
				log.Warn("rollout failed on node", "node", o.node.Name, "err", nr.Error)
			} else {
				moved = append(moved, o.node)
			}
			res.Nodes = append(res.Nodes, nr)
			say(&herdv1.DeployProgress{Node: o.node.Name, Message: msg, Batch: uint32(b + 1), Batches: uint32(batches)})
		}
		if len(failed) > 0 {
			cause = fmt.Sprintf("failed on %d of %d nodes of batch %d/%d: %s", len(failed), len(batch), b+1, batches, strings.Join(failed, "; "))
			break
		}
		if p.minHealthy > 0 {
			wait := p.minHealthy
			if p.deadline > 0 {
				wait = min(wait, max(0, p.deadline-time.Since(started)))
			}
			say(&herdv1.DeployProgress{Batch: uint32(b + 1), Batches: uint32(batches), Message: fmt.Sprintf("must stay healthy for %v", p.minHealthy)})
			if why := s.staysHealthy(ctx, batch, rel, p.minHealthy); why != "" {
				cause = fmt.Sprintf("batch %d/%d did not stay healthy for %v: %s", b+1, batches, p.minHealthy, why)
			} else if wait < p.minHealthy {
				cause = fmt.Sprintf("batch %d/%d could not stay healthy for %v within --deadline %v", b+1, batches, p.minHealthy, p.deadline)
			}
		}
	}
	if cause == "" {
		if err := finish(res.GetNodes(), ""); err != nil {
			return err
		}
		if s.OnCommit != nil {
			s.OnCommit()
		}
		log.Info("rolled out", "nodes", len(res.GetNodes()), "changed", ro.GetChanged())
		if !alive {
			return nil
		}
		return send(nil, res)
	}
	// Failed: the nodes that run the new release move back, unless the
	// operator keeps them.
	outcome := "their previous release keeps serving"
	if why := s.stillOurs(ctx, ro); why != "" {
		// Not ours to revert: whoever took over decides.
		return status.Errorf(codes.Aborted, "%s %s %s; %s", app, rel.GetId(), cause, why)
	}
	if p.autoRevert && len(moved) > 0 {
		say(&herdv1.DeployProgress{Message: fmt.Sprintf("reverting %d node(s)", len(moved))})
		reverted := s.revert(ctx, moved, previous, app, sources, timeout, say)
		for _, nr := range res.Nodes {
			if reverted[nr.GetNode()] {
				nr.Ok = false
			}
		}
		outcome = fmt.Sprintf("reverted %d of %d node(s) already moved; the others kept their release", len(reverted), len(moved))
	} else if len(moved) > 0 {
		outcome = fmt.Sprintf("%d node(s) already moved keep %s (--no-auto-revert); the others kept their release", len(moved), rel.GetId())
	}
	if err := finish(res.GetNodes(), cause); err != nil {
		return err
	}
	return status.Errorf(codes.Aborted, "deploy of %s %s %s (%s)", app, rel.GetId(), cause, outcome)
}

// staysHealthy watches a batch for d: every node must keep running rel
// with all its workers ready and no error. It returns why not, or "".
func (s *Service) staysHealthy(ctx context.Context, batch []cluster.NodeView, rel *herdv1.Release, d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		byName := map[string]cluster.NodeView{}
		for _, n := range s.Cluster.Nodes() {
			byName[n.Name] = n
		}
		for _, b := range batch {
			n, ok := byName[b.Name]
			if !ok || n.Member.State != herdv1.MemberState_MEMBER_STATE_ALIVE || n.Leaving {
				return b.Name + " left the cluster"
			}
			var as *herdv1.AppState
			for _, a := range n.State.GetApps() {
				if a.GetApp() == rel.GetApp() {
					as = a
				}
			}
			switch {
			case as == nil || as.GetRelease() != rel.GetId():
				return b.Name + " no longer runs " + rel.GetId()
			case as.GetError() != "":
				return b.Name + ": " + as.GetError()
			case len(as.GetEndpoints()) < int(as.GetDesired()):
				return fmt.Sprintf("%s: %d of %d workers ready", b.Name, len(as.GetEndpoints()), as.GetDesired())
			}
		}
		if !time.Now().Before(deadline) {
			return ""
		}
		select {
		case <-ctx.Done():
			return ctx.Err().Error()
		case <-time.After(min(250*time.Millisecond, time.Until(deadline))):
		}
	}
}

// revert moves nodes back to their previous release (or removes the app
// from those that had none) and returns the nodes it moved back.
func (s *Service) revert(ctx context.Context, nodes []cluster.NodeView, previous map[string]*herdv1.Release, app string, sources []string, timeout time.Duration, say func(*herdv1.DeployProgress)) map[string]bool {
	type outcome struct {
		node string
		err  error
	}
	results := make(chan outcome, len(nodes))
	for _, n := range nodes {
		go func() {
			prev := previous[n.Name]
			if prev == nil {
				results <- outcome{n.Name, s.removeOn(ctx, n, app)}
				return
			}
			results <- outcome{n.Name, s.applyOn(ctx, n, prev, sources, timeout)}
		}()
	}
	done := map[string]bool{}
	for range nodes {
		o := <-results
		if o.err != nil {
			s.Log.Warn("revert failed on node", "node", o.node, "app", app, "err", o.err)
			say(&herdv1.DeployProgress{Node: o.node, Message: "revert failed: " + status.Convert(o.err).Message()})
			continue
		}
		done[o.node] = true
		what := "removed the app"
		if prev := previous[o.node]; prev != nil {
			what = "back on " + prev.GetId()
		}
		say(&herdv1.DeployProgress{Node: o.node, Message: "reverted: " + what})
	}
	return done
}

// removeOn stops an app on a node.
func (s *Service) removeOn(ctx context.Context, n cluster.NodeView, app string) error {
	c, err := s.Agents.Client(n.GRPCAddr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := c.Remove(ctx, &herdv1.RemoveRequest{App: app})
	if err != nil {
		return err
	}
	s.Cluster.PutState(resp.GetState())
	return nil
}

// releaseCommand runs the release command on node n and returns why it
// failed, or "".
func (s *Service) releaseCommand(ctx context.Context, n cluster.NodeView, rel *herdv1.Release, cmd string, sources []string, timeout time.Duration) string {
	c, err := s.Agents.Client(n.GRPCAddr)
	if err != nil {
		return err.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+30*time.Second)
	defer cancel()
	resp, err := c.RunTask(ctx, &herdv1.RunTaskRequest{Release: rel, Command: cmd, ArtifactSources: sources, Timeout: durationpb.New(timeout)})
	if err != nil {
		return status.Convert(err).Message()
	}
	if resp.GetExitCode() != 0 {
		out := strings.TrimSpace(resp.GetOutput())
		if lines := strings.Split(out, "\n"); len(lines) > 5 {
			out = strings.Join(lines[len(lines)-5:], "\n")
		}
		return fmt.Sprintf("%s; output: %q", resp.GetStatus(), out)
	}
	return ""
}

// runsRelease says whether node n runs rel with its worker count.
func runsRelease(n cluster.NodeView, rel *herdv1.Release) bool {
	for _, a := range n.State.GetApps() {
		if a.GetApp() == rel.GetApp() {
			return a.GetRelease() == rel.GetId() && a.GetDesired() == rel.GetSpec().GetWorkers()
		}
	}
	return false
}

// stillOurs says why this process must stop driving rollout ro, or "": it
// lost the leadership (the next leader resumes it), the rollout was
// superseded (--force), or the front is stopping.
func (s *Service) stillOurs(ctx context.Context, ro *herdv1.Rollout) string {
	if ctx.Err() != nil {
		return "this front stopped leading; the next leader resumes the rollout"
	}
	if !s.State.IsLeader() {
		return "front " + s.Name + " lost the Raft leadership; the next leader resumes the rollout"
	}
	for _, r := range s.State.Rollouts() {
		if r.GetId() == ro.GetId() {
			return ""
		}
	}
	return "the rollout was superseded (--force) or ended by another front"
}
