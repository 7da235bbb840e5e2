package state

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// historyKeep is how many finished rollouts an app's history keeps (older
// entries go unless a node is still assigned their release).
const historyKeep = 50

// fsm is the desired state as Raft applies it. Apply must be deterministic:
// everything it needs (the time included) is in the command.
type fsm struct {
	mu          sync.RWMutex
	apps        map[string]*herdv1.AppRecord
	nodes       map[string]*herdv1.NodeRecord
	lastRollout uint64
	operators   []*herdv1.OperatorRecord

	onChange func()
}

func newFSM() *fsm {
	return &fsm{apps: map[string]*herdv1.AppRecord{}, nodes: map[string]*herdv1.NodeRecord{}}
}

// beginResult is what a BeginRollout returns to its proposer.
type beginResult struct {
	Rollout *herdv1.Rollout
	// Busy is the rollout in progress that refused this one.
	Busy *herdv1.Rollout
}

func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	var cmd herdv1.StateCommand
	if err := proto.Unmarshal(l.Data, &cmd); err != nil {
		// A log entry this version cannot read: a newer front wrote it.
		// Applying nothing keeps every front of this version identical.
		return fmt.Errorf("state: unreadable log entry %d: %w", l.Index, err)
	}
	f.mu.Lock()
	var res any
	switch op := cmd.GetOp().(type) {
	case *herdv1.StateCommand_BeginRollout:
		res = f.begin(&cmd, op.BeginRollout)
	case *herdv1.StateCommand_FinishRollout:
		res = f.finish(&cmd, op.FinishRollout)
	case *herdv1.StateCommand_AssignRelease:
		res = f.assign(op.AssignRelease)
	case *herdv1.StateCommand_SetDrain:
		n := f.node(op.SetDrain.GetNode())
		n.Drained, n.KeepWorkers = op.SetDrain.GetDrained(), op.SetDrain.GetKeepWorkers() && op.SetDrain.GetDrained()
	case *herdv1.StateCommand_DestroyApp:
		res = f.destroy(&cmd, op.DestroyApp)
	case *herdv1.StateCommand_AddOperator:
		o := proto.CloneOf(op.AddOperator)
		o.Issued = cmd.GetTime()
		f.operators = append(f.operators, o)
	case *herdv1.StateCommand_RevokeOperator:
		n := 0
		for _, o := range f.operators {
			if o.GetName() == op.RevokeOperator.GetName() && !o.GetRevoked() {
				o.Revoked = true
				n++
			}
		}
		if n == 0 {
			res = fmt.Errorf("%w: no operator %q to revoke", ErrNotFound, op.RevokeOperator.GetName())
		}
	case *herdv1.StateCommand_RolloutStep:
		r := f.apps[op.RolloutStep.GetApp()].GetRollout()
		if r == nil || r.GetId() != op.RolloutStep.GetRollout() {
			res = fmt.Errorf("%w: rollout %d of %s is no longer in progress", ErrConflict, op.RolloutStep.GetRollout(), op.RolloutStep.GetApp())
			break
		}
		r.ReleaseCommandDone = r.ReleaseCommandDone || op.RolloutStep.GetReleaseCommandDone()
	default:
		res = fmt.Errorf("state: log entry %d has an operation this front does not know", l.Index)
	}
	f.mu.Unlock()
	if f.onChange != nil {
		f.onChange()
	}
	return res
}

func (f *fsm) app(name string) *herdv1.AppRecord {
	a := f.apps[name]
	if a == nil {
		a = &herdv1.AppRecord{Name: name}
		f.apps[name] = a
	}
	return a
}

func (f *fsm) node(name string) *herdv1.NodeRecord {
	n := f.nodes[name]
	if n == nil {
		n = &herdv1.NodeRecord{Name: name, Assignments: map[string]string{}}
		f.nodes[name] = n
	}
	if n.Assignments == nil {
		n.Assignments = map[string]string{}
	}
	return n
}

