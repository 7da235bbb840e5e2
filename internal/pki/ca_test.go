package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

// newCA makes a CA or fails the test.
func newCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// mustParse parses a certificate PEM or fails the test.
func mustParse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	c, err := parseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewKey(t *testing.T) {
	key, keyPEM, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("key PEM is not a PKCS #8 PRIVATE KEY block: %q", keyPEM)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ec, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		t.Fatalf("key is %T, want ECDSA P-256", parsed)
	}
	if !ec.PublicKey.Equal(key.Public()) {
		t.Fatal("PEM and returned key differ")
	}
	again, err := parseKeyPEM(keyPEM)
	if err != nil || !ec.Equal(again) {
		t.Fatalf("parseKeyPEM: %v", err)
	}
}

func TestNewCA(t *testing.T) {
	ca := newCA(t)
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid {
		t.Error("CA certificate is not a CA")
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("CA certificate cannot sign certificates")
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
	if !strings.HasPrefix(c.Subject.CommonName, "herd cluster CA ") || len(c.Subject.CommonName) <= len("herd cluster CA ") {
		t.Errorf("CA name = %q", c.Subject.CommonName)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", c.PublicKey)
	}
	if life := c.NotAfter.Sub(time.Now()); life < 9*365*24*time.Hour || life > 11*365*24*time.Hour {
		t.Errorf("CA valid for %v more, want about 10 years", life)
	}
	if !c.NotBefore.Before(time.Now()) {
		t.Error("CA not valid yet")
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v", c.SerialNumber)
	}
	if other := newCA(t); other.Cert.Subject.CommonName == c.Subject.CommonName {
		t.Error("two CAs have the same name")
	}
}

func TestParseCA(t *testing.T) {
	ca := newCA(t)
	got, err := ParseCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.Equal(ca.Cert) {
		t.Fatal("parsed certificate differs")
	}
	// The parsed CA issues certificates that the original verifies.
	b, err := got.IssueBundle(RoleNode, "n1", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf := mustParse(t, b.CertPEM)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err != nil {
		t.Fatal(err)
	}

	other := newCA(t)
	leafBundle, _ := ca.IssueBundle(RoleNode, "n1", nil, 0)
	for name, tc := range map[string]struct {
		cert, key []byte
		want      string
	}{
		"garbage cert":  {[]byte("nope"), ca.KeyPEM, "CA certificate"},
		"garbage key":   {ca.CertPEM, []byte("nope"), "CA key"},
		"cert as key":   {ca.CertPEM, ca.CertPEM, "CA key"},
		"other CA key":  {ca.CertPEM, other.KeyPEM, "does not match"},
		"leaf as CA":    {leafBundle.CertPEM, leafBundle.KeyPEM, "not a CA"},
		"empty":         {nil, nil, "CA certificate"},
		"truncated key": {ca.CertPEM, ca.KeyPEM[:len(ca.KeyPEM)/2], "CA key"},
	} {
		_, err := ParseCA(tc.cert, tc.key)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
}

// oddNames are names that need escaping in a URI.
var oddNames = []string{
	"web-1",
	"alice@example.com",
	"a/b",
	"/leading/slash/",
	"with space",
	"per%cent",
	"%2F",
	"q?x#y",
	"semi;colon,comma",
	"+plus=eq&amp:colon",
	"..",
	"ünïcødé 名前",
	`back\slash"quote'`,
	"tab\tnewline\n",
}

func TestIssueAndIdentity(t *testing.T) {
	ca := newCA(t)
	key, _, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{RoleFront, RoleNode, RoleOperator, RoleReader} {
		for _, name := range oddNames {
			certPEM, err := ca.Issue(key.Public(), role, name, nil, 0)
			if err != nil {
				t.Fatalf("Issue(%s, %q): %v", role, name, err)
			}
			c := mustParse(t, certPEM)
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
					t.Errorf("%s/%q: verify for usage %v: %v", role, name, usage, err)
				}
			}
			gotRole, gotName, err := Identity(c)
			if err != nil {
				t.Errorf("Identity(%s, %q): %v", role, name, err)
				continue
			}
			if gotRole != role || gotName != name {
				t.Errorf("Identity = %q, %q; want %q, %q", gotRole, gotName, role, name)
			}
		}
	}
}

func TestIssueDetails(t *testing.T) {
	ca := newCA(t)
	key, _, _ := NewKey()
	certPEM, err := ca.Issue(key.Public(), RoleNode, "a/b c", []string{"10.0.0.1", "", "node1.example", " ::1 ", "[fe80::1]", "localhost"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := mustParse(t, certPEM)

	if len(c.URIs) != 1 || c.URIs[0].String() != "herd://node/a%2Fb%20c" {
		t.Errorf("URIs = %v, want [herd://node/a%%2Fb%%20c]", c.URIs)
	}
	wantIPs := []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("::1"), net.ParseIP("fe80::1")}
	if len(c.IPAddresses) != len(wantIPs) {
		t.Errorf("IPs = %v, want %v", c.IPAddresses, wantIPs)
	} else {
		for i := range wantIPs {
			if !c.IPAddresses[i].Equal(wantIPs[i]) {
				t.Errorf("IP %d = %v, want %v", i, c.IPAddresses[i], wantIPs[i])
			}
		}
	}
	if strings.Join(c.DNSNames, ",") != "node1.example,localhost" {
		t.Errorf("DNS names = %v", c.DNSNames)
	}
	if len(c.ExtKeyUsage) != 2 {
		t.Errorf("ExtKeyUsage = %v, want server and client auth", c.ExtKeyUsage)
	}
	if c.IsCA {
		t.Error("leaf is a CA")
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v is not a positive 128-bit number", c.SerialNumber)
	}
	if c.Subject.CommonName != "a/b c" || len(c.Subject.OrganizationalUnit) != 1 || c.Subject.OrganizationalUnit[0] != RoleNode {
		t.Errorf("subject = %v", c.Subject)
	}
	if !c.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Error("certificate is for another key")
	}
	if life := time.Until(c.NotAfter); life < 364*24*time.Hour || life > 366*24*time.Hour {
		t.Errorf("default validity leaves %v, want about a year", life)
	}
	if !c.NotBefore.Before(time.Now()) {
		t.Error("certificate not valid yet")
	}

	// Serials differ between certificates.
	again, _ := ca.Issue(key.Public(), RoleNode, "a/b c", nil, 0)
	if mustParse(t, again).SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two certificates share a serial")
	}

	// Explicit validity, and never beyond the CA.
	short, _ := ca.Issue(key.Public(), RoleFront, "f", nil, time.Hour)
	if life := time.Until(mustParse(t, short).NotAfter); life < 59*time.Minute || life > time.Hour {
		t.Errorf("1h validity leaves %v", life)
	}
	long, _ := ca.Issue(key.Public(), RoleFront, "f", nil, 100*365*24*time.Hour)
	if got := mustParse(t, long).NotAfter; got.After(ca.Cert.NotAfter) {
		t.Errorf("leaf expires %v, after its CA (%v)", got, ca.Cert.NotAfter)
	}
}

