// Package supervisor runs and watches worker processes: process groups,
// health checks, restarts with backoff, graceful stops.
package supervisor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// tailLines is how much output is kept for error messages.
	tailLines = 20
	// pipeDrainDelay bounds how long a reaped process's output pipes may stay
	// open, in case a descendant escaped the process group and kept them.
	pipeDrainDelay = time.Second
)

// ProcessConfig describes one run of a command.
type ProcessConfig struct {
	Command string    // run as /bin/sh -c Command
	Dir     string    // working directory
	Env     []string  // the complete environment (nothing inherited from herd-node)
	Output  io.Writer // optional; receives stdout and stderr as written (in addition to the tail)
	// Shim, if set, is the herd-node executable: the command then runs
	// under a shim (see RunShim) that kills its whole process group if
	// herd-node dies, even by SIGKILL.
	Shim string
	// Credential, if set, is the user and groups the command runs as.
	Credential *syscall.Credential
}

// Process is one running worker command in its own process group.
//
// The group lives and dies with its leader: once the shell exits, whatever
// it left running in the group is SIGKILLed, so a crashed worker never leaves
// stragglers holding its port.
type Process struct {
	pid  int
	tail *tailBuffer
	done chan struct{}

	mu     sync.Mutex
	exited bool // the leader has exited; the pgid must no longer be signalled by Stop

	exitErr error // set before done is closed
}

// StartProcess starts the command in its own process group. The child gets
// a parent-death signal so that it does not outlive herd-node: SIGKILL for
// a bare command, or a signal the shim catches to kill the whole group.
func StartProcess(cfg ProcessConfig) (*Process, error) {
	if cfg.Command == "" {
		return nil, errors.New("empty command")
	}
	env := cfg.Env
	if env == nil {
		env = []string{} // a nil Env would make exec inherit our environment
	}
	p := &Process{tail: newTailBuffer(tailLines), done: make(chan struct{})}
	var out io.Writer = p.tail
	if cfg.Output != nil {
		out = io.MultiWriter(p.tail, cfg.Output)
	}
	cmd := exec.Command("/bin/sh", "-c", cfg.Command)
	deathSig := syscall.SIGKILL
	if cfg.Shim != "" {
		cmd = exec.Command(cfg.Shim, ShimArg, strconv.Itoa(os.Getpid()), "/bin/sh", "-c", cfg.Command)
		deathSig = shimDeathSignal
	}
	cmd.Dir = cfg.Dir
	cmd.Env = env
	// The same writer for both makes exec share one pipe, keeping the
	// interleaving of stdout and stderr as the process wrote it.
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.WaitDelay = pipeDrainDelay
	// The kernel clears the parent-death signal when credentials change;
	// Go sets it after switching to Credential, so both hold.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig, Credential: cfg.Credential}

	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the forking OS thread exits, not when herd-node
		// does (golang/go#27505). Keeping this goroutine locked until the child
		// is reaped keeps that thread alive exactly as long as the child; the
		// runtime then discards the thread because it is never unlocked.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.wait(cmd)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// wait blocks until the process has exited, cleans up its group, reaps it and
// drains its output.
func (p *Process) wait(cmd *exec.Cmd) {
	// Wait for the exit without reaping: while the leader is a zombie its pid
	// cannot be reused, so signalling -pid reaches only our group.
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	p.mu.Lock()
	p.exited = true
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	p.mu.Unlock()

	// Wait's own error is ignored: the exit status comes from ProcessState,
	// and ErrWaitDelay only means an escaped descendant held the pipes.
	_ = cmd.Wait()
	p.exitErr = describeExit(cmd.ProcessState)
	close(p.done)
}

// describeExit turns a wait status into the wording operators see in logs
// and deploy errors.
func describeExit(state *os.ProcessState) error {
	ws := state.Sys().(syscall.WaitStatus) // always, on Linux
	switch {
	case ws.Signaled():
		msg := "killed by signal " + strings.TrimPrefix(unix.SignalName(ws.Signal()), "SIG")
		if ws.CoreDump() {
			msg += " (core dumped)"
		}
		return errors.New(msg)
	case ws.ExitStatus() != 0:
		return fmt.Errorf("exited with status %d", ws.ExitStatus())
	}
	return nil
}

// Pid returns the process id, which is also its process group id.
func (p *Process) Pid() int { return p.pid }

// Done is closed after the process exited, was reaped and its output drained.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitError describes how the process ended, nil for exit status 0. Before
// Done is closed it only says that the process is still running.
func (p *Process) ExitError() error {
	select {
	case <-p.done:
		return p.exitErr
	default:
		return errors.New("still running")
	}
}

// Tail returns the last lines the process wrote to stdout and stderr.
func (p *Process) Tail() []string { return p.tail.Lines() }

// Stop sends SIGTERM to the process group, waits up to grace for the leader
// to exit, then SIGKILLs the group. It returns once the process is reaped.
// Members left behind by the leader are killed when it exits (see wait).
func (p *Process) Stop(grace time.Duration) {
	p.signalGroup(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return
	case <-t.C:
	}
	p.signalGroup(syscall.SIGKILL)
	<-p.done
}

func (p *Process) signalGroup(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exited {
		_ = syscall.Kill(-p.pid, sig)
	}
}
