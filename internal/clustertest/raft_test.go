package clustertest

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

type peersJSON struct {
	Peers []struct {
		Name   string `json:"name"`
		Voter  bool   `json:"voter"`
		Leader bool   `json:"leader"`
	} `json:"peers"`
}

// leader returns the front that leads according to f, or nil.
func leader(c *Cluster, f *Proc) *Proc {
	r := c.CtlVia(f, "-o", "json", "raft", "peers")
	if r.Code != 0 {
		return nil
	}
	var p peersJSON
	if json.Unmarshal([]byte(r.Stdout), &p) != nil {
		return nil
	}
	for _, peer := range p.Peers {
		if peer.Leader {
			for _, fr := range c.Fronts {
				if fr.Name == peer.Name {
					return fr
				}
			}
		}
	}
	return nil
}

// statusVia is herdctl status -o json through front f.
func statusVia(c *Cluster, f *Proc) (statusJSON, error) {
	var st statusJSON
	r := c.CtlVia(f, "-o", "json", "status")
	if r.Code != 0 {
		return st, fmt.Errorf("exit %d: %s", r.Code, r.Stderr)
	}
	return st, json.Unmarshal([]byte(r.Stdout), &st)
}

// appRelease is the release front f's state says app runs, "" if none.
func appRelease(c *Cluster, f *Proc, app string) string {
	st, err := statusVia(c, f)
	if err != nil {
		return ""
	}
	for _, a := range st.Apps {
		if a.Release.App == app {
			return a.Release.ID
		}
	}
	return ""
}

// deployedID is the release id in herdctl deploy's answer ("hello
// deployed v4 on 3 node(s) ...").
func deployedID(out string) string {
	m := regexp.MustCompile(`(?:deployed|running) (v[0-9]+)`).FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return m[1]
}

