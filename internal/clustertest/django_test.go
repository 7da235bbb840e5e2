package clustertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The Django example runs under Debian's Python: /usr/bin/gunicorn starts
// with #!/usr/bin/python3, and the python3 first on PATH may be another
// one without Django.
const (
	djangoHost   = "django.test"
	djangoPython = "/usr/bin/python3"
	gunicornBin  = "/usr/bin/gunicorn"
	djangoCmd    = "exec " + gunicornBin + " -w 2 -b $HOST:$PORT mysite.wsgi"
)

var djangoInstall sync.Mutex

// needDjango makes sure Debian's gunicorn and Django are installed,
// installing them with apt-get if not. A test that needs them fails when
// they cannot be had: a skip would look green.
func needDjango(t *testing.T) {
	t.Helper()
	djangoInstall.Lock()
	defer djangoInstall.Unlock()
	missing := func() string {
		if _, err := os.Stat(gunicornBin); err != nil {
			return err.Error()
		}
		if out, err := exec.Command(djangoPython, "-c", "import django").CombinedOutput(); err != nil {
			return fmt.Sprintf("%s -c 'import django': %v: %s", djangoPython, err, bytes.TrimSpace(out))
		}
		return ""
	}
	if missing() == "" {
		return
	}
	aptGet := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		return tail(string(out), 15), err
	}
	install := []string{"install", "-y", "python3-django", "gunicorn"}
	out, err := aptGet(install...)
	if err != nil {
		// The package lists may be missing or stale.
		if uout, uerr := aptGet("update"); uerr != nil {
			t.Logf("apt-get update: %v\n%s", uerr, uout)
		}
		out, err = aptGet(install...)
	}
	if m := missing(); m != "" {
		t.Fatalf("the Django example needs Debian's gunicorn and python3-django, and "+
			"`apt-get install -y python3-django gunicorn` did not provide them (%v): %s\n%s", err, m, out)
	}
}

// djangoRelease copies examples/django into a new directory under the
// cluster's and runs collectstatic there, as its README says to before a
// deploy; extra files (name -> content) make a different release.
func djangoRelease(c *Cluster, extra map[string]string) string {
	t := c.T
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(root, "examples", "django")
	dir, err := os.MkdirTemp(c.Dir, "django-")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		// Leftovers of running the example in place are not part of it.
		if d.IsDir() && (d.Name() == "__pycache__" || rel == "staticfiles") || strings.HasSuffix(d.Name(), ".pyc") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		dst := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if info, err := d.Info(); err == nil && info.Mode()&0o111 != 0 {
			mode = 0o755
		}
		return os.WriteFile(dst, b, mode)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
	for name, content := range extra {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Readable by whatever user the node runs workers as.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(djangoPython, "manage.py", "collectstatic", "--noinput")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("collectstatic: %v\n%s", err, out)
	}
	return dir
}

func deployDjango(c *Cluster, dir string) Result {
	c.T.Helper()
	key := make([]byte, 24)
	rand.Read(key)
	return c.Ctl("deploy", "django", dir, "--cmd", djangoCmd,
		"--concurrency", "2", "--workers", "1", "--host", djangoHost, "--health", "/healthz",
		"--static", "/static/=staticfiles/",
		"--env", "DJANGO_SECRET_KEY="+hex.EncodeToString(key), "--env", "PYTHONDONTWRITEBYTECODE=1")
}

// djangoPage is what the example's / shows.
type djangoPage struct {
	Node, Worker, Release string
	Pid, Ppid             int // the gunicorn worker and its master
}

var djangoField = regexp.MustCompile(`<td id="(\w+)">([^<]*)</td>`)

func getDjangoPage(c *Cluster) (djangoPage, error) {
	var p djangoPage
	code, body, err := c.Get(djangoHost, "/")
	if err != nil {
		return p, err
	}
	if code != http.StatusOK {
		return p, fmt.Errorf("GET /: status %d: %.300s", code, body)
	}
	for _, m := range djangoField.FindAllStringSubmatch(string(body), -1) {
		switch m[1] {
		case "node":
			p.Node = m[2]
		case "worker":
			p.Worker = m[2]
		case "release":
			p.Release = m[2]
		case "pid":
			p.Pid, _ = strconv.Atoi(m[2])
		case "ppid":
			p.Ppid, _ = strconv.Atoi(m[2])
		}
	}
	if p.Node == "" || p.Pid == 0 || p.Ppid == 0 {
		return p, fmt.Errorf("GET /: not the example's page: %.300s", body)
	}
	return p, nil
}

// gunicornProc is a live Gunicorn process (master or worker).
type gunicornProc struct {
	Pid, Ppid int
	Cwd       string
}

