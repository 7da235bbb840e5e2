package clustertest

import (
	"strings"
	"testing"
	"time"
)

// TestOperationsCostNothing runs two fronts and four nodes under continuous
// load (short, slow, streamed and POST requests through both fronts) and
// checks that a batched deploy, a release that fails half-way (reverted),
// a failing release command, a rollback, scaling 2→6→1, a drain and
// undrain, and a restart each fail no request, and that afterwards every
// answer comes from the right release; then destroy removes the app.
func TestOperationsCostNothing(t *testing.T) {
	c := Start(t, 4)
	c.StartFront(2)
	c.WaitMembers(6)
	f2 := c.Fronts[1]
	deploy := func(dir string, extra ...string) Result {
		t.Helper()
		args := append([]string{"deploy", "hello", dir, "--cmd", "exec ./hello", "--workers", "2",
			"--host", helloHost, "--health", "/healthz"}, extra...)
		return c.Ctl(args...)
	}
	if r := deploy(c.HelloDir(map[string]string{"v": "1"})); r.Code != 0 {
		t.Fatalf("first deploy: %s", r.Stderr)
	}
	// Both fronts route it before the load starts.
	for _, f := range c.Fronts {
		if !Eventually(10*time.Second, func() bool { h, err := helloVia(c, f); return err == nil && h.Release == "v1" }) {
			t.Fatalf("%s does not route hello", f.Name)
		}
	}
	load := c.StartLoad(helloHost, 6, c.Fronts...)
	defer load.Stop()

	// settle checks a phase: no failure while the operation ran, then
	// (after a moment for the last answers of the old release) only want
	// answers.
	settle := func(what, want string) LoadStats {
		t.Helper()
		during := load.Phase()
		if during.Failed > 0 || during.Requests == 0 {
			t.Errorf("%s: %s", what, during)
		}
		time.Sleep(time.Second)
		load.Phase()
		time.Sleep(1500 * time.Millisecond)
		after := load.Phase()
		if after.Failed > 0 || len(after.Releases) != 1 || after.Releases[want] == 0 {
			t.Errorf("%s: after it, want answers from %s only: %s", what, want, after)
		}
		t.Logf("%s: during %d requests (%v), after %v", what, during.Requests, during.Releases, after.Releases)
		return after
	}

	// A batched deploy with a release command.
	r := deploy(c.HelloDir(map[string]string{"v": "2"}), "--batch", "1", "--min-healthy", "500ms", "--release-cmd", "echo migrating $HERD_RELEASE")
	if r.Code != 0 || !strings.Contains(r.Stderr, "release command succeeded") || !strings.Contains(r.Stderr, "[batch 4/4]") {
		t.Fatalf("batched deploy: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	settle("batched deploy of v2", "v2")

	// A release that fails on the third node: the two moved before it go
	// back to v2.
	r = deploy(c.HelloDir(map[string]string{"v": "3"}), "--batch", "1", "--cmd", `[ "$HERD_NODE" = node-3 ] && exit 3; exec ./hello`)
	if r.Code == 0 || !strings.Contains(r.Stderr, "reverted 2 of 2") {
		t.Fatalf("a release failing on node-3: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	settle("failing release, reverted", "v2")

	// A failing release command moves nothing.
	r = deploy(c.HelloDir(map[string]string{"v": "4"}), "--release-cmd", "echo cannot migrate; exit 7")
	if r.Code == 0 || !strings.Contains(r.Stderr, "release command failed") || !strings.Contains(r.Stderr, "cannot migrate") {
		t.Fatalf("failing release command: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	settle("failing release command", "v2")

	// Rollback goes back to the release before v2 (v3 and v4 failed), v1,
	// as a new release.
	r = c.CtlVia(f2, "rollback", "hello")
	if r.Code != 0 {
		t.Fatalf("rollback: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	rolled := deployedID(strings.Replace(r.Stdout, "rolled back to", "deployed", 1))
	settle("rollback", rolled)
	var hist struct {
		Items []struct {
			Release struct{ ID string } `json:"release"`
			Ok      bool                `json:"ok"`
			Note    string              `json:"note"`
		} `json:"items"`
		Current string `json:"current"`
	}
	c.CtlJSON(&hist, "history", "hello")
	var notes []string
	for _, it := range hist.Items {
		notes = append(notes, it.Release.ID+":"+it.Note)
	}
	joined := strings.Join(notes, " ")
	if hist.Current != rolled || !strings.Contains(joined, rolled+":rollback to v1") || !strings.Contains(joined, "release command failed") {
		t.Errorf("history: current %s, items %s", hist.Current, joined)
	}

	// Scale 2 → 6 → 1.
	for _, n := range []string{"6", "1"} {
		if r := c.Ctl("scale", "hello", n); r.Code != 0 {
			t.Fatalf("scale %s: %s", n, r.Stderr)
		}
		settle("scale to "+n, rolled)
	}
	var st statusJSON
	c.CtlJSON(&st, "status")
	for _, n := range st.Apps[0].Nodes {
		if n.Desired != 1 || n.Ready != 1 {
			t.Errorf("after scale 1: %+v", n)
		}
	}

	// Drain node-2: nothing more from it; undrain: it serves again.
	if r := c.Ctl("-o", "json", "drain", "node-2"); r.Code != 0 || strings.TrimSpace(r.Stdout) != "{}" {
		t.Fatalf("drain -o json: exit %d %q %s", r.Code, r.Stdout, r.Stderr)
	}
	after := settle("drain node-2", rolled)
	if after.Nodes["node-2"] > 0 {
		t.Errorf("a drained node still answers: %s", after)
	}
	if !Eventually(10*time.Second, func() bool {
		var st statusJSON
		c.CtlJSON(&st, "status")
		for _, n := range st.Apps[0].Nodes {
			if n.Node == "node-2" {
				return n.Ready == 0
			}
		}
		return false
	}) {
		t.Errorf("node-2 keeps its workers after drain: %s", c.Ctl("status").Stdout)
	}
	if r := c.Ctl("undrain", "node-2"); r.Code != 0 {
		t.Fatalf("undrain: %s", r.Stderr)
	}
	var undrain LoadStats
	if !Eventually(15*time.Second, func() bool {
		p := load.Phase()
		undrain.Requests += p.Requests
		undrain.Failed += p.Failed
		undrain.Errors = append(undrain.Errors, p.Errors...)
		return p.Nodes["node-2"] > 0
	}) {
		t.Errorf("node-2 does not serve again after undrain")
	}
	if undrain.Failed > 0 {
		t.Errorf("undrain: %s", undrain)
	}
	time.Sleep(time.Second)
	if after := load.Phase(); after.Failed > 0 || len(after.Releases) != 1 || after.Releases[rolled] == 0 {
		t.Errorf("after undrain: %s", after)
	}

	// Restart: new workers everywhere, same release.
	pids := func() map[int]bool {
		out := map[int]bool{}
		for range 40 {
			if h, err := c.GetHello(helloHost); err == nil {
				out[h.Pid] = true
			}
		}
		return out
	}
	before := pids()
	if r := c.Ctl("restart", "hello", "--batch", "2"); r.Code != 0 {
		t.Fatalf("restart: %s%s", r.Stdout, r.Stderr)
	}
	settle("restart", rolled)
	for pid := range pids() {
		if before[pid] {
			t.Errorf("worker pid %d answers after the restart too", pid)
		}
	}

	// Destroy: no more routes, no more workers.
	load.Stop()
	if r := c.Ctl("destroy", "hello"); r.Code != 0 {
		t.Fatalf("destroy: %s", r.Stderr)
	}
	for _, f := range c.Fronts {
		if !Eventually(5*time.Second, func() bool {
			resp, _, err := c.DoVia(f, "GET", helloHost, "/", nil, nil)
			return err == nil && resp.StatusCode == 404
		}) {
			t.Errorf("%s still routes hello after destroy", f.Name)
		}
	}
	if !Eventually(10*time.Second, func() bool {
		r := c.Ctl("-o", "json", "status", "--workers")
		return r.Code == 0 && !strings.Contains(r.Stdout, `"app": "hello"`)
	}) {
		t.Errorf("hello still listed after destroy: %s", c.Ctl("status").Stdout)
	}
	for _, bad := range [][]string{{"scale", "hello", "2"}, {"drain", "node-9"}, {"rollback", "nope"}, {"deploy", "x", ".", "--cmd", "x", "--batch", "9"}} {
		if r := c.Ctl(bad...); r.Code == 0 {
			t.Errorf("herdctl %v succeeded", bad)
		} else if strings.Count(r.Stderr, "herdctl:") != 1 || !strings.HasPrefix(lastLine(r.Stderr), "herdctl: ") {
			t.Errorf("herdctl %v: want one error line, got %q", bad, r.Stderr)
		}
	}
}
