package certs

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/pki"
)

var localHosts = []string{"127.0.0.1"}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newKey(t *testing.T) pki.ClusterKey {
	t.Helper()
	k, err := pki.NewClusterKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// serve starts a gRPC server on 127.0.0.1:0 and returns its address; the
// server stops when the test ends (or earlier through the returned server).
func serve(t *testing.T, opts []grpc.ServerOption, register func(*grpc.Server)) (string, *grpc.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	register(s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return lis.Addr().String(), s
}

// front is a bootstrapped front serving Join under the policy fronts use.
type front struct {
	addr   string
	srv    *grpc.Server
	bundle *pki.Bundle
	ca     *pki.CA
	key    pki.ClusterKey
}

func joinPolicy(ca *pki.CA) *Policy {
	return &Policy{Pool: ca.Pool(), Public: map[string]bool{"/herd.v1.Join/Certify": true}}
}

func startFront(t *testing.T, key pki.ClusterKey) *front {
	t.Helper()
	b, ca, err := Bootstrap(t.TempDir(), "front-1", localHosts)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := joinPolicy(ca).ServerOptions(b)
	if err != nil {
		t.Fatal(err)
	}
	addr, srv := serve(t, opts, func(s *grpc.Server) {
		herdv1.RegisterJoinServer(s, &Service{Keys: []pki.ClusterKey{key}, CA: ca, Log: discard()})
	})
	return &front{addr: addr, srv: srv, bundle: b, ca: ca, key: key}
}

// counting returns a fronts func over addrs that counts its calls.
func counting(n *atomic.Int32, addrs ...string) func() []string {
	return func() []string {
		n.Add(1)
		return addrs
	}
}

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("no certificate PEM in %q", certPEM)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkLeaf checks that b holds a certificate for role/name that chains
// to ca and matches b's key.
func checkLeaf(t *testing.T, b *pki.Bundle, ca *pki.CA, role, name string) *x509.Certificate {
	t.Helper()
	if !bytes.Equal(b.CAPEM, ca.CertPEM) {
		t.Errorf("bundle CA is not the cluster CA")
	}
	if _, err := b.TLSCertificate(); err != nil {
		t.Errorf("certificate and key do not pair: %v", err)
	}
	c := parseCert(t, b.CertPEM)
	gotRole, gotName, err := pki.Identity(c)
	if err != nil || gotRole != role || gotName != name {
		t.Errorf("identity = %q %q %v, want %q %q", gotRole, gotName, err, role, name)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("certificate does not chain to the CA for %v: %v", usage, err)
		}
	}
	if time.Until(c.NotAfter) < 300*24*time.Hour {
		t.Errorf("certificate expires %v, want about a year from now", c.NotAfter)
	}
	return c
}

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %04o, want %04o", path, got, want)
	}
}

func TestBootstrap(t *testing.T) {
	dataDir := t.TempDir()
	b, ca, err := Bootstrap(dataDir, "front-1", []string{"127.0.0.1", "front-1.example"})
	if err != nil {
		t.Fatal(err)
	}
	c := checkLeaf(t, b, ca, pki.RoleFront, "front-1")
	if len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || len(c.DNSNames) != 1 || c.DNSNames[0] != "front-1.example" {
		t.Errorf("SANs = %v %v", c.IPAddresses, c.DNSNames)
	}
	if !ca.Cert.IsCA || len(ca.KeyPEM) == 0 {
		t.Errorf("CA = %+v", ca.Cert)
	}

	dir := filepath.Join(dataDir, Dir)
	checkMode(t, filepath.Join(dir, caKeyFile), 0o600)
	checkMode(t, filepath.Join(dir, pki.KeyFile), 0o600)
	key, err := os.ReadFile(filepath.Join(dir, caKeyFile))
	if err != nil || !bytes.Equal(key, ca.KeyPEM) {
		t.Errorf("ca.key holds %q (%v), want the CA key", key, err)
	}
	if _, err := os.Stat(filepath.Join(dir, caKeyFile+".tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary CA key file left behind: %v", err)
	}
	saved, err := pki.LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(saved.CertPEM, b.CertPEM) || !bytes.Equal(saved.KeyPEM, b.KeyPEM) || !bytes.Equal(saved.CAPEM, b.CAPEM) {
		t.Error("saved bundle differs from the returned one")
	}

	// A second start loads everything rather than making a new CA.
	b2, ca2, err := Bootstrap(dataDir, "front-1", localHosts)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca2.CertPEM, ca.CertPEM) || !bytes.Equal(ca2.KeyPEM, ca.KeyPEM) {
		t.Error("second Bootstrap made a new CA")
	}
	if !bytes.Equal(b2.CertPEM, b.CertPEM) || !bytes.Equal(b2.KeyPEM, b.KeyPEM) {
		t.Error("second Bootstrap made a new certificate")
	}

	// Another data dir is another cluster.
	_, other, err := Bootstrap(t.TempDir(), "front-1", localHosts)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other.CertPEM, ca.CertPEM) {
		t.Error("two data dirs share a CA")
	}
}

