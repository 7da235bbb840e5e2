package control

import (
	"context"
	"fmt"
	"math"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/herd-run/herd/internal/cluster"
	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/release"
	"github.com/herd-run/herd/internal/state"
)

var (
	token     = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`)
	labelPart = regexp.MustCompile(`^[A-Za-z0-9._/-]{1,63}$`)
	hostName  = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
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
	for k, v := range spec.GetSelector() {
		if !labelPart.MatchString(k) || !labelPart.MatchString(v) {
			return fmt.Errorf("%w: --selector %s=%s: keys and values are letters, digits, '-', '_', '.' and '/'", errInvalid, k, v)
		}
	}
	for _, h := range spec.GetHosts() {
		if !hostName.MatchString(h) {
			return fmt.Errorf("%w: --host %q: want a lower-case host name or *.domain", errInvalid, h)
		}
	}
	return nil
}

// Deploy rolls the release out to the live, undrained nodes the app's
// selector picks, in batches (see rollout). A follower forwards the call
// to the Raft leader, which runs the rollout.
func (s *Service) Deploy(req *herdv1.DeployRequest, stream herdv1.Control_DeployServer) error {
	spec := req.GetSpec()
	if err := validateSpec(spec); err != nil {
		return toStatus(err)
	}
	if !release.ValidDigest(req.GetDigest()) {
		return toStatus(fmt.Errorf("%w: digest %q is not a sha256", errInvalid, req.GetDigest()))
	}
	if _, err := batchSize(req.GetBatch(), math.MaxInt); err != nil {
		return toStatus(err)
	}
	leader, ctx, self, err := s.leaderControl(stream.Context())
	if err != nil {
		return err
	}
	if !self {
		return s.forwardDeploy(ctx, leader, req, stream)
	}
	return s.rollout(ctx, plan{
		begin:      &herdv1.BeginRollout{Spec: spec, Digest: req.GetDigest(), Force: req.GetForce()},
		batch:      req.GetBatch(),
		minHealthy: req.GetMinHealthy().AsDuration(),
		deadline:   req.GetDeadline().AsDuration(),
		timeout:    req.GetTimeout().AsDuration(),
		autoRevert: !req.GetNoAutoRevert(),
	}, func(p *herdv1.DeployProgress, r *herdv1.DeployResult) error {
		if r != nil {
			return stream.Send(&herdv1.DeployResponse{Event: &herdv1.DeployResponse_Result{Result: r}})
		}
		return stream.Send(&herdv1.DeployResponse{Event: &herdv1.DeployResponse_Progress{Progress: p}})
	})
}

// selectNodes keeps the nodes whose labels hold every key=value of the
// selector.
func selectNodes(nodes []cluster.NodeView, selector map[string]string) []cluster.NodeView {
	var out []cluster.NodeView
	for _, n := range nodes {
		if matches(selector, n.State.GetLabels()) {
			out = append(out, n)
		}
	}
	return out
}

func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func formatLabels(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func (s *Service) applyOn(ctx context.Context, n cluster.NodeView, rel *herdv1.Release, sources []string, timeout time.Duration) error {
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
		ArtifactSources: sources,
		Timeout:         durationpb.New(timeout),
	})
	if err != nil {
		return err
	}
	// Route to the new endpoints now rather than after the next gossip round.
	s.Cluster.PutState(resp.GetState())
	return nil
}
