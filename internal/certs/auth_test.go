package certs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/pki"
)

// control is a minimal Control server that reports who called it.
type control struct {
	herdv1.UnimplementedControlServer
}

func who(ctx context.Context) string {
	id := IdentityFrom(ctx)
	return id.Role + "/" + id.Name
}

func (control) Status(ctx context.Context, _ *herdv1.StatusRequest) (*herdv1.StatusResponse, error) {
	return &herdv1.StatusResponse{State: &herdv1.StateInfo{Front: who(ctx)}}, nil
}

func (control) ListNodes(ctx context.Context, _ *herdv1.ListNodesRequest) (*herdv1.ListNodesResponse, error) {
	return &herdv1.ListNodesResponse{Members: []*herdv1.Member{{Name: who(ctx)}}}, nil
}

func (control) Logs(req *herdv1.LogsRequest, s grpc.ServerStreamingServer[herdv1.LogsResponse]) error {
	for i := range 2 {
		line := &herdv1.LogLine{App: req.GetApp(), Text: fmt.Sprintf("%d %s", i, who(s.Context()))}
		if err := s.Send(&herdv1.LogsResponse{Lines: []*herdv1.LogLine{line}}); err != nil {
			return err
		}
	}
	return nil
}

// revocations is a concurrency-safe set of revoked serials.
type revocations struct {
	mu sync.Mutex
	m  map[string]bool
}

func (r *revocations) add(serial string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]bool{}
	}
	r.m[serial] = true
}

func (r *revocations) has(serial string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[serial]
}

type policyEnv struct {
	addr    string
	ca      *pki.CA
	revoked *revocations
}

// startControl serves Control (and Join) on a bootstrapped front under a
// policy with roles.
func startControl(t *testing.T, roles map[string][]string) *policyEnv {
	t.Helper()
	b, ca, err := Bootstrap(t.TempDir(), "front-1", localHosts)
	if err != nil {
		t.Fatal(err)
	}
	env := &policyEnv{ca: ca, revoked: &revocations{}}
	p := joinPolicy(ca)
	p.Roles = roles
	p.Revoked = env.revoked.has
	opts, err := p.ServerOptions(b)
	if err != nil {
		t.Fatal(err)
	}
	env.addr, _ = serve(t, opts, func(s *grpc.Server) {
		herdv1.RegisterControlServer(s, control{})
		herdv1.RegisterJoinServer(s, &Service{Keys: []pki.ClusterKey{newKey(t)}, CA: ca, Log: discard()})
	})
	return env
}

// client dials the front with b (which may have no certificate).
func (env *policyEnv) client(t *testing.T, b *pki.Bundle) herdv1.ControlClient {
	t.Helper()
	opt, err := Dial(b, pki.RoleFront)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(env.addr, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return herdv1.NewControlClient(conn)
}

func (env *policyEnv) member(t *testing.T, role, name string) (herdv1.ControlClient, string) {
	t.Helper()
	b, err := env.ca.IssueBundle(role, name, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return env.client(t, b), parseCert(t, b.CertPEM).SerialNumber.Text(16)
}

func callStatus(ctx context.Context, c herdv1.ControlClient) (string, error) {
	resp, err := c.Status(ctx, &herdv1.StatusRequest{})
	return resp.GetState().GetFront(), err
}

// logs reads the whole Logs stream and returns its texts.
func logs(ctx context.Context, c herdv1.ControlClient) ([]string, error) {
	s, err := c.Logs(ctx, &herdv1.LogsRequest{App: "web"})
	if err != nil {
		return nil, err
	}
	var texts []string
	for {
		resp, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return texts, nil
		}
		if err != nil {
			return texts, err
		}
		for _, l := range resp.GetLines() {
			texts = append(texts, l.GetText())
		}
	}
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	st := status.Convert(err)
	if err == nil || st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Errorf("%s: got %v %q, want %v containing %q", what, st.Code(), st.Message(), code, msg)
	}
}

