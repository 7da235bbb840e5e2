package supervisor

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
)

// ShimArg is the first argument that makes herd-node run as a worker's shim
// (see RunShim) instead of as a node.
const ShimArg = "__herd-worker-shim"

// shimDeathSignal is what the kernel sends the shim when herd-node's
// forking thread dies. Unlike SIGKILL it can be caught, so the shim can
// take the worker's whole process group with it.
const shimDeathSignal = syscall.SIGUSR1

// RunShim is a worker's shim: a tiny process between herd-node and the
// worker command, in the worker's process group. Pdeathsig reaches only a
// direct child, and a worker's own children (Gunicorn's workers, or a
// command `/bin/sh -c` keeps in the background) would outlive a SIGKILLed
// herd-node; the shim gets the parent-death signal and kills the whole
// group. Otherwise it stays out of the way: signals to the group reach the
// worker directly, and the shim exits the way the worker did.
//
// args are the parent's pid, then the command and its arguments. It
// returns the exit status for os.Exit.
func RunShim(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "herd worker shim: want PARENT-PID COMMAND [ARG...]")
		return 2
	}
	parent, err := strconv.Atoi(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "herd worker shim: bad parent pid", args[0])
		return 2
	}
	// Caught, not ignored: an ignored signal would stay ignored in the
	// worker after exec.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, shimDeathSignal, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	// herd-node may have died before the signal could be caught.
	if os.Getppid() != parent {
		killGroup()
		return 1
	}

	cmd := exec.Command(args[1], args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "herd worker shim:", err)
		return 127
	}
	exited := make(chan struct{})
	go func() {
		for {
			select {
			case <-exited:
				return
			case sig := <-sigs:
				if sig == shimDeathSignal {
					killGroup()
				}
				// Other signals were sent to the whole group by herd-node;
				// the worker got them too.
			}
		}
	}()
	_ = cmd.Wait()
	close(exited)
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		// Die of the same signal, so herd-node reports what happened to
		// the worker.
		signal.Reset(ws.Signal())
		_ = syscall.Kill(os.Getpid(), ws.Signal())
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

func killGroup() {
	_ = syscall.Kill(-syscall.Getpgrp(), syscall.SIGKILL)
}
