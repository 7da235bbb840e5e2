package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Files of a saved Bundle, inside its directory.
const (
	CAFile   = "ca.crt"
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)

// Bundle is what a process keeps to speak mTLS: its certificate, its key
// and the cluster CA certificate, all PEM. CertPEM and KeyPEM may be empty
// for a client that has no certificate yet (it can still check servers).
type Bundle struct {
	CAPEM, CertPEM, KeyPEM []byte
}

// Save writes the bundle to dir (created 0700 if missing) as ca.crt and
// tls.crt (mode 0644) and tls.key (mode 0600), each file atomically and
// replacing any older one, so a renewed certificate can be saved over the
// old. The key is written before the certificate; a crash in between
// leaves a pair that TLSCertificate reports as mismatched.
func (b *Bundle) Save(dir string) error {
	if len(b.CAPEM) == 0 || len(b.CertPEM) == 0 || len(b.KeyPEM) == 0 {
		return errors.New("pki: save bundle: CA, certificate and key are all required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: save bundle: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{CAFile, b.CAPEM, 0o644},
		{KeyFile, b.KeyPEM, 0o600},
		{CertFile, b.CertPEM, 0o644},
	} {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.perm, true); err != nil {
			return fmt.Errorf("pki: save bundle: %w", err)
		}
	}
	return nil
}

// LoadBundle reads a bundle saved by Save. If a file is missing the error
// wraps os.ErrNotExist (and names the file), so callers can tell "not
// joined yet" from a damaged bundle.
func LoadBundle(dir string) (*Bundle, error) {
	var b Bundle
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{
		{CAFile, &b.CAPEM},
		{CertFile, &b.CertPEM},
		{KeyFile, &b.KeyPEM},
	} {
		data, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return nil, fmt.Errorf("pki: load bundle: %w", err)
		}
		*f.dst = data
	}
	return &b, nil
}

// TLSCertificate returns the certificate and key for tls.Config.
func (b *Bundle) TLSCertificate() (tls.Certificate, error) {
	c, err := tls.X509KeyPair(b.CertPEM, b.KeyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: bundle certificate: %w", err)
	}
	return c, nil
}

// Pool returns a pool holding the bundle's CA certificate(s).
func (b *Bundle) Pool() (*x509.CertPool, error) {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b.CAPEM) {
		return nil, errors.New("pki: bundle has no CA certificate")
	}
	return p, nil
}

// Expiry returns when the bundle's certificate expires (its NotAfter), to
// renew it in time.
func (b *Bundle) Expiry() (time.Time, error) {
	c, err := parseCertPEM(b.CertPEM)
	if err != nil {
		return time.Time{}, fmt.Errorf("pki: bundle certificate: %w", err)
	}
	return c.NotAfter, nil
}

// ServerTLS is the TLS configuration of a herd server. It presents the
// bundle's certificate and checks client certificates against the CA, but
// per call, not in the handshake: a caller without a
// certificate still completes the handshake, so the server can answer it
// with an error that says what is wrong ("Unauthenticated: ...") rather
// than a bare handshake failure. Handlers therefore must call PeerIdentity
// (or an interceptor must) before trusting a caller.
//
// The handshake takes any client certificate without checking it
// (tls.RequestClientCert): an expired or foreign one also gets a clear
// "Unauthenticated" from PeerIdentity's check instead of a bare handshake
// failure. (Go's client does not send a certificate the server's CA list
// does not cover, so one from another cluster usually arrives as no
// certificate at all.)
func ServerTLS(b *Bundle) (*tls.Config, error) {
	cert, err := b.TLSCertificate()
	if err != nil {
		return nil, err
	}
	pool, err := b.Pool()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequestClientCert,
		ClientCAs:    pool,
	}, nil
}

// ClientTLS is the TLS configuration of a herd client. It presents the
// bundle's certificate if it has one and accepts only a server whose
// certificate chains to the bundle's CA and, if wantRole is not "", carries
// that role.
//
// Go's usual check matches the server certificate against the host name
// dialed. That does not fit herd: members are dialed by IP:port, addresses
// change as machines come and go, and a certificate says what its holder
// is (its role), not where it lives. So standard verification is turned
// off (InsecureSkipVerify) and VerifyConnection does the check herd
// needs: chain to the cluster CA, valid now, usable by a server, with a
// herd identity of the wanted role. VerifyConnection runs on every
// handshake, resumed ones included.
func ClientTLS(b *Bundle, wantRole string) (*tls.Config, error) {
	if wantRole != "" && !KnownRole(wantRole) {
		return nil, fmt.Errorf("pki: unknown role %q", wantRole)
	}
	pool, err := b.Pool()
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by VerifyConnection: see above
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("pki: server sent no certificate")
			}
			role, name, err := verifyPeer(cs.PeerCertificates, pool, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return fmt.Errorf("pki: server certificate: %w", err)
			}
			if wantRole != "" && role != wantRole {
				return fmt.Errorf("pki: server %q has role %q, want %q", name, role, wantRole)
			}
			return nil
		},
	}
	if len(b.CertPEM) > 0 || len(b.KeyPEM) > 0 {
		cert, err := b.TLSCertificate()
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// ErrNoClientCert is returned by PeerIdentity when the client sent no
// certificate.
var ErrNoClientCert = errors.New("no client certificate")

// PeerIdentity verifies the client certificate of a server-side connection
// against pool and returns its role and name. The handshake (ServerTLS)
// already verified it; checking again here keeps the decision in one
// place and holds even for a connection set up with another configuration.
// It returns ErrNoClientCert when the client sent none.
func PeerIdentity(cs tls.ConnectionState, pool *x509.CertPool) (role, name string, err error) {
	if len(cs.PeerCertificates) == 0 {
		return "", "", ErrNoClientCert
	}
	role, name, err = verifyPeer(cs.PeerCertificates, pool, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return "", "", fmt.Errorf("pki: client certificate: %w", err)
	}
	return role, name, nil
}

// verifyPeer checks that certs[0] chains to pool (through any further
// certs), is valid now for usage and carries a herd identity.
func verifyPeer(certs []*x509.Certificate, pool *x509.CertPool, usage x509.ExtKeyUsage) (role, name string, err error) {
	if pool == nil {
		// x509 would fall back to the system roots: never trust those.
		return "", "", errors.New("no CA pool to verify against")
	}
	opts := x509.VerifyOptions{
		Roots:         pool,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return "", "", err
	}
	return Identity(certs[0])
}
