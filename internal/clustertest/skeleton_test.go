package clustertest

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herd-run/herd/internal/herdconfig"
	"github.com/herd-run/herd/internal/pki"
)

const helloHost = "hello.test"

type statusJSON struct {
	Apps []struct {
		Release struct {
			App    string `json:"app"`
			ID     string `json:"id"`
			Digest string `json:"digest"`
		} `json:"release"`
		Nodes []struct {
			Node    string `json:"node"`
			Release string `json:"release"`
			Ready   int    `json:"ready"`
			Desired int    `json:"desired"`
			Error   string `json:"error"`
		} `json:"nodes"`
	} `json:"apps"`
}

func deployHello(c *Cluster, dir string, extra ...string) Result {
	c.T.Helper()
	args := append([]string{"deploy", "hello", dir, "--cmd", "exec ./hello", "--workers", "2",
		"--host", helloHost, "--health", "/healthz"}, extra...)
	return c.Ctl(args...)
}

// sample sends n requests and counts answers per node and per worker.
func sample(t *testing.T, c *Cluster, n int) (nodes map[string]int, workers map[string]bool, releases map[string]int) {
	t.Helper()
	nodes, workers, releases = map[string]int{}, map[string]bool{}, map[string]int{}
	for range n {
		h, err := c.GetHello(helloHost)
		if err != nil {
			t.Fatalf("GET through the front: %v", err)
		}
		nodes[h.Node]++
		workers[h.Node+"/"+h.Worker] = true
		releases[h.Release]++
	}
	return nodes, workers, releases
}

// statusProblem says how herdctl status differs from: app hello at
// release on every one of nodes nodes with 2/2 workers ready, and an error
// containing wantErr ("" for none); "" when it does not.
func statusProblem(c *Cluster, release string, nodes int, wantErr string) string {
	return statusProblemN(c, release, nodes, 2, wantErr)
}

// statusProblemN is statusProblem for workers workers per node.
func statusProblemN(c *Cluster, release string, nodes, workers int, wantErr string) string {
	var st statusJSON
	c.CtlJSON(&st, "status")
	if len(st.Apps) != 1 || st.Apps[0].Release.App != "hello" || st.Apps[0].Release.ID != release {
		return fmt.Sprintf("want app hello at %s, got %+v", release, st.Apps)
	}
	if len(st.Apps[0].Nodes) != nodes {
		return fmt.Sprintf("want %d nodes, got %+v", nodes, st.Apps[0].Nodes)
	}
	for _, n := range st.Apps[0].Nodes {
		errOK := n.Error == "" && wantErr == "" || wantErr != "" && strings.Contains(n.Error, wantErr)
		if n.Release != release || n.Ready != workers || n.Desired != workers || !errOK {
			return fmt.Sprintf("node %s: want %s %d/%d with error %q, got %+v", n.Node, release, workers, workers, wantErr, n)
		}
	}
	return ""
}

func checkStatus(t *testing.T, c *Cluster, release string, nodes int) {
	t.Helper()
	if p := statusProblem(c, release, nodes, ""); p != "" {
		t.Fatal("status: " + p)
	}
}

