package agent

import (
	"context"

	"google.golang.org/protobuf/proto"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// sameButWorkers reports whether b is a only a's release with another
// worker count: the same id, artifact and spec otherwise.
func sameButWorkers(a, b *herdv1.Release) bool {
	if a.GetId() != b.GetId() || a.GetDigest() != b.GetDigest() || a.GetRestart() != b.GetRestart() {
		return false
	}
	sa, sb := proto.CloneOf(a.GetSpec()), proto.CloneOf(b.GetSpec())
	sa.Workers, sb.Workers = 0, 0
	return proto.Equal(sa, sb)
}

// scale changes an app's worker count without touching the workers that
// stay: new slots start and join once ready; surplus slots (the highest
// numbers) are withdrawn, then stopped once every front routes without
// them.
func (m *manager) scale(ctx context.Context, cur *appRun, rel *herdv1.Release) error {
	want := int(rel.GetSpec().GetWorkers())
	m.mu.Lock()
	have := len(cur.slots)
	m.mu.Unlock()
	log := m.log.With("app", rel.GetApp(), "release", rel.GetId())
	if want > have {
		added, err := m.startRange(rel, m.releasePath(rel.GetDigest()), have+1, want)
		if err != nil {
			return m.failed(rel.GetApp(), err)
		}
		if err := m.waitReady(ctx, added); err != nil {
			m.stopSlots(added)
			return m.failed(rel.GetApp(), err)
		}
		m.mu.Lock()
		cur.slots = append(cur.slots, added...)
		cur.rel = proto.CloneOf(rel)
		cur.lastErr = ""
		m.mu.Unlock()
		m.publish()
	} else {
		m.mu.Lock()
		surplus := append([]*slot(nil), cur.slots[want:]...)
		cur.slots = cur.slots[:want]
		cur.rel = proto.CloneOf(rel)
		cur.lastErr = ""
		m.mu.Unlock()
		m.awaitFronts(m.publish().GetGeneration())
		m.stopSlots(surplus)
	}
	if err := m.save(); err != nil {
		log.Error("save node state", "err", err)
	}
	log.Info("scaled", "from", have, "to", want)
	return nil
}