func TestBootstrapDamaged(t *testing.T) {
	dataDir := t.TempDir()
	if _, _, err := Bootstrap(dataDir, "front-1", localHosts); err != nil {
		t.Fatal(err)
	}
	// A CA key that is not the CA's: refuse rather than replace the CA.
	other, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, Dir, caKeyFile), other.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Bootstrap(dataDir, "front-1", localHosts); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("Bootstrap with a foreign CA key: %v, want a mismatch error", err)
	}
}

func TestObtainNode(t *testing.T) {
	key := newKey(t)
	f := startFront(t, key)
	dataDir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()

	var calls atomic.Int32
	b, ca, err := Obtain(ctx, key, pki.RoleNode, "node-1", localHosts, dataDir, counting(&calls, f.addr), discard())
	if err != nil {
		t.Fatal(err)
	}
	if ca != nil {
		t.Error("a node got the CA")
	}
	c := checkLeaf(t, b, f.ca, pki.RoleNode, "node-1")
	if len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("IP SANs = %v", c.IPAddresses)
	}

	dir := filepath.Join(dataDir, Dir)
	saved, err := pki.LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(saved.CertPEM, b.CertPEM) || !bytes.Equal(saved.KeyPEM, b.KeyPEM) {
		t.Error("saved bundle differs from the returned one")
	}
	checkMode(t, filepath.Join(dir, pki.KeyFile), 0o600)
	if _, err := os.Stat(filepath.Join(dir, caKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a node saved a CA key: %v", err)
	}

	// The certificate is good for mTLS with the front (as client) too.
	cfg, err := pki.ClientTLS(b, pki.RoleFront)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", f.addr, cfg)
	if err != nil {
		t.Fatalf("mTLS handshake with the front: %v", err)
	}
	if n := len(conn.ConnectionState().PeerCertificates); n == 0 {
		t.Error("no server certificate")
	}
	conn.Close()

	// A restart loads the bundle without asking any front.
	f.srv.Stop()
	calls.Store(0)
	b2, ca2, err := Obtain(ctx, key, pki.RoleNode, "node-1", localHosts, dataDir, counting(&calls, f.addr), discard())
	if err != nil {
		t.Fatal(err)
	}
	if ca2 != nil || !bytes.Equal(b2.CertPEM, b.CertPEM) || !bytes.Equal(b2.KeyPEM, b.KeyPEM) {
		t.Error("second Obtain did not load the saved bundle")
	}
	if calls.Load() != 0 {
		t.Errorf("second Obtain asked for fronts %d times", calls.Load())
	}
}

func TestObtainFront(t *testing.T) {
	key := newKey(t)
	f := startFront(t, key)
	dataDir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()

	var calls atomic.Int32
	b, ca, err := Obtain(ctx, key, pki.RoleFront, "front-2", localHosts, dataDir, counting(&calls, f.addr), discard())
	if err != nil {
		t.Fatal(err)
	}
	checkLeaf(t, b, f.ca, pki.RoleFront, "front-2")
	if ca == nil {
		t.Fatal("a front got no CA")
	}
	if !bytes.Equal(ca.CertPEM, f.ca.CertPEM) || !bytes.Equal(ca.KeyPEM, f.ca.KeyPEM) {
		t.Error("the CA a front got is not the cluster CA")
	}
	// The second front can certify in turn.
	if _, err := ca.IssueBundle(pki.RoleNode, "node-9", nil, time.Hour); err != nil {
		t.Errorf("the joined front cannot issue: %v", err)
	}
	dir := filepath.Join(dataDir, Dir)
	checkMode(t, filepath.Join(dir, caKeyFile), 0o600)
	checkMode(t, filepath.Join(dir, pki.KeyFile), 0o600)
	if key, err := os.ReadFile(filepath.Join(dir, caKeyFile)); err != nil || !bytes.Equal(key, f.ca.KeyPEM) {
		t.Errorf("saved CA key: %v", err)
	}

	f.srv.Stop()
	calls.Store(0)
	b2, ca2, err := Obtain(ctx, key, pki.RoleFront, "front-2", localHosts, dataDir, counting(&calls, f.addr), discard())
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 0 {
		t.Errorf("second Obtain asked for fronts %d times", calls.Load())
	}
	if !bytes.Equal(b2.CertPEM, b.CertPEM) || ca2 == nil || !bytes.Equal(ca2.KeyPEM, f.ca.KeyPEM) {
		t.Error("second Obtain did not load the saved bundle and CA")
	}
	// Bootstrap on a joined front's data dir keeps the cluster CA.
	_, ca3, err := Bootstrap(dataDir, "front-2", localHosts)
	if err != nil || !bytes.Equal(ca3.CertPEM, f.ca.CertPEM) {
		t.Errorf("Bootstrap on a joined front: %v, or a new CA", err)
	}
}