// TestDeployReachesEveryNode is the walking skeleton end to end: hello is
// deployed by herdctl, requests through the front reach both workers on all
// three nodes, status is right, and a changed release replaces the old one
// everywhere.
func TestDeployReachesEveryNode(t *testing.T) {
	c := Start(t, 3)

	dir := c.HelloDir(nil)
	r := deployHello(c, dir)
	if r.Code != 0 {
		t.Fatalf("deploy: exit %d: %s", r.Code, r.Stderr)
	}
	if !strings.Contains(r.Stdout, "hello deployed v1 on 3 node(s)") {
		t.Fatalf("deploy output: %q", r.Stdout)
	}
	nodes, _, releases := sample(t, c, 60)
	if len(nodes) != 3 || releases["v1"] != 60 {
		t.Fatalf("want 60 v1 answers from 3 nodes; nodes %v, releases %v", nodes, releases)
	}
	checkStatus(t, c, "v1", 3)

	// The same content is not uploaded again and makes no new release.
	r = deployHello(c, dir)
	if r.Code != 0 || !strings.Contains(r.Stderr, "already on the front") || !strings.Contains(r.Stdout, "unchanged, running v1") {
		t.Fatalf("redeploy of the same release: exit %d\nstdout %s\nstderr %s", r.Code, r.Stdout, r.Stderr)
	}

	// Round robin this time, so every worker must answer.
	dir2 := c.HelloDir(map[string]string{"VERSION": "2"})
	r = deployHello(c, dir2, "--balance", "rr")
	if r.Code != 0 || !strings.Contains(r.Stdout, "hello deployed v2 on 3 node(s)") {
		t.Fatalf("second deploy: exit %d: %s%s", r.Code, r.Stdout, r.Stderr)
	}
	// Old workers are retired a moment after the new ones are advertised.
	if !Eventually(10*time.Second, func() bool {
		_, _, rel := sample(t, c, 12)
		return rel["v2"] == 12
	}) {
		t.Fatal("v1 workers still answer after the v2 deploy")
	}
	nodes, workers, releases := sample(t, c, 60)
	if len(nodes) != 3 || len(workers) != 6 || releases["v2"] != 60 {
		t.Fatalf("want 60 v2 answers from 6 workers on 3 nodes; nodes %v, workers %v, releases %v", nodes, workers, releases)
	}
	checkStatus(t, c, "v2", 3)
	// The v1 workers were stopped once the front acknowledged routing
	// without them, not after a blind wait.
	for _, n := range c.Nodes {
		if log := n.Log(); !strings.Contains(log, "every front routes by the new endpoints") || strings.Contains(log, "did not acknowledge") {
			t.Errorf("%s retired v1 without the front's acknowledgement", n.Name)
		}
	}

	if code, _, err := c.Get("other.test", "/"); err != nil || code != http.StatusNotFound {
		t.Fatalf("unknown host: want 404, got %d %v", code, err)
	}
}

// TestBadDeploysKeepServing: a release whose workers crash at boot or never
// become healthy fails within its deadline, names the nodes and the reason,
// and the running release keeps serving.
func TestBadDeploysKeepServing(t *testing.T) {
	c := Start(t, 2)
	if r := deployHello(c, c.HelloDir(nil)); r.Code != 0 {
		t.Fatalf("deploy: exit %d: %s", r.Code, r.Stderr)
	}

	r := deployHello(c, c.HelloDir(map[string]string{"x": "crash"}), "--env", "HELLO_CRASH_AT_BOOT=1")
	if r.Code == 0 {
		t.Fatal("deploy of a release that crashes at boot succeeded")
	}
	for _, want := range []string{"node-1", "node-2", "exited with status 3", "crashing at boot"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("crash deploy error lacks %q:\n%s", want, r.Stderr)
		}
	}

	start := time.Now()
	r = deployHello(c, c.HelloDir(map[string]string{"x": "sick"}), "--env", "HELLO_NEVER_HEALTHY=1", "--timeout", "3s")
	if r.Code == 0 {
		t.Fatal("deploy of a release that is never healthy succeeded")
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("never-healthy deploy took %v; its deadline was 3s", took)
	}
	for _, want := range []string{"node-1", "not healthy in time", "status 503"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("never-healthy deploy error lacks %q:\n%s", want, r.Stderr)
		}
	}
	if lines := strings.Count(strings.TrimSpace(r.Stderr), "\n"); !strings.HasPrefix(lastLine(r.Stderr), "herdctl: ") {
		t.Errorf("error is not one herdctl line at the end (%d lines):\n%s", lines, r.Stderr)
	}

	_, _, releases := sample(t, c, 20)
	if releases["v1"] != 20 {
		t.Fatalf("after failed deploys want v1 serving everything, got %v", releases)
	}
	// Status shows v1 serving and the last failure on each node (it
	// reaches the front by gossip).
	var problem string
	if !Eventually(5*time.Second, func() bool {
		problem = statusProblem(c, "v1", 2, "not healthy in time")
		return problem == ""
	}) {
		t.Fatal("status: " + problem)
	}
}

