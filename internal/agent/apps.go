package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/herd-run/herd/internal/cluster"
	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/logfile"
	"github.com/herd-run/herd/internal/release"
	"github.com/herd-run/herd/internal/state"
	"github.com/herd-run/herd/internal/supervisor"
)

// errInvalid marks a request that can never succeed as sent.
var errInvalid = errors.New("invalid request")

// reservedEnv are the variables herd sets for every worker; a spec may not
// override them.
var reservedEnv = []string{"HOST", "PORT", "HERD_APP", "HERD_RELEASE", "HERD_WORKER", "HERD_NODE"}

// validateRelease checks what a node needs of a release before it spends
// any work on it.
func validateRelease(rel *herdv1.Release) error {
	spec := rel.GetSpec()
	switch {
	case !state.ValidAppName(rel.GetApp()):
		return fmt.Errorf("%w: app name %q: want a DNS label (a-z, 0-9, '-')", errInvalid, rel.GetApp())
	case spec.GetName() != rel.GetApp():
		return fmt.Errorf("%w: spec names app %q, release names %q", errInvalid, spec.GetName(), rel.GetApp())
	case rel.GetId() == "":
		return fmt.Errorf("%w: empty release id", errInvalid)
	case !release.ValidDigest(rel.GetDigest()):
		return fmt.Errorf("%w: artifact digest %q is not a sha256", errInvalid, rel.GetDigest())
	case strings.TrimSpace(spec.GetCommand()) == "":
		return fmt.Errorf("%w: empty command", errInvalid)
	case spec.GetWorkers() < 1:
		return fmt.Errorf("%w: workers must be at least 1", errInvalid)
	case !strings.HasPrefix(spec.GetHealthPath(), "/"):
		return fmt.Errorf("%w: health path %q must start with /", errInvalid, spec.GetHealthPath())
	}
	for k := range spec.GetEnv() {
		for _, r := range reservedEnv {
			if k == r {
				return fmt.Errorf("%w: env %s is set by herd and cannot be overridden", errInvalid, k)
			}
		}
	}
	return nil
}

// slot is one worker of an app on this node.
type slot struct {
	index   int
	port    int
	release string
	w       *supervisor.Worker
	log     io.Closer
	recycle *time.Timer // max_lifetime; nil without one

	replacing atomic.Bool // a replacement is under way
	retiring  atomic.Bool // replaced; stopping once fronts route without it

	mu      sync.Mutex
	noteTxt string
}

func (s *slot) setNote(n string) {
	s.mu.Lock()
	s.noteTxt = n
	s.mu.Unlock()
}

func (s *slot) note() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.noteTxt
}

// appRun is what the node runs of one app: one release's workers.
type appRun struct {
	rel      *herdv1.Release
	slots    []*slot
	retiring []*slot // replaced workers still stopping
	lastErr  string
}

// manager runs the node's apps. Apply calls for one app are serialized;
// different apps proceed in parallel.
type manager struct {
	cfg     Config
	log     *slog.Logger
	host    string // advertise IP: workers bind it
	cl      *cluster.Cluster
	ports   *portPool
	store   *release.Store
	fetcher func(ctx context.Context, sources []string, digest string) error
	cred    *syscall.Credential // workers' user; nil: herd-node's own

	applyMu sync.Map // app -> *sync.Mutex

	mu   sync.Mutex
	apps map[string]*appRun
	// drained is "" or, for a drained node, "stop" or "keep" (workers).
	drained string
	drainMu sync.Mutex // one drain or undrain at a time

	applied *applied
	bg      sync.WaitGroup // replacements and retiring workers
	// ctx ends when the node starts shutting down: no more replacements.
	ctx    context.Context
	cancel context.CancelFunc

	applying map[string]int // digest -> applies using it now (guarded by mu)
	fronts   frontConns
	histMu   sync.Mutex
	history  map[string][]string // app -> recent digests, newest first
}

func (m *manager) appLock(app string) *sync.Mutex {
	mu, _ := m.applyMu.LoadOrStore(app, &sync.Mutex{})
	return mu.(*sync.Mutex)
}

