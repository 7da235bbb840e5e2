package clustertest

import (
	"bufio"
	"context"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLogs: worker output from every node through herdctl logs, filtered
// by node, worker and time, and followed live.
func TestLogs(t *testing.T) {
	c := Start(t, 2)
	if r := deployHello(c, c.HelloDir(nil)); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	r := c.Ctl("logs", "hello")
	if r.Code != 0 {
		t.Fatalf("logs: %s", r.Stderr)
	}
	for _, nw := range []string{"node-1/1", "node-1/2", "node-2/1", "node-2/2"} {
		re := regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d\.\d{3} ` + nw + ` \| hello: listening on 127\.0\.0\.1\d:\d+ \(app=hello release=v1 worker=` + nw[len(nw)-1:] + `\)$`)
		if !re.MatchString(r.Stdout) {
			t.Errorf("no start line of %s in:\n%s", nw, r.Stdout)
		}
	}

	r = c.Ctl("logs", "hello", "--node", "node-2", "--worker", "2")
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if r.Code != 0 || len(lines) == 0 {
		t.Fatalf("filtered logs: exit %d %q", r.Code, r.Stdout)
	}
	for _, l := range lines {
		if !strings.Contains(l, " node-2/2 | ") {
			t.Errorf("line from elsewhere with --node node-2 --worker 2: %q", l)
		}
	}
	time.Sleep(1100 * time.Millisecond)
	if r = c.Ctl("logs", "hello", "--since", "1s"); r.Code != 0 || strings.TrimSpace(r.Stdout) != "" {
		t.Errorf("--since 1s printed old lines: exit %d %q", r.Code, r.Stdout)
	}
	if r = c.Ctl("logs", "hello", "--node", "nope"); r.Code == 0 || !strings.Contains(r.Stderr, "node nope is not a live node") {
		t.Errorf("logs --node nope: exit %d %q", r.Code, r.Stderr)
	}

	// Follow: a restarted worker's new start line shows up live.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Bin.Ctl, "--config", c.AdminConfig(), "--addr", c.Front.Addrs["grpc"], "logs", "hello", "-f", "--since", "1ms")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	time.Sleep(500 * time.Millisecond) // let it catch up and start following
	var victim Hello
	for victim.Node != "node-1" {
		if victim, err = c.GetHello(helloHost); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Kill(victim.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	want := " node-1/" + victim.Worker + " | hello: listening on"
	sc := bufio.NewScanner(out)
	found := make(chan string, 1)
	go func() {
		for sc.Scan() {
			if strings.Contains(sc.Text(), want) {
				found <- sc.Text()
				return
			}
		}
	}()
	select {
	case l := <-found:
		t.Logf("followed: %s", l)
	case <-time.After(20 * time.Second):
		t.Fatalf("logs -f did not show the restarted worker's %q", want)
	}
}
