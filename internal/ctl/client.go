package ctl

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/herdconfig"
	"github.com/herd-run/herd/internal/pki"
)

// errNoCredentials is the error of a command that needs a front when
// neither --config nor HERD_CONFIG names a config file.
var errNoCredentials = errors.New("no credentials: pass --config FILE or set HERD_CONFIG (the first front wrote it to its <data-dir>/admin.herdctl)")

// frontSetup is how herdctl reaches the fronts: the addresses to try in
// turn and the mTLS credentials of the config file.
type frontSetup struct {
	addrs []string
	creds credentials.TransportCredentials
}

// setup reads the config file (once) and returns the addresses and
// credentials withFront dials with. Commands that do work before calling
// withFront (deploy packs its directory) call it first, so that a missing
// or bad config is reported before that work.
func (g *globals) setup() (*frontSetup, error) {
	if g.front != nil {
		return g.front, nil
	}
	if g.config == "" {
		return nil, errNoCredentials
	}
	f, err := herdconfig.Read(g.config)
	if err != nil {
		if g.configFlag == "HERD_CONFIG" {
			return nil, fmt.Errorf("HERD_CONFIG: %w", err)
		}
		return nil, err
	}
	b := f.Bundle()
	// A front refuses a certificate out of its validity with a bare
	// handshake failure; say what is wrong before dialing.
	cert, err := b.TLSCertificate()
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", g.config, err)
	}
	if cert.Leaf == nil { // GODEBUG=x509keypairleaf=0
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("config file %s: %w", g.config, err)
		}
	}
	if now := time.Now(); now.After(cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("the certificate in config file %s expired on %s: get a new config from the cluster's administrator",
			g.config, cert.Leaf.NotAfter.Local().Format(time.RFC3339))
	} else if now.Before(cert.Leaf.NotBefore) {
		return nil, fmt.Errorf("the certificate in config file %s is not valid until %s: check this machine's clock",
			g.config, cert.Leaf.NotBefore.Local().Format(time.RFC3339))
	}
	tlsCfg, err := pki.ClientTLS(b, pki.RoleFront)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", g.config, err)
	}
	addrs := g.addrs // --addr or HERD_ADDR replace the file's list
	if len(addrs) == 0 {
		addrs = f.Addrs
	}
	g.front = &frontSetup{addrs: addrs, creds: credentials.NewTLS(tlsCfg)}
	return g.front, nil
}

// withFront runs call against the first front that answers: a front that
// is down, or cannot take the command now (Unavailable: no Raft leader),
// makes herdctl try the next address. A command that fails that way
// changed nothing, so trying it again is safe. Every connection is mTLS
// with the config file's credentials, and the front must prove it is one
// (a certificate of the cluster CA with the front role).
func withFront(ctx context.Context, g *globals, call func(herdv1.ControlClient) error) error {
	setup, err := g.setup()
	if err != nil {
		return err
	}
	var errs []string
	answered := false
	hint := ""
	for _, addr := range setup.addrs {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(setup.creds))
		if err != nil {
			return fmt.Errorf("front address %q: %w", addr, err)
		}
		err = call(herdv1.NewControlClient(conn))
		conn.Close()
		if status.Code(err) != codes.Unavailable {
			return rpcError(err)
		}
		msg := status.Convert(err).Message()
		answered = answered || !unreachable(msg)
		if h := tlsHint(msg, g.configFlag); h != "" {
			hint = h
		}
		errs = append(errs, fmt.Sprintf("%s: %s", addr, msg))
	}
	var out error
	if answered {
		out = fmt.Errorf("no front could take the command (%s)", strings.Join(errs, "; "))
	} else {
		out = fmt.Errorf("no front reachable (%s)", strings.Join(errs, "; "))
	}
	if hint != "" {
		out = fmt.Errorf("%w: %s", out, hint)
	}
	return out
}

// unreachable reports whether msg, the message of an Unavailable status,
// is gRPC's own failure to reach a server rather than a front's answer.
// gRPC's own say "connection error" or name the transport; a connection
// that broke under the first write (a front that ended the TLS handshake,
// say) may come as the bare socket error.
func unreachable(msg string) bool {
	for _, s := range []string{"connection error", "transport", "broken pipe", "connection reset", "EOF"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// tlsHint says what to do about a connection that failed in its TLS
// handshake, or "" if msg (a gRPC Unavailable message) is not about TLS.
// flag is where the config came from: "--config" or "HERD_CONFIG".
func tlsHint(msg, flag string) string {
	switch {
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "the front does not speak TLS (is it an older herd, or not a herd front?)"
	case strings.Contains(msg, "remote error: tls:"):
		// The front refused the certificate herdctl sent.
		return "check that " + flag + " is this cluster's (the front refused its certificate)"
	case strings.Contains(msg, "certificate") || strings.Contains(msg, "tls:") || strings.Contains(msg, "x509"):
		return "check that " + flag + " is this cluster's (the front's certificate did not verify)"
	}
	return ""
}

// rpcError turns a gRPC status into the message alone: the operator wants
// the reason, not the code's name.
func rpcError(err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok {
		return fmt.Errorf("%s", s.Message())
	}
	return err
}
