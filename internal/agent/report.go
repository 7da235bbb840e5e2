package agent

import (
	"context"
	"time"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// reportLoop gives the node's state directly to each live front that has
// not acknowledged it a while after it was published. Gossip announces a
// new state to every member almost always, but an alive message can miss
// a member (one that just joined, or under load), which would then route
// by the old state until the next push/pull, up to 30 s later; a node
// withdrawing workers would wait for its ack in vain.
func (m *manager) reportLoop(ctx context.Context) {
	const after = 500 * time.Millisecond
	tick := time.NewTicker(after)
	defer tick.Stop()
	reported := map[string]time.Time{} // front -> last report
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		st := m.cl.LocalState()
		gen := st.GetGeneration()
		if gen == 0 || time.Since(time.Unix(0, int64(gen))) < after {
			// Too fresh to say that gossip missed a front (generations are
			// publish times in nanoseconds, or just above one).
			continue
		}
		m.applied.mu.Lock()
		acked := make(map[string]uint64, len(m.applied.gens))
		for f, g := range m.applied.gens {
			acked[f] = g
		}
		m.applied.mu.Unlock()
		for _, f := range m.cl.LiveFronts() {
			if acked[f.Name] >= gen || time.Since(reported[f.Name]) < 2*time.Second {
				continue
			}
			reported[f.Name] = time.Now()
			go func() {
				c, err := m.controlClient(f.GRPCAddr)
				if err != nil {
					return
				}
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				if _, err := c.ReportState(rctx, &herdv1.ReportStateRequest{State: st}); err != nil {
					m.log.Debug("report state to front", "front", f.Name, "err", err)
					return
				}
				m.log.Debug("state reported to a front that had not acknowledged it", "front", f.Name, "generation", gen)
			}()
		}
	}
}
