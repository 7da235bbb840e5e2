package ctl

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/herdconfig"
	"github.com/herd-run/herd/internal/pki"
)

const noCredentials = "herdctl: no credentials: pass --config FILE or set HERD_CONFIG (the first front wrote it to its <data-dir>/admin.herdctl)\n"

// run runs herdctl with args and returns its exit status, stdout and
// stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, IO{Out: &out, Err: &errb})
	return code, out.String(), errb.String()
}

// cleanEnv unsets the environment herdctl reads, so the tests do not
// depend on the developer's shell.
func cleanEnv(t *testing.T) {
	t.Setenv("HERD_CONFIG", "")
	t.Setenv("HERD_ADDR", "")
}

// wantOneLine fails the test unless stderr is one "herdctl: " line
// holding every string of want.
func wantOneLine(t *testing.T, stderr string, want ...string) {
	t.Helper()
	if !strings.HasPrefix(stderr, "herdctl: ") || strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
		t.Errorf("stderr is not one herdctl line: %q", stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr %q does not say %q", stderr, w)
		}
	}
}

func newCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *pki.CA, role, name string) *pki.Bundle {
	t.Helper()
	b, err := ca.IssueBundle(role, name, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeConfig writes a config for operator "admin" of ca, listing addrs,
// and returns its path.
func writeConfig(t *testing.T, ca *pki.CA, addrs ...string) string {
	t.Helper()
	b := issue(t, ca, pki.RoleOperator, "admin")
	path := filepath.Join(t.TempDir(), herdconfig.AdminFile)
	err := herdconfig.Write(path, &herdconfig.File{
		Addrs: addrs, Name: "admin", Role: pki.RoleOperator,
		CA: string(b.CAPEM), Cert: string(b.CertPEM), Key: string(b.KeyPEM),
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// deadAddr is an address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// fakeFront answers ListNodes for callers with a client certificate of
// its CA, and records who called.
type fakeFront struct {
	herdv1.UnimplementedControlServer
	pool *x509.CertPool

	mu      sync.Mutex
	callers []string
}

func (f *fakeFront) ListNodes(ctx context.Context, _ *herdv1.ListNodesRequest) (*herdv1.ListNodesResponse, error) {
	p, _ := peer.FromContext(ctx)
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "not TLS")
	}
	role, name, err := pki.PeerIdentity(ti.State, f.pool)
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
	}
	f.mu.Lock()
	f.callers = append(f.callers, role+"/"+name)
	f.mu.Unlock()
	return &herdv1.ListNodesResponse{Members: []*herdv1.Member{{Name: "front-1", Role: herdv1.Role_ROLE_FRONT}}}, nil
}

func (f *fakeFront) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.callers...)
}

// serve runs a gRPC server with creds (nil: plain TCP) and the fake
// Control service, and returns its address.
func serve(t *testing.T, creds credentials.TransportCredentials, f *fakeFront) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	s := grpc.NewServer(opts...)
	herdv1.RegisterControlServer(s, f)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

