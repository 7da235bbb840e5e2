package clustertest

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestKilledNodeLeavesNoWorker: kill -9 of herd-node takes every worker
// process with it, including what a worker's shell left in the background.
func TestKilledNodeLeavesNoWorker(t *testing.T) {
	c := Start(t, 1)
	if r := deployHello(c, c.HelloDir(nil), "--cmd", "sleep 600 & exec ./hello"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	node := c.Nodes[0]
	// Per worker: its shim, hello, and the background sleep.
	if pids := ProcsUnder(node.DataDir); len(pids) < 6 {
		t.Fatalf("want at least 6 worker processes under %s, found %v", node.DataDir, pids)
	}
	node.Kill()
	var left []int
	if !Eventually(5*time.Second, func() bool {
		left = ProcsUnder(node.DataDir)
		return len(left) == 0
	}) {
		t.Fatalf("processes left after kill -9 of herd-node: %v", left)
	}
}

// mixedLoad runs quick GETs, slow requests and streams through the front
// until stop is closed, checking every answer with check; it returns the
// number of requests and the failures.
func mixedLoad(c *Cluster, stop <-chan struct{}, check func(Hello) error) (int64, []string) {
	type res struct {
		n int64
		f []string
	}
	out := make(chan res, 3)
	for _, path := range []string{"/", "/sleep?ms=300", "/stream?n=6&ms=50"} {
		go func() {
			n, f := load(c, 2, path, stop, check)
			out <- res{n, f}
		}()
	}
	var total int64
	var failures []string
	for range 3 {
		r := <-out
		total += r.n
		failures = append(failures, r.f...)
	}
	return total, failures
}

func workersOf(t *testing.T, c *Cluster) []workerJSON {
	t.Helper()
	var st struct {
		Apps []struct {
			Nodes []struct {
				Node    string       `json:"node"`
				Workers []workerJSON `json:"workers"`
			} `json:"nodes"`
		} `json:"apps"`
	}
	c.CtlJSON(&st, "status", "--workers")
	var out []workerJSON
	for _, a := range st.Apps {
		for _, n := range a.Nodes {
			for _, w := range n.Workers {
				w.Node = n.Node
				out = append(out, w)
			}
		}
	}
	return out
}

type workerJSON struct {
	Node     string
	Index    int    `json:"index"`
	Address  string `json:"address"`
	Pid      string `json:"pid"` // int64 is a string in protojson
	State    string `json:"state"`
	Restarts int    `json:"restarts"`
	LastExit string `json:"lastExit"`
	Release  string `json:"release"`
	RSS      string `json:"rssBytes"`
}

func releaseIs(want ...string) func(Hello) error {
	return func(h Hello) error {
		if h.App != "hello" || !slices.Contains(want, h.Release) {
			return fmt.Errorf("answer from app %q release %q, want hello %v", h.App, h.Release, want)
		}
		return nil
	}
}

// TestVersionSwapUnderLoad: a deploy of a new release under load of quick,
// slow and streaming requests fails none, and only the new release answers
// afterwards.
func TestVersionSwapUnderLoad(t *testing.T) {
	c := Start(t, 2)
	if r := deployHello(c, c.HelloDir(nil)); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	stop := make(chan struct{})
	done := make(chan []string, 1)
	var total int64
	go func() {
		var f []string
		total, f = mixedLoad(c, stop, releaseIs("v1", "v2"))
		done <- f
	}()
	time.Sleep(time.Second)
	if r := deployHello(c, c.HelloDir(map[string]string{"v": "2"})); r.Code != 0 {
		t.Fatalf("deploy v2: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	time.Sleep(time.Second)
	close(stop)
	if f := <-done; len(f) > 0 {
		t.Fatalf("%d of %d requests failed during the swap: %v", len(f), total, f[:min(5, len(f))])
	}
	t.Logf("%d requests during the swap, none failed", total)
	stop2 := make(chan struct{})
	time.AfterFunc(time.Second, func() { close(stop2) })
	if n, f := mixedLoad(c, stop2, releaseIs("v2")); len(f) > 0 || n == 0 {
		t.Fatalf("after the swap: %d requests, failures %v", n, f[:min(5, len(f))])
	}
}

// TestScaleKeepsWorkers: changing only --workers keeps the release and the
// workers that stay, under load, without a failed request.
func TestScaleKeepsWorkers(t *testing.T) {
	c := Start(t, 1)
	dir := c.HelloDir(nil)
	if r := deployHello(c, dir); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	before := workersOf(t, c)
	stop := make(chan struct{})
	done := make(chan []string, 1)
	go func() { _, f := mixedLoad(c, stop, releaseIs("v1")); done <- f }()

	if r := deployHello(c, dir, "--workers", "4"); r.Code != 0 || !strings.Contains(r.Stdout, "v1") {
		t.Fatalf("scale up: exit %d: %s%s", r.Code, r.Stdout, r.Stderr)
	}
	up := workersOf(t, c)
	if len(up) != 4 {
		t.Fatalf("after scaling to 4: %+v", up)
	}
	for i := range before {
		if up[i].Pid != before[i].Pid {
			t.Errorf("worker %d was restarted by the scale-up (pid %s → %s)", up[i].Index, before[i].Pid, up[i].Pid)
		}
	}
	if r := deployHello(c, dir, "--workers", "1"); r.Code != 0 {
		t.Fatalf("scale down: %s", r.Stderr)
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	if f := <-done; len(f) > 0 {
		t.Fatalf("%d requests failed while scaling: %v", len(f), f[:min(5, len(f))])
	}
	var down []workerJSON
	if !Eventually(10*time.Second, func() bool {
		down = workersOf(t, c)
		return len(down) == 1
	}) {
		t.Fatalf("after scaling to 1: %+v", down)
	}
	if down[0].Pid != before[0].Pid || down[0].Index != 1 {
		t.Errorf("scale down replaced worker 1: %+v (was pid %s)", down[0], before[0].Pid)
	}
	checkStatusWorkers(t, c, "v1", 1)
}

func checkStatusWorkers(t *testing.T, c *Cluster, release string, workers int) {
	t.Helper()
	var st statusJSON
	c.CtlJSON(&st, "status")
	for _, a := range st.Apps {
		for _, n := range a.Nodes {
			if n.Release != release || n.Ready != workers || n.Desired != workers {
				t.Errorf("status of %s: %+v, want %s %d/%d", n.Node, n, release, workers, workers)
			}
		}
	}
}

// TestRecyclingCostsNothing: workers replaced for --max-lifetime under load
// fail no request.
func TestRecyclingCostsNothing(t *testing.T) {
	c := Start(t, 1)
	if r := deployHello(c, c.HelloDir(nil), "--max-lifetime", "2s"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	first := workersOf(t, c)
	stop := make(chan struct{})
	time.AfterFunc(6*time.Second, func() { close(stop) })
	pids := map[int]bool{}
	var mu sync.Mutex
	total, f := mixedLoad(c, stop, func(h Hello) error {
		mu.Lock()
		pids[h.Pid] = true
		mu.Unlock()
		return releaseIs("v1")(h)
	})
	if len(f) > 0 {
		t.Fatalf("%d of %d requests failed while workers were recycled: %v", len(f), total, f[:min(5, len(f))])
	}
	now := slices.DeleteFunc(workersOf(t, c), func(w workerJSON) bool { return w.State == "retiring" })
	if len(now) != 2 || now[0].Pid == first[0].Pid || now[1].Pid == first[1].Pid {
		t.Fatalf("workers were not recycled: before %+v, after %+v", first, now)
	}
	if !strings.Contains(now[0].LastExit, "max lifetime 2s reached") {
		t.Errorf("recycled worker's last exit %q does not say why", now[0].LastExit)
	}
	t.Logf("%d requests, %d worker processes answered, none failed", total, len(pids))
}

// TestHungWorkerReplaced: a worker that stops answering is replaced, and
// the requests it held are retried elsewhere once it is stopped.
func TestHungWorkerReplaced(t *testing.T) {
	c := Start(t, 1)
	if r := deployHello(c, c.HelloDir(nil), "--stop-timeout", "1s"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	ws := workersOf(t, c)
	victim := ws[0]
	stop := make(chan struct{})
	done := make(chan []string, 1)
	go func() { _, f := mixedLoad(c, stop, releaseIs("v1")); done <- f }()
	hangClient := &http.Client{Timeout: 500 * time.Millisecond}
	if _, err := hangClient.Get("http://" + victim.Address + "/hang"); err == nil {
		t.Fatal("/hang answered")
	}
	var now []workerJSON
	if !Eventually(30*time.Second, func() bool {
		now = slices.DeleteFunc(workersOf(t, c), func(w workerJSON) bool { return w.State == "retiring" })
		return len(now) == 2 && now[0].Pid != victim.Pid && now[0].State == "ready"
	}) {
		t.Fatalf("hung worker not replaced: %+v", now)
	}
	if !strings.Contains(now[0].LastExit, "health check failed 3 times") {
		t.Errorf("replacement does not say why: %q", now[0].LastExit)
	}
	time.Sleep(2 * time.Second) // the hung worker is stopped and its requests retried
	close(stop)
	if f := <-done; len(f) > 0 {
		t.Fatalf("%d requests failed around the hung worker: %v", len(f), f[:min(5, len(f))])
	}
}

// TestMaxMemoryReplaces: a worker above --max-memory is replaced without a
// failed request.
func TestMaxMemoryReplaces(t *testing.T) {
	c := Start(t, 1)
	// hello's resident memory is well above 4 MiB.
	if r := deployHello(c, c.HelloDir(nil), "--workers", "1", "--max-memory", "4M"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	first := workersOf(t, c)[0]
	stop := make(chan struct{})
	done := make(chan []string, 1)
	go func() { _, f := mixedLoad(c, stop, releaseIs("v1")); done <- f }()
	var now []workerJSON
	ok := Eventually(20*time.Second, func() bool {
		now = slices.DeleteFunc(workersOf(t, c), func(w workerJSON) bool { return w.State == "retiring" })
		return len(now) == 1 && now[0].Pid != first.Pid && strings.Contains(now[0].LastExit, "above max_memory 4 MiB")
	})
	close(stop)
	if !ok {
		t.Fatalf("worker over --max-memory not replaced: %+v", now)
	}
	if f := <-done; len(f) > 0 {
		t.Fatalf("%d requests failed while a worker was replaced for memory: %v", len(f), f[:min(5, len(f))])
	}
}

// TestCrashLoopReported: a worker that keeps dying after it was ready is
// restarted with backoff and shown as crash-looping.
func TestCrashLoopReported(t *testing.T) {
	c := Start(t, 1)
	// Workers may not write their release (they run as nobody under root):
	// the marker goes to a directory anyone may write.
	marks := filepath.Join(c.Dir, "marks")
	if err := os.Mkdir(marks, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(marks, 0o777)
	cmd := `if [ -e $MARKS/crashed-$HERD_WORKER ]; then echo "still broken"; exit 4; fi; touch $MARKS/crashed-$HERD_WORKER; exec ./hello`
	if r := deployHello(c, c.HelloDir(nil), "--workers", "1", "--cmd", cmd, "--env", "MARKS="+marks); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	w := workersOf(t, c)[0]
	pid := 0
	fmt.Sscan(w.Pid, &pid)
	// The shim's pid leads the worker's process group.
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var now workerJSON
	if !Eventually(20*time.Second, func() bool {
		now = workersOf(t, c)[0]
		return now.State == "crash-looping"
	}) {
		t.Fatalf("worker not reported crash-looping: %+v", now)
	}
	if now.LastExit != "exited with status 4" || now.Restarts < 2 {
		t.Fatalf("crash-looping worker: %+v", now)
	}
}

// TestWorkersDropRoot: under a root herd-node, workers run as nobody unless
// root is explicitly allowed, and a worker user of root without that flag
// is refused at start.
func TestWorkersDropRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test checks herd-node running as root; CI runs as root")
	}
	c := Start(t, 1)
	if r := deployHello(c, c.HelloDir(nil), "--workers", "1"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	h, err := c.GetHello(helloHost)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var uid int
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Uid:") {
			fmt.Sscan(strings.TrimPrefix(l, "Uid:"), &uid)
		}
	}
	if uid != 65534 {
		t.Fatalf("worker runs as uid %d, want nobody (65534)", uid)
	}

	dir := t.TempDir()
	r := RunCtl(t, c.Bin.Node, "--data-dir", dir, "--worker-user", "root", "--gossip", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--admin", "")
	if r.Code == 0 || !strings.Contains(r.Stderr, "--allow-root-workers") {
		t.Fatalf("herd-node --worker-user root: exit %d, stderr %q", r.Code, r.Stderr)
	}
}
