package supervisor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv switches the re-executed test binary into a tiny HTTP app, so the
// tests need nothing but /bin/sh.
const helperEnv = "HERD_SUPERVISOR_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "server":
		runHelperServer()
		return
	case "parent":
		runHelperParent()
		return
	}
	os.Exit(m.Run())
}

// runHelperServer answers /healthz on $HOST:$PORT with 200, or 503 while the
// file named by $HEALTH_FAIL_FILE exists.
func runHelperServer() {
	addr := net.JoinHostPort(os.Getenv("HOST"), os.Getenv("PORT"))
	failFile := os.Getenv("HEALTH_FAIL_FILE")
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if failFile != "" {
			if _, err := os.Stat(failFile); err == nil {
				http.Error(w, "failing", http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	fmt.Println("helper listening on", addr)
	err := http.ListenAndServe(addr, nil)
	fmt.Fprintln(os.Stderr, "helper:", err)
	os.Exit(1)
}

// runHelperParent starts a long-running child, prints its pid and waits to be
// killed.
func runHelperParent() {
	p, err := StartProcess(ProcessConfig{Command: "exec sleep 600"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	fmt.Println(p.Pid())
	<-p.Done()
	os.Exit(1)
}

// helperCommand returns a shell command that runs the helper server.
func helperCommand(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return "exec '" + strings.ReplaceAll(exe, "'", `'\''`) + "'"
}

// checkGoroutines fails the test if it leaves more goroutines running than it
// found. Register it before anything else so its cleanup runs last.
func checkGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("leaked goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// waitGroupGone waits until process group pgid has no live members. Members
// only just killed may linger as zombies until init reaps them, which is
// outside this package's control, so zombies do not count.
func waitGroupGone(t *testing.T, pgid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Kill(-pgid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return
		}
		live := liveGroupMembers(pgid)
		if len(live) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process group %d still has live members %v (kill: %v)", pgid, live, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func liveGroupMembers(pgid int) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: state ppid pgrp ...
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 2 && fields[2] == strconv.Itoa(pgid) && fields[0] != "Z" {
			pids = append(pids, pid)
		}
	}
	return pids
}

func startProcess(t *testing.T, cfg ProcessConfig) *Process {
	t.Helper()
	p, err := StartProcess(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(0) })
	return p
}

func waitDone(t *testing.T, p *Process) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("process %d did not exit", p.Pid())
	}
}

// waitOutput waits until the process has written line, so that the test
// knows the shell got past the commands before it.
func waitOutput(t *testing.T, p *Process, line string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(p.Tail(), line) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in output %q", line, p.Tail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProcessExitStatus(t *testing.T) {
	checkGoroutines(t)
	tests := []struct {
		command string
		want    string // "" for a nil ExitError
	}{
		{"true", ""},
		{"exit 3", "exited with status 3"},
		{"kill -KILL $$", "killed by signal KILL"},
		{"kill -TERM $$", "killed by signal TERM"},
		{"/nonexistent/app", "exited with status 127"},
	}
	for _, tt := range tests {
		p := startProcess(t, ProcessConfig{Command: tt.command})
		waitDone(t, p)
		got := ""
		if err := p.ExitError(); err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("%q: ExitError() = %q, want %q", tt.command, got, tt.want)
		}
	}
}

func TestProcessExitErrorWhileRunning(t *testing.T) {
	checkGoroutines(t)
	p := startProcess(t, ProcessConfig{Command: "sleep 60"})
	if p.ExitError() == nil {
		t.Fatal("ExitError() = nil for a running process")
	}
}

func TestProcessOutputAndTail(t *testing.T) {
	checkGoroutines(t)
	var out bytes.Buffer
	p := startProcess(t, ProcessConfig{
		Command: `i=1; while [ $i -le 30 ]; do echo "line $i"; i=$((i+1)); done; echo "fatal: no config" >&2; exit 1`,
		Output:  &out,
	})
	waitDone(t, p)

	var want []string
	for i := 12; i <= 30; i++ {
		want = append(want, fmt.Sprintf("line %d", i))
	}
	want = append(want, "fatal: no config")
	if got := p.Tail(); !slices.Equal(got, want) {
		t.Errorf("Tail() = %q, want %q", got, want)
	}
	// Done promises drained pipes, so Output is complete without locking.
	if !strings.HasPrefix(out.String(), "line 1\nline 2\n") || !strings.HasSuffix(out.String(), "line 30\nfatal: no config\n") {
		t.Errorf("Output got %q", out.String())
	}
}

func TestProcessEnvAndDir(t *testing.T) {
	checkGoroutines(t)
	t.Setenv("HERD_SHOULD_NOT_LEAK", "1")
	dir := t.TempDir()
	p := startProcess(t, ProcessConfig{
		Command: `echo "$PORT|$HERD_SHOULD_NOT_LEAK|$(pwd)"`,
		Dir:     dir,
		Env:     []string{"PORT=8080"},
	})
	waitDone(t, p)
	if got, want := p.Tail(), []string{"8080||" + dir}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}

	p = startProcess(t, ProcessConfig{Command: `echo "[$HERD_SHOULD_NOT_LEAK]"`})
	waitDone(t, p)
	if got, want := p.Tail(), []string{"[]"}; !slices.Equal(got, want) {
		t.Errorf("nil Env: got %q, want %q", got, want)
	}
}