// gunicornsUnder lists the live Gunicorn processes whose working directory
// is inside dir. The worker's shim (whose arguments name gunicorn too) and
// zombies (no command line, no cwd) are not counted.
func gunicornsUnder(dir string) []gunicornProc {
	var out []gunicornProc
	for _, pid := range ProcsUnder(dir) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		isGunicorn := strings.HasPrefix(args[0], "gunicorn") || // setproctitle's "gunicorn: master [...]"
			filepath.Base(args[0]) == "gunicorn" ||
			len(args) > 1 && strings.HasPrefix(filepath.Base(args[0]), "python") && filepath.Base(args[1]) == "gunicorn"
		if !isGunicorn {
			continue
		}
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err != nil {
			continue
		}
		out = append(out, gunicornProc{Pid: pid, Ppid: ppidOf(pid), Cwd: cwd})
	}
	return out
}

func ppidOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

func uidOf(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			uid, _ := strconv.Atoi(f[1])
			return uid
		}
	}
	return -1
}

func pidsOf(ps []gunicornProc) []int {
	var pids []int
	for _, p := range ps {
		pids = append(pids, p.Pid)
	}
	return pids
}

// stillThere returns those of pids that are among the live Gunicorn
// processes under dir.
func stillThere(dir string, pids []int) []int {
	var left []int
	for _, p := range gunicornsUnder(dir) {
		if slices.Contains(pids, p.Pid) {
			left = append(left, p.Pid)
		}
	}
	return left
}