// startFront runs a fake front with a front certificate of ca.
func startFront(t *testing.T, ca *pki.CA) (string, *fakeFront) {
	t.Helper()
	cfg, err := pki.ServerTLS(issue(t, ca, pki.RoleFront, "front-1"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeFront{pool: ca.Pool()}
	return serve(t, credentials.NewTLS(cfg), f), f
}

func TestNoConfig(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	for _, args := range [][]string{
		{"status"},
		{"nodes"},
		{"--addr", deadAddr(t), "nodes"}, // an address is no credential
		{"logs", "hello"},
		{"raft", "peers"},
		{"deploy", "hello", dir, "--cmd", "exec ./hello"},
	} {
		code, stdout, stderr := run(t, args...)
		if code != 1 || stderr != noCredentials || stdout != "" {
			t.Errorf("herdctl %v: exit %d, stdout %q, stderr %q; want exit 1 and %q", args, code, stdout, stderr, noCredentials)
		}
	}
}

func TestNoConfigUsageErrorsFirst(t *testing.T) {
	cleanEnv(t)
	for _, args := range [][]string{
		{"status", "extra"},
		{"nodes", "--bogus"},
		{"-o", "yaml", "status"},
		{"nosuchcommand"},
	} {
		code, _, stderr := run(t, args...)
		if code != 2 {
			t.Errorf("herdctl %v: exit %d, want 2 (usage); stderr %q", args, code, stderr)
		}
		wantOneLine(t, stderr)
	}
}

func TestKeygenAndHelpWithoutConfig(t *testing.T) {
	cleanEnv(t)
	code, stdout, stderr := run(t, "keygen")
	if code != 0 || stderr != "" {
		t.Fatalf("keygen: exit %d, stderr %q", code, stderr)
	}
	if _, err := pki.ParseClusterKey(strings.TrimSpace(stdout)); err != nil {
		t.Errorf("keygen printed %q: %v", stdout, err)
	}

	for _, args := range [][]string{{}, {"--help"}, {"help"}, {"help", "status"}, {"status", "--help"}, {"deploy", "-h"}} {
		code, stdout, stderr := run(t, args...)
		if code != 0 || stderr != "" || stdout == "" {
			t.Errorf("herdctl %v: exit %d, stderr %q, %d bytes of help", args, code, stderr, len(stdout))
		}
		if !strings.Contains(stdout, "--config") {
			t.Errorf("herdctl %v: help does not mention --config", args)
		}
	}
	_, stdout, _ = run(t, "--help")
	for _, w := range []string{"HERD_CONFIG", "admin.herdctl", "--addr"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("root help does not mention %s:\n%s", w, stdout)
		}
	}
}

func TestConfigBadModeFromEnv(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix modes")
	}
	cleanEnv(t)
	path := writeConfig(t, newCA(t), deadAddr(t))
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HERD_CONFIG", path)
	code, stdout, stderr := run(t, "status")
	if code != 1 || stdout != "" {
		t.Errorf("exit %d, stdout %q; want 1 and nothing", code, stdout)
	}
	wantOneLine(t, stderr, "HERD_CONFIG", "chmod 600 "+path)
}

