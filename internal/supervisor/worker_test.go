package supervisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperWorker returns a config for a worker running the helper server on a
// free port; tweak it before starting. Readiness flips arrive on the channel.
func helperWorker(t *testing.T, extraEnv ...string) (WorkerConfig, <-chan bool) {
	t.Helper()
	addr := freeAddr(t)
	host, port, _ := strings.Cut(addr, ":")
	changes := make(chan bool, 16)
	return WorkerConfig{
		ID: "hello-v2-1",
		Process: ProcessConfig{
			Command: helperCommand(t),
			Env:     append([]string{helperEnv + "=server", "HOST=" + host, "PORT=" + port}, extraEnv...),
		},
		HealthURL: "http://" + addr + "/healthz",
		Interval:  100 * time.Millisecond,
		StopGrace: 2 * time.Second,
		Backoff:   50 * time.Millisecond,
		OnChange:  func(ready bool) { changes <- ready },
	}, changes
}

func startWorker(t *testing.T, cfg WorkerConfig) *Worker {
	t.Helper()
	w := StartWorker(cfg)
	t.Cleanup(w.Stop)
	return w
}

func waitReady(t *testing.T, w *Worker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

func expectChange(t *testing.T, changes <-chan bool, want bool) {
	t.Helper()
	select {
	case got := <-changes:
		if got != want {
			t.Fatalf("OnChange(%v), want OnChange(%v)", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no OnChange(%v)", want)
	}
}

func expectNoChange(t *testing.T, changes <-chan bool) {
	t.Helper()
	select {
	case got := <-changes:
		t.Fatalf("unexpected OnChange(%v)", got)
	default:
	}
}

func TestWorkerReadyAndStop(t *testing.T) {
	checkGoroutines(t)
	cfg, changes := helperWorker(t)
	w := startWorker(t, cfg)
	waitReady(t, w)
	expectChange(t, changes, true)
	pid := w.Pid()
	if !w.Ready() || pid == 0 || w.Restarts() != 0 {
		t.Fatalf("Ready() = %v, Pid() = %d, Restarts() = %d", w.Ready(), pid, w.Restarts())
	}

	w.Stop()
	expectChange(t, changes, false)
	if w.Ready() || w.Pid() != 0 {
		t.Errorf("after Stop: Ready() = %v, Pid() = %d", w.Ready(), w.Pid())
	}
	waitGroupGone(t, pid)
	w.Stop()
	expectNoChange(t, changes)
}

func TestWorkerCrashAtBoot(t *testing.T) {
	checkGoroutines(t)
	cfg, changes := helperWorker(t)
	cfg.Process.Command = `echo "booting"; echo "config error: DATABASE_URL not set" >&2; exit 3`
	cfg.Backoff = time.Minute // Stop must cut the restart delay short
	w := startWorker(t, cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := w.WaitReady(ctx)
	want := `worker hello-v2-1 exited with status 3 before it was ready; last output: "booting" | "config error: DATABASE_URL not set"`
	if err == nil || err.Error() != want {
		t.Fatalf("WaitReady() = %v\nwant %s", err, want)
	}

	start := time.Now()
	w.Stop()
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Stop took %v during restart backoff", elapsed)
	}
	if w.Restarts() != 0 {
		t.Errorf("Restarts() = %d during the first backoff", w.Restarts())
	}
	expectNoChange(t, changes)
}

func TestWorkerNotHealthyInTime(t *testing.T) {
	checkGoroutines(t)
	cfg, changes := helperWorker(t)
	cfg.Process.Command = "echo booting; sleep 60" // never listens
	w := startWorker(t, cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err := w.WaitReady(ctx)
	if err == nil {
		t.Fatal("WaitReady() = nil")
	}
	for _, want := range []string{"worker hello-v2-1 was not healthy in time", "last probe: connection refused", `last output: "booting"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("WaitReady() = %v\nwant it to mention %q", err, want)
		}
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitReady() = %v, not a deadline error", err)
	}
	w.Stop()
	expectNoChange(t, changes)
}

func TestWorkerStopBeforeReady(t *testing.T) {
	checkGoroutines(t)
	cfg, _ := helperWorker(t)
	cfg.Process.Command = "sleep 60"
	w := startWorker(t, cfg)
	w.Stop()
	err := w.WaitReady(context.Background())
	if err == nil || !strings.Contains(err.Error(), "stopped before it was ready") {
		t.Fatalf("WaitReady() = %v", err)
	}
}

func TestWorkerRestartsAfterExternalKill(t *testing.T) {
	checkGoroutines(t)
	cfg, changes := helperWorker(t)
	w := startWorker(t, cfg)
	waitReady(t, w)
	expectChange(t, changes, true)

	pid := w.Pid()
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	expectChange(t, changes, false)
	expectChange(t, changes, true)
	if got := w.Restarts(); got != 1 {
		t.Errorf("Restarts() = %d, want 1", got)
	}
	if newPid := w.Pid(); newPid == 0 || newPid == pid {
		t.Errorf("Pid() = %d after restart, old pid %d", newPid, pid)
	}
	if !w.Ready() {
		t.Error("Ready() = false after restart")
	}
}

// With an OnSick hook the owner decides what to do with a sick worker: the
// worker only turns unready, reports why, and comes back if it recovers.
func TestWorkerUnreadyAfterFailedProbes(t *testing.T) {
	checkGoroutines(t)
	failFile := filepath.Join(t.TempDir(), "fail")
	cfg, changes := helperWorker(t, "HEALTH_FAIL_FILE="+failFile)
	cfg.Failures = 3
	sick := make(chan string, 4)
	cfg.OnSick = func(reason string) { sick <- reason }
	w := startWorker(t, cfg)
	waitReady(t, w)
	expectChange(t, changes, true)
	pid := w.Pid()

	if err := os.WriteFile(failFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	expectChange(t, changes, false)
	// Three failures need at least two intervals between them.
	if elapsed := time.Since(start); elapsed < 2*cfg.Interval {
		t.Errorf("unready after %v, before %d probes could fail", elapsed, cfg.Failures)
	}
	if w.Ready() || w.Pid() != pid {
		t.Errorf("Ready() = %v, Pid() = %d (was %d)", w.Ready(), w.Pid(), pid)
	}
	select {
	case reason := <-sick:
		if !strings.Contains(reason, "health check failed 3 times in a row: status 503") {
			t.Errorf("OnSick reason %q", reason)
		}
	case <-time.After(time.Second):
		t.Fatal("OnSick was not called")
	}
	if st := w.Status(); st.State != StateUnhealthy || st.LastProbe != "status 503" {
		t.Errorf("Status() = %+v, want unhealthy with the last probe error", st)
	}

	if err := os.Remove(failFile); err != nil {
		t.Fatal(err)
	}
	expectChange(t, changes, true)
	if w.Pid() != pid || w.Restarts() != 0 {
		t.Errorf("recovery restarted the process: Pid() = %d (was %d), Restarts() = %d", w.Pid(), pid, w.Restarts())
	}
}

// Without an OnSick hook a sick worker is restarted in place.
func TestWorkerSickIsRestarted(t *testing.T) {
	checkGoroutines(t)
	failFile := filepath.Join(t.TempDir(), "fail")
	cfg, changes := helperWorker(t, "HEALTH_FAIL_FILE="+failFile)
	cfg.Failures = 2
	w := startWorker(t, cfg)
	waitReady(t, w)
	expectChange(t, changes, true)
	pid := w.Pid()
	if err := os.WriteFile(failFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	expectChange(t, changes, false)
	if err := os.Remove(failFile); err != nil {
		t.Fatal(err)
	}
	expectChange(t, changes, true)
	st := w.Status()
	if st.Pid == pid || st.Pid == 0 || w.Restarts() != 1 || st.State != StateReady || !strings.Contains(st.LastExit, "restarted: health check failed 2 times") {
		t.Errorf("after a sick run: Status() = %+v (old pid %d), Restarts() = %d", st, pid, w.Restarts())
	}
}

func TestWorkerCrashLoopIsReported(t *testing.T) {
	checkGoroutines(t)
	cfg, _ := helperWorker(t)
	cfg.Process.Command = "echo boom; exit 1"
	cfg.Backoff = 10 * time.Millisecond
	w := startWorker(t, cfg)
	deadline := time.Now().Add(3 * time.Second)
	for w.Status().State != StateCrashLooping && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	st := w.Status()
	if st.State != StateCrashLooping || st.LastExit != "exited with status 1" {
		t.Fatalf("Status() = %+v, want crash-looping after exits with status 1", st)
	}
	w.Stop()
}

func TestWorkerBackoffGrows(t *testing.T) {
	checkGoroutines(t)
	cfg, changes := helperWorker(t)
	cfg.Process.Command = "exit 1"
	cfg.Backoff = 20 * time.Millisecond
	w := startWorker(t, cfg)
	// Delays of 20, 40, 80, 160 and 320ms fit about four restarts into
	// 600ms; without doubling there would be dozens.
	time.Sleep(600 * time.Millisecond)
	w.Stop()
	if got := w.Restarts(); got < 2 || got > 6 {
		t.Errorf("Restarts() = %d after 600ms, want about 4", got)
	}
	expectNoChange(t, changes)
}

func TestWorkerStartFailure(t *testing.T) {
	checkGoroutines(t)
	cfg, _ := helperWorker(t)
	cfg.Process.Dir = "/nonexistent"
	w := startWorker(t, cfg)
	err := w.WaitReady(context.Background())
	if err == nil || !strings.Contains(err.Error(), "worker hello-v2-1 could not start") {
		t.Fatalf("WaitReady() = %v", err)
	}
}