// begin makes the rollout's release: the current one when nothing changed
// (changed=false), the current one with the new worker count when only that
// changed (nodes scale in place), else a new one with the next id.
func (f *fsm) begin(cmd *herdv1.StateCommand, b *herdv1.BeginRollout) any {
	spec := b.GetSpec()
	if b.GetRestart() && f.apps[spec.GetName()].GetCurrent() == nil {
		// Checked first: a refused command changes nothing.
		return fmt.Errorf("%w: no app %s to restart", ErrNotFound, spec.GetName())
	}
	a := f.app(spec.GetName())
	if r := a.GetRollout(); r != nil {
		if !b.GetForce() {
			return beginResult{Busy: proto.CloneOf(r)}
		}
		f.addHistory(a, &herdv1.HistoryEntry{Release: r.GetRelease(), Finished: cmd.GetTime(), Error: "superseded", Note: r.GetNote()})
	}
	var rel *herdv1.Release
	changed := true
	if b.GetRestart() {
		// Restart numbers, like release ids, are never reused: a node that
		// ran a failed restart must see the next one as new.
		a.LastRestart = max(a.LastRestart, a.GetCurrent().GetRestart()) + 1
		rel = proto.CloneOf(a.GetCurrent())
		rel.Restart = a.LastRestart
	} else if cur := a.GetCurrent(); cur != nil && cur.GetDigest() == b.GetDigest() {
		if proto.Equal(cur.GetSpec(), spec) {
			rel, changed = proto.CloneOf(cur), false
		} else {
			x, y := proto.CloneOf(cur.GetSpec()), proto.CloneOf(spec)
			x.Workers, y.Workers = 0, 0
			if proto.Equal(x, y) {
				rel = proto.CloneOf(cur)
				rel.Spec = proto.CloneOf(spec)
			}
		}
	}
	if rel == nil {
		// The id is spent even if the rollout fails, so ids stay unique.
		a.LastId++
		rel = &herdv1.Release{
			App:     spec.GetName(),
			Id:      "v" + strconv.FormatUint(a.LastId, 10),
			Digest:  b.GetDigest(),
			Spec:    proto.CloneOf(spec),
			Created: cmd.GetTime(),
		}
	}
	f.lastRollout++
	previous := map[string]string{}
	for name, n := range f.nodes {
		if id, ok := n.GetAssignments()[spec.GetName()]; ok {
			previous[name] = id
		}
	}
	a.Rollout = &herdv1.Rollout{Id: f.lastRollout, Release: rel, Front: b.GetFront(), Started: cmd.GetTime(), Changed: changed,
		Note: b.GetNote(), Plan: b.GetPlan(), Previous: previous}
	return beginResult{Rollout: proto.CloneOf(a.Rollout)}
}

// finish ends the rollout if it is still the app's (a superseded one's end
// changes nothing and says so).
func (f *fsm) finish(cmd *herdv1.StateCommand, fin *herdv1.FinishRollout) any {
	a := f.apps[fin.GetApp()]
	r := a.GetRollout()
	if r == nil || r.GetId() != fin.GetRollout() {
		return fmt.Errorf("%w: rollout %d of %s is no longer in progress (superseded or interrupted)", ErrConflict, fin.GetRollout(), fin.GetApp())
	}
	rel := r.GetRelease()
	for _, n := range fin.GetNodes() {
		if n.GetOk() {
			f.node(n.GetNode()).Assignments[a.GetName()] = rel.GetId()
		}
	}
	if fin.GetOk() {
		a.Current = proto.CloneOf(rel)
		a.Destroyed = false
		// Every node of the app is to run it now, including those that
		// were away: they converge when they are back.
		for _, n := range f.nodes {
			if _, ok := n.Assignments[a.GetName()]; ok {
				n.Assignments[a.GetName()] = rel.GetId()
			}
		}
	}
	if r.GetChanged() || !fin.GetOk() {
		f.addHistory(a, &herdv1.HistoryEntry{Release: rel, Finished: cmd.GetTime(), Ok: fin.GetOk(), Error: fin.GetError(), Note: r.GetNote()})
	}
	a.Rollout = nil
	return nil
}

