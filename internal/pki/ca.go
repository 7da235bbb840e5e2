package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// Roles a certificate carries.
const (
	RoleFront    = "front"
	RoleNode     = "node"
	RoleOperator = "operator"          // full operator (admin)
	RoleReader   = "operator-readonly" // read-only operator
)

// uriScheme is the scheme of the URI SAN that names a certificate's role
// and holder: herd://<role>/<url-escaped name>.
const uriScheme = "herd"

const (
	caValidity      = 10 * 365 * 24 * time.Hour
	defaultValidity = 365 * 24 * time.Hour
	// backdate starts certificates a little in the past so that a peer
	// whose clock is slightly behind still accepts a fresh certificate.
	backdate = 5 * time.Minute
)

// KnownRole reports whether role is one of the Role constants.
func KnownRole(role string) bool {
	switch role {
	case RoleFront, RoleNode, RoleOperator, RoleReader:
		return true
	}
	return false
}

// CA is the cluster's certificate authority: a self-signed ECDSA P-256
// certificate and its key, in parsed and PEM form.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     crypto.Signer
	KeyPEM  []byte
}

// NewCA makes a CA valid for ten years, named "herd cluster CA <random id>"
// so that two clusters' CAs can be told apart in error messages and by
// openssl.
func NewCA() (*CA, error) {
	key, keyPEM, err := NewKey()
	if err != nil {
		return nil, err
	}
	id := make([]byte, 6)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "herd cluster CA " + hex.EncodeToString(id)},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // the CA signs leaves only
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA: %w", err)
	}
	return &CA{Cert: cert, CertPEM: encodeCert(der), Key: key, KeyPEM: keyPEM}, nil
}

// ParseCA loads a CA saved from CA.CertPEM and CA.KeyPEM, checking that the
// certificate is a CA and that the key is its key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("pki: certificate %q is not a CA", cert.Subject.CommonName)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("pki: CA key does not match the CA certificate")
	}
	return &CA{Cert: cert, CertPEM: certPEM, Key: key, KeyPEM: keyPEM}, nil
}

// Pool returns a pool holding only this CA, to verify peers with.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issue signs a leaf certificate for pub, valid for validity (one year when
// 0), and returns it as PEM. The certificate names role and name in a URI
// SAN (see Identity) and is usable as both a TLS server and a TLS client
// certificate, since every herd process is both. hosts become DNS or IP
// SANs (empty strings are skipped); herd does not check them (see
// ClientTLS), but they help other TLS clients and people reading the
// certificate. The certificate never outlives the CA.
func (ca *CA) Issue(pub crypto.PublicKey, role, name string, hosts []string, validity time.Duration) ([]byte, error) {
	if validity < 0 {
		return nil, fmt.Errorf("pki: negative validity %v", validity)
	}
	if validity == 0 {
		validity = defaultValidity
	}
	now := time.Now()
	return ca.issue(pub, role, name, hosts, now.Add(-backdate), now.Add(validity))
}

// issue is Issue with explicit validity bounds (tests use it to make
// expired certificates).
func (ca *CA) issue(pub crypto.PublicKey, role, name string, hosts []string, notBefore, notAfter time.Time) ([]byte, error) {
	uri, err := identityURI(role, name)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The subject is for people (openssl x509 -text); herd reads the URI.
		Subject:     pkix.Name{CommonName: name, OrganizationalUnit: []string{role}},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{uri},
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: issue %s certificate for %q: %w", role, name, err)
	}
	return encodeCert(der), nil
}

// IssueBundle makes a key, issues a certificate for it and returns both
// with the CA certificate: everything a process needs (see Bundle).
func (ca *CA) IssueBundle(role, name string, hosts []string, validity time.Duration) (*Bundle, error) {
	key, keyPEM, err := NewKey()
	if err != nil {
		return nil, err
	}
	certPEM, err := ca.Issue(key.Public(), role, name, hosts, validity)
	if err != nil {
		return nil, err
	}
	return &Bundle{CAPEM: ca.CertPEM, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// NewKey makes a leaf key (ECDSA P-256) and returns it with its PKCS #8 PEM
// encoding.
func NewKey() (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Identity returns the role and name a certificate carries in its
// herd://<role>/<name> URI SAN. It does not verify the certificate: call
// it on a verified one (PeerIdentity does both).
func Identity(cert *x509.Certificate) (role, name string, err error) {
	var found *url.URL
	for _, u := range cert.URIs {
		if u.Scheme != uriScheme {
			continue
		}
		if found != nil {
			return "", "", errors.New("pki: certificate has more than one herd identity")
		}
		found = u
	}
	if found == nil {
		return "", "", errors.New("pki: certificate has no herd identity (herd://<role>/<name> URI)")
	}
	u := found
	if u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery ||
		!strings.HasPrefix(u.Path, "/") || len(u.Path) < 2 {
		return "", "", fmt.Errorf("pki: malformed herd identity %q", u.String())
	}
	if !KnownRole(u.Host) {
		return "", "", fmt.Errorf("pki: unknown role %q in herd identity", u.Host)
	}
	// u.Path is already unescaped: "herd://node/a%2Fb" names "a/b".
	return u.Host, u.Path[1:], nil
}

// identityURI builds the URI SAN for role and name. The name is escaped as
// one path segment, so it may hold any character, "/" included.
func identityURI(role, name string) (*url.URL, error) {
	if !KnownRole(role) {
		return nil, fmt.Errorf("pki: unknown role %q", role)
	}
	if name == "" {
		return nil, errors.New("pki: empty name")
	}
	if !utf8.ValidString(name) {
		return nil, fmt.Errorf("pki: name %q is not UTF-8", name)
	}
	u, err := url.Parse(uriScheme + "://" + role + "/" + url.PathEscape(name))
	if err != nil {
		return nil, fmt.Errorf("pki: name %q: %w", name, err)
	}
	return u, nil
}

// randomSerial returns a non-zero 128-bit random serial number.
func randomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	for {
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("pki: serial: %w", err)
		}
		if n := new(big.Int).SetBytes(b); n.Sign() > 0 {
			return n, nil
		}
	}
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// parseCertPEM parses the first CERTIFICATE block of b.
func parseCertPEM(b []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("no PEM CERTIFICATE block")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// parseKeyPEM parses a PKCS #8 ("PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY")
// private key.
func parseKeyPEM(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	return s, nil
}
