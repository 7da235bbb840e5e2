package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// remove stops an app on this node: its endpoints are withdrawn first, and
// its workers stop once every front routes without them.
func (m *manager) remove(app string) {
	mu := m.appLock(app)
	mu.Lock()
	defer mu.Unlock()
	m.mu.Lock()
	cur := m.apps[app]
	delete(m.apps, app)
	m.mu.Unlock()
	if cur == nil {
		return
	}
	st := m.publish()
	if err := m.save(); err != nil {
		m.log.Error("save node state", "err", err)
	}
	m.awaitFronts(st.GetGeneration())
	m.stopSlots(cur.slots) // retiring ones are stopped by their replacement
	m.log.Info("app removed", "app", app, "release", cur.rel.GetId())
}

// drainFile marks a drained node across restarts: "stop" or "keep" (the
// workers stay up, idle).
const drainFile = "drained"

// drainMode is "" (not drained), "stop" or "keep".
func (m *manager) drainMode() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.drained
}

func (m *manager) loadDrained() {
	b, err := os.ReadFile(filepath.Join(m.cfg.DataDir, drainFile))
	if err == nil {
		m.drained = strings.TrimSpace(string(b))
		if m.drained != "keep" {
			m.drained = "stop"
		}
	}
}

// setDrained drains the node (no endpoints advertised; once every front
// acknowledged that, the workers stop unless kept) or undrains it (the
// workers of every app start again and are advertised as they get ready).
func (m *manager) setDrained(drained, keep bool) error {
	// One change at a time: an undrain must not run into a drain that is
	// still waiting for the fronts.
	m.drainMu.Lock()
	defer m.drainMu.Unlock()
	path := filepath.Join(m.cfg.DataDir, drainFile)
	if !drained {
		m.mu.Lock()
		was := m.drained
		m.drained = ""
		m.mu.Unlock()
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if was == "" {
			return nil
		}
		m.log.Info("undrained: starting the apps again")
		m.mu.Lock()
		var names []string
		for name := range m.apps {
			names = append(names, name)
		}
		m.mu.Unlock()
		for _, name := range names {
			m.startIdle(name)
		}
		m.publish()
		return nil
	}
	mode := "stop"
	if keep {
		mode = "keep"
	}
	if err := os.WriteFile(path, []byte(mode+"\n"), 0o600); err != nil {
		return err
	}
	m.mu.Lock()
	m.drained = mode
	m.mu.Unlock()
	st := m.publish()
	m.log.Info("drained: endpoints withdrawn", "keep_workers", keep)
	m.awaitFronts(st.GetGeneration())
	if keep {
		return nil
	}
	m.mu.Lock()
	var names []string
	for name := range m.apps {
		names = append(names, name)
	}
	m.mu.Unlock()
	var stop []*slot
	for _, name := range names {
		mu := m.appLock(name)
		mu.Lock()
		m.mu.Lock()
		if a := m.apps[name]; a != nil {
			stop = append(stop, a.slots...)
			a.slots = nil
		}
		m.mu.Unlock()
		mu.Unlock()
	}
	m.stopSlots(stop)
	m.publish()
	m.log.Info("drained: workers stopped", "workers", len(stop))
	return nil
}

// startIdle starts the workers of an app that has none (after a drain).
func (m *manager) startIdle(name string) {
	mu := m.appLock(name)
	mu.Lock()
	defer mu.Unlock()
	m.mu.Lock()
	a := m.apps[name]
	m.mu.Unlock()
	if a == nil || len(a.slots) > 0 {
		return
	}
	slots, err := m.startSlots(a.rel, m.releasePath(a.rel.GetDigest()))
	if err != nil {
		m.log.Warn("undrain: app did not start", "app", name, "err", err)
		return
	}
	m.mu.Lock()
	a.slots = slots
	m.mu.Unlock()
}

// taskOutputMax bounds the output a task's answer carries.
const taskOutputMax = 4 << 10

// runTask runs command once in rel's directory, with the environment a
// worker of rel gets (no PORT), as the workers' user, in its own process
// group, killed when ctx ends.
func (m *manager) runTask(ctx context.Context, rel *herdv1.Release, command string, sources []string) (*herdv1.RunTaskResponse, error) {
	if err := validateRelease(rel); err != nil {
		return nil, err
	}
	defer m.holdRelease(rel.GetDigest())()
	dir, err := m.releaseDir(ctx, rel.GetDigest(), sources)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Dir = dir
	cmd.Env = m.workerEnv(rel, 0, 0)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: m.cred}
	// A child that keeps the output open must not hold the answer.
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start release command: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
	killed := false
	select {
	case werr = <-done:
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		werr = <-done
		killed = true
	}
	resp := &herdv1.RunTaskResponse{ExitCode: int32(cmd.ProcessState.ExitCode()), Status: exitText(werr)}
	if killed {
		resp.Status = fmt.Sprintf("killed after %v", time.Since(start).Round(time.Second))
		if resp.ExitCode == 0 {
			resp.ExitCode = -1
		}
	}
	b := out.Bytes()
	if len(b) > taskOutputMax {
		b = b[len(b)-taskOutputMax:]
	}
	resp.Output = string(b)
	m.log.Info("release command ran", "app", rel.GetApp(), "release", rel.GetId(), "status", resp.Status, "took", time.Since(start).Round(time.Millisecond))
	return resp, nil
}

func exitText(err error) string {
	if err == nil {
		return "exited with status 0"
	}
	return err.Error()
}