func TestStartProcessErrors(t *testing.T) {
	checkGoroutines(t)
	if _, err := StartProcess(ProcessConfig{}); err == nil {
		t.Error("empty command: no error")
	}
	if _, err := StartProcess(ProcessConfig{Command: "true", Dir: "/nonexistent"}); err == nil {
		t.Error("missing dir: no error")
	}
}

func TestProcessStopKillsWholeGroup(t *testing.T) {
	checkGoroutines(t)
	p := startProcess(t, ProcessConfig{Command: "sleep 600 & echo started; wait"})
	waitOutput(t, p, "started")

	start := time.Now()
	p.Stop(5 * time.Second)
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Stop took %v although everything exits on SIGTERM", elapsed)
	}
	if got, want := p.ExitError(), "killed by signal TERM"; got == nil || got.Error() != want {
		t.Errorf("ExitError() = %v, want %q", got, want)
	}
	waitGroupGone(t, p.Pid())
	p.Stop(time.Second) // again, after exit
}

func TestProcessStopEscalatesToKill(t *testing.T) {
	checkGoroutines(t)
	p := startProcess(t, ProcessConfig{Command: "trap '' TERM; echo started; sleep 60"})
	waitOutput(t, p, "started")

	const grace = 300 * time.Millisecond
	start := time.Now()
	p.Stop(grace)
	if elapsed := time.Since(start); elapsed < grace {
		t.Errorf("Stop returned after %v, before the grace period", elapsed)
	}
	if got, want := p.ExitError(), "killed by signal KILL"; got == nil || got.Error() != want {
		t.Errorf("ExitError() = %v, want %q", got, want)
	}
	waitGroupGone(t, p.Pid())
}

func TestProcessLeaderExitKillsStragglers(t *testing.T) {
	checkGoroutines(t)
	// The background child ignores SIGTERM and would outlive both a plain
	// SIGTERM to the group and the shell's own exit.
	p := startProcess(t, ProcessConfig{Command: "(trap '' TERM; exec sleep 600) & echo started; exit 0"})
	waitDone(t, p)
	if err := p.ExitError(); err != nil {
		t.Errorf("ExitError() = %v", err)
	}
	waitGroupGone(t, p.Pid())
}

func TestProcessStopConcurrent(t *testing.T) {
	checkGoroutines(t)
	p := startProcess(t, ProcessConfig{Command: "sleep 60"})
	done := make(chan struct{})
	for range 3 {
		go func() {
			p.Stop(time.Second)
			done <- struct{}{}
		}()
	}
	for range 3 {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("concurrent Stop did not return")
		}
	}
	waitGroupGone(t, p.Pid())
}

func TestProcessDiesWithHerdNode(t *testing.T) {
	checkGoroutines(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	parent := exec.Command(exe)
	parent.Env = []string{helperEnv + "=parent"}
	stdout, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		parent.Process.Kill()
		parent.Wait()
		t.Fatalf("reading child pid: %v", err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	// SIGKILL leaves the parent no chance to clean up: only Pdeathsig can
	// end the child.
	parent.Process.Kill()
	parent.Wait()
	waitGroupGone(t, child)
}
