// Package agent is herd-node: it runs the workers of the apps assigned to
// this host, tells the cluster which of them are ready (gossip), and serves
// the Agent gRPC API that fronts call to apply a release.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/herd-run/herd/internal/certs"
	"github.com/herd-run/herd/internal/cli"
	"github.com/herd-run/herd/internal/cluster"
	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/pki"
	"github.com/herd-run/herd/internal/release"
	"github.com/herd-run/herd/internal/runfile"
)

// Run serves as a node until ctx ends, then stops gracefully: it withdraws
// its endpoints, gives fronts a moment to see that, stops its workers
// (SIGTERM, then SIGKILL after StopGrace), and leaves the cluster.
func Run(ctx context.Context, cfg Config) error {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Logger.With("node", cfg.Name)
	cred, workerUser, err := workerCredential(cfg)
	if err != nil {
		return err
	}
	// Workers (maybe another user) must reach releases/ inside; nothing
	// else in the data dir is readable by them (artifacts, state and logs
	// are 0700/0600).
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	if cred != nil {
		if err := os.Chmod(cfg.DataDir, 0o711); err != nil {
			return fmt.Errorf("--data-dir: %w", err)
		}
		if err := checkReachable(cfg.DataDir, workerUser); err != nil {
			return err
		}
	}
	keyFile := cfg.ClusterKeyFile
	if keyFile == "" {
		keyFile = filepath.Join(cfg.DataDir, "cluster.key")
	}
	keys, err := pki.ReadKeyring(keyFile)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("herd-node needs the cluster key: --cluster-key-file FILE, as the first front wrote it to its <data-dir>/cluster.key (%s does not exist)", keyFile)
	}
	if err != nil {
		return fmt.Errorf("--cluster-key-file: %w", err)
	}
	store, err := release.OpenStore(filepath.Join(cfg.DataDir, "artifacts"))
	if err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}

	gossipHost, _, _ := net.SplitHostPort(cfg.Gossip)
	grpcHost, _, _ := net.SplitHostPort(cfg.GRPC)
	host, err := cluster.AdvertiseIP(cfg.Advertise, gossipHost, grpcHost)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.GRPC)
	if err != nil {
		return fmt.Errorf("--grpc: %w", err)
	}
	defer lis.Close()
	grpcAddr := net.JoinHostPort(host, strconv.Itoa(lis.Addr().(*net.TCPAddr).Port))
	var adminLis net.Listener
	if cfg.Admin != "" {
		if adminLis, err = net.Listen("tcp", cfg.Admin); err != nil {
			return fmt.Errorf("--admin: %w", err)
		}
		defer adminLis.Close()
	}

	m := &manager{
		cfg:      cfg,
		log:      log,
		host:     host,
		ports:    newPortPool(host, cfg.PortLo, cfg.PortHi),
		store:    store,
		apps:     map[string]*appRun{},
		applied:  newApplied(),
		cred:     cred,
		applying: map[string]int{},
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	defer m.cancel()
	m.fetcher = func(ctx context.Context, sources []string, digest string) error {
		return release.Fetch(ctx, store, sources, digest, m.frontDial())
	}
	cl, err := cluster.New(cluster.Config{
		Name:      cfg.Name,
		Role:      herdv1.Role_ROLE_NODE,
		Bind:      cfg.Gossip,
		Advertise: host,
		GRPCAddr:  grpcAddr,
		Keys:      keys,
		Logger:    log,
	})
	if err != nil {
		return err
	}
	m.cl = cl
	m.loadDrained()
	if err := m.restore(); err != nil {
		log.Error("restore apps", "err", err)
	}
	m.publish()

	go m.watchMemory(m.ctx)
	go m.reportLoop(m.ctx)
	defer m.closeFrontConns()

	// Gossip first (it is how the node finds the fronts), then the
	// certificate, from a front, for proving the cluster key; then the
	// Agent API, which only fronts may call.
	joinCtx, stopJoin := context.WithCancel(ctx)
	var bg sync.WaitGroup
	joined := make(chan struct{})
	bg.Go(func() {
		defer close(joined)
		cluster.JoinLoop(joinCtx, cl, cfg.Join, log)
	})
	bundle, _, err := certs.Obtain(ctx, keys[0], pki.RoleNode, cfg.Name, []string{host}, cfg.DataDir, func() []string {
		var out []string
		for _, f := range cl.LiveFronts() {
			out = append(out, f.GRPCAddr)
		}
		return out
	}, log)
	if err != nil {
		stopJoin()
		bg.Wait()
		m.stopAll()
		cl.Close()
		return fmt.Errorf("certificate: %w", err)
	}
	opts, err := m.useCertificate(bundle)
	if err != nil {
		stopJoin()
		bg.Wait()
		m.stopAll()
		cl.Close()
		return err
	}
	srv := grpc.NewServer(opts...)
	herdv1.RegisterAgentServer(srv, &service{m: m})
	healthSvc := cli.NewHealth("herd.v1.Agent")
	healthSvc.Register(srv)
	defer healthSvc.Shutdown()
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(lis) }()
	addrs := map[string]string{"grpc": grpcAddr, "gossip": cl.GossipAddr()}
	if adminLis != nil {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collector{m})
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
		admin := &http.Server{Handler: healthSvc.AdminHandler(mux), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := admin.Serve(adminLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("admin: %w", err)
			}
		}()
		defer admin.Close()
		addrs["admin"] = adminLis.Addr().String()
	}

	if err := runfile.Write(cfg.DataDir, addrs); err != nil {
		log.Warn("write addresses file", "err", err)
	}
	log.Info("herd-node serving", "grpc", grpcAddr, "gossip", cl.GossipAddr(), "advertise", host, "worker_user", workerUser)

	bg.Go(func() {
		// Joined (or stopping): converge on the assignment.
		<-joined
		m.pullAssignment(joinCtx)
	})

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		log.Error("grpc server stopped", "err", err)
	case other := <-cl.Conflict():
		runErr = fmt.Errorf("another live member named %q gossips from %s: node names must be unique (--name)", cfg.Name, other)
	}
	stopJoin()
	bg.Wait()

	log.Info("herd-node stopping: withdrawing endpoints")
	healthSvc.Shutdown()
	cl.Leaving()
	// Once the fronts route elsewhere, the workers stop gracefully and
	// finish their requests in flight.
	m.withdraw()
	m.stopAll()
	srv.Stop()
	if err := cl.Leave(2 * time.Second); err != nil {
		log.Warn("leave cluster", "err", err)
	}
	runfile.Remove(cfg.DataDir)
	log.Info("herd-node stopped")
	return runErr
}

// useCertificate makes the node call fronts with its certificate and
// returns the Agent server's options: only fronts may call it.
func (m *manager) useCertificate(b *pki.Bundle) ([]grpc.ServerOption, error) {
	toFronts, err := certs.Dial(b, pki.RoleFront)
	if err != nil {
		return nil, err
	}
	m.setFrontDial(toFronts)
	pool, err := b.Pool()
	if err != nil {
		return nil, err
	}
	return (&certs.Policy{Pool: pool, Roles: map[string][]string{"/herd.v1.Agent/*": {pki.RoleFront}}}).ServerOptions(b)
}
