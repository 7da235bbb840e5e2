package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	defaultInterval  = 2 * time.Second
	defaultFailures  = 3
	defaultStopGrace = 30 * time.Second
	defaultBackoff   = time.Second
	maxBackoff       = 30 * time.Second
	// stableAfter is how long a run must stay ready for its later exit to
	// count as a fresh failure rather than part of a crash loop.
	stableAfter = 30 * time.Second
	// bootProbeInterval is short so that deploys see a new worker as soon as
	// it listens; once ready, the configured Interval applies.
	bootProbeInterval = 100 * time.Millisecond
)

// WorkerConfig describes a supervised worker slot.
type WorkerConfig struct {
	ID        string
	Process   ProcessConfig
	HealthURL string        // e.g. http://127.0.0.1:20001/healthz
	Interval  time.Duration // probe interval (and probe timeout) once ready; default 2s
	Failures  int           // consecutive failed probes that make a ready worker unready; default 3
	StopGrace time.Duration // default 30s
	// Backoff is the first restart delay; it doubles up to 30s and is reset
	// after a run stayed ready for 30s. Default 1s.
	Backoff time.Duration
	// OnChange is called when readiness flips, from the worker's goroutine and
	// never concurrently for one worker. It must not block.
	OnChange func(ready bool)
	// OnSick is called (from the worker's goroutine; it must not block)
	// when a ready process failed Failures probes in a row, with the reason.
	// The owner is expected to replace the worker (start a new one first)
	// or call Restart. Nil means restart it at once.
	OnSick func(reason string)
	Logger *slog.Logger // nil discards
}

// Worker states, as Status reports them.
const (
	StateStarting     = "starting"      // running, not yet ready
	StateReady        = "ready"         // passing health checks
	StateUnhealthy    = "unhealthy"     // was ready, now failing health checks
	StateBackoff      = "backoff"       // exited; waiting to start again
	StateCrashLooping = "crash-looping" // exited again and again without staying up
	StateStopping     = "stopping"
	StateStopped      = "stopped"
)

// crashLoopAfter is how many runs in a row that did not stay up make a
// worker crash-looping (its restarts are then 8 s and more apart).
const crashLoopAfter = 3

// Status is a snapshot of a worker.
type Status struct {
	Pid       int // 0 between runs
	State     string
	Restarts  int
	StartedAt time.Time // of the current run
	// LastExit says how the previous run ended ("" if there was none).
	LastExit  string
	LastProbe string // "" when the last probe passed
}

// Worker runs a process for the slot, probes it, restarts it when it exits
// (with backoff), and reports readiness changes. When a ready process exits,
// OnChange(false) is called before anything else happens.
type Worker struct {
	cfg    WorkerConfig
	log    *slog.Logger
	client *http.Client
	ctx    context.Context // canceled by Stop
	cancel context.CancelFunc
	done   chan struct{} // closed when the supervision goroutine has returned

	settleOnce sync.Once
	settled    chan struct{} // closed once the first run was ready or failed
	settleErr  error         // outcome for WaitReady; set before settled is closed

	mu        sync.Mutex
	proc      *Process // the latest process, possibly exited
	ready     bool
	restarts  int
	lastProbe error
	state     string
	startedAt time.Time
	lastExit  string
	restart   chan string // Restart's requests
}