func TestIssueErrors(t *testing.T) {
	ca := newCA(t)
	key, _, _ := NewKey()
	for _, tc := range []struct {
		role, name string
		validity   time.Duration
		pub        any
		want       string
	}{
		{"admin", "x", 0, key.Public(), "unknown role"},
		{"", "x", 0, key.Public(), "unknown role"},
		{RoleNode, "", 0, key.Public(), "empty name"},
		{RoleNode, "\xff", 0, key.Public(), "not UTF-8"},
		{RoleNode, "x", -time.Second, key.Public(), "negative validity"},
		{RoleNode, "x", 0, "not a key", "issue"},
	} {
		_, err := ca.Issue(tc.pub, tc.role, tc.name, nil, tc.validity)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Issue(%q, %q, %v): error %v, want one containing %q", tc.role, tc.name, tc.validity, err, tc.want)
		}
	}
}

func TestIdentityErrors(t *testing.T) {
	cert := func(uris ...string) *x509.Certificate {
		c := &x509.Certificate{}
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			c.URIs = append(c.URIs, u)
		}
		return c
	}
	for _, tc := range []struct {
		c    *x509.Certificate
		want string
	}{
		{cert(), "no herd identity"},
		{cert("spiffe://cluster/node/x"), "no herd identity"},
		{cert("herd://admin/x"), "unknown role"},
		{cert("herd://node/"), "malformed"},
		{cert("herd://node"), "malformed"},
		{cert("herd://node/x?y=1"), "malformed"},
		{cert("herd://node/x#frag"), "malformed"},
		{cert("herd://u@node/x"), "malformed"},
		{cert("herd:node/x"), "malformed"},
		{cert("herd://node/a", "herd://operator/b"), "more than one"},
	} {
		role, name, err := Identity(tc.c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Identity(%v) = %q, %q, %v; want error containing %q", tc.c.URIs, role, name, err, tc.want)
		}
	}
	// Other URIs beside the herd one are ignored.
	role, name, err := Identity(cert("spiffe://x/y", "herd://front/f1"))
	if err != nil || role != RoleFront || name != "f1" {
		t.Errorf("Identity with an extra URI = %q, %q, %v", role, name, err)
	}
}