// destroy removes an app's current release and assignments (nodes then
// stop it); its history and release numbers stay, so a later deploy
// continues them.
func (f *fsm) destroy(cmd *herdv1.StateCommand, d *herdv1.DestroyApp) any {
	a := f.apps[d.GetApp()]
	if a.GetCurrent() == nil && a.GetRollout() == nil {
		return fmt.Errorf("%w: no app %s", ErrNotFound, d.GetApp())
	}
	if r := a.GetRollout(); r != nil {
		return &BusyError{Rollout: proto.CloneOf(r)}
	}
	f.addHistory(a, &herdv1.HistoryEntry{Release: a.GetCurrent(), Finished: cmd.GetTime(), Ok: true, Note: "destroyed"})
	a.Current = nil
	a.Destroyed = true
	for _, n := range f.nodes {
		delete(n.Assignments, d.GetApp())
	}
	return nil
}

func (f *fsm) assign(as *herdv1.AssignRelease) any {
	if as.GetRelease() == "" {
		if n := f.nodes[as.GetNode()]; n != nil {
			delete(n.Assignments, as.GetApp())
		}
		return nil
	}
	if f.release(as.GetApp(), as.GetRelease()) == nil {
		return fmt.Errorf("%w: %s has no release %s", ErrNotFound, as.GetApp(), as.GetRelease())
	}
	f.node(as.GetNode()).Assignments[as.GetApp()] = as.GetRelease()
	return nil
}

// release finds one of an app's releases by id: the current one, one in
// progress, or one in the history.
func (f *fsm) release(app, id string) *herdv1.Release {
	a := f.apps[app]
	if a == nil {
		return nil
	}
	if a.GetCurrent().GetId() == id {
		return a.GetCurrent()
	}
	if a.GetRollout().GetRelease().GetId() == id {
		return a.GetRollout().GetRelease()
	}
	for i := len(a.GetHistory()) - 1; i >= 0; i-- {
		if h := a.GetHistory()[i]; h.GetRelease().GetId() == id {
			return h.GetRelease()
		}
	}
	return nil
}

// addHistory appends and trims the oldest entries that no node is assigned.
func (f *fsm) addHistory(a *herdv1.AppRecord, h *herdv1.HistoryEntry) {
	a.History = append(a.History, h)
	for len(a.History) > historyKeep {
		i := slices.IndexFunc(a.History, func(h *herdv1.HistoryEntry) bool { return !f.assigned(a.GetName(), h.GetRelease().GetId()) })
		if i < 0 {
			return
		}
		a.History = slices.Delete(a.History, i, i+1)
	}
}

func (f *fsm) assigned(app, id string) bool {
	for _, n := range f.nodes {
		if n.GetAssignments()[app] == id {
			return true
		}
	}
	return false
}

func (f *fsm) snapshotMsg() *herdv1.StateSnapshot {
	s := &herdv1.StateSnapshot{LastRollout: f.lastRollout}
	for _, o := range f.operators {
		s.Operators = append(s.Operators, proto.CloneOf(o))
	}
	for _, a := range f.apps {
		s.Apps = append(s.Apps, proto.CloneOf(a))
	}
	for _, n := range f.nodes {
		s.Nodes = append(s.Nodes, proto.CloneOf(n))
	}
	slices.SortFunc(s.Apps, func(a, b *herdv1.AppRecord) int { return strings.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(s.Nodes, func(a, b *herdv1.NodeRecord) int { return strings.Compare(a.GetName(), b.GetName()) })
	return s
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := proto.Marshal(f.snapshotMsg())
	if err != nil {
		return nil, err
	}
	return snapshot(b), nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	var s herdv1.StateSnapshot
	if err := proto.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("state: read snapshot: %w", err)
	}
	f.mu.Lock()
	f.apps = map[string]*herdv1.AppRecord{}
	f.nodes = map[string]*herdv1.NodeRecord{}
	for _, a := range s.GetApps() {
		f.apps[a.GetName()] = a
	}
	for _, n := range s.GetNodes() {
		if n.Assignments == nil {
			n.Assignments = map[string]string{}
		}
		f.nodes[n.GetName()] = n
	}
	f.lastRollout = s.GetLastRollout()
	f.operators = s.GetOperators()
	f.mu.Unlock()
	if f.onChange != nil {
		f.onChange()
	}
	return nil
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (snapshot) Release() {}
