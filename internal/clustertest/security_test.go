package clustertest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/pki"
)

// TestGossipIsEncrypted: the first front made the cluster key (mode 0600);
// a node without it is told what to do and exits; a node with another key
// never becomes a member; herdctl keygen prints keys that parse.
func TestGossipIsEncrypted(t *testing.T) {
	c := Start(t, 1)
	fi, err := os.Stat(c.KeyFile())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cluster key %s: %v, mode %v; want 0600", c.KeyFile(), err, fi.Mode())
	}
	dir := t.TempDir()
	r := RunCtl(t, c.Bin.Node, "--data-dir", filepath.Join(dir, "a"), "--name", "keyless", "--gossip", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--join", c.Front.Addrs["gossip"])
	if r.Code == 0 || !strings.Contains(r.Stderr, "--cluster-key-file") {
		t.Fatalf("a node without the key: exit %d, %q", r.Code, r.Stderr)
	}
	kg := RunCtl(t, c.Bin.Ctl, "keygen")
	other, err := pki.ParseClusterKey(kg.Stdout)
	if kg.Code != 0 || err != nil {
		t.Fatalf("herdctl keygen: %q %v", kg.Stdout, err)
	}
	wrong := filepath.Join(dir, "wrong.key")
	if err := pki.WriteClusterKeyFile(wrong, other); err != nil {
		t.Fatal(err)
	}
	// A node with another key: its gossip is refused, so it never meets
	// a front, never gets a certificate, never serves.
	var out bytes.Buffer
	cmd := exec.Command(c.Bin.Node, "--data-dir", filepath.Join(dir, "b"), "--name", "stranger", "--advertise", NodeIP(9),
		"--gossip", NodeIP(9)+":0", "--grpc", NodeIP(9)+":0", "--join", c.Front.Addrs["gossip"], "--cluster-key-file", wrong, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	cmd.Process.Kill()
	cmd.Wait()
	if r := c.Ctl("nodes"); strings.Contains(r.Stdout, "stranger") {
		t.Errorf("a node with another key became a member:\n%s", r.Stdout)
	}
	if !strings.Contains(out.String(), "no installed keys could decrypt") {
		t.Errorf("the stranger's log does not say its key was refused:\n%s", tail(out.String(), 20))
	}
}

// TestRolesEnforced: every gRPC call needs a certificate of the right
// role. Without one a caller is told what to do; a node cannot change the
// desired state; an operator cannot call a node's Agent API.
func TestRolesEnforced(t *testing.T) {
	c := Start(t, 1)
	caPEM, err := os.ReadFile(filepath.Join(c.Front.DataDir, "tls", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(c.Front.DataDir, "tls", "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCA(caPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	call := func(b *pki.Bundle, addr, wantRole string, f func(*grpc.ClientConn) error) error {
		cfg, err := pki.ClientTLS(b, wantRole)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return f(conn)
	}
	status := func(conn *grpc.ClientConn) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := herdv1.NewControlClient(conn).Status(ctx, &herdv1.StatusRequest{})
		return err
	}
	drain := func(conn *grpc.ClientConn) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := herdv1.NewControlClient(conn).Drain(ctx, &herdv1.DrainRequest{Node: "node-1"})
		return err
	}
	front := c.Front.Addrs["grpc"]
	noCert := &pki.Bundle{CAPEM: caPEM}
	if err := call(noCert, front, pki.RoleFront, status); grpcstatus.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "--config") {
		t.Errorf("status without a certificate: %v", err)
	}
	node, err := ca.IssueBundle(pki.RoleNode, "node-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := call(node, front, pki.RoleFront, drain); grpcstatus.Code(err) != codes.PermissionDenied {
		t.Errorf("a node draining: %v, want PermissionDenied", err)
	}
	reader, err := ca.IssueBundle(pki.RoleReader, "viewer", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := call(reader, front, pki.RoleFront, status); err != nil {
		t.Errorf("a read-only operator's status: %v", err)
	}
	if err := call(reader, front, pki.RoleFront, drain); grpcstatus.Code(err) != codes.PermissionDenied {
		t.Errorf("a read-only operator draining: %v, want PermissionDenied", err)
	}
	admin, err := ca.IssueBundle(pki.RoleOperator, "admin", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	err = call(admin, c.Nodes[0].Addrs["grpc"], pki.RoleNode, func(conn *grpc.ClientConn) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := herdv1.NewAgentClient(conn).ListWorkers(ctx, &herdv1.ListWorkersRequest{})
		return err
	})
	if grpcstatus.Code(err) != codes.PermissionDenied {
		t.Errorf("an operator calling a node: %v, want PermissionDenied", err)
	}
	// A plaintext client gets nowhere.
	conn, err := grpc.NewClient(front, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := status(conn); err == nil {
		t.Error("a plaintext call succeeded")
	}
}

// TestSecretEnv: a secret env value reaches the workers but no answer to
// an operator shows it.
func TestSecretEnv(t *testing.T) {
	c := Start(t, 1)
	// The worker starts only if it sees the secret (12 characters; the
	// command must not name it, since commands are not secret).
	r := c.Ctl("-o", "json", "deploy", "hello", c.HelloDir(nil), "--cmd", `test "${#TOKEN}" = 12 && exec ./hello`,
		"--host", helloHost, "--health", "/healthz", "--secret-env", "TOKEN=s3cret-value", "--env", "PUBLIC=1")
	if r.Code != 0 {
		t.Fatalf("deploy with a secret: %s", r.Stderr)
	}
	for _, args := range [][]string{nil, {"-o", "json", "status"}, {"-o", "json", "history", "hello"}, {"status"}} {
		out := r.Stdout + r.Stderr
		if args != nil {
			res := c.Ctl(args...)
			out = res.Stdout + res.Stderr
		}
		if strings.Contains(out, "s3cret-value") {
			t.Errorf("herdctl %v shows the secret:\n%s", args, out)
		}
		if args != nil && args[0] == "-o" && !strings.Contains(out, "<redacted>") {
			t.Errorf("herdctl %v does not show the secret's key as redacted:\n%s", args, out)
		}
	}
	if h, err := c.GetHello(helloHost); err != nil || h.App != "hello" {
		t.Fatalf("hello with a secret does not answer: %v", err)
	}
	if r := c.Ctl("deploy", "x", ".", "--cmd", "x", "--secret-env", "NOEQUALS"); r.Code != 2 || !strings.Contains(r.Stderr, "--secret-env") {
		t.Errorf("a bad --secret-env: exit %d %q", r.Code, r.Stderr)
	}
}

// TestOperators: an operator issues a read-only credential; it can look
// but not change anything; once revoked, every front refuses it.
func TestOperators(t *testing.T) {
	c := Start(t, 1)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "alice.herdctl")
	if r := c.Ctl("operator", "add", "alice", "--read-only", "--out", cfg); r.Code != 0 {
		t.Fatalf("operator add: %s", r.Stderr)
	}
	if fi, err := os.Stat(cfg); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("alice's config: %v %v", err, fi)
	}
	alice := func(args ...string) Result {
		return RunCtl(t, c.Bin.Ctl, append([]string{"--config", cfg}, args...)...)
	}
	if r := alice("status"); r.Code != 0 {
		t.Errorf("a read-only operator's status: %s", r.Stderr)
	}
	if r := alice("drain", "node-1"); r.Code == 0 || !strings.Contains(r.Stderr, "may not call Drain") {
		t.Errorf("a read-only operator draining: exit %d %q", r.Code, r.Stderr)
	}
	if r := c.Ctl("operator", "list"); r.Code != 0 || !strings.Contains(r.Stdout, "alice") || !strings.Contains(r.Stdout, "operator-readonly") {
		t.Errorf("operator list: %s%s", r.Stdout, r.Stderr)
	}
	if r := c.Ctl("operator", "revoke", "alice"); r.Code != 0 {
		t.Fatalf("revoke: %s", r.Stderr)
	}
	if r := alice("status"); r.Code == 0 || !strings.Contains(r.Stderr, "revoked") {
		t.Errorf("a revoked operator's status: exit %d %q", r.Code, r.Stderr)
	}
	if r := c.Ctl("operator", "revoke", "nobody"); r.Code == 0 || !strings.Contains(r.Stderr, "no operator") {
		t.Errorf("revoke of an unknown operator: exit %d %q", r.Code, r.Stderr)
	}
}
