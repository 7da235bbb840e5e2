// Package front is herd-front: the proxy that takes client requests and the
// control plane that takes herdctl's commands, wired to the cluster's gossip.
package front

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

	herdcerts "github.com/herd-run/herd/internal/certs"
	"github.com/herd-run/herd/internal/cli"
	"github.com/herd-run/herd/internal/cluster"
	"github.com/herd-run/herd/internal/control"
	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/httpguard"
	"github.com/herd-run/herd/internal/pki"
	"github.com/herd-run/herd/internal/proxy"
	"github.com/herd-run/herd/internal/release"
	"github.com/herd-run/herd/internal/runfile"
	"github.com/herd-run/herd/internal/state"
)

// Config is a front's configuration; cmd/front fills it from flags.
type Config struct {
	DataDir string
	Name    string
	HTTP    string // client listener host:port
	// HTTPS, if set, is the TLS listener host:port; certificates come from
	// TLSCerts and TLSDir, chosen by SNI, reloaded on Reload.
	HTTPS    string
	TLSCerts []CertPair
	TLSDir   string
	// Reload, if set, delivers reload requests (SIGHUP): certificates are
	// read again without dropping connections.
	Reload    <-chan struct{}
	GRPC      string // Control API host:port
	Admin     string // /healthz host:port; empty: none
	Gossip    string
	Advertise string
	Join      []string
	// Raft is the listener host:port of the fronts' Raft transport.
	Raft string
	// RaftVoters is how many fronts vote (default 3); RaftRemoveAfter is
	// how long a front may be gone before the leader removes it from the
	// Raft configuration (default 10 min).
	RaftVoters      int
	RaftRemoveAfter time.Duration
	// ClusterKeyFile holds the cluster key(s) that encrypt gossip; default
	// <data-dir>/cluster.key, made by the first front when it bootstraps.
	ClusterKeyFile string
	// DeployTimeout bounds how long nodes may take to run a release healthy.
	DeployTimeout time.Duration
	// AccessLog is "off", "stdout" or a file path; AccessLogFormat is
	// "combined" or "json".
	AccessLog       string
	AccessLogFormat string
	// TrustedProxies may set X-Forwarded-*, Forwarded and X-Request-ID.
	TrustedProxies []netip.Prefix
	// ShutdownTimeout bounds how long in-flight requests may take to
	// finish on SIGTERM (default 30 s).
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
}

// Validate rejects a config that cannot work, naming the flag at fault.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("--data-dir is required")
	}
	if c.Name == "" {
		return errors.New("--name is required (the host name is unknown)")
	}
	for _, f := range []struct{ flag, addr string }{{"--http", c.HTTP}, {"--grpc", c.GRPC}, {"--gossip", c.Gossip}, {"--raft", c.Raft}} {
		if _, _, err := net.SplitHostPort(f.addr); err != nil {
			return fmt.Errorf("%s %q: want HOST:PORT", f.flag, f.addr)
		}
	}
	if c.Admin != "" {
		if _, _, err := net.SplitHostPort(c.Admin); err != nil {
			return fmt.Errorf("--admin %q: want HOST:PORT", c.Admin)
		}
	}
	if c.HTTPS != "" {
		if _, _, err := net.SplitHostPort(c.HTTPS); err != nil {
			return fmt.Errorf("--https %q: want HOST:PORT", c.HTTPS)
		}
		if len(c.TLSCerts) == 0 && c.TLSDir == "" {
			return errors.New("--https needs --tls-cert and --tls-key, or --tls-dir")
		}
	} else if len(c.TLSCerts) > 0 || c.TLSDir != "" {
		return errors.New("--tls-cert/--tls-dir need --https")
	}
	if c.AccessLogFormat != "" && c.AccessLogFormat != "combined" && c.AccessLogFormat != "json" {
		return fmt.Errorf("--access-log-format %q: want combined or json", c.AccessLogFormat)
	}
	return nil
}

// openAccessLog returns where the access log goes (nil: nowhere) and how
// to close it.
func openAccessLog(dest string) (io.Writer, func(), error) {
	switch dest {
	case "", "off":
		return nil, func() {}, nil
	case "stdout", "-":
		return os.Stdout, func() {}, nil
	}
	f, err := os.OpenFile(dest, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("--access-log: %w", err)
	}
	return f, func() { f.Close() }, nil
}

