package ctl

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// withFront runs call against the first front that answers: a front that
// is down, or cannot take the command now (Unavailable: no Raft leader),
// makes herdctl try the next address. A command that fails that way
// changed nothing, so trying it again is safe.
func withFront(ctx context.Context, g *globals, call func(herdv1.ControlClient) error) error {
	var errs []string
	answered := false
	for _, addr := range g.addrs {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fmt.Errorf("--addr %q: %w", addr, err)
		}
		err = call(herdv1.NewControlClient(conn))
		conn.Close()
		if status.Code(err) != codes.Unavailable {
			return rpcError(err)
		}
		msg := status.Convert(err).Message()
		// gRPC's own failures to reach a server say "connection error" or
		// name the transport; anything else is a front's answer.
		answered = answered || !(strings.Contains(msg, "connection error") || strings.Contains(msg, "transport"))
		errs = append(errs, fmt.Sprintf("%s: %s", addr, msg))
	}
	if answered {
		return fmt.Errorf("no front could take the command (%s)", strings.Join(errs, "; "))
	}
	return fmt.Errorf("no front reachable (%s)", strings.Join(errs, "; "))
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
