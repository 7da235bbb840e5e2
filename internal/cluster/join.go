package cluster

import (
	"context"
	"log/slog"
	"time"
)

// JoinLoop joins addrs, retrying until it succeeds or ctx ends, so members
// can start in any order.
func JoinLoop(ctx context.Context, c *Cluster, addrs []string, log *slog.Logger) {
	if len(addrs) == 0 {
		return
	}
	delay := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := c.Join(addrs)
		if err == nil {
			log.Info("joined cluster", "via", addrs)
			return
		}
		if attempt == 3 {
			log.Warn("cannot join the cluster yet; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}