// Run serves as a front until ctx ends, then stops gracefully: it stops
// accepting, in-flight requests finish and WebSockets get a closing frame
// (all within ShutdownTimeout), then it leaves the cluster.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Name == "" {
		if h, err := os.Hostname(); err == nil {
			cfg.Name = h + "-front"
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Logger.With("front", cfg.Name)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	keys, err := clusterKeys(cfg, log)
	if err != nil {
		return err
	}
	artifacts, err := release.OpenStore(filepath.Join(cfg.DataDir, "artifacts"))
	if err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}

	var lc net.ListenConfig
	httpLis, err := lc.Listen(ctx, "tcp", cfg.HTTP)
	if err != nil {
		return fmt.Errorf("--http: %w", err)
	}
	defer httpLis.Close()
	grpcLis, err := lc.Listen(ctx, "tcp", cfg.GRPC)
	if err != nil {
		return fmt.Errorf("--grpc: %w", err)
	}
	defer grpcLis.Close()
	raftLis, err := lc.Listen(ctx, "tcp", cfg.Raft)
	if err != nil {
		return fmt.Errorf("--raft: %w", err)
	}
	defer raftLis.Close()
	var httpsLis net.Listener
	var certs *certStore
	if cfg.HTTPS != "" {
		if certs, err = newCertStore(cfg.TLSCerts, cfg.TLSDir); err != nil {
			return err
		}
		if httpsLis, err = lc.Listen(ctx, "tcp", cfg.HTTPS); err != nil {
			return fmt.Errorf("--https: %w", err)
		}
		defer httpsLis.Close()
	}
	var adminLis net.Listener
	if cfg.Admin != "" {
		if adminLis, err = lc.Listen(ctx, "tcp", cfg.Admin); err != nil {
			return fmt.Errorf("--admin: %w", err)
		}
		defer adminLis.Close()
	}

	gossipHost, _, _ := net.SplitHostPort(cfg.Gossip)
	grpcHost, _, _ := net.SplitHostPort(cfg.GRPC)
	host, err := cluster.AdvertiseIP(cfg.Advertise, gossipHost, grpcHost)
	if err != nil {
		return err
	}
	grpcAddr := net.JoinHostPort(host, strconv.Itoa(grpcLis.Addr().(*net.TCPAddr).Port))
	raftAddr := net.JoinHostPort(host, strconv.Itoa(raftLis.Addr().(*net.TCPAddr).Port))

	accessLog, closeLog, err := openAccessLog(cfg.AccessLog)
	if err != nil {
		return err
	}
	defer closeLog()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	tmp := filepath.Join(cfg.DataDir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	httpsPort := 0
	if httpsLis != nil {
		httpsPort = httpsLis.Addr().(*net.TCPAddr).Port
	}
	px := proxy.New(proxy.Config{
		HTTPSPort:       httpsPort,
		TempDir:         tmp,
		Logger:          log,
		TrustedProxies:  cfg.TrustedProxies,
		AccessLog:       accessLog,
		AccessLogFormat: cfg.AccessLogFormat,
		Metrics:         proxy.NewMetrics(reg),
	})
	reg.MustRegister(px.Collector())
	agents := &control.Agents{}
	defer agents.Close()
	// Gossip may call refresh before cluster.New has returned.
	var clp atomic.Pointer[cluster.Cluster]
	acks := newAcker(cfg.Name, agents, log)
	files := newReleaseFiles(cfg.DataDir, artifacts, log)
	defer files.close()
	var refreshMu sync.Mutex
	var stp atomic.Pointer[state.Store] // set once the front has its certificate
	refresh := func() {
		cl, st := clp.Load(), stp.Load()
		if cl == nil || st == nil {
			return
		}
		// One rebuild at a time, so an older table never replaces a newer
		// one, and acks follow the table actually in place.
		refreshMu.Lock()
		defer refreshMu.Unlock()
		nodes := cl.Nodes()
		px.SetRoutes(routes(st.List(), nodes, files, st.Drained(), st.Routable()))
		acks.applied(nodes)
	}
	files.onReady = refresh
	// The desired state changes on Raft's goroutine; routes are rebuilt on
	// another, coalescing bursts of changes.
	stateChanged := make(chan struct{}, 1)
	stateCtx, stopState := context.WithCancel(context.Background())
	defer stopState()
	go func() {
		for {
			select {
			case <-stateCtx.Done():
				return
			case <-stateChanged:
				refresh()
			}
		}
	}()
	cl, err := cluster.New(cluster.Config{
		Name:      cfg.Name,
		Role:      herdv1.Role_ROLE_FRONT,
		Bind:      cfg.Gossip,
		Advertise: host,
		GRPCAddr:  grpcAddr,
		RaftAddr:  raftAddr,
		Keys:      keys,
		Logger:    log,
		Fetch:     agents.FetchState,
		OnChange:  func() { refresh() },
	})
	if err != nil {
		return err
	}
	clp.Store(cl)

	// Gossip first (it is how a joining front finds the others), then the
	// certificate: the first front makes the cluster CA, the others get
	// one from a front by proving they hold the cluster key.
	joinCtx, stopJoin := context.WithCancel(ctx)
	joined := make(chan struct{})
	go func() {
		defer close(joined)
		cluster.JoinLoop(joinCtx, cl, cfg.Join, log)
	}()
	defer func() { stopJoin(); <-joined }()
	var bundle *pki.Bundle
	var ca *pki.CA
	if len(cfg.Join) == 0 {
		bundle, ca, err = herdcerts.Bootstrap(cfg.DataDir, cfg.Name, []string{host})
	} else {
		bundle, ca, err = herdcerts.Obtain(ctx, keys[0], pki.RoleFront, cfg.Name, []string{host}, cfg.DataDir, func() []string {
			var out []string
			for _, m := range cl.LiveFronts() {
				if m.Name != cfg.Name {
					out = append(out, m.GRPCAddr)
				}
			}
			return out
		}, log)
	}
	if err != nil {
		cl.Close()
		return fmt.Errorf("certificate: %w", err)
	}
	toNodes, err := herdcerts.Dial(bundle, pki.RoleNode)
	if err != nil {
		return err
	}
	toFronts, err := herdcerts.Dial(bundle, pki.RoleFront)
	if err != nil {
		return err
	}
	agents.SetCredentials(toNodes, toFronts)
	raftStream, err := state.TLSStream(raftLis, raftAddr, bundle)
	if err != nil {
		return err
	}
	// The first front (started without --join) makes a one-voter cluster;
	// the others wait for the leader to add them when gossip shows them.
	st, err := state.Open(state.Config{
		Dir:       cfg.DataDir,
		ID:        cfg.Name,
		Stream:    raftStream,
		Bootstrap: len(cfg.Join) == 0,
		Logger:    log,
		OnChange: func() {
			select {
			case stateChanged <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	stateOpen := true
	defer func() {
		if stateOpen {
			st.Close()
		}
	}()
	stp.Store(st)
	refresh()
	if len(cfg.Join) == 0 {
		if err := writeAdminConfig(cfg.DataDir, ca, grpcAddr, log); err != nil {
			return err
		}
	}

	svc := &control.Service{
		Log:           log,
		Name:          cfg.Name,
		CA:            ca,
		MaxVoters:     cfg.RaftVoters,
		RemoveAfter:   cfg.RaftRemoveAfter,
		State:         st,
		Artifacts:     artifacts,
		Cluster:       cl,
		Agents:        agents,
		Self:          grpcAddr,
		DeployTimeout: cfg.DeployTimeout,
		OnCommit:      refresh,
		// The front serves static files from its own copy of a release:
		// unpacked before any node moves, so the files are there when
		// traffic shifts (and a bad artifact fails the deploy here).
		Prepare: func(rel *herdv1.Release) error {
			if len(rel.GetSpec().GetStatic()) == 0 {
				return nil
			}
			return files.ensure(rel.GetDigest())
		},
	}
	policy := controlPolicy(bundle)
	policy.Revoked = st.Revoked
	opts, err := policy.ServerOptions(bundle)
	if err != nil {
		return err
	}
	gs := grpc.NewServer(opts...)
	herdv1.RegisterControlServer(gs, svc)
	healthSvc := cli.NewHealth("herd.v1.Control")
	healthSvc.Register(gs)
	// grpcurl and friends can list and call the API (operators only).
	reflection.Register(gs)
	defer healthSvc.Shutdown()
	herdv1.RegisterJoinServer(gs, &herdcerts.Service{Keys: keys, CA: ca, Log: log})

	// Requests Go's parser would take but nginx refuses as smuggling risks
	// (Content-Length with Transfer-Encoding, duplicate Content-Length,
	// obs-fold, bare LF) get 400 and a closed connection. Plain HTTP only:
	// over TLS the guard would see ciphertext, and HTTP/2 has no such
	// framing ambiguity.
	hs := &http.Server{
		Handler:     httpguard.Handler(px),
		ConnContext: httpguard.ConnContext,
		// Slowloris: the whole request head within 10 s, at most 64 KiB
		// of it (431 beyond).
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       75 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 4)
	go func() { errc <- serveErr("grpc", gs.Serve(grpcLis)) }()
	go func() { errc <- serveErr("http", hs.Serve(httpguard.Listener(httpLis))) }()
	addrs := map[string]string{"http": httpLis.Addr().String(), "grpc": grpcAddr, "gossip": cl.GossipAddr(), "raft": raftAddr}
	var hss *http.Server
	if httpsLis != nil {
		hss = &http.Server{
			Handler:           px,
			TLSConfig:         certs.tlsConfig(),
			ReadHeaderTimeout: hs.ReadHeaderTimeout,
			MaxHeaderBytes:    hs.MaxHeaderBytes,
			IdleTimeout:       hs.IdleTimeout,
			ErrorLog:          hs.ErrorLog,
		}
		go func() { errc <- serveErr("https", hss.ServeTLS(httpsLis, "", "")) }()
		addrs["https"] = httpsLis.Addr().String()
		if cfg.Reload != nil {
			go func() {
				for range cfg.Reload {
					if err := certs.reload(); err != nil {
						log.Error("reload certificates: keeping the old ones", "err", err)
					} else {
						log.Info("certificates reloaded")
					}
				}
			}()
		}
	}
	var admin *http.Server
	if adminLis != nil {
		admin = &http.Server{Handler: healthSvc.AdminHandler(adminMux(reg)), ReadHeaderTimeout: 5 * time.Second}
		go func() { errc <- serveErr("admin", admin.Serve(adminLis)) }()
		addrs["admin"] = adminLis.Addr().String()
	}
	if err := runfile.Write(cfg.DataDir, addrs); err != nil {
		log.Warn("write addresses file", "err", err)
	}
	log.Info("herd-front serving", "http", addrs["http"], "grpc", grpcAddr, "gossip", addrs["gossip"], "admin", addrs["admin"])

	ackCtx, stopAcks := context.WithCancel(context.Background())
	defer stopAcks()
	go acks.run(ackCtx)
	// The leader's duties run while this front leads.
	go func() {
		stopLeading := func() {}
		defer func() { stopLeading() }()
		for {
			select {
			case <-stateCtx.Done():
				return
			case leading := <-st.LeaderCh():
				stopLeading()
				stopLeading = func() {}
				if leading {
					lctx, cancel := context.WithCancel(stateCtx)
					stopLeading = cancel
					go svc.RunLeader(lctx)
				}
			}
		}
	}()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		log.Error("listener failed", "err", runErr)
	case other := <-cl.Conflict():
		runErr = fmt.Errorf("another live member named %q gossips from %s: member names must be unique (--name)", cfg.Name, other)
	}
	stopJoin()
	<-joined

	log.Info("herd-front stopping")
	healthSvc.Shutdown() // probes see NOT_SERVING while requests drain
	cl.Leaving()
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Shutdown does not see upgraded connections: the proxy tells the
	// WebSocket clients itself, while the other requests drain.
	wsClosed := make(chan struct{})
	go func() { px.CloseWebSockets(shutCtx); close(wsClosed) }()
	if err := hs.Shutdown(shutCtx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	if hss != nil {
		if err := hss.Shutdown(shutCtx); err != nil {
			log.Warn("https shutdown", "err", err)
		}
	}
	<-wsClosed
	if admin != nil {
		admin.Close()
	}
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-shutCtx.Done():
		gs.Stop()
	}
	// A leader hands over first, so writes go on without an election.
	stopState()
	if err := st.Close(); err != nil {
		log.Warn("raft shutdown", "err", err)
	}
	stateOpen = false
	if err := cl.Leave(2 * time.Second); err != nil {
		log.Warn("leave cluster", "err", err)
	}
	runfile.Remove(cfg.DataDir)
	log.Info("herd-front stopped")
	return runErr
}

// clusterKeys reads the cluster key file. The first front (no --join, no
// key file given) makes the key when there is none yet.
func clusterKeys(cfg Config, log *slog.Logger) ([]pki.ClusterKey, error) {
	path := cfg.ClusterKeyFile
	if path == "" {
		path = filepath.Join(cfg.DataDir, "cluster.key")
	}
	keys, err := pki.ReadKeyring(path)
	if errors.Is(err, os.ErrNotExist) && cfg.ClusterKeyFile == "" && len(cfg.Join) == 0 {
		k, kerr := pki.NewClusterKey()
		if kerr == nil {
			kerr = pki.WriteClusterKeyFile(path, k)
		}
		if kerr != nil {
			return nil, fmt.Errorf("make the cluster key: %w", kerr)
		}
		log.Info("made the cluster key: every node and front that joins needs it (--cluster-key-file)", "file", path)
		keys = []pki.ClusterKey{k}
	} else if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("--cluster-key-file %s does not exist: a front that joins needs the key the first front wrote to its <data-dir>/cluster.key", path)
	} else if err != nil {
		return nil, fmt.Errorf("--cluster-key-file: %w", err)
	}
	return keys, nil
}

func serveErr(what string, err error) error {
	if err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

func adminMux(reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// Profiles, as every Go service offers them: the admin listener is for
	// operators (loopback by default).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	return mux
}

// routes builds the routing table from the desired state (which app owns
// which hosts, which nodes are drained, which apps each node is assigned)
// and gossip (which endpoints are ready). A node's endpoints count only on
// the node's own address and only for apps assigned to it, so a node
// cannot claim traffic for another host or app; a drained node gets none.
func routes(apps []*herdv1.Release, nodes []cluster.NodeView, files *releaseFiles, drained map[string]bool, routable func(node, app string) bool) []proxy.Route {
	eps := map[string][]proxy.Endpoint{}
	running := map[string][]string{} // app -> digests live nodes run
	for _, n := range nodes {
		if n.Member.State != herdv1.MemberState_MEMBER_STATE_ALIVE || n.Leaving || n.State == nil {
			continue
		}
		for _, a := range n.State.GetApps() {
			if d := a.GetDigest(); d != "" && !slices.Contains(running[a.GetApp()], d) {
				running[a.GetApp()] = append(running[a.GetApp()], d)
			}
			if drained[n.Name] || n.State.GetDrained() || !routable(n.Name, a.GetApp()) {
				continue
			}
			for _, e := range a.GetEndpoints() {
				if h, _, err := net.SplitHostPort(e.GetAddress()); err == nil && h == n.Addr {
					eps[a.GetApp()] = append(eps[a.GetApp()], proxy.Endpoint{Addr: e.GetAddress(), Node: n.Name, Worker: e.GetWorker(), Release: a.GetRelease()})
				}
			}
		}
	}
	var out []proxy.Route
	for _, rel := range apps {
		spec := rel.GetSpec()
		var static []proxy.StaticMount
		if len(spec.GetStatic()) > 0 {
			digests := []string{rel.GetDigest()}
			for _, d := range running[rel.GetApp()] {
				if d != rel.GetDigest() {
					digests = append(digests, d)
				}
			}
			static = files.mounts(spec, digests)
		}
		out = append(out, proxy.Route{
			Static:        static,
			Cache:         spec.GetCache(),
			NoBuffering:   spec.GetBufferingOff(),
			MaxBody:       int64(spec.GetMaxBody()),
			HTTPSRedirect: spec.GetHttpsRedirect(),
			HSTS:          spec.GetHsts(),
			RateLimit:     spec.GetRateLimit(),
			RateBurst:     int(spec.GetRateBurst()),
			App:           rel.GetApp(),
			Hosts:         spec.GetHosts(),
			Prefix:        spec.GetPathPrefix(),
			Endpoints:     eps[rel.GetApp()],
			Balance:       spec.GetBalance(),
			Concurrency:   int(spec.GetConcurrency()),
			MaxQueue:      int(spec.GetMaxQueue()),
			QueueTimeout:  spec.GetQueueTimeout().AsDuration(),
		})
	}
	return out
}
