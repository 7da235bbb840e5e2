// Package clustertest builds herd's real binaries once and runs real
// clusters of them on loopback for tests: one front and N nodes, each node
// on its own loopback IP (127.0.0.1x) like a separate host, every port
// chosen by the kernel.
package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/herd-run/herd/internal/herdconfig"
	"github.com/herd-run/herd/internal/pki"
	"github.com/herd-run/herd/internal/runfile"
)

// Binaries are the paths of the built programs.
type Binaries struct {
	Front, Node, Ctl, Hello string
}

var (
	buildOnce sync.Once
	built     Binaries
	buildErr  error
)

// Build compiles herd-front, herd-node, herdctl and examples/hello once per
// test process.
func Build(t testing.TB) Binaries {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "herd-bin-")
		if err != nil {
			buildErr = err
			return
		}
		// Workers run as nobody when the tests run as root, and their shim
		// is herd-node itself.
		if err := os.Chmod(dir, 0o755); err != nil {
			buildErr = err
			return
		}
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		built = Binaries{
			Front: filepath.Join(dir, "herd-front"),
			Node:  filepath.Join(dir, "herd-node"),
			Ctl:   filepath.Join(dir, "herdctl"),
			Hello: filepath.Join(dir, "hello"),
		}
		for out, pkg := range map[string]string{built.Front: "./cmd/front", built.Node: "./cmd/node", built.Ctl: "./cmd/ctl", built.Hello: "./examples/hello"} {
			cmd := exec.Command("go", "build", "-o", out, pkg)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if b, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the herd module")
	}
	return filepath.Dir(mod), nil
}

// Proc is one running herd process.
type Proc struct {
	Name    string
	DataDir string
	Addrs   map[string]string // from its addrs.json
	cmd     *exec.Cmd
	log     *os.File
	done    chan struct{}
	killed  bool
}

// Log returns what the process wrote so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.log.Name())
	return string(b)
}

// Stop sends SIGTERM and waits up to timeout for a graceful exit, then
// kills it. It reports whether the exit was graceful (status 0 in time).
func (p *Proc) Stop(timeout time.Duration) bool {
	select {
	case <-p.done:
		return p.cmd.ProcessState.Success()
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.cmd.ProcessState.Success()
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		return false
	}
}

// Cluster is fronts and nodes. Front is the first front, which
// bootstrapped the Raft cluster; Fronts lists them all.
type Cluster struct {
	T      testing.TB
	Bin    Binaries
	Dir    string
	Front  *Proc
	Fronts []*Proc
	Nodes  []*Proc

	portBase  int
	frontArgs []string
}

// NodeIP is the loopback address node i (from 1) advertises and its
// workers bind, so each node looks like a host of its own.
func NodeIP(i int) string { return fmt.Sprintf("127.0.0.%d", 10+i) }