// A node's saved bundle is not enough for a front: it needs the CA key.
func TestObtainFrontOverNodeBundle(t *testing.T) {
	key := newKey(t)
	f := startFront(t, key)
	dataDir := t.TempDir()
	nb, err := f.ca.IssueBundle(pki.RoleNode, "x", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := nb.Save(filepath.Join(dataDir, Dir)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	var calls atomic.Int32
	b, ca, err := Obtain(ctx, key, pki.RoleFront, "x", localHosts, dataDir, counting(&calls, f.addr), discard())
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() == 0 || ca == nil {
		t.Fatal("Obtain used the node bundle for a front")
	}
	checkLeaf(t, b, f.ca, pki.RoleFront, "x")
}

// An expiring bundle is renewed from a front.
func TestObtainRenews(t *testing.T) {
	key := newKey(t)
	f := startFront(t, key)
	dataDir := t.TempDir()
	old, err := f.ca.IssueBundle(pki.RoleNode, "node-1", nil, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Save(filepath.Join(dataDir, Dir)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	var calls atomic.Int32
	b, _, err := Obtain(ctx, key, pki.RoleNode, "node-1", localHosts, dataDir, counting(&calls, f.addr), discard())
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() == 0 || bytes.Equal(b.CertPEM, old.CertPEM) {
		t.Fatal("an expiring certificate was kept")
	}
	checkLeaf(t, b, f.ca, pki.RoleNode, "node-1")
	saved, err := pki.LoadBundle(filepath.Join(dataDir, Dir))
	if err != nil || !bytes.Equal(saved.CertPEM, b.CertPEM) {
		t.Errorf("renewed bundle not saved: %v", err)
	}
}

// Obtain goes on to the next front when one does not answer, and keeps
// asking while fronts() has none yet.
func TestObtainTriesFronts(t *testing.T) {
	key := newKey(t)
	f := startFront(t, key)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	var calls atomic.Int32
	fronts := func() []string {
		if calls.Add(1) == 1 {
			return nil // none known yet
		}
		return []string{dead, f.addr}
	}
	b, _, err := Obtain(ctx, key, pki.RoleNode, "node-1", localHosts, t.TempDir(), fronts, discard())
	if err != nil {
		t.Fatal(err)
	}
	checkLeaf(t, b, f.ca, pki.RoleNode, "node-1")
	if calls.Load() != 2 {
		t.Errorf("fronts() called %d times, want 2", calls.Load())
	}
}

func TestObtainWrongKey(t *testing.T) {
	f := startFront(t, newKey(t))
	dataDir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 600*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := Obtain(ctx, newKey(t), pki.RoleNode, "node-1", localHosts, dataDir, func() []string { return []string{f.addr} }, discard())
	if err == nil {
		t.Fatal("Obtain with a wrong cluster key succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "context deadline exceeded") {
		t.Errorf("error %q does not say the context ended", err)
	}
	if !strings.Contains(err.Error(), "not signed with this cluster's key") || !strings.Contains(err.Error(), f.addr) {
		t.Errorf("error %q does not carry the front's answer", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Obtain returned %v after its context ended", d)
	}
	if _, err := os.Stat(filepath.Join(dataDir, Dir, pki.CertFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a certificate was saved: %v", err)
	}
}

// dialJoin calls a front's Join without a client certificate, as a
// joining member does.
func dialJoin(t *testing.T, addr string) herdv1.JoinClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return herdv1.NewJoinClient(conn)
}

// request makes a CertifyRequest for a fresh key, signed with key.
func request(t *testing.T, key pki.ClusterKey, role, name string) *herdv1.CertifyRequest {
	t.Helper()
	signer, _, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	req := &herdv1.CertifyRequest{Name: name, Role: role, PublicKey: pub, Hosts: localHosts, Nonce: []byte("0123456789abcdef0123456789abcdef")}
	req.Proof = key.Sign(requestParts(req)...)
	return req
}

func TestCertify(t *testing.T) {
	key := newKey(t)
	f := startFront(t, key)
	join := dialJoin(t, f.addr)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()

	t.Run("node", func(t *testing.T) {
		req := request(t, key, pki.RoleNode, "node-1")
		resp, err := join.Certify(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetCaKeyPem() != "" {
			t.Error("a node was sent the CA key")
		}
		if resp.GetCaPem() != string(f.ca.CertPEM) {
			t.Error("answer holds another CA")
		}
		if !key.Verify(resp.GetProof(), responseParts(resp, req.GetNonce())...) {
			t.Error("answer proof does not verify")
		}
		if key.Verify(resp.GetProof(), responseParts(resp, []byte("another nonce"))...) {
			t.Error("answer proof does not cover the nonce")
		}
		c := parseCert(t, []byte(resp.GetCertPem()))
		if role, name, err := pki.Identity(c); err != nil || role != pki.RoleNode || name != "node-1" {
			t.Errorf("identity %q %q %v", role, name, err)
		}
		pub, _ := x509.ParsePKIXPublicKey(req.GetPublicKey())
		if !c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
			t.Error("certificate is not for the requested key")
		}
	})
	t.Run("front", func(t *testing.T) {
		req := request(t, key, pki.RoleFront, "front-2")
		resp, err := join.Certify(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := unwrap(key, req.GetNonce(), resp.GetCaKeyPem()); err != nil || string(got) != string(f.ca.KeyPEM) {
			t.Errorf("a front was not sent the CA key, sealed: %v", err)
		}
		if strings.Contains(resp.GetCaKeyPem(), "PRIVATE KEY") {
			t.Error("the CA key travels in the clear")
		}
		if _, err := unwrap(newKey(t), req.GetNonce(), resp.GetCaKeyPem()); err == nil {
			t.Error("the sealed CA key opens with another cluster key")
		}
		if !key.Verify(resp.GetProof(), responseParts(resp, req.GetNonce())...) {
			t.Error("answer proof does not verify")
		}
	})

	for _, tc := range []struct {
		name string
		req  func() *herdv1.CertifyRequest
		code codes.Code
		msg  string
	}{
		{"wrong key", func() *herdv1.CertifyRequest { return request(t, newKey(t), pki.RoleNode, "node-1") }, codes.PermissionDenied, "not signed with this cluster's key"},
		{"no proof", func() *herdv1.CertifyRequest {
			r := request(t, key, pki.RoleNode, "node-1")
			r.Proof = nil
			return r
		}, codes.PermissionDenied, "not signed with this cluster's key"},
		// The proof covers every field: a node's request cannot be turned
		// into a front's (which would be sent the CA key).
		{"role changed", func() *herdv1.CertifyRequest {
			r := request(t, key, pki.RoleNode, "node-1")
			r.Role = pki.RoleFront
			return r
		}, codes.PermissionDenied, "not signed with this cluster's key"},
		{"name changed", func() *herdv1.CertifyRequest {
			r := request(t, key, pki.RoleNode, "node-1")
			r.Name = "node-2"
			return r
		}, codes.PermissionDenied, "not signed with this cluster's key"},
		{"hosts changed", func() *herdv1.CertifyRequest {
			r := request(t, key, pki.RoleNode, "node-1")
			r.Hosts = []string{"10.0.0.1"}
			return r
		}, codes.PermissionDenied, "not signed with this cluster's key"},
		{"public key changed", func() *herdv1.CertifyRequest {
			r := request(t, key, pki.RoleNode, "node-1")
			r.PublicKey = request(t, key, pki.RoleNode, "node-1").PublicKey
			return r
		}, codes.PermissionDenied, "not signed with this cluster's key"},
		{"nonce changed", func() *herdv1.CertifyRequest {
			r := request(t, key, pki.RoleNode, "node-1")
			r.Nonce = []byte("x")
			return r
		}, codes.PermissionDenied, "not signed with this cluster's key"},
		// Join never hands out operator certificates, even to a key holder.
		{"operator role", func() *herdv1.CertifyRequest { return request(t, key, pki.RoleOperator, "alice") }, codes.InvalidArgument, "want front or node"},
		{"reader role", func() *herdv1.CertifyRequest { return request(t, key, pki.RoleReader, "bob") }, codes.InvalidArgument, "want front or node"},
		{"no name", func() *herdv1.CertifyRequest { return request(t, key, pki.RoleNode, "") }, codes.InvalidArgument, "no member name"},
		{"bad public key", func() *herdv1.CertifyRequest {
			r := request(t, key, pki.RoleNode, "node-1")
			r.PublicKey = []byte("junk")
			r.Proof = key.Sign(requestParts(r)...)
			return r
		}, codes.InvalidArgument, "public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := join.Certify(ctx, tc.req())
			if err == nil {
				t.Fatalf("certified: %v", resp)
			}
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Errorf("got %v %q, want %v containing %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
		})
	}
}

// fakeFront answers Certify with a certificate from the real CA, but the
// proof is made by forge (or the answer is a stale one).
type fakeFront struct {
	herdv1.UnimplementedJoinServer
	real  *Service
	forge func(req *herdv1.CertifyRequest, resp *herdv1.CertifyResponse)
}

func (f *fakeFront) Certify(ctx context.Context, req *herdv1.CertifyRequest) (*herdv1.CertifyResponse, error) {
	resp, err := f.real.Certify(ctx, req)
	if err != nil {
		return nil, err
	}
	f.forge(req, resp)
	return resp, nil
}

func TestObtainRefusesFakeFront(t *testing.T) {
	key := newKey(t)
	b, ca, err := Bootstrap(t.TempDir(), "front-1", localHosts)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.ServerTLS(b)
	if err != nil {
		t.Fatal(err)
	}
	real := &Service{Keys: []pki.ClusterKey{key}, CA: ca, Log: discard()}
	other := newKey(t)
	// A genuine answer to someone else's request, to replay.
	stale, err := real.Certify(t.Context(), request(t, key, pki.RoleFront, "front-2"))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		forge func(req *herdv1.CertifyRequest, resp *herdv1.CertifyResponse)
	}{
		{"other key", func(req *herdv1.CertifyRequest, resp *herdv1.CertifyResponse) {
			resp.Proof = other.Sign(responseParts(resp, req.GetNonce())...)
		}},
		{"no proof", func(_ *herdv1.CertifyRequest, resp *herdv1.CertifyResponse) { resp.Proof = nil }},
		{"replayed answer", func(_ *herdv1.CertifyRequest, resp *herdv1.CertifyResponse) {
			resp.CaPem, resp.CertPem, resp.CaKeyPem, resp.Proof = stale.CaPem, stale.CertPem, stale.CaKeyPem, stale.Proof
		}},
		{"CA swapped", func(_ *herdv1.CertifyRequest, resp *herdv1.CertifyResponse) {
			evil, err := pki.NewCA()
			if err != nil {
				panic(err)
			}
			resp.CaPem, resp.CaKeyPem = string(evil.CertPEM), string(evil.KeyPEM)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr, _ := serve(t, []grpc.ServerOption{grpc.Creds(credentials.NewTLS(tlsCfg))}, func(s *grpc.Server) {
				herdv1.RegisterJoinServer(s, &fakeFront{real: real, forge: tc.forge})
			})
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			_, _, err := certify(ctx, key, pki.RoleFront, "front-2", localHosts, addr)
			if err == nil || !strings.Contains(err.Error(), "not signed with the cluster key") {
				t.Errorf("certify from a fake front: %v, want a refusal", err)
			}

			dataDir := t.TempDir()
			ctx, cancel = context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			_, _, err = Obtain(ctx, key, pki.RoleFront, "front-2", localHosts, dataDir, func() []string { return []string{addr} }, discard())
			if err == nil || !strings.Contains(err.Error(), "not signed with the cluster key") {
				t.Errorf("Obtain from a fake front: %v, want a refusal", err)
			}
			if _, err := os.Stat(filepath.Join(dataDir, Dir)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("something was saved from a fake front: %v", err)
			}
		})
	}
}

// A Service under another cluster key refuses the request itself.
func TestObtainOtherCluster(t *testing.T) {
	f := startFront(t, newKey(t))
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	_, _, err := certify(ctx, newKey(t), pki.RoleNode, "node-1", localHosts, f.addr)
	if err == nil || !strings.Contains(err.Error(), "--cluster-key-file") {
		t.Errorf("certify with another cluster's key: %v", err)
	}
}

func TestIssueOperator(t *testing.T) {
	_, ca, err := Bootstrap(t.TempDir(), "front-1", localHosts)
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{pki.RoleOperator, pki.RoleReader} {
		b, err := IssueOperator(ca, "alice", role)
		if err != nil {
			t.Fatal(err)
		}
		checkLeaf(t, b, ca, role, "alice")
	}
	if _, err := IssueOperator(ca, "alice", "root"); err == nil {
		t.Error("IssueOperator with an unknown role succeeded")
	}
}