// StartWorker starts supervising the slot in the background.
func StartWorker(cfg WorkerConfig) *Worker {
	if cfg.Interval <= 0 {
		cfg.Interval = defaultInterval
	}
	if cfg.Failures <= 0 {
		cfg.Failures = defaultFailures
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = defaultStopGrace
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = defaultBackoff
	}
	if cfg.OnChange == nil {
		cfg.OnChange = func(bool) {}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Worker{
		cfg: cfg,
		log: log.With("worker", cfg.ID),
		// Without keep-alives no connection outlives a probe: a restarted
		// process never gets a stale connection, and Stop leaves no idle
		// connection goroutines behind. Probes must not go through a proxy.
		client:  &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		settled: make(chan struct{}),
		state:   StateStarting,
		restart: make(chan string, 1),
	}
	go w.run()
	return w
}

func (w *Worker) run() {
	defer close(w.done)
	defer w.settle(fmt.Errorf("worker %s was stopped before it was ready", w.cfg.ID))

	delay := w.cfg.Backoff
	crashes := 0
	for {
		p, err := StartProcess(w.cfg.Process)
		if err != nil {
			w.log.Error("worker failed to start", "err", err)
			w.settle(fmt.Errorf("worker %s could not start: %w", w.cfg.ID, err))
			w.setState(StateBackoff, "could not start: "+err.Error())
			crashes++
		} else {
			w.mu.Lock()
			w.proc = p
			w.state = StateStarting
			w.startedAt = time.Now()
			w.mu.Unlock()
			w.log.Info("worker started", "pid", p.Pid())
			if w.supervise(p) {
				delay = w.cfg.Backoff
				crashes = 0
			} else {
				crashes++
			}
		}
		if w.ctx.Err() != nil {
			w.setState(StateStopped, "")
			return
		}
		if crashes >= crashLoopAfter {
			w.setState(StateCrashLooping, "")
			w.log.Error("worker is crash-looping", "crashes_in_a_row", crashes, "next_start_in", delay)
		} else {
			w.setState(StateBackoff, "")
		}

		t := time.NewTimer(delay)
		select {
		case <-w.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(delay*2, maxBackoff)
		w.mu.Lock()
		w.restarts++
		w.mu.Unlock()
	}
}

// supervise probes p until it exits or the worker is stopped. It reports
// whether the run was stable, i.e. stayed ready for stableAfter at some point.
func (w *Worker) supervise(p *Process) (stable bool) {
	var (
		everReady  bool
		readySince time.Time
		failures   int
	)
	markUnready := func() {
		if w.Ready() && time.Since(readySince) >= stableAfter {
			stable = true
		}
		w.setReady(false)
	}

	t := time.NewTimer(bootProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			// Unready first so that the front stops routing here before
			// the process receives SIGTERM.
			markUnready()
			w.setState(StateStopping, "")
			w.log.Info("worker stopping", "pid", p.Pid())
			p.Stop(w.cfg.StopGrace)
			w.log.Info("worker stopped", "pid", p.Pid(), "exit", exitText(p.ExitError()))
			w.setState(StateStopping, exitText(p.ExitError()))
			return stable
		case reason := <-w.restart:
			markUnready()
			w.log.Warn("restarting worker", "pid", p.Pid(), "reason", reason)
			p.Stop(w.cfg.StopGrace)
			w.setState(StateBackoff, "restarted: "+reason)
			// Asked for, not a crash: the next run starts at once.
			return true
		case <-p.Done():
			markUnready()
			exit := exitText(p.ExitError())
			w.setState(StateBackoff, exit)
			w.log.Warn("worker exited", "pid", p.Pid(), "exit", exit, "ready", everReady)
			if !everReady {
				w.settle(fmt.Errorf("worker %s %s before it was ready; last output: %s",
					w.cfg.ID, exit, formatTail(p.Tail())))
			}
			return stable
		case <-t.C:
		}

		ctx, cancel := context.WithTimeout(w.ctx, w.cfg.Interval)
		err := Probe(ctx, w.client, w.cfg.HealthURL)
		cancel()
		if w.ctx.Err() != nil {
			continue // a probe cut short by Stop says nothing about the process
		}
		w.mu.Lock()
		w.lastProbe = err
		w.mu.Unlock()

		switch {
		case err == nil:
			failures = 0
			if !w.Ready() {
				everReady = true
				readySince = time.Now()
				w.log.Info("worker ready", "pid", p.Pid())
				w.setState(StateReady, "")
				w.setReady(true)
				w.settle(nil)
			}
		case everReady:
			failures++
			if failures == w.cfg.Failures {
				reason := fmt.Sprintf("health check failed %d times in a row: %v", failures, err)
				w.log.Warn("worker unhealthy", "pid", p.Pid(), "reason", reason)
				w.setState(StateUnhealthy, "")
				markUnready()
				if w.cfg.OnSick != nil {
					w.cfg.OnSick(reason)
				} else {
					w.Restart(reason)
				}
			}
		}
		if everReady {
			t.Reset(w.cfg.Interval)
		} else {
			t.Reset(bootProbeInterval)
		}
	}
}

// setState records the state and, if given, how the last run ended.
func (w *Worker) setState(state, lastExit string) {
	w.mu.Lock()
	w.state = state
	if lastExit != "" {
		w.lastExit = lastExit
	}
	w.mu.Unlock()
}

// Restart stops the current process (gracefully, as Stop does) and starts
// a new one after the first backoff delay; reason is logged and kept as the
// last exit. It does not block.
func (w *Worker) Restart(reason string) {
	select {
	case w.restart <- reason:
	default: // a restart is already pending
	}
}

// Status returns a snapshot of the worker.
func (w *Worker) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := Status{State: w.state, Restarts: w.restarts, LastExit: w.lastExit}
	if w.proc != nil {
		select {
		case <-w.proc.Done():
		default:
			st.Pid = w.proc.Pid()
			st.StartedAt = w.startedAt
		}
	}
	if w.lastProbe != nil {
		st.LastProbe = w.lastProbe.Error()
	}
	return st
}

