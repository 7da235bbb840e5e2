package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// fsmLog feeds commands to an fsm as Raft would, with increasing indexes
// and a fixed clock.
type fsmLog struct {
	f     *fsm
	index uint64
	now   time.Time
}

func newFSMLog() *fsmLog {
	return &fsmLog{f: newFSM(), now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (l *fsmLog) apply(t *testing.T, cmd *herdv1.StateCommand) any {
	t.Helper()
	l.index++
	l.now = l.now.Add(time.Second)
	cmd.Time = timestamppb.New(l.now)
	b, err := proto.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return l.f.Apply(&raft.Log{Index: l.index, Term: 1, Type: raft.LogCommand, Data: b})
}

func (l *fsmLog) begin(t *testing.T, app, digest string, force bool) *herdv1.Rollout {
	t.Helper()
	res := l.apply(t, &herdv1.StateCommand{Op: &herdv1.StateCommand_BeginRollout{BeginRollout: &herdv1.BeginRollout{
		Spec: spec(app, 2), Digest: digest, Front: "f1", Force: force,
	}}})
	br, ok := res.(beginResult)
	if !ok || br.Rollout == nil {
		t.Fatalf("begin %s %s = %v", app, digest, res)
	}
	return br.Rollout
}

func (l *fsmLog) finish(t *testing.T, r *herdv1.Rollout, ok bool, nodes ...string) {
	t.Helper()
	res := l.apply(t, &herdv1.StateCommand{Op: &herdv1.StateCommand_FinishRollout{FinishRollout: &herdv1.FinishRollout{
		App: r.GetRelease().GetApp(), Rollout: r.GetId(), Ok: ok, Nodes: okNodes(nodes...),
	}}})
	if res != nil {
		t.Fatalf("finish: %v", res)
	}
}

func (l *fsmLog) assign(t *testing.T, node, app, release string) any {
	t.Helper()
	return l.apply(t, &herdv1.StateCommand{Op: &herdv1.StateCommand_AssignRelease{AssignRelease: &herdv1.AssignRelease{
		Node: node, App: app, Release: release,
	}}})
}

// fill gives the fsm apps with current releases, history, a rollout in
// progress and assignments.
func (l *fsmLog) fill(t *testing.T) {
	t.Helper()
	l.finish(t, l.begin(t, "shop", "sha256:a", false), true, "n1", "n2")
	l.finish(t, l.begin(t, "shop", "sha256:b", false), false, "n1")
	l.finish(t, l.begin(t, "blog", "sha256:c", false), true, "n2")
	l.begin(t, "wiki", "sha256:d", false)
	l.begin(t, "wiki", "sha256:e", true)
	if res := l.assign(t, "n3", "shop", "v2"); res != nil {
		t.Fatal(res)
	}
}

// sink is a raft.SnapshotSink in memory.
type sink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *sink) ID() string            { return "test" }
func (s *sink) Close() error          { s.closed = true; return nil }
func (s *sink) Cancel() error         { s.cancelled = true; return nil }
func (s *sink) Reader() io.ReadCloser { return io.NopCloser(bytes.NewReader(s.Bytes())) }

func snapshotOf(t *testing.T, f *fsm) *sink {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	if !s.closed || s.cancelled {
		t.Fatalf("Persist left the sink closed=%v cancelled=%v", s.closed, s.cancelled)
	}
	return &s
}

func TestFSMSnapshotRestore(t *testing.T) {
	t.Parallel()
	l := newFSMLog()
	l.fill(t)
	want := l.f.snapshotMsg()
	if len(want.GetApps()) != 3 || len(want.GetNodes()) != 3 || want.GetLastRollout() != 5 {
		t.Fatalf("the filled state is %v", want)
	}
	s := snapshotOf(t, l.f)
	index, now := l.index, l.now

	// Changes after the snapshot are not in it.
	l.finish(t, l.begin(t, "blog", "sha256:x", false), true, "n9")

	var changes int
	r := &fsmLog{f: newFSM(), index: index, now: now}
	r.f.onChange = func() { changes++ }
	// Restore replaces whatever the fsm held.
	r.f.apps["junk"] = &herdv1.AppRecord{Name: "junk"}
	r.f.nodes["junk"] = &herdv1.NodeRecord{Name: "junk"}
	if err := r.f.Restore(s.Reader()); err != nil {
		t.Fatal(err)
	}
	if changes != 1 {
		t.Errorf("Restore called OnChange %d times, want 1", changes)
	}
	if got := r.f.snapshotMsg(); !proto.Equal(got, want) {
		t.Fatalf("restored state is\n%v\nwant\n%v", got, want)
	}

	// The restored fsm goes on exactly as the original did: the same ids.
	r.finish(t, r.begin(t, "blog", "sha256:x", false), true, "n9")
	if got, want := r.f.snapshotMsg(), l.f.snapshotMsg(); !proto.Equal(got, want) {
		t.Fatalf("after the same command the restored state is\n%v\nthe original\n%v", got, want)
	}
	// Nodes restored from a snapshot take assignments.
	if res := r.assign(t, "n1", "blog", "v1"); res != nil {
		t.Fatal(res)
	}

	// An empty snapshot restores an empty state.
	if err := r.f.Restore(snapshotOf(t, newFSM()).Reader()); err != nil {
		t.Fatal(err)
	}
	if got := r.f.snapshotMsg(); len(got.GetApps())+len(got.GetNodes()) != 0 || got.GetLastRollout() != 0 {
		t.Errorf("after restoring an empty snapshot: %v", got)
	}
}

func TestFSMRestoreGarbage(t *testing.T) {
	t.Parallel()
	l := newFSMLog()
	l.fill(t)
	want := l.f.snapshotMsg()
	err := l.f.Restore(io.NopCloser(strings.NewReader("\xff\xff\xff not a snapshot")))
	if err == nil {
		t.Fatal("Restore of garbage succeeded")
	}
	if got := l.f.snapshotMsg(); !proto.Equal(got, want) {
		t.Errorf("a failed Restore changed the state")
	}
}

// failingSink fails the write.
type failingSink struct{ sink }

func (s *failingSink) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestFSMPersistFailure(t *testing.T) {
	t.Parallel()
	snap, err := newFSM().Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var s failingSink
	if err := snap.Persist(&s); err == nil || !s.cancelled || s.closed {
		t.Errorf("Persist into a failing sink = %v, cancelled=%v closed=%v; want an error and a cancelled sink", err, s.cancelled, s.closed)
	}
}

// Two fsms fed the same log hold the same state (Apply is deterministic).
func TestFSMDeterministic(t *testing.T) {
	t.Parallel()
	a, b := newFSMLog(), newFSMLog()
	a.fill(t)
	b.fill(t)
	if !proto.Equal(a.f.snapshotMsg(), b.f.snapshotMsg()) {
		t.Fatal("the same log made different states")
	}
	if !bytes.Equal(snapshotBytes(t, a.f), snapshotBytes(t, b.f)) {
		t.Error("the same state made different snapshot bytes")
	}
}

func snapshotBytes(t *testing.T, f *fsm) []byte {
	t.Helper()
	var s herdv1.StateSnapshot
	if err := proto.Unmarshal(snapshotOf(t, f).Bytes(), &s); err != nil {
		t.Fatal(err)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFSMApplyOddEntries(t *testing.T) {
	t.Parallel()
	l := newFSMLog()
	l.fill(t)
	want := l.f.snapshotMsg()

	// Entries that are not commands (no-ops, configurations) change nothing.
	if res := l.f.Apply(&raft.Log{Index: 100, Type: raft.LogNoop}); res != nil {
		t.Errorf("Apply of a no-op = %v", res)
	}
	// An entry this version cannot read.
	res := l.f.Apply(&raft.Log{Index: 101, Type: raft.LogCommand, Data: []byte("\xff\xff\xff")})
	if err, ok := res.(error); !ok || !strings.Contains(err.Error(), "101") {
		t.Errorf("Apply of an unreadable entry = %v, want an error naming it", res)
	}
	// A command without an operation (one a newer version added).
	res = l.apply(t, &herdv1.StateCommand{})
	if _, ok := res.(error); !ok {
		t.Errorf("Apply of an unknown operation = %v, want an error", res)
	}
	if got := l.f.snapshotMsg(); !proto.Equal(got, want) {
		t.Errorf("odd entries changed the state")
	}
}

// The history keeps the last historyKeep rollouts, and older ones whose
// release a node is still assigned.
func TestFSMHistoryTrim(t *testing.T) {
	t.Parallel()
	l := newFSMLog()
	l.finish(t, l.begin(t, "shop", "sha256:0", false), true, "n1") // v1, n1 stays on it
	for i := range historyKeep + 10 {
		l.finish(t, l.begin(t, "shop", fmt.Sprintf("sha256:%d", i+1), false), false)
	}
	h := l.f.apps["shop"].GetHistory()
	if len(h) != historyKeep {
		t.Fatalf("history has %d entries, want %d", len(h), historyKeep)
	}
	if h[0].GetRelease().GetId() != "v1" {
		t.Errorf("the oldest entry is %s, want v1 (n1 runs it)", h[0].GetRelease().GetId())
	}
	if got, want := h[1].GetRelease().GetId(), "v13"; got != want {
		t.Errorf("the second entry is %s, want %s", got, want)
	}
	if got := h[len(h)-1].GetRelease().GetId(); got != fmt.Sprintf("v%d", historyKeep+11) {
		t.Errorf("the newest entry is %s", got)
	}
	// A release trimmed from the history can no longer be assigned.
	if res := l.assign(t, "n2", "shop", "v2"); !errors.Is(res.(error), ErrNotFound) {
		t.Errorf("assigning a trimmed release: %v, want ErrNotFound", res)
	}
}

func TestSlogWriter(t *testing.T) {
	t.Parallel()
	var h recordHandler
	w := &slogWriter{log: slog.New(&h)}
	lines := []struct {
		line  string
		level slog.Level
		msg   string
	}{
		{"[WARN]  raft: heartbeat timeout reached: last-leader-addr=x\n", slog.LevelWarn, "heartbeat timeout reached: last-leader-addr=x"},
		{"[ERROR] raft: failed to contact: id=f2", slog.LevelError, "failed to contact: id=f2"},
		{"[INFO]  raft: entering leader state", slog.LevelInfo, "entering leader state"},
		{"[DEBUG] raft: something", slog.LevelDebug, "something"},
		{"[TRACE] raft: more", slog.LevelDebug, "more"},
		{"no level here", slog.LevelInfo, "no level here"},
	}
	for _, l := range lines {
		if n, err := w.Write([]byte(l.line)); n != len(l.line) || err != nil {
			t.Errorf("Write(%q) = %d, %v", l.line, n, err)
		}
	}
	if len(h.records) != len(lines) {
		t.Fatalf("%d records for %d lines", len(h.records), len(lines))
	}
	for i, l := range lines {
		if r := h.records[i]; r.Level != l.level || r.Message != l.msg {
			t.Errorf("%q logged as %v %q, want %v %q", l.line, r.Level, r.Message, l.level, l.msg)
		}
	}

	// hclog's output reaches slog through it.
	var h2 recordHandler
	newHCLog(slog.New(&h2)).Warn("election won", "term", 3)
	if len(h2.records) != 1 || h2.records[0].Level != slog.LevelWarn || !strings.Contains(h2.records[0].Message, "election won") {
		t.Errorf("hclog logged %v", h2.records)
	}
}

type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func TestValidAppName(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{
		"shop": true, "a": true, "0": true, "my-app-2": true, strings.Repeat("a", 63): true,
		"": false, "-shop": false, "shop-": false, "Shop": false, "my_app": false, "my.app": false,
		strings.Repeat("a", 64): false, "shop\n": false,
	} {
		if got := ValidAppName(name); got != want {
			t.Errorf("ValidAppName(%q) = %v, want %v", name, got, want)
		}
	}
}