// Start runs a front (with extra flags frontArgs) and n nodes and waits
// until the front sees every node alive. Everything is stopped when the
// test ends.
func Start(t testing.TB, n int, frontArgs ...string) *Cluster {
	t.Helper()
	c := &Cluster{T: t, Bin: Build(t), Dir: t.TempDir()}
	// 10000-29999, below the kernel's ephemeral ports: 10 slots by process
	// id, 4 by cluster, 5 nodes of 100 ports each.
	c.portBase = 10000 + (os.Getpid()%10)*2000 + int(clusters.Add(1)%4)*500
	// t.TempDir's directories are 0700; workers running as nobody must
	// get through them to their releases.
	for _, d := range []string{c.Dir, filepath.Dir(c.Dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(c.stopAll)
	c.frontArgs = frontArgs
	c.Front = c.StartFront(1)
	for i := 1; i <= n; i++ {
		c.StartNode(i)
	}
	c.WaitMembers(n + 1)
	return c
}

// clusters counts the clusters this test process started, so each gets
// worker ports of its own: a worker of a cluster that is still stopping,
// or of another test process, must not hold a port the next one hands out.
var clusters atomic.Int64

// StartFront starts front i (named front-i; its data dir is "front" for
// the first, "front-i" for the others). Front 1 bootstraps Raft; the others
// join it by gossip and the leader adds them. A front started again reuses
// its data dir and its addresses, as a restarted host would.
func (c *Cluster) StartFront(i int) *Proc {
	name, dir := fmt.Sprintf("front-%d", i), "front"
	if i > 1 {
		dir = name
	}
	addr := map[string]string{"http": "127.0.0.1:0", "grpc": "127.0.0.1:0", "admin": "127.0.0.1:0", "gossip": "127.0.0.1:0", "raft": "127.0.0.1:0"}
	if i <= len(c.Fronts) && c.Fronts[i-1] != nil {
		for k, v := range c.Fronts[i-1].Addrs {
			addr[k] = v
		}
	}
	args := []string{"--name", name, "--http", addr["http"], "--grpc", addr["grpc"], "--admin", addr["admin"],
		"--gossip", addr["gossip"], "--raft", addr["raft"], "--deploy-timeout", "30s"}
	if i > 1 {
		// Front 1 made the cluster key when it bootstrapped.
		args = append(args, "--cluster-key-file", c.KeyFile())
	}
	// The first start of front 1 has nobody to join: it bootstraps.
	for _, f := range c.Fronts {
		if f != nil && f.Name != name {
			args = append(args, "--join", f.Addrs["gossip"])
		}
	}
	p := c.start(dir, c.Bin.Front, append(args, c.frontArgs...)...)
	p.Name = name
	if i <= len(c.Fronts) {
		c.Fronts[i-1] = p
	} else {
		c.Fronts = append(c.Fronts, p)
	}
	if i == 1 {
		c.Front = p
	}
	return p
}

// AdminConfig is the herdctl config the first front wrote.
func (c *Cluster) AdminConfig() string {
	return filepath.Join(c.Dir, "front", "admin.herdctl")
}

// AdminDial is the dial option of the admin operator, for tests that call
// the Control API directly.
func (c *Cluster) AdminDial() grpc.DialOption {
	c.T.Helper()
	f, err := herdconfig.Read(c.AdminConfig())
	if err != nil {
		c.T.Fatal(err)
	}
	cfg, err := pki.ClientTLS(f.Bundle(), pki.RoleFront)
	if err != nil {
		c.T.Fatal(err)
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

// KeyFile is the cluster key the first front wrote when it bootstrapped.
func (c *Cluster) KeyFile() string {
	return filepath.Join(c.Dir, "front", "cluster.key")
}

// CtlVia runs herdctl against one front.
func (c *Cluster) CtlVia(f *Proc, args ...string) Result {
	c.T.Helper()
	return RunCtl(c.T, c.Bin.Ctl, append([]string{"--config", c.AdminConfig(), "--addr", f.Addrs["grpc"]}, args...)...)
}

// StartNode starts node i (named node-i) joined to the front, with extra
// flags (e.g. --labels); a node started again after a stop keeps its data
// dir.
func (c *Cluster) StartNode(i int, extra ...string) *Proc {
	ip := NodeIP(i)
	lo := c.portBase + i*100
	// A restarted node comes back on its addresses, as with fixed ports
	// in production. (A new gossip port under the old name is refused by
	// every member that missed the old one's leave, until it is declared
	// dead and reclaimed: tens of seconds.)
	gossip, grpcAddr := ip+":0", ip+":0"
	if i <= len(c.Nodes) && c.Nodes[i-1] != nil {
		gossip, grpcAddr = c.Nodes[i-1].Addrs["gossip"], c.Nodes[i-1].Addrs["grpc"]
	}
	args := []string{"--name", fmt.Sprintf("node-%d", i), "--advertise", ip,
		"--gossip", gossip, "--grpc", grpcAddr, "--admin", ip + ":0",
		"--port-range", fmt.Sprintf("%d-%d", lo, lo+99), "--cluster-key-file", c.KeyFile()}
	for _, f := range c.Fronts {
		if f != nil {
			args = append(args, "--join", f.Addrs["gossip"])
		}
	}
	p := c.start(fmt.Sprintf("node-%d", i), c.Bin.Node, append(args, extra...)...)
	if i <= len(c.Nodes) {
		c.Nodes[i-1] = p
	} else {
		c.Nodes = append(c.Nodes, p)
	}
	return p
}

func (c *Cluster) start(name, bin string, args ...string) *Proc {
	t := c.T
	t.Helper()
	dataDir := filepath.Join(c.Dir, name)
	log, err := os.OpenFile(filepath.Join(c.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	args = append([]string{"--data-dir", dataDir, "--log-level", "debug"}, args...)
	// A restarted process must not be mistaken for ready by its
	// predecessor's file.
	os.Remove(filepath.Join(dataDir, runfile.Name))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, DataDir: dataDir, cmd: cmd, log: log, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if addrs, err := runfile.Read(dataDir); err == nil {
			p.Addrs = addrs
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited at start: %v\n%s", name, cmd.ProcessState, p.Log())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not write %s in time\n%s", name, runfile.Name, p.Log())
		}
	}
}

func (c *Cluster) stopAll() {
	procs := slices.Clone(c.Nodes)
	for i := len(c.Fronts) - 1; i >= 0; i-- {
		procs = append(procs, c.Fronts[i])
	}
	for _, p := range procs {
		if p != nil && !p.killed && !p.Stop(15*time.Second) {
			c.T.Logf("%s did not stop gracefully; its log:\n%s", p.Name, p.Log())
		}
	}
	if dir := os.Getenv("HERD_TEST_LOGS"); dir != "" && c.T.Failed() {
		// Whole logs, for a failure the tails below do not explain.
		logs, _ := filepath.Glob(filepath.Join(c.Dir, "*.log"))
		for _, l := range logs {
			if b, err := os.ReadFile(l); err == nil {
				os.WriteFile(filepath.Join(dir, filepath.Base(l)), b, 0o644)
			}
		}
	}
	if c.T.Failed() {
		for _, p := range append(slices.Clone(c.Fronts), c.Nodes...) {
			if p != nil {
				c.T.Logf("--- %s log ---\n%s", p.Name, tail(p.Log(), 60))
			}
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Result is a finished herdctl run.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Ctl runs herdctl against the front.
func (c *Cluster) Ctl(args ...string) Result {
	c.T.Helper()
	return RunCtl(c.T, c.Bin.Ctl, append([]string{"--config", c.AdminConfig(), "--addr", c.Front.Addrs["grpc"]}, args...)...)
}

// RunCtl runs herdctl with exactly args.
func RunCtl(t testing.TB, bin string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("herdctl %v: %v", args, err)
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// CtlJSON runs herdctl -o json and decodes its answer into v.
func (c *Cluster) CtlJSON(v any, args ...string) {
	c.T.Helper()
	r := c.Ctl(append([]string{"-o", "json"}, args...)...)
	if r.Code != 0 {
		c.T.Fatalf("herdctl %v: exit %d: %s", args, r.Code, r.Stderr)
	}
	if err := json.Unmarshal([]byte(r.Stdout), v); err != nil {
		c.T.Fatalf("herdctl %v: %v\n%s", args, err, r.Stdout)
	}
}

// WaitMembers waits until herdctl nodes lists want members, all alive.
func (c *Cluster) WaitMembers(want int) {
	c.T.Helper()
	var last string
	ok := Eventually(20*time.Second, func() bool {
		var resp struct {
			Members []struct {
				Name  string `json:"name"`
				State string `json:"state"`
			} `json:"members"`
		}
		c.CtlJSON(&resp, "nodes")
		alive := 0
		for _, m := range resp.Members {
			if m.State == "MEMBER_STATE_ALIVE" {
				alive++
			}
		}
		last = fmt.Sprint(resp.Members)
		return alive == want
	})
	if !ok {
		c.T.Fatalf("cluster did not reach %d alive members; last seen %s", want, last)
	}
}

// HelloDir makes a release directory holding the hello binary and extra
// files (name -> content), so different extras make different releases.
func (c *Cluster) HelloDir(extra map[string]string) string {
	c.T.Helper()
	dir, err := os.MkdirTemp(c.Dir, "release-")
	if err != nil {
		c.T.Fatal(err)
	}
	b, err := os.ReadFile(c.Bin.Hello)
	if err != nil {
		c.T.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello"), b, 0o755); err != nil {
		c.T.Fatal(err)
	}
	for name, content := range extra {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			c.T.Fatal(err)
		}
	}
	return dir
}

// Hello is examples/hello's answer.
type Hello struct {
	App, Release, Node, Worker string
	Pid                        int
	InFlight                   int `json:"inflight"`
}

// client has no proxy and no connection reuse, so every request takes a
// fresh path through the front.
var client = &http.Client{
	// Longer than a hung worker takes to be found (3 failed health checks
	// 2 s apart), replaced and stopped, after which its requests are retried.
	Timeout:   30 * time.Second,
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

// Get sends GET path with the Host header host through the front.
func (c *Cluster) Get(host, path string) (int, []byte, error) {
	resp, body, err := c.Do("GET", host, path, nil, nil)
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, body, nil
}

// Do sends a request through the front and reads the whole answer.
func (c *Cluster) Do(method, host, path string, header http.Header, body io.Reader) (*http.Response, []byte, error) {
	return c.DoVia(c.Front, method, host, path, header, body)
}

// DoVia sends a request through front f and reads the whole answer.
func (c *Cluster) DoVia(f *Proc, method, host, path string, header http.Header, body io.Reader) (*http.Response, []byte, error) {
	req, err := http.NewRequest(method, "http://"+f.Addrs["http"]+path, body)
	if err != nil {
		return nil, nil, err
	}
	req.Host = host
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// GetHello sends GET / for host and decodes hello's answer.
func (c *Cluster) GetHello(host string) (Hello, error) {
	var h Hello
	code, body, err := c.Get(host, "/")
	if err != nil {
		return h, err
	}
	if code != http.StatusOK {
		return h, fmt.Errorf("status %d: %s", code, body)
	}
	return h, json.Unmarshal(body, &h)
}

// Eventually polls cond every 100 ms until it holds or timeout passes.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill SIGKILLs the process (no graceful anything) and waits for it.
func (p *Proc) Kill() {
	p.killed = true
	p.cmd.Process.Kill()
	<-p.done
}

// ProcsUnder lists live processes whose working directory is inside dir
// (a node's workers run in its releases).
func ProcsUnder(dir string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err == nil && strings.HasPrefix(cwd, dir+string(filepath.Separator)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }
