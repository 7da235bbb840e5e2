package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"path"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/herd-run/herd/internal/pki"
)

// Policy says which roles may call which methods of a gRPC server. The
// TLS handshake only asks for a client certificate; the policy checks it
// per call, so a caller without one gets Unauthenticated with a message
// saying what to do instead of a failed handshake.
type Policy struct {
	Pool *x509.CertPool
	// Roles maps a method ("/herd.v1.Control/Deploy") or a whole service
	// ("/herd.v1.Agent/*") to the roles that may call it.
	Roles map[string][]string
	// Public methods need no certificate (Join.Certify, health checks).
	Public map[string]bool
	// Revoked, if set, says whether a certificate (by its serial, lower-
	// case hex) was revoked.
	Revoked func(serial string) bool
}

type identityKey struct{}

// Identity is a verified caller.
type Identity struct{ Role, Name string }

// IdentityFrom returns the caller a policy verified (zero for a public
// method).
func IdentityFrom(ctx context.Context) Identity {
	id, _ := ctx.Value(identityKey{}).(Identity)
	return id
}

func (p *Policy) check(ctx context.Context, method string) (context.Context, error) {
	if p.Public[method] {
		return ctx, nil
	}
	allowed, ok := p.Roles[method]
	if !ok {
		allowed = p.Roles[path.Dir(method)+"/*"]
	}
	pr, _ := peer.FromContext(ctx)
	var info credentials.TLSInfo
	if pr != nil {
		info, _ = pr.AuthInfo.(credentials.TLSInfo)
	}
	role, name, err := pki.PeerIdentity(info.State, p.Pool)
	if errors.Is(err, pki.ErrNoClientCert) {
		return nil, status.Error(codes.Unauthenticated, "this API needs a client certificate: use herdctl --config FILE (the first front wrote its <data-dir>/admin.herdctl)")
	}
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
	}
	if p.Revoked != nil && p.Revoked(info.State.PeerCertificates[0].SerialNumber.Text(16)) {
		return nil, status.Errorf(codes.Unauthenticated, "the certificate of %s %q was revoked: ask an operator for a new config", role, name)
	}
	if !slices.Contains(allowed, role) {
		return nil, status.Errorf(codes.PermissionDenied, "%s %q may not call %s", role, name, path.Base(method))
	}
	return context.WithValue(ctx, identityKey{}, Identity{Role: role, Name: name}), nil
}

// Unary is the policy as a unary interceptor.
func (p *Policy) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, err := p.check(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// Stream is the policy as a stream interceptor.
func (p *Policy) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, err := p.check(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return h(srv, &identStream{ServerStream: ss, ctx: ctx})
	}
}

type identStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identStream) Context() context.Context { return s.ctx }

// ServerOptions are the options of a gRPC server under the policy.
func (p *Policy) ServerOptions(b *pki.Bundle) ([]grpc.ServerOption, error) {
	cfg, err := pki.ServerTLS(b)
	if err != nil {
		return nil, err
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(cfg)), grpc.ChainUnaryInterceptor(p.Unary()), grpc.ChainStreamInterceptor(p.Stream())}, nil
}

// Dial returns the dial option for calling a member of wantRole with b.
func Dial(b *pki.Bundle, wantRole string) (grpc.DialOption, error) {
	cfg, err := pki.ClientTLS(b, wantRole)
	if err != nil {
		return nil, err
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}
