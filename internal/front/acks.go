package front

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/herd-run/herd/internal/cluster"
	"github.com/herd-run/herd/internal/control"
	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// acker tells each node which generation of its state this front routes
// by (Agent.AckState), after the routing table was rebuilt from it. The
// node waits for these acks before it stops workers it withdrew.
type acker struct {
	name   string
	agents *control.Agents
	log    *slog.Logger

	mu      sync.Mutex
	sent    map[string]uint64 // node -> generation acknowledged
	pending map[string]ackTo
	kick    chan struct{}
}

type ackTo struct {
	addr string
	gen  uint64
}

func newAcker(name string, agents *control.Agents, log *slog.Logger) *acker {
	return &acker{name: name, agents: agents, log: log, sent: map[string]uint64{}, pending: map[string]ackTo{}, kick: make(chan struct{}, 1)}
}

// applied records that routes now follow these node states; call it after
// the table is swapped.
func (a *acker) applied(nodes []cluster.NodeView) {
	a.mu.Lock()
	for _, n := range nodes {
		gen := n.State.GetGeneration()
		if gen > a.sent[n.Name] && n.GRPCAddr != "" && n.Member.State == herdv1.MemberState_MEMBER_STATE_ALIVE {
			a.pending[n.Name] = ackTo{n.GRPCAddr, gen}
		}
	}
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// run sends pending acks until ctx ends; a failed ack is retried.
func (a *acker) run(ctx context.Context) {
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-retry.C:
		}
		a.mu.Lock()
		todo := a.pending
		a.pending = map[string]ackTo{}
		a.mu.Unlock()
		var wg sync.WaitGroup
		for node, to := range todo {
			wg.Go(func() { a.send(ctx, node, to) })
		}
		wg.Wait()
	}
}

func (a *acker) send(ctx context.Context, node string, to ackTo) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := a.agents.Client(to.addr)
	if err == nil {
		_, err = c.AckState(ctx, &herdv1.AckStateRequest{Front: a.name, Generation: to.gen})
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.log.Debug("ack node state", "node", node, "err", err)
		if p, ok := a.pending[node]; !ok || p.gen < to.gen {
			a.pending[node] = to
		}
		return
	}
	if to.gen > a.sent[node] {
		a.sent[node] = to.gen
	}
}