func TestPolicy(t *testing.T) {
	env := startControl(t, map[string][]string{
		"/herd.v1.Control/Status": {pki.RoleOperator},
		"/herd.v1.Control/*":      {pki.RoleOperator, pki.RoleReader, pki.RoleNode},
	})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()

	t.Run("no certificate", func(t *testing.T) {
		c := env.client(t, &pki.Bundle{CAPEM: env.ca.CertPEM})
		_, err := callStatus(ctx, c)
		wantCode(t, "Status", err, codes.Unauthenticated, "--config")
		_, err = c.ListNodes(ctx, &herdv1.ListNodesRequest{})
		wantCode(t, "ListNodes", err, codes.Unauthenticated, "--config")
		_, err = logs(ctx, c)
		wantCode(t, "Logs", err, codes.Unauthenticated, "--config")
	})
	t.Run("other cluster's certificate", func(t *testing.T) {
		other, err := pki.NewCA()
		if err != nil {
			t.Fatal(err)
		}
		b, err := other.IssueBundle(pki.RoleOperator, "mallory", nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		b.CAPEM = env.ca.CertPEM // trusts the server, but its own cert is foreign
		_, err = callStatus(ctx, env.client(t, b))
		// Go's client does not send a certificate the server's CA list
		// does not cover: it arrives as none.
		wantCode(t, "Status with a foreign certificate", err, codes.Unauthenticated, "--config")
	})
	t.Run("node", func(t *testing.T) {
		c, _ := env.member(t, pki.RoleNode, "node-1")
		// The method's own entry wins over the service's wildcard.
		_, err := callStatus(ctx, c)
		wantCode(t, "Status", err, codes.PermissionDenied, `node "node-1" may not call Status`)
		resp, err := c.ListNodes(ctx, &herdv1.ListNodesRequest{})
		if err != nil || resp.GetMembers()[0].GetName() != "node/node-1" {
			t.Errorf("ListNodes through the wildcard: %v %v", resp, err)
		}
	})
	t.Run("reader", func(t *testing.T) {
		c, _ := env.member(t, pki.RoleReader, "bob")
		_, err := callStatus(ctx, c)
		wantCode(t, "Status", err, codes.PermissionDenied, "may not call Status")
	})
	t.Run("operator", func(t *testing.T) {
		c, _ := env.member(t, pki.RoleOperator, "alice")
		got, err := callStatus(ctx, c)
		if err != nil || got != "operator/alice" {
			t.Errorf("Status = %q %v, want operator/alice", got, err)
		}
		texts, err := logs(ctx, c)
		if err != nil || len(texts) != 2 || texts[0] != "0 operator/alice" || texts[1] != "1 operator/alice" {
			t.Errorf("Logs = %q %v", texts, err)
		}
	})
	t.Run("revoked", func(t *testing.T) {
		c, serial := env.member(t, pki.RoleOperator, "carol")
		if _, err := callStatus(ctx, c); err != nil {
			t.Fatalf("before revocation: %v", err)
		}
		// Checked per call: the open connection loses access at once.
		env.revoked.add(serial)
		_, err := callStatus(ctx, c)
		wantCode(t, "Status", err, codes.Unauthenticated, "revoked")
		_, err = logs(ctx, c)
		wantCode(t, "Logs", err, codes.Unauthenticated, "revoked")
		_, err = c.ListNodes(ctx, &herdv1.ListNodesRequest{})
		wantCode(t, "ListNodes", err, codes.Unauthenticated, "revoked")
		// Others are not affected.
		other, _ := env.member(t, pki.RoleOperator, "dave")
		if got, err := callStatus(ctx, other); err != nil || got != "operator/dave" {
			t.Errorf("another operator: %q %v", got, err)
		}
	})
	t.Run("public method", func(t *testing.T) {
		// Join.Certify needs no certificate and gets past the policy (the
		// request is then refused for its proof, not for its caller).
		_, err := dialJoin(t, env.addr).Certify(ctx, &herdv1.CertifyRequest{Name: "x", Role: pki.RoleNode})
		wantCode(t, "Certify", err, codes.PermissionDenied, "cluster's key")
	})
}

func TestPolicyWildcardOnly(t *testing.T) {
	env := startControl(t, map[string][]string{"/herd.v1.Control/*": {pki.RoleOperator}})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	op, _ := env.member(t, pki.RoleOperator, "alice")
	if got, err := callStatus(ctx, op); err != nil || got != "operator/alice" {
		t.Errorf("Status through the wildcard = %q %v", got, err)
	}
	if texts, err := logs(ctx, op); err != nil || len(texts) != 2 || !strings.HasSuffix(texts[0], "operator/alice") {
		t.Errorf("Logs through the wildcard = %q %v", texts, err)
	}
	node, _ := env.member(t, pki.RoleNode, "node-1")
	_, err := callStatus(ctx, node)
	wantCode(t, "node Status", err, codes.PermissionDenied, "may not call Status")
	_, err = logs(ctx, node)
	wantCode(t, "node Logs", err, codes.PermissionDenied, "may not call Logs")
}

// A method the policy does not list is closed to every role.
func TestPolicyDefaultDeny(t *testing.T) {
	env := startControl(t, map[string][]string{"/herd.v1.Control/Status": {pki.RoleOperator}})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	for _, role := range []string{pki.RoleOperator, pki.RoleReader, pki.RoleNode, pki.RoleFront} {
		c, _ := env.member(t, role, "m")
		_, err := c.ListNodes(ctx, &herdv1.ListNodesRequest{})
		wantCode(t, role+" ListNodes", err, codes.PermissionDenied, "may not call ListNodes")
		_, err = logs(ctx, c)
		wantCode(t, role+" Logs", err, codes.PermissionDenied, "may not call Logs")
	}
}

// Without a pool the policy trusts no certificate (never the system roots).
func TestPolicyNoPool(t *testing.T) {
	b, ca, err := Bootstrap(t.TempDir(), "front-1", localHosts)
	if err != nil {
		t.Fatal(err)
	}
	p := &Policy{Roles: map[string][]string{"/herd.v1.Control/*": {pki.RoleOperator}}}
	opts, err := p.ServerOptions(b)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serve(t, opts, func(s *grpc.Server) { herdv1.RegisterControlServer(s, control{}) })
	env := &policyEnv{addr: addr, ca: ca}
	c, _ := env.member(t, pki.RoleOperator, "alice")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	_, err = callStatus(ctx, c)
	wantCode(t, "Status", err, codes.Unauthenticated, "client certificate")
}

func TestIdentityFromPlainContext(t *testing.T) {
	if id := IdentityFrom(context.Background()); id != (Identity{}) {
		t.Errorf("IdentityFrom(Background) = %+v", id)
	}
}

func TestServerOptionsNeedsCertificate(t *testing.T) {
	if _, err := (&Policy{}).ServerOptions(&pki.Bundle{}); err == nil {
		t.Error("ServerOptions without a certificate succeeded")
	}
	if _, err := Dial(&pki.Bundle{}, pki.RoleFront); err == nil {
		t.Error("Dial without a CA succeeded")
	}
	if _, err := Dial(&pki.Bundle{CAPEM: []byte("x")}, "root"); err == nil {
		t.Error("Dial with an unknown role succeeded")
	}
}
