package control

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-run/herd/internal/certs"
	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/herdconfig"
	"github.com/herd-run/herd/internal/pki"
	"github.com/herd-run/herd/internal/state"
)

// AddOperator issues an operator credential and records it (so that it
// can be listed and revoked); the answer is a herdctl config.
func (s *Service) AddOperator(ctx context.Context, req *herdv1.AddOperatorRequest) (*herdv1.AddOperatorResponse, error) {
	if !labelPart.MatchString(req.GetName()) {
		return nil, toStatus(fmt.Errorf("%w: operator name %q: letters, digits, '-', '_', '.' and '/', at most 63", errInvalid, req.GetName()))
	}
	leader, ctx, self, err := s.leaderControl(ctx)
	if err != nil {
		return nil, err
	}
	if !self {
		return leader.AddOperator(ctx, req)
	}
	if s.CA == nil {
		return nil, status.Error(codes.FailedPrecondition, "this front holds no CA key")
	}
	role := pki.RoleOperator
	if req.GetReadOnly() {
		role = pki.RoleReader
	}
	b, err := certs.IssueOperator(s.CA, req.GetName(), role)
	if err != nil {
		return nil, toStatus(err)
	}
	blk, _ := pem.Decode(b.CertPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.State.AddOperator(&herdv1.OperatorRecord{Name: req.GetName(), Role: role, Serial: cert.SerialNumber.Text(16)}); err != nil {
		return nil, toStatus(err)
	}
	var addrs []string
	for _, f := range s.liveFronts() {
		addrs = append(addrs, f.GRPCAddr)
	}
	out, err := json.MarshalIndent(&herdconfig.File{Addrs: addrs, Name: req.GetName(), Role: role, CA: string(b.CAPEM), Cert: string(b.CertPEM), Key: string(b.KeyPEM)}, "", "  ")
	if err != nil {
		return nil, toStatus(err)
	}
	s.Log.Info("operator credential issued", "operator", req.GetName(), "role", role, "by", certs.IdentityFrom(ctx).Name)
	return &herdv1.AddOperatorResponse{Config: string(out) + "\n"}, nil
}

// RevokeOperator revokes every credential issued to an operator name:
// every front refuses them from the moment it applies the revocation.
func (s *Service) RevokeOperator(ctx context.Context, req *herdv1.RevokeOperatorRequest) (*herdv1.RevokeOperatorResponse, error) {
	leader, ctx, self, err := s.leaderControl(ctx)
	if err != nil {
		return nil, err
	}
	if !self {
		return leader.RevokeOperator(ctx, req)
	}
	if err := s.State.RevokeOperator(req.GetName()); err != nil {
		if errors.Is(err, state.ErrNotFound) {
			return nil, status.Errorf(codes.NotFound, "no operator %q with a credential to revoke (herdctl operator list)", req.GetName())
		}
		return nil, toStatus(err)
	}
	s.Log.Warn("operator credentials revoked", "operator", req.GetName())
	return &herdv1.RevokeOperatorResponse{}, nil
}

// ListOperators lists the operator credentials the fronts issued.
func (s *Service) ListOperators(context.Context, *herdv1.ListOperatorsRequest) (*herdv1.ListOperatorsResponse, error) {
	resp := &herdv1.ListOperatorsResponse{}
	for _, o := range s.State.Operators() {
		resp.Operators = append(resp.Operators, &herdv1.Operator{Name: o.GetName(), Role: o.GetRole(), Serial: o.GetSerial(), Issued: o.GetIssued(), Revoked: o.GetRevoked()})
	}
	return resp, nil
}
