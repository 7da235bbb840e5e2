// Package certs gives herd's processes their certificates and checks the
// callers of their gRPC APIs.
//
// The first front makes the cluster CA. Every other front and every node
// proves that it holds the cluster key (an HMAC over its request) to any
// front's Join.Certify and gets a certificate for its role and name, signed
// by that CA; a front also gets the CA's key, so every front can certify.
// The answer carries an HMAC under the same key, so the caller trusts the
// CA it learns without trusting the connection it came over.
//
// Why not through Raft (DESIGN.md's first idea): the Raft transport itself
// is mTLS, so a front needs its certificate before it can take part; the
// cluster key is what admits a member either way.
package certs

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/pki"
)

// Dir is where a process keeps its certificate, under its data dir.
const Dir = "tls"

// caKeyFile holds a front's copy of the CA key (mode 0600).
const caKeyFile = "ca.key"

// validity of member certificates.
const validity = 365 * 24 * time.Hour

// Bootstrap makes the cluster CA and this front's certificate, or loads
// them from dataDir when they are there.
func Bootstrap(dataDir, name string, hosts []string) (*pki.Bundle, *pki.CA, error) {
	dir := filepath.Join(dataDir, Dir)
	if _, err := os.Stat(filepath.Join(dir, pki.CAFile)); err == nil {
		// A CA is there: load it whole or fail; never make a second one
		// (it would split the cluster).
		return loadFront(dir)
	}
	ca, err := pki.NewCA()
	if err != nil {
		return nil, nil, err
	}
	b, err := ca.IssueBundle(pki.RoleFront, name, hosts, validity)
	if err != nil {
		return nil, nil, err
	}
	if err := saveFront(dir, b, ca.KeyPEM); err != nil {
		return nil, nil, err
	}
	return b, ca, nil
}

func loadFront(dir string) (*pki.Bundle, *pki.CA, error) {
	b, err := pki.LoadBundle(dir)
	if err != nil {
		return nil, nil, err
	}
	key, err := os.ReadFile(filepath.Join(dir, caKeyFile))
	if err != nil {
		return nil, nil, err
	}
	ca, err := pki.ParseCA(b.CAPEM, key)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", dir, err)
	}
	return b, ca, nil
}

func saveFront(dir string, b *pki.Bundle, caKey []byte) error {
	if err := b.Save(dir); err != nil {
		return err
	}
	tmp := filepath.Join(dir, caKeyFile+".tmp")
	// WriteFile keeps the mode of a file left over: start afresh.
	os.Remove(tmp)
	if err := os.WriteFile(tmp, caKey, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, caKeyFile))
}

