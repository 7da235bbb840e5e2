package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/pki"
)

// Config describes this member. A zero field means its default.
type Config struct {
	// Name is unique in the cluster (memberlist refuses a second member of
	// the same name from another address).
	Name string
	// Role is front or node.
	Role herdv1.Role
	// Bind is the gossip host:port (UDP and TCP); port 0 lets the kernel pick.
	Bind string
	// Advertise is the IP other members reach this one at. Default: the
	// bind IP, or memberlist's choice of a private address when the bind IP
	// is unspecified.
	Advertise string
	// GRPCAddr is the host:port of this member's gRPC API, published in the
	// node meta.
	GRPCAddr string
	// RaftAddr is a front's Raft transport host:port, published in the meta.
	RaftAddr string
	// Keys encrypt and authenticate gossip (AES-256-GCM, memberlist's
	// keyring): the first encrypts, every one decrypts, so keys can be
	// rotated without a split. Empty: plain gossip (tests only; the
	// programs always set one).
	Keys []pki.ClusterKey
	// Logger receives memberlist's log too. Default: discard.
	Logger *slog.Logger
	// Fetch gets a node's full state over gRPC when gossip says it changed.
	// Nil means rely on push/pull only (nodes do not need others' states
	// quickly). It is called from one goroutine at a time.
	Fetch func(ctx context.Context, m Member) (*herdv1.NodeState, error)
	// OnChange is called after membership or a node state changed; calls
	// are coalesced and never concurrent. It must not block for long.
	OnChange func()
}

// Validate rejects a config that cannot start, naming the flag at fault.
func (c *Config) Validate() error {
	if c.Name == "" {
		return errors.New("--name: empty member name")
	}
	if c.Role != herdv1.Role_ROLE_FRONT && c.Role != herdv1.Role_ROLE_NODE {
		return fmt.Errorf("role %v: want front or node", c.Role)
	}
	host, _, err := net.SplitHostPort(c.Bind)
	if err != nil {
		return fmt.Errorf("--gossip %q: %w", c.Bind, err)
	}
	if host != "" && net.ParseIP(host) == nil {
		return fmt.Errorf("--gossip %q: host must be an IP address", c.Bind)
	}
	if c.Advertise != "" && net.ParseIP(c.Advertise) == nil {
		return fmt.Errorf("--advertise %q: not an IP address", c.Advertise)
	}
	return nil
}