// TestCtlBadInput: each mistake gets one clear line on stderr and a
// non-zero exit.
func TestCtlBadInput(t *testing.T) {
	bin := Build(t)
	dir := t.TempDir()
	file := dir + "/file"
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A port nobody listens on: take one and close it.
	dead := "127.0.0.1:1"
	// Credentials of some cluster, for the cases that get as far as
	// dialing a front.
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.IssueBundle(pki.RoleOperator, "admin", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := dir + "/admin.herdctl"
	if err := herdconfig.Write(cfg, &herdconfig.File{Addrs: []string{dead}, Name: "admin", Role: pki.RoleOperator, CA: string(b.CAPEM), Cert: string(b.CertPEM), Key: string(b.KeyPEM)}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing dir", []string{"--addr", dead, "deploy", "app", dir + "/nope", "--cmd", "x"}, "no such file or directory"},
		{"dir is a file", []string{"--addr", dead, "deploy", "app", file, "--cmd", "x"}, "is not a directory"},
		{"empty cmd", []string{"--addr", dead, "deploy", "app", dir, "--cmd", " "}, "--cmd is required"},
		{"no cmd", []string{"--addr", dead, "deploy", "app", dir}, "--cmd is required"},
		{"unknown flag", []string{"deploy", "app", dir, "--cmd", "x", "--frobnicate"}, "unknown flag: --frobnicate"},
		{"missing args", []string{"deploy", "app"}, "deploy needs APP and DIR"},
		{"bad output", []string{"-o", "yaml", "status"}, `-o "yaml"`},
		{"unknown command", []string{"frob"}, "unknown command"},
		{"unreachable front", []string{"--config", cfg, "deploy", "app", dir, "--cmd", "x"}, "no front reachable"},
		{"unreachable front status", []string{"--config", cfg, "status"}, "no front reachable"},
		{"no credentials", []string{"--addr", dead, "status"}, "no credentials: pass --config FILE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := RunCtl(t, bin.Ctl, tc.args...)
			if r.Code == 0 {
				t.Fatalf("exit 0, want non-zero; stdout %q", r.Stdout)
			}
			if strings.Count(r.Stderr, "\n") != 1 || !strings.HasPrefix(r.Stderr, "herdctl: ") || !strings.Contains(r.Stderr, tc.want) {
				t.Fatalf("stderr should be one line 'herdctl: ...%s...', got %q", tc.want, r.Stderr)
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestNodeRestartServesAgain: a node stopped with SIGTERM stops its workers
// and leaves; the front stops routing to it at once, and once it is started
// again from the same data dir it runs its app again and gets traffic.
func TestNodeRestartServesAgain(t *testing.T) {
	c := Start(t, 2)
	if r := deployHello(c, c.HelloDir(nil)); r.Code != 0 {
		t.Fatalf("deploy: exit %d: %s", r.Code, r.Stderr)
	}
	var pids []int
	for range 20 {
		h, err := c.GetHello(helloHost)
		if err != nil {
			t.Fatal(err)
		}
		if h.Node == "node-2" {
			pids = append(pids, h.Pid)
		}
	}
	if len(pids) == 0 {
		t.Fatal("node-2 got no request")
	}

	if !c.Nodes[1].Stop(20 * time.Second) {
		t.Fatal("node-2 did not stop gracefully")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("worker pid %d of node-2 still runs after the node stopped", pid)
		}
	}
	nodes, _, _ := sample(t, c, 20)
	if nodes["node-2"] != 0 || nodes["node-1"] != 20 {
		t.Fatalf("after node-2 left want every answer from node-1, got %v", nodes)
	}

	c.StartNode(2)
	if !Eventually(20*time.Second, func() bool {
		nodes, _, _ := sample(t, c, 10)
		return nodes["node-2"] > 0
	}) {
		t.Fatal("restarted node-2 gets no traffic")
	}
	checkStatus(t, c, "v1", 2)
}
