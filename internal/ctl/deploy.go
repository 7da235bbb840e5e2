package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/release"
)

type deployOptions struct {
	app, dir     string
	cmd          string
	workers      uint32
	concurrency  uint32
	hosts        []string
	path         string
	health       string
	env          []string
	secretEnv    []string
	timeout      time.Duration
	balance      string
	maxQueue     uint32
	queueTimeout time.Duration
	maxLifetime  time.Duration
	maxMemory    string
	stopTimeout  time.Duration
	static       []string
	cache        string
	buffering    string
	maxBody      string
	httpsRedir   bool
	hsts         bool
	rateLimit    float64
	rateBurst    uint32
	selector     []string
	force        bool
	batch        string
	minHealthy   time.Duration
	deadline     time.Duration
	noRevert     bool
	releaseCmd   string
}

func newDeployCmd(g *globals, stdio IO) *cobra.Command {
	o := &deployOptions{}
	cmd := &cobra.Command{
		Use:   "deploy APP DIR --cmd '...'",
		Short: "Pack DIR and run it as APP on every node",
		Long: `Pack DIR as a release artifact (tar.gz, named by its sha256), upload it
to a front unless the front already has it (the fronts copy it among
themselves), and run it on every node (or those --selector picks):
COMMAND runs as /bin/sh -c COMMAND in the release directory with HOST and
PORT to bind, plus HERD_APP, HERD_RELEASE, HERD_WORKER and HERD_NODE. Write
it in single quotes so that $PORT expands in the worker, not in your shell.
The deploy succeeds once every node runs the release healthy; a node that
fails keeps its previous release serving. One deploy of an app runs at a
time: another is refused while it runs, unless --force supersedes it.

With --batch, nodes move a batch at a time; each batch must be ready, and
stay healthy for --min-healthy, within --deadline. A failing batch stops the
rollout and moves the nodes already moved back to what they ran (unless
--no-auto-revert). --release-cmd runs once, on one node, with the new
release before any node moves. The exit status is the verdict.`,
		Example: `  herdctl deploy hello ./build --cmd 'exec ./hello' --workers 2 --host hello.localhost --health /healthz
  herdctl deploy shop ./build --cmd 'exec gunicorn -b $HOST:$PORT shop.wsgi' --release-cmd 'python manage.py migrate' \
      --batch 25% --min-healthy 10s --deadline 2m`,
		Args: exactArgs("APP", "DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.app, o.dir = args[0], args[1]
			return o.run(cmd.Context(), g, stdio)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.cmd, "cmd", "", "command each worker runs (required)")
	f.Uint32Var(&o.workers, "workers", 1, "worker processes per node")
	f.Uint32Var(&o.concurrency, "concurrency", 1, "requests one worker takes at once (1 for a sync worker; 0: no limit)")
	f.StringArrayVar(&o.hosts, "host", nil, "host name routed to the app, exact or *.domain (repeatable)")
	f.StringVar(&o.path, "path", "", "path prefix routed to the app (default: all paths)")
	f.StringVar(&o.health, "health", "/", "path that answers 2xx when a worker is ready")
	f.StringArrayVar(&o.env, "env", nil, "`K=V` in every worker's environment (repeatable)")
	f.StringArrayVar(&o.secretEnv, "secret-env", nil, "`K=V` in every worker's environment, kept secret: shown as <redacted> in status and history (repeatable)")
	f.DurationVar(&o.timeout, "timeout", time.Minute, "how long each node may take to run the release healthy")
	f.StringVar(&o.balance, "balance", "p2c", "how fronts pick a worker: p2c, rr, sticky-cookie=NAME or sticky-header=NAME")
	f.Uint32Var(&o.maxQueue, "queue", 1024, "requests a front keeps waiting when every worker is busy (then 503)")
	f.DurationVar(&o.queueTimeout, "queue-timeout", 30*time.Second, "how long a request may wait for a free worker (then 503)")
	f.DurationVar(&o.maxLifetime, "max-lifetime", 0, "replace a worker after this long, ±10% (a new one takes its place first); 0: never")
	f.StringVar(&o.maxMemory, "max-memory", "", "replace a worker whose processes use more resident memory than `SIZE` (e.g. 512M, 2G)")
	f.StringArrayVar(&o.static, "static", nil, "`/url/=dir/`: fronts serve the URL prefix from that directory of the release, not the app (repeatable)")
	f.StringVar(&o.buffering, "buffering", "on", "on: fronts hold whole request and response bodies so slow clients never hold a worker; off: pass them through")
	f.StringVar(&o.maxBody, "max-body", "16M", "largest request body fronts accept, `SIZE` (413 beyond)")
	f.BoolVar(&o.httpsRedir, "https-redirect", false, "fronts answer plain-HTTP requests with a redirect to HTTPS")
	f.Float64Var(&o.rateLimit, "rate-limit", 0, "requests per second each client address may make (0: no limit); beyond, 429")
	f.Uint32Var(&o.rateBurst, "rate-burst", 10, "requests a client may make at once above --rate-limit")
	f.BoolVar(&o.hsts, "hsts", false, "fronts send Strict-Transport-Security (one year) over HTTPS")
	f.StringVar(&o.cache, "cache", "off", "on: fronts cache the app's cacheable responses (Cache-Control, Expires)")
	f.StringArrayVar(&o.selector, "selector", nil, "`k=v[,k=v]`: run only on nodes whose --labels hold all of these (repeatable)")
	f.BoolVar(&o.force, "force", false, "supersede a deploy of the app that is in progress instead of being refused")
	f.StringVar(&o.batch, "batch", "", "move nodes in batches of `N` nodes or P% of them (default: all at once)")
	f.DurationVar(&o.minHealthy, "min-healthy", 0, "each batch must stay healthy this long before the next moves")
	f.DurationVar(&o.deadline, "deadline", 0, "how long a batch may take to be ready and stay healthy (default: --timeout)")
	f.BoolVar(&o.noRevert, "no-auto-revert", false, "when a batch fails, keep the nodes already moved on the new release")
	f.StringVar(&o.releaseCmd, "release-cmd", "", "command run once, on one node, in the new release before any node moves (migrations); if it fails nothing moves")
	f.DurationVar(&o.stopTimeout, "stop-timeout", 0, "how long a worker may take to stop after SIGTERM before it is killed (0: the node's default, 30s)")
	return cmd
}

func (o *deployOptions) spec() (*herdv1.AppSpec, error) {
	if strings.TrimSpace(o.cmd) == "" {
		return nil, usageError{errors.New("--cmd is required and must not be empty")}
	}
	env := map[string]string{}
	for _, kv := range o.env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("--env %q: want K=V", kv)}
		}
		env[k] = v
	}
	secret := map[string]string{}
	for _, kv := range o.secretEnv {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("--secret-env %q: want K=V", kv)}
		}
		if _, dup := env[k]; dup {
			return nil, usageError{fmt.Errorf("--secret-env %s: also given with --env", k)}
		}
		secret[k] = v
	}
	maxMemory, err := parseSize(o.maxMemory)
	if err != nil {
		return nil, usageError{fmt.Errorf("--max-memory %q: %w", o.maxMemory, err)}
	}
	var static []*herdv1.StaticDir
	for _, sv := range o.static {
		p, dir, ok := strings.Cut(sv, "=")
		if !ok || p == "" || dir == "" {
			return nil, usageError{fmt.Errorf("--static %q: want /url/=dir/", sv)}
		}
		static = append(static, &herdv1.StaticDir{UrlPrefix: p, Dir: strings.TrimSuffix(dir, "/")})
	}
	if o.cache != "on" && o.cache != "off" {
		return nil, usageError{fmt.Errorf("--cache %q: want on or off", o.cache)}
	}
	if o.buffering != "on" && o.buffering != "off" {
		return nil, usageError{fmt.Errorf("--buffering %q: want on or off", o.buffering)}
	}
	if o.rateLimit < 0 {
		return nil, usageError{fmt.Errorf("--rate-limit %v must not be negative", o.rateLimit)}
	}
	maxBody, err := parseSize(o.maxBody)
	if err != nil {
		return nil, usageError{fmt.Errorf("--max-body %q: %w", o.maxBody, err)}
	}
	selector := map[string]string{}
	for _, sel := range o.selector {
		for kv := range strings.SplitSeq(sel, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, usageError{fmt.Errorf("--selector %q: want k=v[,k=v]", sel)}
			}
			selector[k] = v
		}
	}
	hosts := make([]string, len(o.hosts))
	for i, h := range o.hosts {
		hosts[i] = strings.ToLower(h)
	}
	return &herdv1.AppSpec{
		Name:           o.app,
		Command:        o.cmd,
		Workers:        o.workers,
		Concurrency:    o.concurrency,
		Hosts:          hosts,
		PathPrefix:     o.path,
		HealthPath:     o.health,
		Env:            env,
		Balance:        o.balance,
		MaxQueue:       o.maxQueue,
		QueueTimeout:   durationpb.New(o.queueTimeout),
		MaxLifetime:    durationpb.New(o.maxLifetime),
		MaxMemory:      maxMemory,
		StopTimeout:    durationpb.New(o.stopTimeout),
		Static:         static,
		Cache:          o.cache == "on",
		BufferingOff:   o.buffering == "off",
		MaxBody:        maxBody,
		HttpsRedirect:  o.httpsRedir,
		Hsts:           o.hsts,
		RateLimit:      o.rateLimit,
		RateBurst:      o.rateBurst,
		Selector:       selector,
		ReleaseCommand: o.releaseCmd,
		SecretEnv:      secret,
	}, nil
}

