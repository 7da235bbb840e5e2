package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// issueBundle issues a bundle or fails the test.
func issueBundle(t *testing.T, ca *CA, role, name string) *Bundle {
	t.Helper()
	b, err := ca.IssueBundle(role, name, []string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// expiredBundle issues a bundle whose certificate expired an hour ago.
func expiredBundle(t *testing.T, ca *CA, role, name string) *Bundle {
	t.Helper()
	key, keyPEM, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	certPEM, err := ca.issue(key.Public(), role, name, nil, now.Add(-48*time.Hour), now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &Bundle{CAPEM: ca.CertPEM, CertPEM: certPEM, KeyPEM: keyPEM}
}

func TestBundleSaveLoad(t *testing.T) {
	ca := newCA(t)
	b := issueBundle(t, ca, RoleNode, "node-1")
	dir := filepath.Join(t.TempDir(), "tls", "nested")
	if err := b.Save(dir); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" {
		for name, want := range map[string]os.FileMode{CAFile: 0o644, CertFile: 0o644, KeyFile: 0o600} {
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s: mode %04o, want %04o", name, fi.Mode().Perm(), want)
			}
		}
		if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
			t.Errorf("created dir mode %04o, want 0700", fi.Mode().Perm())
		}
	}
	got, err := LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.CAPEM, b.CAPEM) || !bytes.Equal(got.CertPEM, b.CertPEM) || !bytes.Equal(got.KeyPEM, b.KeyPEM) {
		t.Fatal("loaded bundle differs from saved one")
	}

	// Saving a renewed bundle replaces the files, leaving no temporaries.
	renewed := issueBundle(t, ca, RoleNode, "node-1")
	if err := renewed.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err = LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.CertPEM, renewed.CertPEM) || !bytes.Equal(got.KeyPEM, renewed.KeyPEM) {
		t.Fatal("renewed bundle was not saved")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("dir holds %d entries, want 3", len(entries))
	}
	if runtime.GOOS != "windows" {
		if fi, _ := os.Stat(filepath.Join(dir, KeyFile)); fi.Mode().Perm() != 0o600 {
			t.Errorf("renewed key mode %04o, want 0600", fi.Mode().Perm())
		}
	}
}

func TestLoadBundleMissing(t *testing.T) {
	dir := t.TempDir()
	_, err := LoadBundle(dir)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty dir: error %v, want os.ErrNotExist", err)
	}
	_, err = LoadBundle(filepath.Join(dir, "nope"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing dir: error %v, want os.ErrNotExist", err)
	}
	// One file missing out of three.
	b := issueBundle(t, newCA(t), RoleFront, "f")
	if err := b.Save(dir); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, KeyFile))
	_, err = LoadBundle(dir)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), KeyFile) {
		t.Fatalf("missing key: error %v, want os.ErrNotExist naming %s", err, KeyFile)
	}
}

func TestBundleSaveIncomplete(t *testing.T) {
	b := issueBundle(t, newCA(t), RoleFront, "f")
	for _, bad := range []*Bundle{
		{CertPEM: b.CertPEM, KeyPEM: b.KeyPEM},
		{CAPEM: b.CAPEM, KeyPEM: b.KeyPEM},
		{CAPEM: b.CAPEM, CertPEM: b.CertPEM},
	} {
		dir := t.TempDir()
		if err := bad.Save(dir); err == nil {
			t.Error("saved an incomplete bundle")
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Error("incomplete bundle left files behind")
		}
	}
}

func TestBundleAccessors(t *testing.T) {
	ca := newCA(t)
	b, err := ca.IssueBundle(RoleOperator, "alice", nil, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := b.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if cert.Leaf == nil {
		t.Fatal("TLSCertificate has no parsed leaf")
	}
	pool, err := b.Pool()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("leaf does not verify against the bundle pool: %v", err)
	}
	exp, err := b.Expiry()
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(cert.Leaf.NotAfter) {
		t.Errorf("Expiry = %v, want %v", exp, cert.Leaf.NotAfter)
	}
	if d := time.Until(exp); d < 119*time.Minute || d > 2*time.Hour {
		t.Errorf("Expiry in %v, want about 2h", d)
	}

	// Damaged bundles.
	other := issueBundle(t, ca, RoleOperator, "bob")
	mismatched := &Bundle{CAPEM: b.CAPEM, CertPEM: b.CertPEM, KeyPEM: other.KeyPEM}
	if _, err := mismatched.TLSCertificate(); err == nil {
		t.Error("TLSCertificate accepted a key that is not the certificate's")
	}
	garbage := &Bundle{CAPEM: []byte("x"), CertPEM: []byte("y"), KeyPEM: []byte("z")}
	if _, err := garbage.Pool(); err == nil {
		t.Error("Pool accepted garbage")
	}
	if _, err := garbage.Expiry(); err == nil {
		t.Error("Expiry accepted garbage")
	}
	if _, err := garbage.TLSCertificate(); err == nil {
		t.Error("TLSCertificate accepted garbage")
	}
	if _, err := ServerTLS(garbage); err == nil {
		t.Error("ServerTLS accepted garbage")
	}
	if _, err := ClientTLS(garbage, ""); err == nil {
		t.Error("ClientTLS accepted garbage")
	}
	if _, err := ServerTLS(&Bundle{CAPEM: b.CAPEM}); err == nil {
		t.Error("ServerTLS accepted a bundle without a certificate")
	}
	if _, err := ClientTLS(&Bundle{CAPEM: b.CAPEM, KeyPEM: b.KeyPEM}, ""); err == nil {
		t.Error("ClientTLS accepted a key without a certificate")
	}
	if _, err := ClientTLS(b, "admin"); err == nil {
		t.Error("ClientTLS accepted an unknown wanted role")
	}
}