// apply runs rel on this node: new workers start, must all pass the health
// check, are advertised, and only then are the previous release's workers
// retired. On failure the new workers are stopped and the previous ones keep
// serving.
func (m *manager) apply(ctx context.Context, rel *herdv1.Release, sources []string) error {
	if err := validateRelease(rel); err != nil {
		return err
	}
	if m.drainMode() == "stop" {
		return fmt.Errorf("node %s is drained: undrain it to run %s %s", m.cfg.Name, rel.GetApp(), rel.GetId())
	}
	mu := m.appLock(rel.GetApp())
	mu.Lock()
	defer mu.Unlock()

	m.mu.Lock()
	cur := m.apps[rel.GetApp()]
	same := cur != nil && proto.Equal(cur.rel, rel) && len(cur.slots) == int(rel.GetSpec().GetWorkers())
	scale := cur != nil && !same && sameButWorkers(cur.rel, rel)
	m.mu.Unlock()
	if same {
		return nil
	}
	if scale {
		return m.scale(ctx, cur, rel)
	}

	log := m.log.With("app", rel.GetApp(), "release", rel.GetId())
	defer m.holdRelease(rel.GetDigest())()
	dir, err := m.releaseDir(ctx, rel.GetDigest(), sources)
	if err != nil {
		return m.failed(rel.GetApp(), err)
	}
	slots, err := m.startSlots(rel, dir)
	if err != nil {
		return m.failed(rel.GetApp(), err)
	}
	if err := m.waitReady(ctx, slots); err != nil {
		m.stopSlots(slots)
		return m.failed(rel.GetApp(), err)
	}

	m.mu.Lock()
	old := m.apps[rel.GetApp()]
	m.apps[rel.GetApp()] = &appRun{rel: proto.CloneOf(rel), slots: slots}
	m.mu.Unlock()
	st := m.publish()
	if err := m.save(); err != nil {
		log.Error("save node state", "err", err)
	}
	log.Info("release running", "workers", len(slots))
	if old != nil {
		// Answer only once every front routes by the new endpoints alone
		// (at most AckWait): after a deploy's verdict no request reaches
		// the old release. The old workers then stop in the background.
		m.awaitFronts(st.GetGeneration())
		m.bg.Go(func() { m.stopSlots(old.slots) })
	}
	m.remember(rel.GetApp(), rel.GetDigest())
	return nil
}

func (m *manager) failed(app string, err error) error {
	m.mu.Lock()
	if cur := m.apps[app]; cur != nil {
		cur.lastErr = err.Error()
	}
	m.mu.Unlock()
	m.publish()
	return err
}

// holdRelease keeps retention from pruning a release while it is being
// fetched, unpacked or used; call the returned func when done.
func (m *manager) holdRelease(digest string) func() {
	m.mu.Lock()
	m.applying[digest]++
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		m.applying[digest]--
		m.mu.Unlock()
	}
}

// releaseDir returns the unpacked release, fetching and unpacking the
// artifact if this node does not have it yet.
func (m *manager) releaseDir(ctx context.Context, digest string, sources []string) (string, error) {
	dir := m.releasePath(digest)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	if _, ok := m.store.Has(digest); !ok {
		if err := m.fetcher(ctx, sources, digest); err != nil {
			return "", err
		}
	}
	f, _, err := m.store.Open(digest)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	err = release.Unpack(f, dir, release.DefaultLimits())
	if err != nil && !errors.Is(err, os.ErrExist) {
		if _, statErr := os.Stat(dir); statErr == nil {
			// Another apply unpacked the same artifact meanwhile.
			return dir, nil
		}
		return "", fmt.Errorf("unpack artifact %s: %w", short(digest), err)
	}
	return dir, nil
}

func (m *manager) releasePath(digest string) string {
	return filepath.Join(m.cfg.DataDir, "releases", digest)
}

// readyTimeout is how long a replacement worker may take to get ready.
func (m *manager) readyTimeout(*herdv1.Release) time.Duration {
	return defaultApplyTimeout
}

func (m *manager) startSlots(rel *herdv1.Release, dir string) ([]*slot, error) {
	return m.startRange(rel, dir, 1, int(rel.GetSpec().GetWorkers()))
}

// startRange starts the slots numbered from..to.
func (m *manager) startRange(rel *herdv1.Release, dir string, from, to int) ([]*slot, error) {
	slots := make([]*slot, 0, to-from+1)
	for i := from; i <= to; i++ {
		s, err := m.startSlot(rel, dir, i)
		if err != nil {
			m.stopSlots(slots)
			return nil, err
		}
		slots = append(slots, s)
	}
	return slots, nil
}

func (m *manager) startSlot(rel *herdv1.Release, dir string, index int) (*slot, error) {
	port, err := m.ports.get()
	if err != nil {
		return nil, err
	}
	logDir := filepath.Join(m.cfg.DataDir, "logs", rel.GetApp())
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		m.ports.put(port)
		return nil, err
	}
	logFile, err := logfile.Open(m.logPath(rel.GetApp(), index), logfile.DefaultMaxSize, logfile.DefaultKeep)
	if err != nil {
		m.ports.put(port)
		return nil, err
	}
	spec := rel.GetSpec()
	addr := net.JoinHostPort(m.host, strconv.Itoa(port))
	grace := m.cfg.StopGrace
	if d := spec.GetStopTimeout().AsDuration(); d > 0 {
		grace = d
	}
	s := &slot{index: index, port: port, release: rel.GetId(), log: logFile}
	app := rel.GetApp()
	sick := func(reason string) {
		if s.replacing.CompareAndSwap(false, true) {
			m.replace(app, s, reason)
		}
	}
	s.w = supervisor.StartWorker(supervisor.WorkerConfig{
		ID: fmt.Sprintf("%s-%s-%d", rel.GetApp(), rel.GetId(), index),
		Process: supervisor.ProcessConfig{
			Command:    spec.GetCommand(),
			Dir:        dir,
			Env:        m.workerEnv(rel, index, port),
			Output:     logFile,
			Shim:       m.cfg.Shim,
			Credential: m.cred,
		},
		HealthURL: "http://" + addr + spec.GetHealthPath(),
		StopGrace: grace,
		OnChange:  func(bool) { m.publish() },
		OnSick:    sick,
		Logger:    m.log.With("app", rel.GetApp(), "release", rel.GetId(), "worker", index),
	})
	if d := lifetime(spec.GetMaxLifetime().AsDuration()); d > 0 {
		s.recycle = time.AfterFunc(d, func() { sick(fmt.Sprintf("max lifetime %v reached", spec.GetMaxLifetime().AsDuration())) })
	}
	return s, nil
}