// helloVia is a GET of hello through front f.
func helloVia(c *Cluster, f *Proc) (Hello, error) {
	var h Hello
	resp, body, err := c.DoVia(f, "GET", helloHost, "/", nil, nil)
	if err != nil {
		return h, err
	}
	if resp.StatusCode != 200 {
		return h, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return h, json.Unmarshal(body, &h)
}

// TestRaftAmongFronts runs three fronts and three nodes: a command through
// any front is seen through every front; two racing deploys end with one
// winner and one refusal; a deploy whose leader is killed mid-way is
// resumed by the next leader, which takes commands within seconds; a restarted front catches up;
// a node that lost its data dir comes back to its assignment; a node that
// joins with matching labels gets the app its selector picks; a front
// that is gone is removed from Raft, by an operator or after a while.
func TestRaftAmongFronts(t *testing.T) {
	c := Start(t, 3, "--raft-remove-after", "8s")
	c.StartFront(2)
	c.StartFront(3)
	c.WaitMembers(6)
	if !Eventually(20*time.Second, func() bool {
		r := c.Ctl("-o", "json", "raft", "peers")
		var p peersJSON
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &p) != nil || len(p.Peers) != 3 {
			return false
		}
		for _, peer := range p.Peers {
			if !peer.Voter {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("raft peers never listed three voters: %s", c.Ctl("raft", "peers").Stdout)
	}
	f1, f2, f3 := c.Fronts[0], c.Fronts[1], c.Fronts[2]

	// A deploy through a follower is forwarded to the leader; every front
	// then reports the release and routes to it.
	v1 := c.HelloDir(map[string]string{"v": "1"})
	if r := c.CtlVia(f2, "deploy", "hello", v1, "--cmd", "exec ./hello", "--workers", "2", "--host", helloHost, "--health", "/healthz"); r.Code != 0 {
		t.Fatalf("deploy through front-2: exit %d: %s", r.Code, r.Stderr)
	}
	for _, f := range c.Fronts {
		if !Eventually(10*time.Second, func() bool {
			h, err := helloVia(c, f)
			return appRelease(c, f, "hello") == "v1" && err == nil && h.Release == "v1"
		}) {
			st, err := statusVia(c, f)
			t.Fatalf("%s does not show and route hello v1: %+v %v", f.Name, st, err)
		}
	}
	if r := c.CtlVia(f3, "status"); r.Code != 0 || !strings.Contains(r.Stdout, "desired state from front-3 (follower of") {
		t.Errorf("status through a follower does not say how fresh it is:\n%s%s", r.Stdout, r.Stderr)
	}

	// Two deploys of the same app race through two fronts: one wins, the
	// other is refused, never a mix.
	slow := func(v string) string { return c.HelloDir(map[string]string{"v": v}) }
	dirs := []string{slow("2a"), slow("2b")}
	var wg sync.WaitGroup
	results := make([]Result, 2)
	for i, f := range []*Proc{f2, f3} {
		wg.Go(func() {
			results[i] = c.CtlVia(f, "deploy", "hello", dirs[i], "--cmd", "exec ./hello", "--workers", "2",
				"--host", helloHost, "--health", "/healthz", "--env", "HELLO_BOOT_DELAY_MS=1500")
		})
	}
	wg.Wait()
	won, refused := -1, -1
	for i, r := range results {
		switch {
		case r.Code == 0:
			won = i
		case strings.Contains(r.Stderr, "in progress") && strings.Contains(r.Stderr, "--force"):
			refused = i
		}
	}
	if won < 0 || refused < 0 {
		t.Fatalf("racing deploys: want one success and one refusal, got\n0: %d %s%s\n1: %d %s%s",
			results[0].Code, results[0].Stdout, results[0].Stderr, results[1].Code, results[1].Stdout, results[1].Stderr)
	}
	t.Logf("racing deploys: %d won, %d refused: %s", won, refused, strings.TrimSpace(results[refused].Stderr))
	if !Eventually(10*time.Second, func() bool { return statusProblem(c, "v2", 3, "") == "" }) {
		t.Fatalf("after the race: %s", statusProblem(c, "v2", 3, ""))
	}

	// Kill -9 the leader while it runs a deploy: a new leader ends the
	// orphaned rollout and takes commands within seconds.
	lead := leader(c, f1)
	if lead == nil {
		t.Fatal("no leader")
	}
	var other *Proc
	for _, f := range c.Fronts {
		if f != lead {
			other = f
			break
		}
	}
	deployDone := make(chan Result, 1)
	go func() {
		deployDone <- c.CtlVia(other, "deploy", "hello", slow("4"), "--cmd", "exec ./hello", "--workers", "2",
			"--host", helloHost, "--health", "/healthz", "--env", "HELLO_BOOT_DELAY_MS=3000")
	}()
	time.Sleep(1500 * time.Millisecond)
	lead.Kill()
	killed := time.Now()
	r := <-deployDone
	t.Logf("deploy when its leader was killed: exit %d: %s", r.Code, strings.TrimSpace(r.Stderr))
	// herdctl moves on to the next --addr when a front is down.
	if r := RunCtl(t, c.Bin.Ctl, "--config", c.AdminConfig(), "--addr", lead.Addrs["grpc"], "--addr", other.Addrs["grpc"], "status"); r.Code != 0 {
		t.Errorf("status with the first --addr down: exit %d: %s", r.Code, r.Stderr)
	}
	// The next leader resumes the rollout and the front that relayed it
	// reports the verdict.
	if r.Code != 0 {
		t.Errorf("the deploy whose leader was killed mid-way failed: %s", r.Stderr)
	}
	v5 := slow("5")
	var took time.Duration
	var want string
	if !Eventually(30*time.Second, func() bool {
		r := c.CtlVia(other, "deploy", "hello", v5, "--cmd", "exec ./hello", "--workers", "2", "--host", helloHost, "--health", "/healthz")
		if r.Code != 0 {
			t.Logf("deploy after the leader was killed: %s", strings.TrimSpace(r.Stderr))
		}
		took = time.Since(killed)
		want = deployedID(r.Stdout)
		return r.Code == 0
	}) {
		t.Fatal("no deploy succeeded within 30 s of the leader's death")
	}
	t.Logf("a deploy (%s) succeeded %v after the leader was killed (new leader %v)", want, took.Round(100*time.Millisecond), leader(c, other).Name)
	// The front that took the command reads its own write.
	if got := appRelease(c, other, "hello"); got != want {
		t.Fatalf("%s says hello runs %q right after deploying %s", other.Name, got, want)
	}
	if !Eventually(10*time.Second, func() bool {
		h, err := helloVia(c, other)
		return err == nil && h.Release == want
	}) {
		t.Fatalf("traffic through %s does not reach %s", other.Name, want)
	}

	// The killed front comes back on its addresses and catches up.
	idx := 0
	for i, f := range c.Fronts {
		if f == lead {
			idx = i + 1
		}
	}
	back := c.StartFront(idx)
	if !Eventually(20*time.Second, func() bool {
		h, err := helloVia(c, back)
		return appRelease(c, back, "hello") == want && err == nil && h.Release == want
	}) {
		t.Fatalf("restarted %s did not catch up to hello %s: status %q", back.Name, want, c.CtlVia(back, "status").Stdout)
	}

	// A node whose data dir is lost comes back to its assignment.
	n3 := c.Nodes[2]
	if !n3.Stop(20 * time.Second) {
		t.Fatal("node-3 did not stop gracefully")
	}
	if err := os.RemoveAll(n3.DataDir); err != nil {
		t.Fatal(err)
	}
	c.StartNode(3)
	if !Eventually(30*time.Second, func() bool { return statusProblem(c, want, 3, "") == "" }) {
		t.Fatalf("node-3 did not come back to its assignment: %s", statusProblem(c, want, 3, ""))
	}

	// An app with a selector runs only on matching nodes; a node that
	// joins with the labels is assigned it by the leader.
	web := c.HelloDir(map[string]string{"web": "1"})
	if r := c.CtlVia(back, "deploy", "web", web, "--cmd", "exec ./hello", "--host", "web.test", "--health", "/healthz", "--selector", "tier=web"); r.Code == 0 ||
		!strings.Contains(r.Stderr, "tier=web") {
		t.Fatalf("deploy with a selector no node matches: exit %d: %s", r.Code, r.Stderr)
	}
	c.StartNode(4, "--labels", "tier=web,zone=a")
	c.WaitMembers(7)
	if !Eventually(10*time.Second, func() bool {
		r := c.Ctl("deploy", "web", web, "--cmd", "exec ./hello", "--host", "web.test", "--health", "/healthz", "--selector", "tier=web")
		return r.Code == 0
	}) {
		t.Fatal("deploy of web with --selector tier=web did not succeed once node-4 joined")
	}
	c.StartNode(5, "--labels", "tier=web")
	if !Eventually(30*time.Second, func() bool {
		st, err := statusVia(c, c.Front)
		if err != nil {
			return false
		}
		for _, a := range st.Apps {
			if a.Release.App != "web" {
				continue
			}
			on := map[string]bool{}
			for _, n := range a.Nodes {
				if n.Release != "" && n.Ready == 1 {
					on[n.Node] = true
				}
			}
			return len(on) == 2 && on["node-4"] && on["node-5"]
		}
		return false
	}) {
		t.Fatalf("web should run on node-4 and node-5 only: %s", c.Ctl("-o", "json", "status").Stdout)
	}

	// Removing a live front is refused (the leader would add it back);
	// one stopped for good goes by herdctl or by itself.
	lead = leader(c, c.Front)
	for _, f := range c.Fronts {
		if f != lead {
			if r := c.Ctl("raft", "remove-peer", f.Name); r.Code == 0 || !strings.Contains(r.Stderr, "alive") {
				t.Errorf("remove-peer of a live follower: exit %d: %s", r.Code, r.Stderr)
			}
			break
		}
	}
	if r := c.Ctl("raft", "remove-peer", lead.Name); r.Code == 0 || !strings.Contains(r.Stderr, "is the leader") {
		t.Errorf("remove-peer of the leader: exit %d: %s", r.Code, r.Stderr)
	}
	if r := c.Ctl("raft", "remove-peer", "front-9"); r.Code == 0 || !strings.Contains(r.Stderr, "no front") {
		t.Errorf("remove-peer of an unknown front: exit %d: %s", r.Code, r.Stderr)
	}
	f3 = c.Fronts[2]
	if leader(c, f3) == f3 {
		f3 = c.Fronts[1]
	}
	if !f3.Stop(20 * time.Second) {
		t.Fatalf("%s did not stop gracefully", f3.Name)
	}
	stopped := time.Now()
	var via *Proc
	for _, f := range c.Fronts {
		if f != f3 {
			via = f
		}
	}
	if !Eventually(30*time.Second, func() bool {
		r := c.CtlVia(via, "-o", "json", "raft", "peers")
		var p peersJSON
		return r.Code == 0 && json.Unmarshal([]byte(r.Stdout), &p) == nil && len(p.Peers) == 2
	}) {
		t.Fatalf("%s was not removed from raft after --raft-remove-after: %s", f3.Name, c.CtlVia(via, "raft", "peers").Stdout)
	}
	t.Logf("%s removed from raft %v after it stopped", f3.Name, time.Since(stopped).Round(100*time.Millisecond))
	if r := c.CtlVia(via, "deploy", "hello", v1, "--cmd", "exec ./hello", "--workers", "2", "--host", helloHost, "--health", "/healthz"); r.Code != 0 {
		t.Fatalf("deploy with two fronts left: exit %d: %s", r.Code, r.Stderr)
	}
}
