package clustertest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
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
	r := RunCtl(t, c.Bin.Node, "--data-dir", filepath.Join(dir, "a"), "--name", "keyless", "--gossip", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--admin", "", "--join", c.Front.Addrs["gossip"])
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
		"--gossip", NodeIP(9)+":0", "--grpc", NodeIP(9)+":0", "--admin", "", "--join", c.Front.Addrs["gossip"], "--cluster-key-file", wrong, "--log-level", "debug")
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
	other, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.IssueBundle(pki.RoleOperator, "admin", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign.CAPEM = caPEM // trusts this cluster, signed by another
	if err := call(foreign, front, pki.RoleFront, status); grpcstatus.Code(err) != codes.Unauthenticated {
		t.Errorf("an operator of another CA: %v, want Unauthenticated", err)
	}
	short, err := ca.IssueBundle(pki.RoleOperator, "admin", nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if err := call(short, front, pki.RoleFront, drain); grpcstatus.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "expired") {
		t.Errorf("an expired operator certificate: %v, want Unauthenticated naming the expiry", err)
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
	// Server reflection (what grpcurl uses) lists the API to operators.
	services := func(conn *grpc.ClientConn) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			return err
		}
		if err := st.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			return err
		}
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		if !slices.Contains(names, "herd.v1.Control") {
			return fmt.Errorf("services %v", names)
		}
		return nil
	}
	if err := call(reader, front, pki.RoleFront, services); err != nil {
		t.Errorf("reflection for a read-only operator: %v", err)
	}
	if err := call(noCert, front, pki.RoleFront, services); grpcstatus.Code(err) != codes.Unauthenticated {
		t.Errorf("reflection without a certificate: %v, want Unauthenticated", err)
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
	// Health checks need no certificate: on the admin port (plain HTTP/2,
	// as grpc_health_probe and kubelet speak it) and on the mTLS port.
	check := func(conn *grpc.ClientConn) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "herd.v1.Control"})
		if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			err = fmt.Errorf("status %v", resp.GetStatus())
		}
		return err
	}
	if err := call(noCert, front, pki.RoleFront, check); err != nil {
		t.Errorf("health on the gRPC port without a certificate: %v", err)
	}
	adminConn, err := grpc.NewClient(c.Front.Addrs["admin"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer adminConn.Close()
	if err := check(adminConn); err != nil {
		t.Errorf("health on the admin port: %v", err)
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
	// The node's admin port: its workers on /metrics (never their env),
	// and gRPC health without a certificate.
	resp, err := http.Get("http://" + c.Nodes[0].Addrs["admin"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `herd_node_worker_ready{app="hello",release="v1",state="ready",worker="1"} 1`) || strings.Contains(string(body), "s3cret-value") {
		t.Errorf("node /metrics:\n%s", body)
	}
	conn, err := grpc.NewClient(c.Nodes[0].Addrs["admin"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "herd.v1.Agent"}); err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("node health on the admin port: %v %v", hr, err)
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

// TestGossipEncryptedOnTheWire captures every packet on the loopback
// interface (a raw socket: CI runs as root) while a member joins, and
// finds its name nowhere, though it crosses gossip in every alive message.
// A datagram of our own proves the capture sees plaintext.
func TestGossipEncryptedOnTheWire(t *testing.T) {
	c := Start(t, 1)
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	proto := int(uint16(syscall.ETH_P_ALL)<<8 | uint16(syscall.ETH_P_ALL)>>8)
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, proto)
	if err != nil {
		t.Fatalf("raw socket (needs root, as CI runs): %v", err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: lo.Index}); err != nil {
		t.Fatal(err)
	}
	syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &syscall.Timeval{Usec: 100000})
	const canary, control = "canary-7f3a9c", "capture-control-5e1d"
	var captured bytes.Buffer
	packets := 0
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := syscall.Recvfrom(fd, buf, 0)
			if err != nil || n <= 0 {
				continue
			}
			packets++
			captured.Write(buf[:n])
			captured.WriteByte(0)
		}
	}()
	p := c.start(canary, c.Bin.Node, "--name", canary, "--advertise", NodeIP(8), "--gossip", NodeIP(8)+":0",
		"--grpc", NodeIP(8)+":0", "--admin", NodeIP(8)+":0", "--join", c.Front.Addrs["gossip"], "--cluster-key-file", c.KeyFile(),
		"--port-range", "29900-29950")
	defer p.Stop(10 * time.Second)
	c.WaitMembers(3)
	udp, err := net.Dial("udp", "127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	udp.Write([]byte(control))
	udp.Close()
	time.Sleep(1500 * time.Millisecond) // more gossip rounds
	close(stop)
	<-done
	if !bytes.Contains(captured.Bytes(), []byte(control)) {
		t.Fatalf("the capture (%d packets) missed our own plaintext datagram: it proves nothing", packets)
	}
	if bytes.Contains(captured.Bytes(), []byte(canary)) {
		t.Errorf("the member's name %q crossed loopback in plaintext (%d packets captured)", canary, packets)
	}
	t.Logf("%d packets captured while %s joined; its name was in none", packets, canary)
}