// workerEnv is all a worker sees of the node: no variable of herd-node's own
// environment reaches it but PATH, so keys and credentials cannot leak.
func (m *manager) workerEnv(rel *herdv1.Release, index, port int) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	env := []string{
		"PATH=" + path,
		"LANG=C.UTF-8",
		"HOST=" + m.host,
		"PORT=" + strconv.Itoa(port),
		"HERD_APP=" + rel.GetApp(),
		"HERD_RELEASE=" + rel.GetId(),
		"HERD_WORKER=" + strconv.Itoa(index),
		"HERD_NODE=" + m.cfg.Name,
	}
	for k, v := range rel.GetSpec().GetEnv() {
		env = append(env, k+"="+v)
	}
	for k, v := range rel.GetSpec().GetSecretEnv() {
		env = append(env, k+"="+v)
	}
	return env
}

// waitReady waits for every slot's first readiness; the first failure wins.
func (m *manager) waitReady(ctx context.Context, slots []*slot) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(slots))
	for _, s := range slots {
		go func() { errs <- s.w.WaitReady(ctx) }()
	}
	var first error
	for range slots {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

func (m *manager) stopSlots(slots []*slot) {
	var wg sync.WaitGroup
	for _, s := range slots {
		wg.Go(func() {
			if s.recycle != nil {
				s.recycle.Stop()
			}
			s.w.Stop()
			s.log.Close()
			m.ports.put(s.port)
		})
	}
	wg.Wait()
}

// retire stops withdrawn workers once every front routes by the state of
// generation gen, which no longer has them.
func (m *manager) retire(slots []*slot, gen uint64) {
	m.bg.Go(func() {
		m.awaitFronts(gen)
		m.stopSlots(slots)
	})
}

// awaitFronts waits (at most AckWait) until every live front acknowledged
// state generation gen.
func (m *manager) awaitFronts(gen uint64) {
	start := time.Now()
	if missing := m.applied.wait(context.Background(), m.cl, gen, m.cfg.AckWait); len(missing) > 0 {
		m.log.Warn("fronts did not acknowledge the new endpoints in time; stopping workers anyway",
			"fronts", missing, "waited", m.cfg.AckWait)
		return
	}
	m.log.Debug("every front routes by the new endpoints", "generation", gen, "after", time.Since(start))
}

// state is the node's account of what it runs: only ready workers are
// endpoints.
func (m *manager) state() *herdv1.NodeState {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := &herdv1.NodeState{Node: m.cfg.Name, Address: m.host, Labels: m.cfg.Labels, Drained: m.drained != ""}
	for _, a := range m.apps {
		as := &herdv1.AppState{
			App:     a.rel.GetApp(),
			Release: a.rel.GetId(),
			Digest:  a.rel.GetDigest(),
			Desired: a.rel.GetSpec().GetWorkers(),
			Error:   a.lastErr,
		}
		for _, s := range a.slots {
			if s.w.Ready() && m.drained == "" {
				as.Endpoints = append(as.Endpoints, &herdv1.Endpoint{
					Address: net.JoinHostPort(m.host, strconv.Itoa(s.port)),
					Worker:  strconv.Itoa(s.index),
				})
			}
		}
		st.Apps = append(st.Apps, as)
	}
	return st
}

// publish tells the cluster what the node runs now.
func (m *manager) publish() *herdv1.NodeState {
	return m.cl.SetLocalState(m.state())
}

// withdraw advertises no endpoints at all (the node is stopping) and waits
// until the fronts stopped routing to them.
func (m *manager) withdraw() {
	st := m.state()
	for _, a := range st.Apps {
		a.Endpoints = nil
	}
	m.awaitFronts(m.cl.SetLocalState(st).GetGeneration())
}

// stopAll stops every worker (the node is stopping).
func (m *manager) stopAll() {
	m.cancel()
	m.bg.Wait()
	m.mu.Lock()
	var all []*slot
	for _, a := range m.apps {
		all = append(all, a.slots...)
	}
	m.mu.Unlock()
	m.stopSlots(all)
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}
