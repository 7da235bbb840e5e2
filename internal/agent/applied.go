package agent

import (
	"context"
	"sync"
	"time"

	"github.com/herd-run/herd/internal/cluster"
	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// applied tracks which generation of this node's state each front routes
// by, from the fronts' AckState calls. A node withdraws workers by
// publishing a state without them; it stops them only once every live
// front has acknowledged that state (or a maximum wait passed), so no front
// sends a request to a worker that is going away.
//
// The fronts tell the node directly rather than by gossip: an ack reaches
// the node in a round trip instead of a gossip round or two (0.4–0.9 s),
// and the node needs every front's ack, which gossip would only bring
// eventually.
type applied struct {
	mu      sync.Mutex
	gens    map[string]uint64 // front -> generation
	changed chan struct{}     // closed on every ack
}

func newApplied() *applied {
	return &applied{gens: map[string]uint64{}, changed: make(chan struct{})}
}

func (a *applied) ack(front string, gen uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if gen > a.gens[front] {
		a.gens[front] = gen
		close(a.changed)
		a.changed = make(chan struct{})
	}
}

// wait returns once every live front acknowledged gen, or after max (or
// when ctx ends); it returns the fronts that did not.
func (a *applied) wait(ctx context.Context, cl *cluster.Cluster, gen uint64, max time.Duration) []string {
	deadline := time.NewTimer(max)
	defer deadline.Stop()
	// Membership changes (a front leaving) also end a wait.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		a.mu.Lock()
		var missing []string
		for _, m := range cl.Members() {
			if m.Role == herdv1.Role_ROLE_FRONT && m.State == herdv1.MemberState_MEMBER_STATE_ALIVE && !m.Leaving && a.gens[m.Name] < gen {
				missing = append(missing, m.Name)
			}
		}
		changed := a.changed
		a.mu.Unlock()
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-tick.C:
		case <-deadline.C:
			return missing
		case <-ctx.Done():
			return missing
		}
	}
}