// setReady records readiness and reports a flip; only the supervision
// goroutine calls it, which keeps OnChange calls ordered.
func (w *Worker) setReady(ready bool) {
	w.mu.Lock()
	changed := w.ready != ready
	w.ready = ready
	w.mu.Unlock()
	if changed {
		w.cfg.OnChange(ready)
	}
}

// settle records the outcome of WaitReady; only the first call counts.
func (w *Worker) settle(err error) {
	w.settleOnce.Do(func() {
		w.settleErr = err
		close(w.settled)
	})
}

// WaitReady blocks until the worker is ready for the first time. It fails if
// the first process exits (or cannot start) before it was ready, if the
// worker is stopped first, or if ctx ends first; the error carries the exit
// status or last probe error and the process's last output lines.
func (w *Worker) WaitReady(ctx context.Context) error {
	select {
	case <-w.settled:
		return w.settleErr
	case <-ctx.Done():
	}
	w.mu.Lock()
	p, probeErr := w.proc, w.lastProbe
	w.mu.Unlock()
	probe := "none completed"
	if probeErr != nil {
		probe = probeErr.Error()
	}
	var tail []string
	if p != nil {
		tail = p.Tail()
	}
	return fmt.Errorf("worker %s was not healthy in time (%w); last probe: %s; last output: %s",
		w.cfg.ID, ctx.Err(), probe, formatTail(tail))
}

// Ready reports whether the current process passes its health checks.
func (w *Worker) Ready() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ready
}

// Pid returns the pid of the running process, or 0 between runs.
func (w *Worker) Pid() int {
	w.mu.Lock()
	p := w.proc
	w.mu.Unlock()
	if p == nil {
		return 0
	}
	select {
	case <-p.Done():
		return 0
	default:
		return p.Pid()
	}
}

// Restarts returns how many times the process was started again after the
// first run ended.
func (w *Worker) Restarts() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.restarts
}

// Stop ends supervision and stops the current process gracefully (see
// Process.Stop). It returns when all of the worker's goroutines are done and
// may be called more than once.
func (w *Worker) Stop() {
	w.cancel()
	<-w.done
}

func exitText(err error) string {
	if err == nil {
		return "exited with status 0"
	}
	return err.Error()
}

// formatTail renders output lines for a one-line error message.
func formatTail(lines []string) string {
	if len(lines) == 0 {
		return "(none)"
	}
	quoted := make([]string, len(lines))
	for i, l := range lines {
		quoted[i] = strconv.Quote(l)
	}
	return strings.Join(quoted, " | ")
}