func TestConfigBad(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.herdctl")
	badPEM := filepath.Join(dir, "badpem.herdctl")
	if err := os.WriteFile(badPEM, []byte(`{"addrs":["127.0.0.1:7700"],"ca":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n","cert":"x","key":"y"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	notJSON := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(notJSON, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want string
	}{
		{missing, "no such file or directory"},
		{badPEM, `"ca"`},
		{notJSON, "not a herdctl config"},
	} {
		code, stdout, stderr := run(t, "--config", tc.path, "nodes")
		if code != 1 || stdout != "" {
			t.Errorf("--config %s: exit %d, stdout %q; want 1 and nothing", tc.path, code, stdout)
		}
		wantOneLine(t, stderr, tc.path, tc.want)
	}
}

// writeConfigValid writes a config whose operator certificate is valid
// from notBefore to notAfter.
func writeConfigValid(t *testing.T, notBefore, notAfter time.Time) string {
	t.Helper()
	ca := newCA(t)
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: "admin"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{{Scheme: "herd", Host: pki.RoleOperator, Path: "/admin"}},
	}, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), herdconfig.AdminFile)
	if err := herdconfig.Write(path, &herdconfig.File{
		Addrs: []string{deadAddr(t)}, Name: "admin", Role: pki.RoleOperator,
		CA: string(ca.CertPEM), Cert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), Key: string(keyPEM),
	}); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigCertificateOutOfValidity(t *testing.T) {
	cleanEnv(t)
	now := time.Now()
	expired := writeConfigValid(t, now.Add(-48*time.Hour), now.Add(-time.Hour))
	code, _, stderr := run(t, "--config", expired, "status")
	if code != 1 {
		t.Errorf("expired: exit %d, want 1", code)
	}
	wantOneLine(t, stderr, expired, "expired on", "get a new config")

	future := writeConfigValid(t, now.Add(time.Hour), now.Add(48*time.Hour))
	code, _, stderr = run(t, "--config", future, "status")
	if code != 1 {
		t.Errorf("not yet valid: exit %d, want 1", code)
	}
	wantOneLine(t, stderr, future, "not valid until", "clock")
}

func TestConfigMTLS(t *testing.T) {
	cleanEnv(t)
	ca := newCA(t)
	addr, front := startFront(t, ca)
	// The first address is down: herdctl goes on to the next.
	path := writeConfig(t, ca, deadAddr(t), addr)
	code, stdout, stderr := run(t, "--config", path, "nodes")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if !strings.Contains(stdout, "front-1") {
		t.Errorf("stdout %q does not list front-1", stdout)
	}
	if got := front.seen(); len(got) != 1 || got[0] != pki.RoleOperator+"/admin" {
		t.Errorf("the front saw callers %v, want [%s/admin]", got, pki.RoleOperator)
	}

	// The same through HERD_CONFIG.
	t.Setenv("HERD_CONFIG", path)
	if code, _, stderr := run(t, "nodes"); code != 0 {
		t.Errorf("with HERD_CONFIG: exit %d, stderr %q", code, stderr)
	}
}

func TestAddrOverridesConfig(t *testing.T) {
	cleanEnv(t)
	ca := newCA(t)
	addr, _ := startFront(t, ca)
	dead := deadAddr(t)

	// The config lists only a dead front; --addr and HERD_ADDR replace it.
	path := writeConfig(t, ca, dead)
	if code, _, stderr := run(t, "--config", path, "--addr", addr, "nodes"); code != 0 {
		t.Errorf("--addr: exit %d, stderr %q", code, stderr)
	}
	t.Setenv("HERD_ADDR", " "+addr+", ")
	if code, _, stderr := run(t, "--config", path, "nodes"); code != 0 {
		t.Errorf("HERD_ADDR: exit %d, stderr %q", code, stderr)
	}
	t.Setenv("HERD_ADDR", "")

	// Replaced, not merged: the config's live front is not tried.
	path = writeConfig(t, ca, addr)
	code, _, stderr := run(t, "--config", path, "--addr", dead, "nodes")
	if code != 1 {
		t.Errorf("--addr dead: exit %d, want 1", code)
	}
	wantOneLine(t, stderr, "no front reachable ("+dead+": ")
	if strings.Contains(stderr, addr) {
		t.Errorf("the config's address was tried despite --addr: %q", stderr)
	}
}

func TestOtherClustersFront(t *testing.T) {
	cleanEnv(t)
	addr, front := startFront(t, newCA(t))
	path := writeConfig(t, newCA(t), addr)
	code, _, stderr := run(t, "--config", path, "nodes")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	wantOneLine(t, stderr, "no front reachable ("+addr+": ",
		"): check that --config is this cluster's (the front's certificate did not verify)")
	if got := front.seen(); len(got) != 0 {
		t.Errorf("the front answered %v", got)
	}

	// Through HERD_CONFIG the hint names it.
	t.Setenv("HERD_CONFIG", path)
	_, _, stderr = run(t, "nodes")
	wantOneLine(t, stderr, "check that HERD_CONFIG is this cluster's")
}

func TestFrontRefusesCertificate(t *testing.T) {
	cleanEnv(t)
	ca := newCA(t)
	cfg, err := pki.ServerTLS(issue(t, ca, pki.RoleFront, "front-1"))
	if err != nil {
		t.Fatal(err)
	}
	// A server that wants a client certificate of another CA: herdctl
	// sends none, and the server ends the handshake.
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.ClientCAs = newCA(t).Pool()
	addr := serve(t, credentials.NewTLS(cfg), &fakeFront{pool: ca.Pool()})
	code, _, stderr := run(t, "--config", writeConfig(t, ca, addr), "nodes")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	// Now and then the connection breaks under herdctl's first write
	// before it reads the server's alert: then there is nothing to tell.
	if strings.Contains(stderr, "broken pipe") || strings.Contains(stderr, "connection reset") {
		wantOneLine(t, stderr, "no front reachable")
		return
	}
	wantOneLine(t, stderr, "no front reachable", "remote error: tls:", "check that --config is this cluster's (the front refused its certificate)")
}

func TestFrontWithoutTLS(t *testing.T) {
	cleanEnv(t)
	ca := newCA(t)
	addr := serve(t, nil, &fakeFront{pool: ca.Pool()})
	code, _, stderr := run(t, "--config", writeConfig(t, ca, addr), "nodes")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	wantOneLine(t, stderr, "no front reachable")
	t.Logf("%s", stderr)
}

func TestTLSHint(t *testing.T) {
	for _, tc := range []struct{ msg, want string }{
		{`connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`, ""},
		{"no leader", ""},
		{`connection error: desc = "transport: authentication handshake failed: pki: server certificate: x509: certificate signed by unknown authority"`, "did not verify"},
		{`connection error: desc = "transport: authentication handshake failed: pki: server certificate: x509: certificate has expired or is not yet valid"`, "did not verify"},
		{`connection error: desc = "error reading server preface: remote error: tls: expired certificate"`, "refused its certificate"},
		{`connection error: desc = "transport: authentication handshake failed: tls: first record does not look like a TLS handshake"`, "does not speak TLS"},
	} {
		got := tlsHint(tc.msg, "--config")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("tlsHint(%q) = %q, want %q", tc.msg, got, tc.want)
		}
	}
}
