package front

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
)

// CertPair is one certificate and its key, as files.
type CertPair struct{ Cert, Key string }

// certStore picks the certificate for a TLS handshake by SNI, and reloads
// the files on demand (SIGHUP) without touching open connections.
type certStore struct {
	pairs []CertPair
	dir   string
	cur   atomic.Pointer[certSet]
}

type certSet struct {
	byName map[string]*tls.Certificate // exact names and "*.domain"
	first  *tls.Certificate            // for clients without SNI, or unknown names
}

func newCertStore(pairs []CertPair, dir string) (*certStore, error) {
	s := &certStore{pairs: pairs, dir: dir}
	return s, s.reload()
}

// reload reads every certificate again; on any error the old set stays.
func (s *certStore) reload() error {
	pairs := append([]CertPair(nil), s.pairs...)
	if s.dir != "" {
		// --tls-dir: NAME.crt with NAME.key.
		crts, err := filepath.Glob(filepath.Join(s.dir, "*.crt"))
		if err != nil {
			return err
		}
		for _, c := range crts {
			pairs = append(pairs, CertPair{Cert: c, Key: strings.TrimSuffix(c, ".crt") + ".key"})
		}
	}
	if len(pairs) == 0 {
		return errors.New("--https needs certificates: --tls-cert with --tls-key, or --tls-dir")
	}
	set := &certSet{byName: map[string]*tls.Certificate{}}
	for _, p := range pairs {
		c, err := tls.LoadX509KeyPair(p.Cert, p.Key)
		if err != nil {
			return fmt.Errorf("certificate %s: %w", p.Cert, err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			return fmt.Errorf("certificate %s: %w", p.Cert, err)
		}
		c.Leaf = leaf
		names := leaf.DNSNames
		if len(names) == 0 && leaf.Subject.CommonName != "" {
			names = []string{leaf.Subject.CommonName}
		}
		for _, n := range names {
			set.byName[strings.ToLower(n)] = &c
		}
		if set.first == nil {
			set.first = &c
		}
	}
	s.cur.Store(set)
	return nil
}

// get is tls.Config.GetCertificate: the exact name, else the wildcard one
// level up, else the first certificate.
func (s *certStore) get(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	set := s.cur.Load()
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if c := set.byName[name]; c != nil {
		return c, nil
	}
	if _, rest, ok := strings.Cut(name, "."); ok {
		if c := set.byName["*."+rest]; c != nil {
			return c, nil
		}
	}
	return set.first, nil
}

// tlsConfig is TLS 1.2 and newer with Go's modern cipher suites, and
// HTTP/2 offered by ALPN.
func (s *certStore) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.get,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}
