package control

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/herd-run/herd/internal/cluster"
	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/release"
	"github.com/herd-run/herd/internal/state"
)

var (
	token    = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`)
	hostName = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
)

// validateSpec rejects a spec that could never run or route, saying which
// part (by its herdctl flag) is wrong.
func validateSpec(spec *herdv1.AppSpec) error {
	switch {
	case spec == nil:
		return fmt.Errorf("%w: no app spec", errInvalid)
	case !state.ValidAppName(spec.GetName()):
		return fmt.Errorf("%w: app name %q: want a DNS label (a-z, 0-9, '-', at most 63)", errInvalid, spec.GetName())
	case strings.TrimSpace(spec.GetCommand()) == "":
		return fmt.Errorf("%w: --cmd is empty", errInvalid)
	case spec.GetWorkers() < 1 || spec.GetWorkers() > 1024:
		return fmt.Errorf("%w: --workers %d: want 1..1024", errInvalid, spec.GetWorkers())
	case !strings.HasPrefix(spec.GetHealthPath(), "/"):
		return fmt.Errorf("%w: --health %q must start with /", errInvalid, spec.GetHealthPath())
	case spec.GetPathPrefix() != "" && !strings.HasPrefix(spec.GetPathPrefix(), "/"):
		return fmt.Errorf("%w: --path %q must start with /", errInvalid, spec.GetPathPrefix())
	}
	switch policy, name, _ := strings.Cut(spec.GetBalance(), "="); policy {
	case "", "p2c", "rr":
		if name != "" {
			return fmt.Errorf("%w: --balance %q: %s takes no name", errInvalid, spec.GetBalance(), policy)
		}
	case "sticky-cookie", "sticky-header":
		if !token.MatchString(name) {
			return fmt.Errorf("%w: --balance %q: want %s=NAME with a cookie or header name", errInvalid, spec.GetBalance(), policy)
		}
	default:
		return fmt.Errorf("%w: --balance %q: want p2c, rr, sticky-cookie=NAME or sticky-header=NAME", errInvalid, spec.GetBalance())
	}
	for _, sd := range spec.GetStatic() {
		p, dir := sd.GetUrlPrefix(), sd.GetDir()
		if !strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") {
			return fmt.Errorf("%w: --static %s=%s: the URL prefix must start and end with /", errInvalid, p, dir)
		}
		if dir == "" || path.IsAbs(dir) || path.Clean(dir) != strings.TrimSuffix(dir, "/") || strings.HasPrefix(path.Clean(dir), "..") {
			return fmt.Errorf("%w: --static %s=%s: the directory must be a clean path inside the release", errInvalid, p, dir)
		}
	}
	if d := spec.GetQueueTimeout().AsDuration(); d < 0 {
		return fmt.Errorf("%w: --queue-timeout %v must not be negative", errInvalid, d)
	}
	for _, h := range spec.GetHosts() {
		if !hostName.MatchString(h) {
			return fmt.Errorf("%w: --host %q: want a lower-case host name or *.domain", errInvalid, h)
		}
	}
	return nil
}

// Deploy runs the release on every live node at once and commits it as the
// app's release when all of them run it healthy. A node that fails keeps
// its previous release serving; the error names each failed node and why.
func (s *Service) Deploy(req *herdv1.DeployRequest, stream herdv1.Control_DeployServer) error {
	spec := req.GetSpec()
	if err := validateSpec(spec); err != nil {
		return toStatus(err)
	}
	if !release.ValidDigest(req.GetDigest()) {
		return toStatus(fmt.Errorf("%w: digest %q is not a sha256", errInvalid, req.GetDigest()))
	}
	if _, ok := s.Artifacts.Has(req.GetDigest()); !ok {
		return status.Errorf(codes.FailedPrecondition, "artifact %s was not uploaded to this front", req.GetDigest())
	}
	nodes := s.liveNodes()
	if len(nodes) == 0 {
		return status.Error(codes.FailedPrecondition, "no live nodes in the cluster to deploy to")
	}
	rel, changed, err := s.State.Prepare(spec, req.GetDigest())
	if err != nil {
		return toStatus(err)
	}
	if s.Prepare != nil {
		if err := s.Prepare(rel); err != nil {
			return status.Errorf(codes.FailedPrecondition, "deploy of %s %s refused by the front: %v", rel.GetApp(), rel.GetId(), err)
		}
	}
	timeout := s.DeployTimeout
	if d := req.GetTimeout().AsDuration(); d > 0 {
		timeout = d
	}
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	log := s.Log.With("app", rel.GetApp(), "release", rel.GetId())
	log.Info("deploying", "nodes", len(nodes), "digest", rel.GetDigest())

	type outcome struct {
		node string
		err  error
	}
	results := make(chan outcome, len(nodes))
	ctx := stream.Context()
	for _, n := range nodes {
		go func() {
			results <- outcome{n.Name, s.applyOn(ctx, n, rel, timeout)}
		}()
	}
	res := &herdv1.DeployResult{Release: rel, Changed: changed}
	var failed []string
	for range nodes {
		o := <-results
		nr := &herdv1.NodeResult{Node: o.node, Ok: o.err == nil}
		msg := "running " + rel.GetId()
		if o.err != nil {
			nr.Error = status.Convert(o.err).Message()
			msg = "failed: " + nr.Error
			failed = append(failed, o.node+": "+nr.Error)
			log.Warn("deploy failed on node", "node", o.node, "err", nr.Error)
		}
		res.Nodes = append(res.Nodes, nr)
		if err := stream.Send(&herdv1.DeployResponse{Event: &herdv1.DeployResponse_Progress{
			Progress: &herdv1.DeployProgress{Node: o.node, Message: msg},
		}}); err != nil {
			return err
		}
	}
	if len(failed) > 0 {
		return status.Errorf(codes.Aborted, "deploy of %s %s failed on %d of %d nodes (their previous release keeps serving): %s",
			rel.GetApp(), rel.GetId(), len(failed), len(nodes), strings.Join(failed, "; "))
	}
	if err := s.State.Commit(rel); err != nil {
		return toStatus(err)
	}
	if s.OnCommit != nil {
		s.OnCommit()
	}
	log.Info("deployed", "nodes", len(nodes), "changed", changed)
	return stream.Send(&herdv1.DeployResponse{Event: &herdv1.DeployResponse_Result{Result: res}})
}

func (s *Service) applyOn(ctx context.Context, n cluster.NodeView, rel *herdv1.Release, timeout time.Duration) error {
	c, err := s.Agents.Client(n.GRPCAddr)
	if err != nil {
		return err
	}
	// The node's own deadline is the health timeout; ours leaves it room
	// to fetch the artifact and answer.
	ctx, cancel := context.WithTimeout(ctx, timeout+30*time.Second)
	defer cancel()
	resp, err := c.Apply(ctx, &herdv1.ApplyRequest{
		Release:         rel,
		ArtifactSources: []string{s.Self},
		Timeout:         durationpb.New(timeout),
	})
	if err != nil {
		return err
	}
	// Route to the new endpoints now rather than after the next gossip round.
	s.Cluster.PutState(resp.GetState())
	return nil
}