func TestTLSConfigs(t *testing.T) {
	ca := newCA(t)
	b := issueBundle(t, ca, RoleNode, "n1")
	srv, err := ServerTLS(b)
	if err != nil {
		t.Fatal(err)
	}
	if srv.MinVersion != tls.VersionTLS13 || srv.ClientAuth != tls.RequestClientCert || srv.ClientCAs == nil || len(srv.Certificates) != 1 {
		t.Errorf("ServerTLS = %+v", srv)
	}
	cli, err := ClientTLS(b, RoleNode)
	if err != nil {
		t.Fatal(err)
	}
	if cli.MinVersion != tls.VersionTLS13 || !cli.InsecureSkipVerify || cli.VerifyConnection == nil || len(cli.Certificates) != 1 {
		t.Errorf("ClientTLS = %+v", cli)
	}
	anon, err := ClientTLS(&Bundle{CAPEM: b.CAPEM}, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(anon.Certificates) != 0 {
		t.Error("ClientTLS without a certificate presents one")
	}
}

func TestPeerIdentity(t *testing.T) {
	ca := newCA(t)
	leaf := func(b *Bundle) []*x509.Certificate { return []*x509.Certificate{mustParse(t, b.CertPEM)} }

	role, name, err := PeerIdentity(tls.ConnectionState{PeerCertificates: leaf(issueBundle(t, ca, RoleReader, "eve ü/1"))}, ca.Pool())
	if err != nil || role != RoleReader || name != "eve ü/1" {
		t.Errorf("PeerIdentity = %q, %q, %v", role, name, err)
	}

	_, _, err = PeerIdentity(tls.ConnectionState{}, ca.Pool())
	if !errors.Is(err, ErrNoClientCert) || err.Error() != "no client certificate" {
		t.Errorf("no certificate: error %v, want %q", err, "no client certificate")
	}

	for what, cs := range map[string]tls.ConnectionState{
		"expired":  {PeerCertificates: leaf(expiredBundle(t, ca, RoleOperator, "alice"))},
		"other CA": {PeerCertificates: leaf(issueBundle(t, newCA(t), RoleOperator, "alice"))},
		"CA cert":  {PeerCertificates: []*x509.Certificate{ca.Cert}}, // verifies, but names no one
	} {
		if role, name, err := PeerIdentity(cs, ca.Pool()); err == nil {
			t.Errorf("%s: PeerIdentity = %q, %q, want an error", what, role, name)
		}
	}
	if _, _, err := PeerIdentity(tls.ConnectionState{PeerCertificates: leaf(issueBundle(t, ca, RoleNode, "n"))}, nil); err == nil {
		t.Error("PeerIdentity with a nil pool accepted a certificate")
	}
}

// handshake runs a TLS handshake over loopback TCP. The server, once its
// handshake is done, sends one byte; the client reads it, so that a client
// certificate the server rejects (which in TLS 1.3 the client only learns
// after its own handshake) shows up as a client error too.
func handshake(t *testing.T, srvCfg, cliCfg *tls.Config) (srvState, cliState tls.ConnectionState, srvErr, cliErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(10 * time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			srvErr = err
			return
		}
		c.SetDeadline(deadline)
		s := tls.Server(c, srvCfg)
		defer s.Close()
		if srvErr = s.Handshake(); srvErr != nil {
			return
		}
		srvState = s.ConnectionState()
		_, srvErr = s.Write([]byte{1})
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(deadline)
	cl := tls.Client(c, cliCfg)
	defer cl.Close()
	if cliErr = cl.Handshake(); cliErr == nil {
		cliState = cl.ConnectionState()
		_, cliErr = cl.Read(make([]byte, 1))
	} else {
		cl.Close() // tell the server
	}
	<-done
	return
}

func TestHandshake(t *testing.T) {
	ca := newCA(t)
	nodeB := issueBundle(t, ca, RoleNode, "node-1")
	opB := issueBundle(t, ca, RoleOperator, "alice smith")
	srvCfg, err := ServerTLS(nodeB)
	if err != nil {
		t.Fatal(err)
	}
	client := func(b *Bundle, wantRole string) *tls.Config {
		t.Helper()
		cfg, err := ClientTLS(b, wantRole)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	t.Run("client certificate", func(t *testing.T) {
		ss, cs, serr, cerr := handshake(t, srvCfg, client(opB, RoleNode))
		if serr != nil || cerr != nil {
			t.Fatalf("server: %v; client: %v", serr, cerr)
		}
		if ss.Version != tls.VersionTLS13 {
			t.Errorf("version %x, want TLS 1.3", ss.Version)
		}
		role, name, err := PeerIdentity(ss, ca.Pool())
		if err != nil || role != RoleOperator || name != "alice smith" {
			t.Errorf("server sees %q, %q, %v", role, name, err)
		}
		// The client can read the server's identity the same way.
		if role, name, err := Identity(cs.PeerCertificates[0]); err != nil || role != RoleNode || name != "node-1" {
			t.Errorf("client sees %q, %q, %v", role, name, err)
		}
	})

	t.Run("any role", func(t *testing.T) {
		if _, _, serr, cerr := handshake(t, srvCfg, client(opB, "")); serr != nil || cerr != nil {
			t.Fatalf("server: %v; client: %v", serr, cerr)
		}
	})

	t.Run("no client certificate", func(t *testing.T) {
		ss, _, serr, cerr := handshake(t, srvCfg, client(&Bundle{CAPEM: ca.CertPEM}, RoleNode))
		if serr != nil || cerr != nil {
			t.Fatalf("server: %v; client: %v", serr, cerr)
		}
		_, _, err := PeerIdentity(ss, ca.Pool())
		if !errors.Is(err, ErrNoClientCert) {
			t.Errorf("PeerIdentity: %v, want %v", err, ErrNoClientCert)
		}
	})

	t.Run("wrong role", func(t *testing.T) {
		_, _, _, cerr := handshake(t, srvCfg, client(opB, RoleFront))
		if cerr == nil || !strings.Contains(cerr.Error(), `has role "node", want "front"`) {
			t.Errorf("client error %v, want a role mismatch", cerr)
		}
	})

	t.Run("server from another CA", func(t *testing.T) {
		otherSrv, err := ServerTLS(issueBundle(t, newCA(t), RoleNode, "node-1"))
		if err != nil {
			t.Fatal(err)
		}
		_, _, _, cerr := handshake(t, otherSrv, client(opB, RoleNode))
		if cerr == nil || !strings.Contains(cerr.Error(), "server certificate") {
			t.Errorf("client error %v, want an unknown authority", cerr)
		}
	})

	t.Run("expired server certificate", func(t *testing.T) {
		expSrv, err := ServerTLS(expiredBundle(t, ca, RoleNode, "node-1"))
		if err != nil {
			t.Fatal(err)
		}
		_, _, _, cerr := handshake(t, expSrv, client(opB, RoleNode))
		if cerr == nil || !strings.Contains(cerr.Error(), "expired") {
			t.Errorf("client error %v, want an expired certificate", cerr)
		}
	})

	t.Run("client from another CA", func(t *testing.T) {
		stranger := issueBundle(t, newCA(t), RoleOperator, "mallory")
		stranger.CAPEM = ca.CertPEM // trusts our CA, but is not signed by it
		cfg := client(stranger, RoleNode)
		// Go's client keeps back a certificate the server's CA list does
		// not cover: the server sees a caller without one.
		ss, _, serr, cerr := handshake(t, srvCfg, cfg)
		if serr != nil || cerr != nil {
			t.Fatalf("server: %v; client: %v", serr, cerr)
		}
		if _, _, err := PeerIdentity(ss, ca.Pool()); !errors.Is(err, ErrNoClientCert) {
			t.Errorf("PeerIdentity: %v, want %v", err, ErrNoClientCert)
		}
		// A client that sends it anyway completes the handshake (the
		// server checks per call) and PeerIdentity refuses it.
		cert := cfg.Certificates[0]
		cfg.Certificates = nil
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
		ss, _, serr, cerr = handshake(t, srvCfg, cfg)
		if serr != nil || cerr != nil {
			t.Fatalf("forced: server: %v; client: %v", serr, cerr)
		}
		if _, _, err := PeerIdentity(ss, ca.Pool()); err == nil || errors.Is(err, ErrNoClientCert) {
			t.Errorf("forced: PeerIdentity = %v, want a verification error", err)
		}
	})

	t.Run("expired client certificate", func(t *testing.T) {
		ss, _, serr, cerr := handshake(t, srvCfg, client(expiredBundle(t, ca, RoleOperator, "alice"), RoleNode))
		if serr != nil || cerr != nil {
			t.Fatalf("server: %v; client: %v", serr, cerr)
		}
		if _, _, err := PeerIdentity(ss, ca.Pool()); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Errorf("PeerIdentity of an expired certificate = %v", err)
		}
	})

	t.Run("TLS 1.2 client", func(t *testing.T) {
		cfg := client(opB, RoleNode)
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		if _, _, serr, _ := handshake(t, srvCfg, cfg); serr == nil {
			t.Error("server accepted TLS 1.2")
		}
	})
}
