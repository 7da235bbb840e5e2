package cluster

import (
	"log/slog"
	"os"
	"testing"
	"time"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

func TestDbg(t *testing.T) {
	reg := &registry{}
	lg := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newMember(t, herdv1.Role_ROLE_FRONT, func(c *Config) { c.Fetch = reg.fetch; c.Logger = lg.With("m", "front") })
	n := newMember(t, herdv1.Role_ROLE_NODE, func(c *Config) { c.Logger = lg.With("m", "node") })
	reg.add(n)
	join(t, n, f)
	start := time.Now()
	pub := n.SetLocalState(nodeState("shop"))
	t.Logf("published %v", time.Since(start))
	waitState(t, 5*time.Second, f, n.cfg.Name, pub.GetGeneration())
	t.Logf("arrived %v fetches=%d", time.Since(start), reg.fetches.Load())
}