// TestDjangoExample deploys examples/django (Django + Gunicorn from
// Debian's packages) and checks it through the front: a dynamic page, its
// collected static file, a form POST that passes Django's CSRF checks (and
// one without the token that does not), a killed Gunicorn master restarted,
// and no Gunicorn process left behind by a redeploy or a node stop.
func TestDjangoExample(t *testing.T) {
	needDjango(t)
	start := time.Now()
	c := Start(t, 1)
	node := c.Nodes[0]
	dir := djangoRelease(c, nil)
	if r := deployDjango(c, dir); r.Code != 0 {
		t.Fatalf("deploy: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	t.Logf("cluster up and django v1 deployed in %v", time.Since(start).Round(time.Millisecond))

	// (1) A dynamic page, rendered by Django with herd's environment.
	page, err := getDjangoPage(c)
	if err != nil {
		t.Fatal(err)
	}
	if page.Node != "node-1" || page.Worker != "1" || page.Release != "v1" {
		t.Fatalf("page shows node %q worker %q release %q, want node-1 1 v1", page.Node, page.Worker, page.Release)
	}
	// The release carries collectstatic's output, and the front serves it
	// (with its validators), not Django.
	resp, css, err := c.Do("GET", djangoHost, "/static/hello/style.css", nil, nil)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Contains(css, []byte("font-family")) || resp.Header.Get("ETag") == "" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("GET /static/hello/style.css: %v %v %.200s", resp, err, css)
	}

	// (2) A form POST through the front passes CSRF with the cookie and
	// the form's token, and is refused without the token.
	resp, body, err := c.Do("GET", djangoHost, "/form", nil, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /form: %v %v %.300s", resp, err, body)
	}
	var cookie string
	for _, ck := range resp.Cookies() {
		if ck.Name == "csrftoken" {
			cookie = ck.Value
		}
	}
	m := regexp.MustCompile(`name="csrfmiddlewaretoken" value="([^"]+)"`).FindSubmatch(body)
	if cookie == "" || m == nil {
		t.Fatalf("GET /form: no csrftoken cookie (%q) or no csrfmiddlewaretoken in the form:\n%s", resp.Header.Values("Set-Cookie"), body)
	}
	post := func(form url.Values) (*http.Response, []byte) {
		t.Helper()
		h := http.Header{}
		h.Set("Content-Type", "application/x-www-form-urlencoded")
		h.Set("Cookie", "csrftoken="+cookie)
		h.Set("Origin", "http://"+djangoHost)
		h.Set("Referer", "http://"+djangoHost+"/form")
		resp, body, err := c.Do("POST", djangoHost, "/form", h, strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatalf("POST /form: %v", err)
		}
		return resp, body
	}
	resp, body = post(url.Values{"csrfmiddlewaretoken": {string(m[1])}, "message": {"héllo <herd> & django"}})
	if want := `<strong id="echo">héllo &lt;herd&gt; &amp; django</strong>`; resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(want)) {
		t.Fatalf("POST /form with the CSRF token: status %d, want 200 and %s in:\n%.600s", resp.StatusCode, want, body)
	}
	resp, body = post(url.Values{"message": {"no token"}})
	if resp.StatusCode != http.StatusForbidden || !bytes.Contains(body, []byte("CSRF")) {
		t.Fatalf("POST /form without the CSRF token: status %d, want 403 from Django's CSRF check:\n%.600s", resp.StatusCode, body)
	}

	// (4) A Gunicorn master killed with kill -9 is restarted. The herd
	// worker's pid is its shim; the master is the shim's child.
	ws := workersOf(t, c)
	if len(ws) != 1 {
		t.Fatalf("want 1 herd worker, got %+v", ws)
	}
	shim, _ := strconv.Atoi(ws[0].Pid)
	procs := gunicornsUnder(node.DataDir)
	var master int
	var children []int
	for _, p := range procs {
		if p.Ppid == shim {
			master = p.Pid
		}
	}
	for _, p := range procs {
		if p.Ppid == master {
			children = append(children, p.Pid)
		}
	}
	if master == 0 || len(children) != 2 || len(procs) != 3 {
		t.Fatalf("want a gunicorn master under shim %d with 2 workers, found %+v", shim, procs)
	}
	if page.Ppid != master || !slices.Contains(children, page.Pid) {
		t.Fatalf("page was served by pid %d (parent %d), not by a worker of master %d %v", page.Pid, page.Ppid, master, children)
	}
	t.Logf("gunicorn master %d runs as uid %d", master, uidOf(master))
	crashed := time.Now()
	if err := syscall.Kill(master, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var last string
	if !Eventually(20*time.Second, func() bool {
		p, err := getDjangoPage(c)
		if err != nil {
			last = err.Error()
			return false
		}
		last = fmt.Sprintf("%+v", p)
		// Until herd-node kills the group, the dead master's orphaned
		// workers may still answer; their parent is no longer gunicorn.
		return p.Ppid != master && p.Release == "v1" &&
			slices.ContainsFunc(gunicornsUnder(node.DataDir), func(g gunicornProc) bool { return g.Pid == p.Ppid })
	}) {
		t.Fatalf("no answer from a new gunicorn master after kill -9 of %d; last %s", master, last)
	}
	t.Logf("a new gunicorn master answered %v after kill -9 of the old one", time.Since(crashed).Round(time.Millisecond))
	if w := workersOf(t, c); len(w) != 1 || w[0].Restarts < 1 || w[0].State != "ready" || w[0].Pid == ws[0].Pid {
		t.Fatalf("after the master was killed status --workers shows %+v, want 1 ready worker with a new pid and restarts >= 1", w)
	}
	// The dead master's orphaned workers went with its process group.
	if left := stillThere(node.DataDir, children); len(left) > 0 {
		t.Fatalf("gunicorn workers %v of the killed master %d still run", left, master)
	}

	// (3) A redeploy stops every Gunicorn process of the old release. Within
	// 15 s, well before the default --stop-timeout (30 s) would SIGKILL the
	// group: herd's SIGTERM reaches the master (exec replaced the shell) and
	// the master stops its workers.
	old := gunicornsUnder(node.DataDir)
	if len(old) != 3 {
		t.Fatalf("want 3 gunicorn processes (master and 2 workers), found %+v", old)
	}
	dir2 := djangoRelease(c, map[string]string{"VERSION": "2"})
	redeployed := time.Now()
	if r := deployDjango(c, dir2); r.Code != 0 || !strings.Contains(r.Stdout, "v2") {
		t.Fatalf("deploy v2: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	t.Logf("v2 deployed in %v", time.Since(redeployed).Round(time.Millisecond))
	var left []int
	if !Eventually(15*time.Second, func() bool {
		left = stillThere(node.DataDir, pidsOf(old))
		return len(left) == 0
	}) {
		t.Fatalf("gunicorn processes %v of v1 (in %s) still run after v2 was deployed", left, old[0].Cwd)
	}
	t.Logf("v1's gunicorn processes were gone %v after the v2 deploy began", time.Since(redeployed).Round(time.Millisecond))
	if page, err = getDjangoPage(c); err != nil || page.Release != "v2" {
		t.Fatalf("after the v2 deploy: %+v %v", page, err)
	}
	now := gunicornsUnder(node.DataDir)
	if len(now) != 3 || now[0].Cwd == old[0].Cwd {
		t.Fatalf("after the v2 deploy want 3 gunicorn processes in a new release dir (v1 was %s), found %+v", old[0].Cwd, now)
	}

	// (3) A stopped node leaves no Gunicorn process behind.
	if !node.Stop(20 * time.Second) {
		t.Fatal("node-1 did not stop gracefully")
	}
	if !Eventually(5*time.Second, func() bool {
		left = pidsOf(gunicornsUnder(node.DataDir))
		return len(left) == 0
	}) {
		t.Fatalf("gunicorn processes %v left after node-1 stopped", left)
	}
	t.Logf("whole test took %v", time.Since(start).Round(time.Millisecond))
}
