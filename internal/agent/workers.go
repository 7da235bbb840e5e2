package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// memoryCheckInterval is how often worker memory is compared with
// max_memory.
const memoryCheckInterval = 5 * time.Second

// workers reports every slot of app ("" for all).
func (m *manager) workers(app string) []*herdv1.WorkerStatus {
	m.mu.Lock()
	type entry struct {
		rel *herdv1.Release
		s   *slot
	}
	var all []entry
	for _, a := range m.apps {
		if app != "" && a.rel.GetApp() != app {
			continue
		}
		for _, s := range a.slots {
			all = append(all, entry{a.rel, s})
		}
		for _, s := range a.retiring {
			all = append(all, entry{a.rel, s})
		}
	}
	m.mu.Unlock()
	var out []*herdv1.WorkerStatus
	for _, e := range all {
		st := e.s.w.Status()
		ws := &herdv1.WorkerStatus{
			App:      e.rel.GetApp(),
			Release:  e.s.release,
			Index:    uint32(e.s.index),
			Address:  net.JoinHostPort(m.host, strconv.Itoa(e.s.port)),
			Pid:      int64(st.Pid),
			State:    st.State,
			Restarts: uint32(st.Restarts),
			LastExit: st.LastExit,
		}
		if e.s.retiring.Load() {
			ws.State = "retiring"
		}
		if note := e.s.note(); note != "" {
			ws.LastExit = note
		}
		if !st.StartedAt.IsZero() {
			ws.Started = timestamppb.New(st.StartedAt)
		}
		ws.RssBytes, ws.CpuSeconds = groupUsage(st.Pid)
		out = append(out, ws)
	}
	slices.SortFunc(out, func(a, b *herdv1.WorkerStatus) int {
		if a.App != b.App {
			if a.App < b.App {
				return -1
			}
			return 1
		}
		return int(a.Index) - int(b.Index)
	})
	return out
}

// replace swaps a slot's worker for a new one: the new worker starts on a
// new port, must become ready, and is advertised in the old one's place;
// the old one is stopped once every front routes without it. A worker that
// is sick, too old or too big leaves this way at no cost to requests.
func (m *manager) replace(app string, old *slot, reason string) {
	m.bg.Go(func() {
		mu := m.appLock(app)
		mu.Lock()
		m.mu.Lock()
		a := m.apps[app]
		current := a != nil && slices.Contains(a.slots, old)
		var rel *herdv1.Release
		if current {
			rel = a.rel
		}
		m.mu.Unlock()
		if !current || m.ctx.Err() != nil {
			mu.Unlock()
			return
		}
		log := m.log.With("app", app, "worker", old.index)
		log.Info("replacing worker", "reason", reason)
		dir := m.releasePath(rel.GetDigest())
		s, err := m.startSlot(rel, dir, old.index)
		if err == nil {
			ctx, cancel := context.WithTimeout(m.ctx, m.readyTimeout(rel))
			err = s.w.WaitReady(ctx)
			cancel()
			if err != nil {
				m.stopSlots([]*slot{s})
			}
		}
		if err != nil {
			mu.Unlock()
			log.Error("replacement worker did not become ready; restarting the old one in place", "err", err)
			old.replacing.Store(false)
			old.w.Restart(reason)
			return
		}
		s.setNote(fmt.Sprintf("replaced worker pid %d: %s", old.w.Status().Pid, reason))
		m.mu.Lock()
		if i := slices.Index(a.slots, old); i >= 0 {
			a.slots[i] = s
		}
		old.retiring.Store(true)
		a.retiring = append(a.retiring, old)
		m.mu.Unlock()
		gen := m.publish().GetGeneration()
		mu.Unlock()
		m.awaitFronts(gen)
		m.stopSlots([]*slot{old})
		m.mu.Lock()
		a.retiring = slices.DeleteFunc(a.retiring, func(x *slot) bool { return x == old })
		m.mu.Unlock()
		log.Info("worker replaced", "reason", reason)
	})
}

// lifetime returns when a worker of spec should be recycled: max_lifetime
// give or take 10%, so workers started together do not all leave at once.
func lifetime(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	jitter := time.Duration(rand.Int64N(int64(max)/5+1)) - max/10
	return max + jitter
}

// watchMemory replaces workers above their app's max_memory until ctx ends.
func (m *manager) watchMemory(ctx context.Context) {
	t := time.NewTicker(memoryCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		type check struct {
			app   string
			s     *slot
			limit uint64
		}
		var checks []check
		m.mu.Lock()
		for name, a := range m.apps {
			if limit := a.rel.GetSpec().GetMaxMemory(); limit > 0 {
				for _, s := range a.slots {
					checks = append(checks, check{name, s, limit})
				}
			}
		}
		m.mu.Unlock()
		for _, c := range checks {
			if !c.s.w.Ready() {
				continue
			}
			if rss, _ := groupUsage(c.s.w.Pid()); rss > c.limit {
				if c.s.replacing.CompareAndSwap(false, true) {
					m.replace(c.app, c.s, fmt.Sprintf("resident memory %d MiB above max_memory %d MiB", rss>>20, c.limit>>20))
				}
			}
		}
	}
}