func (o *deployOptions) run(ctx context.Context, g *globals, stdio IO) error {
	spec, err := o.spec()
	if err != nil {
		return err
	}
	if fi, err := os.Stat(o.dir); err != nil {
		return fmt.Errorf("release directory: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("release directory %s is not a directory", o.dir)
	}
	if _, err := g.setup(); err != nil { // before packing, which can take a while
		return err
	}
	art, err := os.CreateTemp("", "herd-artifact-*.tar.gz")
	if err != nil {
		return err
	}
	defer os.Remove(art.Name())
	defer art.Close()
	digest, size, err := release.Pack(o.dir, art)
	if err != nil {
		return fmt.Errorf("pack %s: %w", o.dir, err)
	}
	progress := stdio.Err
	if g.output == "json" {
		progress = io.Discard
	}
	return withFront(ctx, g, func(c herdv1.ControlClient) error {
		if err := upload(ctx, c, art, digest, size, progress); err != nil {
			return err
		}
		stream, err := c.Deploy(ctx, &herdv1.DeployRequest{
			Spec: spec, Digest: digest, Timeout: durationpb.New(o.timeout), Force: o.force,
			Batch: o.batch, MinHealthy: durationpb.New(o.minHealthy), Deadline: durationpb.New(o.deadline), NoAutoRevert: o.noRevert,
		})
		if err != nil {
			return err
		}
		r, err := follow(stream.Recv, progress)
		if err != nil {
			return err
		}
		return printDeploy(stdio.Out, g.output, r)
	})
}

// upload sends the artifact unless the front already holds it.
func upload(ctx context.Context, c herdv1.ControlClient, f *os.File, digest string, size int64, progress io.Writer) error {
	st, err := c.StatArtifact(ctx, &herdv1.StatArtifactRequest{Digest: digest})
	if err != nil {
		return err
	}
	if st.GetPresent() {
		fmt.Fprintf(progress, "artifact %s already on the front\n", digest[:12])
		return nil
	}
	stream, err := c.UploadArtifact(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&herdv1.UploadArtifactRequest{Msg: &herdv1.UploadArtifactRequest_Header{
		Header: &herdv1.ArtifactHeader{Digest: digest, Size: size},
	}}); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	buf := make([]byte, 256<<10)
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			if err := stream.Send(&herdv1.UploadArtifactRequest{Msg: &herdv1.UploadArtifactRequest_Chunk{Chunk: buf[:n]}}); err != nil {
				// The server's reason comes with CloseAndRecv.
				break
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return err
	}
	fmt.Fprintf(progress, "uploaded artifact %s (%d bytes)\n", digest[:12], size)
	return nil
}

func printDeploy(w io.Writer, format string, r *herdv1.DeployResult) error {
	if format == "json" {
		return printJSON(w, r)
	}
	rel := r.GetRelease()
	verb := "deployed"
	if !r.GetChanged() {
		verb = "unchanged, running"
	}
	_, err := fmt.Fprintf(w, "%s %s %s on %d node(s) (artifact %s)\n", rel.GetApp(), verb, rel.GetId(), len(r.GetNodes()), rel.GetDigest()[:12])
	return err
}

// parseSize reads a byte count: a number with an optional K, M, G or T
// suffix (powers of 1024; a trailing "B" or "iB" is allowed). "" is 0.
func parseSize(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := uint64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseUint(t, 10, 64)
	if err != nil || v == 0 {
		return 0, errors.New("want a size such as 512M or 2G")
	}
	return v * mult, nil
}