// Obtain returns this member's certificate (and, for a front, the CA):
// from dataDir if it holds a valid one, else from the first front in
// fronts() that certifies it, retrying until ctx ends.
func Obtain(ctx context.Context, key pki.ClusterKey, role, name string, hosts []string, dataDir string, fronts func() []string, log *slog.Logger) (*pki.Bundle, *pki.CA, error) {
	dir := filepath.Join(dataDir, Dir)
	if role == pki.RoleFront {
		if b, ca, err := loadFront(dir); err == nil && fresh(b) {
			return b, ca, nil
		}
	} else if b, err := pki.LoadBundle(dir); err == nil && fresh(b) {
		return b, nil, nil
	}
	delay := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		var errs []string
		for _, addr := range fronts() {
			b, caKey, err := certify(ctx, key, role, name, hosts, addr)
			if err != nil {
				errs = append(errs, addr+": "+err.Error())
				continue
			}
			if role == pki.RoleFront {
				ca, err := pki.ParseCA(b.CAPEM, caKey)
				if err != nil {
					return nil, nil, fmt.Errorf("the CA key from %s: %w", addr, err)
				}
				return b, ca, saveFront(dir, b, caKey)
			}
			return b, nil, b.Save(dir)
		}
		if attempt == 5 {
			log.Warn("no front has certified this member yet; retrying", "tried", errs)
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("get a certificate from a front: %w (%s)", ctx.Err(), strings.Join(errs, "; "))
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// fresh says whether a certificate has more than a third of a year left.
func fresh(b *pki.Bundle) bool {
	exp, err := b.Expiry()
	return err == nil && time.Until(exp) > validity/3
}

func certify(ctx context.Context, key pki.ClusterKey, role, name string, hosts []string, addr string) (*pki.Bundle, []byte, error) {
	signer, keyPEM, err := pki.NewKey()
	if err != nil {
		return nil, nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return nil, nil, err
	}
	nonce := make([]byte, 32)
	rand.Read(nonce)
	req := &herdv1.CertifyRequest{Name: name, Role: role, PublicKey: pub, Hosts: hosts, Nonce: nonce}
	req.Proof = key.Sign(requestParts(req)...)
	// No CA to check the front against yet: the answer's proof is what
	// makes it trustworthy.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})))
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := herdv1.NewJoinClient(conn).Certify(ctx, req)
	if err != nil {
		return nil, nil, errors.New(status.Convert(err).Message())
	}
	if !key.Verify(resp.GetProof(), responseParts(resp, nonce)...) {
		return nil, nil, errors.New("the answer is not signed with the cluster key: not a front of this cluster")
	}
	b := &pki.Bundle{CAPEM: []byte(resp.GetCaPem()), CertPEM: []byte(resp.GetCertPem()), KeyPEM: keyPEM}
	if _, err := b.TLSCertificate(); err != nil {
		return nil, nil, err
	}
	var caKey []byte
	if resp.GetCaKeyPem() != "" {
		if caKey, err = unwrap(key, nonce, resp.GetCaKeyPem()); err != nil {
			return nil, nil, err
		}
	}
	return b, caKey, nil
}

func requestParts(r *herdv1.CertifyRequest) [][]byte {
	parts := [][]byte{[]byte("herd certify request"), []byte(r.GetName()), []byte(r.GetRole()), r.GetPublicKey(), r.GetNonce()}
	for _, h := range r.GetHosts() {
		parts = append(parts, []byte(h))
	}
	return parts
}

// wrap encrypts the CA key for the member that asked (AES-256-GCM under a
// key derived from the cluster key and the request's nonce): the proofs
// stop a forged answer, this stops a reader in the middle, as the caller
// cannot check the front's certificate before it knows the CA.
func wrap(key pki.ClusterKey, nonce, plain []byte) (string, error) {
	aead, err := wrapAEAD(key, nonce)
	if err != nil {
		return "", err
	}
	iv := make([]byte, aead.NonceSize())
	rand.Read(iv)
	return base64.StdEncoding.EncodeToString(aead.Seal(iv, iv, plain, nil)), nil
}

func unwrap(key pki.ClusterKey, nonce []byte, wrapped string) ([]byte, error) {
	aead, err := wrapAEAD(key, nonce)
	if err != nil {
		return nil, err
	}
	b, err := base64.StdEncoding.DecodeString(wrapped)
	if err != nil || len(b) < aead.NonceSize() {
		return nil, errors.New("the CA key in the answer is garbled")
	}
	plain, err := aead.Open(nil, b[:aead.NonceSize()], b[aead.NonceSize():], nil)
	if err != nil {
		return nil, errors.New("the CA key in the answer is not sealed with the cluster key")
	}
	return plain, nil
}

func wrapAEAD(key pki.ClusterKey, nonce []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key.Sign([]byte("herd ca key wrap"), nonce))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func responseParts(r *herdv1.CertifyResponse, nonce []byte) [][]byte {
	return [][]byte{[]byte("herd certify response"), []byte(r.GetCaPem()), []byte(r.GetCertPem()), []byte(r.GetCaKeyPem()), nonce}
}

// Service is Join on a front.
type Service struct {
	herdv1.UnimplementedJoinServer
	// Keys are the cluster keys the front accepts (during a rotation,
	// more than one); the answer is sealed with the one the request used.
	Keys []pki.ClusterKey
	CA   *pki.CA
	Log  *slog.Logger
}

// Certify signs the caller's key if its proof holds.
func (s *Service) Certify(_ context.Context, req *herdv1.CertifyRequest) (*herdv1.CertifyResponse, error) {
	var key pki.ClusterKey
	matched := false
	for _, k := range s.Keys {
		if k.Verify(req.GetProof(), requestParts(req)...) {
			key, matched = k, true
			break
		}
	}
	if !matched {
		return nil, status.Error(codes.PermissionDenied, "the request is not signed with this cluster's key (--cluster-key-file)")
	}
	if req.GetRole() != pki.RoleFront && req.GetRole() != pki.RoleNode {
		return nil, status.Errorf(codes.InvalidArgument, "role %q: want front or node", req.GetRole())
	}
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "no member name")
	}
	pub, err := x509.ParsePKIXPublicKey(req.GetPublicKey())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "public key: %v", err)
	}
	certPEM, err := s.CA.Issue(pub, req.GetRole(), req.GetName(), req.GetHosts(), validity)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "issue: %v", err)
	}
	resp := &herdv1.CertifyResponse{CaPem: string(s.CA.CertPEM), CertPem: string(certPEM)}
	if req.GetRole() == pki.RoleFront {
		if resp.CaKeyPem, err = wrap(key, req.GetNonce(), s.CA.KeyPEM); err != nil {
			return nil, status.Errorf(codes.Internal, "seal the CA key: %v", err)
		}
	}
	resp.Proof = key.Sign(responseParts(resp, req.GetNonce())...)
	s.Log.Info("certified a member", "role", req.GetRole(), "name", req.GetName())
	return resp, nil
}

// IssueOperator makes an operator's credentials.
func IssueOperator(ca *pki.CA, name, role string) (*pki.Bundle, error) {
	return ca.IssueBundle(role, name, nil, validity)
}
