package state

import (
	"bytes"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// Tests of the operations beyond deploy: restart, plan and previous
// assignments, rollout steps, destroy, drain, Release and history notes.

// TestOps runs the operations' tests one after another on one leader (an
// election costs a second or two, and the package's tests run only
// GOMAXPROCS at a time). Each uses apps and nodes of its own, named after
// it ("rs-shop", "rs-n1"), and looks only at those.
func TestOps(t *testing.T) {
	s := openLeader(t)
	for _, tt := range []struct {
		name string
		test func(*testing.T, *Store)
	}{
		{"Restart", testRestart},
		{"PlanAndPrevious", testPlanAndPrevious},
		{"Step", testStep},
		{"Destroy", testDestroy},
		{"Release", testRelease},
		{"HistoryNote", testHistoryNote},
	} {
		t.Run(tt.name, func(t *testing.T) { tt.test(t, s) })
	}
}

// beginWith begins a rollout with every option, failing the test on error.
func beginWith(t *testing.T, s *Store, b *herdv1.BeginRollout) *herdv1.Rollout {
	t.Helper()
	if b.Front == "" {
		b.Front = s.ID()
	}
	r, err := s.BeginRollout(b)
	if err != nil {
		t.Fatalf("BeginRollout(%s, %s, restart=%v, note=%q): %v", b.GetSpec().GetName(), b.GetDigest(), b.GetRestart(), b.GetNote(), err)
	}
	return r
}

// rolloutsOf is Rollouts limited to some apps (the subtests share a store).
func rolloutsOf(s *Store, apps ...string) []*herdv1.Rollout {
	return slices.DeleteFunc(s.Rollouts(), func(r *herdv1.Rollout) bool { return !slices.Contains(apps, r.GetRelease().GetApp()) })
}

// listOf is List limited to some apps.
func listOf(s *Store, apps ...string) []*herdv1.Release {
	return slices.DeleteFunc(s.List(), func(r *herdv1.Release) bool { return !slices.Contains(apps, r.GetApp()) })
}

func lastHistory(t *testing.T, s *Store, app string) *herdv1.HistoryEntry {
	t.Helper()
	h := s.History(app)
	if len(h) == 0 {
		t.Fatalf("History(%s) is empty", app)
	}
	return h[len(h)-1]
}

func testRestart(t *testing.T, s *Store) {

	// Nothing to restart.
	_, err := s.BeginRollout(&herdv1.BeginRollout{Spec: spec("rs-shop", 2), Digest: "sha256:aaa", Front: "f1", Restart: true, Note: "restart"})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("restart of an app never deployed: %v, want ErrNotFound", err)
	}
	if ro := rolloutsOf(s, "rs-shop"); len(ro) != 0 {
		t.Fatalf("a refused restart began a rollout: %v", ro)
	}
	if h := s.History("rs-shop"); len(h) != 0 {
		t.Fatalf("a refused restart wrote history: %v", h)
	}

	v1 := deploy(t, s, spec("rs-shop", 2), "sha256:aaa", "v1", "rs-n1", "rs-n2")
	if v1.GetRestart() != 0 {
		t.Fatalf("a new release has restart %d", v1.GetRestart())
	}

	// The spec and digest the restart is given do not matter: it restarts
	// the current release.
	r := beginWith(t, s, &herdv1.BeginRollout{Spec: spec("rs-shop", 2), Digest: "sha256:aaa", Restart: true, Note: "restart"})
	rel := r.GetRelease()
	if !r.GetChanged() || r.GetNote() != "restart" {
		t.Errorf("restart rollout: changed=%v note=%q, want changed, \"restart\"", r.GetChanged(), r.GetNote())
	}
	want := proto.CloneOf(v1)
	want.Restart = 1
	if !proto.Equal(rel, want) {
		t.Fatalf("restart release = %v, want v1 with restart 1 (same id, digest, spec, created)", rel)
	}
	// Nothing changes until Finish.
	if cur, _ := s.Get("rs-shop"); !proto.Equal(cur, v1) {
		t.Fatalf("Begin of a restart changed the current release to %v", cur)
	}
	// Another restart (or deploy) waits for it.
	_, err = s.BeginRollout(&herdv1.BeginRollout{Spec: spec("rs-shop", 2), Digest: "sha256:aaa", Front: "f2", Restart: true})
	var busy *BusyError
	if !errors.As(err, &busy) || !proto.Equal(busy.Rollout, r) {
		t.Fatalf("restart during a restart: %v, want a *BusyError naming it", err)
	}

	finish(t, s, r, true, okNodes("rs-n1", "rs-n2")...)
	cur, err := s.Get("rs-shop")
	if err != nil || !proto.Equal(cur, want) {
		t.Fatalf("current after the restart = %v, %v; want v1 restart 1", cur, err)
	}
	if h := s.History("rs-shop"); len(h) != 2 {
		t.Fatalf("History after the restart has %d entries, want 2", len(h))
	}
	if h := lastHistory(t, s, "rs-shop"); !h.GetOk() || h.GetNote() != "restart" || h.GetError() != "" || !proto.Equal(h.GetRelease(), want) {
		t.Errorf("the restart's history entry = %v", h)
	}
	for _, n := range []string{"rs-n1", "rs-n2"} {
		if got := s.Assigned(n, "rs-shop"); !proto.Equal(got, want) {
			t.Errorf("Assigned(%s) after the restart = %v, want v1 restart 1", n, got)
		}
	}

	// Deploying the same spec and digest changes nothing and keeps the
	// restart count.
	r = begin(t, s, spec("rs-shop", 2), "sha256:aaa", false)
	if r.GetChanged() || !proto.Equal(r.GetRelease(), want) {
		t.Fatalf("deploy after a restart = %v changed=%v, want v1 restart 1 unchanged", r.GetRelease(), r.GetChanged())
	}
	finish(t, s, r, true, okNodes("rs-n1")...)
	if cur, _ := s.Get("rs-shop"); cur.GetRestart() != 1 {
		t.Errorf("the unchanged deploy reset the restart count to %d", cur.GetRestart())
	}
	if h := s.History("rs-shop"); len(h) != 2 {
		t.Errorf("the unchanged deploy went into the history: %d entries", len(h))
	}

	// Scaling keeps it too; a second restart counts on.
	r = begin(t, s, spec("rs-shop", 4), "sha256:aaa", false)
	if rel := r.GetRelease(); !r.GetChanged() || rel.GetId() != "v1" || rel.GetRestart() != 1 || rel.GetSpec().GetWorkers() != 4 {
		t.Fatalf("scale after a restart = %v changed=%v", rel, r.GetChanged())
	}
	finish(t, s, r, true)
	r = beginWith(t, s, &herdv1.BeginRollout{Spec: spec("rs-shop", 4), Digest: "sha256:aaa", Restart: true, Note: "restart"})
	if rel := r.GetRelease(); rel.GetId() != "v1" || rel.GetRestart() != 2 || rel.GetSpec().GetWorkers() != 4 {
		t.Fatalf("second restart = %v, want v1 restart 2 with 4 workers", rel)
	}
	finish(t, s, r, true)

	// A new artifact is a new release, not restarted yet; no id was spent.
	if rel := deploy(t, s, spec("rs-shop", 4), "sha256:bbb", "v2"); rel.GetRestart() != 0 {
		t.Errorf("a new release after restarts has restart %d", rel.GetRestart())
	}
}

// A restart that cannot happen (no current release) must not touch a
// first rollout in progress, even when forced.
func TestFSMRestartWithoutCurrentChangesNothing(t *testing.T) {
	t.Parallel()
	l := newFSMLog()
	l.begin(t, "wiki", "sha256:a", false) // wiki's first rollout, in progress
	want := l.f.snapshotMsg()
	for _, force := range []bool{false, true} {
		res := l.apply(t, &herdv1.StateCommand{Op: &herdv1.StateCommand_BeginRollout{BeginRollout: &herdv1.BeginRollout{
			Spec: spec("wiki", 2), Digest: "sha256:a", Front: "f1", Restart: true, Force: force,
		}}})
		// Nothing to restart wins over busy: the app has no release yet.
		if err, ok := res.(error); !ok || !errors.Is(err, ErrNotFound) {
			t.Errorf("restart (force=%v) of an app without a current release = %v, want ErrNotFound", force, res)
		}
	}
	if got := l.f.snapshotMsg(); !proto.Equal(got, want) {
		t.Errorf("a refused forced restart changed the state to\n%v\nwant\n%v", got, want)
	}
}

func testPlanAndPrevious(t *testing.T, s *Store) {
	deploy(t, s, spec("pl-shop", 2), "sha256:aaa", "v1", "pl-n1", "pl-n2", "pl-n3")
	// v2 fails on all but n1: n1 runs v2, n2 and n3 v1.
	failed := begin(t, s, spec("pl-shop", 2), "sha256:bbb", false)
	finish(t, s, failed, false, okNodes("pl-n1")...)
	deploy(t, s, spec("pl-blog", 1), "sha256:ccc", "v1", "pl-n4")
	if err := s.Assign("pl-n3", "pl-shop", ""); err != nil {
		t.Fatal(err)
	}

	plan := &herdv1.RolloutPlan{
		Batch: "25%", MinHealthy: durationpb.New(5 * time.Second), Deadline: durationpb.New(time.Minute),
		AutoRevert: true, Timeout: durationpb.New(30 * time.Second),
	}
	r := beginWith(t, s, &herdv1.BeginRollout{Spec: spec("pl-shop", 2), Digest: "sha256:ccc", Plan: plan})
	if r.GetRelease().GetId() != "v3" {
		t.Fatalf("Begin = %s, want v3", r.GetRelease().GetId())
	}
	if !proto.Equal(r.GetPlan(), plan) {
		t.Errorf("rollout plan = %v, want %v", r.GetPlan(), plan)
	}
	wantPrev := map[string]string{"pl-n1": "v2", "pl-n2": "v1"}
	if !maps.Equal(r.GetPrevious(), wantPrev) {
		t.Errorf("rollout previous = %v, want %v", r.GetPrevious(), wantPrev)
	}
	// Previous is what nodes ran at the start: later assignments do not
	// change it.
	if err := s.Assign("pl-n2", "pl-shop", "v3"); err != nil {
		t.Fatal(err)
	}
	ro := rolloutsOf(s, "pl-blog", "pl-shop", "pl-wiki")
	if len(ro) != 1 || !proto.Equal(ro[0], r) {
		t.Fatalf("Rollouts = %v, want [%v]", ro, r)
	}
	// Copies: changing what Rollouts returned changes nothing.
	ro[0].Previous["pl-n1"] = "mutated"
	ro[0].Plan.Batch = "mutated"
	if ro := rolloutsOf(s, "pl-blog", "pl-shop", "pl-wiki"); !proto.Equal(ro[0], r) {
		t.Errorf("rollout changed through a returned copy: %v", ro[0])
	}

	// A rollout of an app no node runs has no previous assignments and,
	// without a plan, none.
	wiki := begin(t, s, spec("pl-wiki", 1), "sha256:ddd", false)
	if len(wiki.GetPrevious()) != 0 || wiki.GetPlan() != nil {
		t.Errorf("wiki's first rollout: previous %v plan %v, want none", wiki.GetPrevious(), wiki.GetPlan())
	}
	ro = rolloutsOf(s, "pl-blog", "pl-shop", "pl-wiki")
	if len(ro) != 2 || !proto.Equal(ro[0], r) || !proto.Equal(ro[1], wiki) {
		t.Errorf("Rollouts = %v, want shop's and wiki's (by app)", ro)
	}
}

func testStep(t *testing.T, s *Store) {
	deploy(t, s, spec("st-shop", 2), "sha256:aaa", "v1", "st-n1")
	r := begin(t, s, spec("st-shop", 2), "sha256:bbb", false)
	if r.GetReleaseCommandDone() {
		t.Fatal("a new rollout has its release command done")
	}
	if err := s.Step(&herdv1.RolloutStep{App: "st-shop", Rollout: r.GetId(), ReleaseCommandDone: true}); err != nil {
		t.Fatal(err)
	}
	ro := rolloutsOf(s, "st-shop")
	if len(ro) != 1 || !ro[0].GetReleaseCommandDone() || ro[0].GetId() != r.GetId() {
		t.Fatalf("Rollouts after the step = %v, want release_command_done", ro)
	}
	// A step without it does not undo it.
	if err := s.Step(&herdv1.RolloutStep{App: "st-shop", Rollout: r.GetId()}); err != nil {
		t.Fatal(err)
	}
	if ro := rolloutsOf(s, "st-shop"); !ro[0].GetReleaseCommandDone() {
		t.Errorf("an empty step cleared release_command_done")
	}

	want := s.fsm.snapshotMsg()
	for _, st := range []*herdv1.RolloutStep{
		{App: "st-shop", Rollout: r.GetId() + 1, ReleaseCommandDone: true},
		{App: "st-shop", Rollout: 0, ReleaseCommandDone: true},
		{App: "nope", Rollout: r.GetId(), ReleaseCommandDone: true},
		{App: "", Rollout: r.GetId(), ReleaseCommandDone: true},
	} {
		if err := s.Step(st); !errors.Is(err, ErrConflict) {
			t.Errorf("Step(%v) = %v, want ErrConflict", st, err)
		}
	}
	if got := s.fsm.snapshotMsg(); !proto.Equal(got, want) {
		t.Errorf("refused steps changed the state to\n%v\nwant\n%v", got, want)
	}

	// Once the rollout is over (or superseded) its steps are refused.
	next := begin(t, s, spec("st-shop", 2), "sha256:ccc", true)
	if next.GetReleaseCommandDone() {
		t.Errorf("the superseding rollout inherited release_command_done")
	}
	if err := s.Step(&herdv1.RolloutStep{App: "st-shop", Rollout: r.GetId(), ReleaseCommandDone: true}); !errors.Is(err, ErrConflict) {
		t.Errorf("Step of a superseded rollout = %v, want ErrConflict", err)
	}
	if ro := rolloutsOf(s, "st-shop"); len(ro) != 1 || ro[0].GetReleaseCommandDone() {
		t.Errorf("a superseded rollout's step changed the one in progress: %v", ro)
	}
	finish(t, s, next, true, okNodes("st-n1")...)
	want = s.fsm.snapshotMsg()
	if err := s.Step(&herdv1.RolloutStep{App: "st-shop", Rollout: next.GetId(), ReleaseCommandDone: true}); !errors.Is(err, ErrConflict) {
		t.Errorf("Step of a finished rollout = %v, want ErrConflict", err)
	}
	if got := s.fsm.snapshotMsg(); !proto.Equal(got, want) {
		t.Errorf("a finished rollout's step changed the state")
	}
}

func testDestroy(t *testing.T, s *Store) {
	if err := s.Destroy("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Destroy(nope) = %v, want ErrNotFound", err)
	}

	deploy(t, s, spec("ds-shop", 2), "sha256:aaa", "v1", "ds-n1", "ds-n2")
	v2 := deploy(t, s, spec("ds-shop", 2), "sha256:bbb", "v2", "ds-n1", "ds-n2")
	blog := deploy(t, s, spec("ds-blog", 1), "sha256:ccc", "v1", "ds-n1", "ds-n3")
	if err := s.SetDrain(&herdv1.SetDrain{Node: "ds-n2", Drained: true}); err != nil {
		t.Fatal(err)
	}

	// Refused during a rollout: one of the current release, and an app's
	// first.
	r := begin(t, s, spec("ds-shop", 2), "sha256:bbb", false)
	wiki := begin(t, s, spec("ds-wiki", 1), "sha256:ddd", false)
	want := s.fsm.snapshotMsg()
	for app, ro := range map[string]*herdv1.Rollout{"ds-shop": r, "ds-wiki": wiki} {
		err := s.Destroy(app)
		var busy *BusyError
		if !errors.As(err, &busy) || !errors.Is(err, ErrConflict) {
			t.Fatalf("Destroy(%s) during a rollout = %v, want a *BusyError (ErrConflict)", app, err)
		}
		if !proto.Equal(busy.Rollout, ro) {
			t.Errorf("Destroy(%s): BusyError.Rollout = %v, want %v", app, busy.Rollout, ro)
		}
	}
	if got := s.fsm.snapshotMsg(); !proto.Equal(got, want) {
		t.Fatalf("a refused Destroy changed the state")
	}
	finish(t, s, r, true, okNodes("ds-n1", "ds-n2")...)
	before := s.History("ds-shop")

	if err := s.Destroy("ds-shop"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("ds-shop"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a destroyed app = %v, want ErrNotFound", err)
	}
	if l := listOf(s, "ds-blog", "ds-shop", "ds-wiki"); len(l) != 1 || !proto.Equal(l[0], blog) {
		t.Errorf("List after Destroy = %v, want blog only", ids(l))
	}
	if !s.Destroyed("ds-shop") || s.Destroyed("ds-blog") || s.Destroyed("ds-wiki") || s.Destroyed("nope") {
		t.Errorf("Destroyed: shop=%v blog=%v wiki=%v nope=%v, want shop only",
			s.Destroyed("ds-shop"), s.Destroyed("ds-blog"), s.Destroyed("ds-wiki"), s.Destroyed("nope"))
	}
	for _, n := range []string{"ds-n1", "ds-n2", "ds-n3"} {
		if got := s.Assigned(n, "ds-shop"); got != nil {
			t.Errorf("%s is still assigned shop %s", n, got.GetId())
		}
		if _, ok := s.Node(n).GetAssignments()["ds-shop"]; ok {
			t.Errorf("%s's record still names shop: %v", n, s.Node(n))
		}
	}
	// Other apps and the drain stay.
	for _, n := range []string{"ds-n1", "ds-n3"} {
		if got := ids(s.Assignment(n)); !slices.Equal(got, []string{"ds-blog/v1"}) {
			t.Errorf("Assignment(%s) after destroying shop = %v, want blog/v1", n, got)
		}
	}
	if !s.Node("ds-n2").GetDrained() {
		t.Errorf("Destroy undrained n2")
	}
	h := s.History("ds-shop")
	if len(h) != len(before)+1 {
		t.Fatalf("History after Destroy has %d entries, want %d", len(h), len(before)+1)
	}
	for i := range before {
		if !proto.Equal(h[i], before[i]) {
			t.Errorf("History[%d] after Destroy = %v, want %v", i, h[i], before[i])
		}
	}
	if e := h[len(h)-1]; e.GetNote() != "destroyed" || !e.GetOk() || e.GetError() != "" || e.GetRelease().GetId() != "v2" || e.GetFinished() == nil {
		t.Errorf("Destroy's history entry = %v, want v2 destroyed", e)
	}
	// Its releases can still be found (for the history, for a rollback).
	if got := s.Release("ds-shop", "v2"); !proto.Equal(got, v2) {
		t.Errorf("Release(shop, v2) after Destroy = %v", got)
	}

	// Destroying it again: there is nothing.
	want = s.fsm.snapshotMsg()
	if err := s.Destroy("ds-shop"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Destroy = %v, want ErrNotFound", err)
	}
	if got := s.fsm.snapshotMsg(); !proto.Equal(got, want) {
		t.Errorf("a second Destroy changed the state")
	}

	// Deploying it again continues the numbering, even with v2's artifact,
	// and brings it back.
	r = begin(t, s, spec("ds-shop", 2), "sha256:bbb", false)
	if !r.GetChanged() || r.GetRelease().GetId() != "v3" || len(r.GetPrevious()) != 0 {
		t.Fatalf("Begin after Destroy = %s changed=%v previous=%v, want v3 changed, no previous",
			r.GetRelease().GetId(), r.GetChanged(), r.GetPrevious())
	}
	if !s.Destroyed("ds-shop") {
		t.Errorf("Begin alone brought shop back")
	}
	finish(t, s, r, true, okNodes("ds-n1")...)
	if s.Destroyed("ds-shop") {
		t.Errorf("shop is still destroyed after a deploy")
	}
	if cur, err := s.Get("ds-shop"); err != nil || cur.GetId() != "v3" {
		t.Errorf("Get after redeploy = %v, %v; want v3", cur, err)
	}
	if got := ids(listOf(s, "ds-blog", "ds-shop", "ds-wiki")); !slices.Equal(got, []string{"ds-blog/v1", "ds-shop/v3"}) {
		t.Errorf("List after redeploy = %v", got)
	}
	if got := assigned(s, "ds-n1", "ds-shop"); got != "v3" {
		t.Errorf("n1 is assigned shop %q after the redeploy, want v3", got)
	}
	if got := assigned(s, "ds-n2", "ds-shop"); got != "" {
		t.Errorf("n2 is assigned shop %q after the redeploy (it did not run it)", got)
	}
	if h := lastHistory(t, s, "ds-shop"); !h.GetOk() || h.GetNote() != "" || h.GetRelease().GetId() != "v3" {
		t.Errorf("redeploy's history entry = %v", h)
	}

	// A failed deploy of a destroyed app does not bring it back.
	if err := s.Destroy("ds-blog"); err != nil {
		t.Fatal(err)
	}
	r = begin(t, s, spec("ds-blog", 1), "sha256:eee", false)
	finish(t, s, r, false)
	if !s.Destroyed("ds-blog") {
		t.Errorf("a failed deploy brought blog back")
	}
	if _, err := s.Get("ds-blog"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(blog) after a failed redeploy = %v, want ErrNotFound", err)
	}
}

func TestDrain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openMember(t, dir, "f1", true, nil).Store
	waitLeader(t, s)

	if n := s.Node("n1"); n != nil {
		t.Errorf("Node of a node the state never heard of = %v, want nil", n)
	}
	if d := s.Drained(); len(d) != 0 {
		t.Errorf("Drained with no nodes = %v", d)
	}
	deploy(t, s, spec("shop", 2), "sha256:aaa", "v1", "n1", "n2")

	drain := func(node string, drained, keep bool) {
		t.Helper()
		if err := s.SetDrain(&herdv1.SetDrain{Node: node, Drained: drained, KeepWorkers: keep}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s *Store, when, node string, drained, keep bool) {
		t.Helper()
		n := s.Node(node)
		if n == nil || n.GetName() != node || n.GetDrained() != drained || n.GetKeepWorkers() != keep {
			t.Errorf("%s: Node(%s) = %v, want drained=%v keep_workers=%v", when, node, n, drained, keep)
		}
	}

	drain("n1", true, true)
	check(s, "drained keeping workers", "n1", true, true)
	if got := assigned(s, "n1", "shop"); got != "v1" {
		t.Errorf("draining changed n1's assignment to %q", got)
	}
	drain("n2", true, false)
	check(s, "drained", "n2", true, false)
	drain("n3", true, true) // a node with no assignment
	check(s, "drained, new node", "n3", true, true)
	drain("n4", false, true) // undrained: keep_workers means nothing
	check(s, "undrained with keep_workers", "n4", false, false)
	if d := s.Drained(); !maps.Equal(d, map[string]bool{"n1": true, "n2": true, "n3": true}) {
		t.Errorf("Drained = %v, want n1 n2 n3", d)
	}

	// The state goes into a snapshot; what follows stays in the log.
	if err := s.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	drain("n1", false, false)
	check(s, "undrained", "n1", false, false)
	drain("n3", false, true)
	check(s, "undrained with keep_workers", "n3", false, false)
	drain("n5", true, false)
	if d := s.Drained(); !maps.Equal(d, map[string]bool{"n2": true, "n5": true}) {
		t.Errorf("Drained = %v, want n2 n5", d)
	}
	if got := assigned(s, "n1", "shop"); got != "v1" {
		t.Errorf("undraining changed n1's assignment to %q", got)
	}
	if n := s.Node("n9"); n != nil {
		t.Errorf("Node(n9) = %v, want nil", n)
	}

	// Copies.
	s.Node("n2").Drained = false
	s.Node("n1").Assignments["shop"] = "mutated"
	s.Drained()["n1"] = true
	check(s, "after mutating copies", "n2", true, false)
	if got := assigned(s, "n1", "shop"); got != "v1" || s.Drained()["n1"] {
		t.Errorf("the store changed through a returned copy")
	}

	want := s.fsm.snapshotMsg()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r := openMember(t, dir, "f1", true, nil).Store
	waitLeader(t, r)
	if got := r.fsm.snapshotMsg(); !proto.Equal(got, want) {
		t.Errorf("after reopening the state is\n%v\nwant\n%v", got, want)
	}
	check(r, "reopened", "n1", false, false)
	check(r, "reopened", "n2", true, false)
	check(r, "reopened", "n3", false, false)
	check(r, "reopened", "n5", true, false)
	if d := r.Drained(); !maps.Equal(d, map[string]bool{"n2": true, "n5": true}) {
		t.Errorf("Drained after reopening = %v, want n2 n5", d)
	}
	// Undraining goes on working after the reopen.
	if err := r.SetDrain(&herdv1.SetDrain{Node: "n2"}); err != nil {
		t.Fatal(err)
	}
	check(r, "undrained after reopening", "n2", false, false)
}

// The new fields (drain, destroyed, rollout plan, previous, release command,
// restart, notes) survive a snapshot and restore.
func TestFSMSnapshotRestoreOps(t *testing.T) {
	t.Parallel()
	l := newFSMLog()
	l.fill(t)
	apply := func(op *herdv1.StateCommand) any {
		t.Helper()
		res := l.apply(t, op)
		if err, ok := res.(error); ok {
			t.Fatal(err)
		}
		return res
	}
	drain := func(node string, drained, keep bool) {
		t.Helper()
		apply(&herdv1.StateCommand{Op: &herdv1.StateCommand_SetDrain{SetDrain: &herdv1.SetDrain{Node: node, Drained: drained, KeepWorkers: keep}}})
	}
	drain("n1", true, true)
	drain("n2", true, false)
	drain("n3", true, true)
	drain("n3", false, false)
	drain("n7", true, true) // a node with no assignments
	// Restart shop (its current release is v1), destroy blog.
	br := apply(&herdv1.StateCommand{Op: &herdv1.StateCommand_BeginRollout{BeginRollout: &herdv1.BeginRollout{
		Spec: spec("shop", 2), Digest: "sha256:a", Front: "f1", Restart: true, Note: "restart",
	}}}).(beginResult)
	l.finish(t, br.Rollout, true, "n1")
	apply(&herdv1.StateCommand{Op: &herdv1.StateCommand_DestroyApp{DestroyApp: &herdv1.DestroyApp{App: "blog"}}})
	// A rollout with a plan, previous assignments and its release command
	// done stays in progress.
	br = apply(&herdv1.StateCommand{Op: &herdv1.StateCommand_BeginRollout{BeginRollout: &herdv1.BeginRollout{
		Spec: spec("shop", 2), Digest: "sha256:z", Front: "f1", Note: "rollback to v1",
		Plan: &herdv1.RolloutPlan{Batch: "1", AutoRevert: true, Timeout: durationpb.New(time.Minute)},
	}}}).(beginResult)
	apply(&herdv1.StateCommand{Op: &herdv1.StateCommand_RolloutStep{RolloutStep: &herdv1.RolloutStep{
		App: "shop", Rollout: br.Rollout.GetId(), ReleaseCommandDone: true,
	}}})

	want := l.f.snapshotMsg()
	// Check the state holds what the test means it to.
	nodes := map[string]*herdv1.NodeRecord{}
	for _, n := range want.GetNodes() {
		nodes[n.GetName()] = n
	}
	for name, w := range map[string][2]bool{"n1": {true, true}, "n2": {true, false}, "n3": {false, false}, "n7": {true, true}} {
		if n := nodes[name]; n.GetDrained() != w[0] || n.GetKeepWorkers() != w[1] {
			t.Errorf("node %s = %v, want drained=%v keep_workers=%v", name, n, w[0], w[1])
		}
	}
	ro := l.f.apps["shop"].GetRollout()
	if !ro.GetReleaseCommandDone() || ro.GetPlan().GetBatch() != "1" || !maps.Equal(ro.GetPrevious(), map[string]string{"n1": "v1", "n2": "v1", "n3": "v1"}) {
		t.Errorf("shop's rollout = %v", ro)
	}
	if !l.f.apps["blog"].GetDestroyed() || l.f.apps["shop"].GetCurrent().GetRestart() != 1 {
		t.Errorf("blog destroyed=%v, shop restart=%d", l.f.apps["blog"].GetDestroyed(), l.f.apps["shop"].GetCurrent().GetRestart())
	}

	r := newFSM()
	if err := r.Restore(snapshotOf(t, l.f).Reader()); err != nil {
		t.Fatal(err)
	}
	if got := r.snapshotMsg(); !proto.Equal(got, want) {
		t.Fatalf("restored state is\n%v\nwant\n%v", got, want)
	}
	if !r.nodes["n1"].GetDrained() || !r.nodes["n1"].GetKeepWorkers() || r.nodes["n3"].GetDrained() {
		t.Errorf("restored nodes: n1 %v, n3 %v", r.nodes["n1"], r.nodes["n3"])
	}
	if !bytes.Equal(snapshotBytes(t, r), snapshotBytes(t, l.f)) {
		t.Errorf("the restored fsm snapshots differently")
	}
}

func testRelease(t *testing.T, s *Store) {
	v1 := deploy(t, s, spec("rl-shop", 2), "sha256:aaa", "v1", "rl-n1")
	v2 := deploy(t, s, spec("rl-shop", 3), "sha256:bbb", "v2", "rl-n1")
	r := begin(t, s, spec("rl-shop", 3), "sha256:ccc", false)
	v3 := r.GetRelease()
	blog := deploy(t, s, spec("rl-blog", 1), "sha256:aaa", "v1")

	for _, tt := range []struct {
		app, id string
		want    *herdv1.Release
	}{
		{"rl-shop", "v1", v1}, // history
		{"rl-shop", "v2", v2}, // current
		{"rl-shop", "v3", v3}, // in progress
		{"rl-blog", "v1", blog},
		{"rl-shop", "v4", nil},
		{"rl-shop", "", nil},
		{"rl-blog", "v2", nil},
		{"nope", "v1", nil},
	} {
		got := s.Release(tt.app, tt.id)
		if tt.want == nil {
			if got != nil {
				t.Errorf("Release(%s, %q) = %v, want nil", tt.app, tt.id, got)
			}
			continue
		}
		if !proto.Equal(got, tt.want) {
			t.Errorf("Release(%s, %q) = %v, want %v", tt.app, tt.id, got, tt.want)
		}
	}

	// Copies.
	for _, id := range []string{"v1", "v2", "v3"} {
		got := s.Release("rl-shop", id)
		got.Id = "mutated"
		got.Spec.Workers = 99
		got.Spec.Env["A"] = "mutated"
	}
	for id, want := range map[string]*herdv1.Release{"v1": v1, "v2": v2, "v3": v3} {
		if got := s.Release("rl-shop", id); !proto.Equal(got, want) {
			t.Errorf("Release(shop, %s) changed through a returned copy: %v", id, got)
		}
	}
	if cur, _ := s.Get("rl-shop"); !proto.Equal(cur, v2) {
		t.Errorf("current changed through a returned copy: %v", cur)
	}
	if ro := rolloutsOf(s, "rl-blog", "rl-shop"); len(ro) != 1 || !proto.Equal(ro[0], r) {
		t.Errorf("rollout changed through a returned copy: %v", ro)
	}

	// A failed release stays findable from the history.
	finish(t, s, r, false)
	if got := s.Release("rl-shop", "v3"); !proto.Equal(got, v3) {
		t.Errorf("Release(shop, v3) after it failed = %v", got)
	}
}

func testHistoryNote(t *testing.T, s *Store) {
	v1 := deploy(t, s, spec("nt-shop", 2), "sha256:aaa", "v1", "nt-n1")
	deploy(t, s, spec("nt-shop", 2), "sha256:bbb", "v2", "nt-n1")
	if h := lastHistory(t, s, "nt-shop"); h.GetNote() != "" {
		t.Errorf("a plain deploy's note = %q, want none", h.GetNote())
	}

	rollback := func(ok bool, wantID string) {
		t.Helper()
		r := beginWith(t, s, &herdv1.BeginRollout{Spec: v1.GetSpec(), Digest: v1.GetDigest(), Note: "rollback to v1"})
		if r.GetNote() != "rollback to v1" || r.GetRelease().GetId() != wantID || !r.GetChanged() {
			t.Fatalf("rollback rollout = %s note=%q changed=%v, want %s changed with the note", r.GetRelease().GetId(), r.GetNote(), r.GetChanged(), wantID)
		}
		if ro := rolloutsOf(s, "nt-shop"); len(ro) != 1 || ro[0].GetNote() != "rollback to v1" {
			t.Errorf("Rollouts = %v, want the rollback with its note", ro)
		}
		finish(t, s, r, ok, okNodes("nt-n1")...)
		h := lastHistory(t, s, "nt-shop")
		if h.GetNote() != "rollback to v1" || h.GetOk() != ok || h.GetRelease().GetId() != wantID {
			t.Errorf("rollback (ok=%v) history entry = %v, want %s ok=%v note \"rollback to v1\"", ok, h, wantID, ok)
		}
		if !ok && h.GetError() != "health check failed" {
			t.Errorf("failed rollback's error = %q", h.GetError())
		}
	}
	rollback(false, "v3")
	if cur, _ := s.Get("nt-shop"); cur.GetId() != "v2" {
		t.Errorf("current after a failed rollback = %s, want v2", cur.GetId())
	}
	rollback(true, "v4")
	if cur, _ := s.Get("nt-shop"); cur.GetId() != "v4" || cur.GetDigest() != v1.GetDigest() {
		t.Errorf("current after the rollback = %v, want v4 with v1's artifact", cur)
	}
	// A rollout that changed nothing leaves no entry, note or not.
	n := len(s.History("nt-shop"))
	r := beginWith(t, s, &herdv1.BeginRollout{Spec: v1.GetSpec(), Digest: v1.GetDigest(), Note: "rollback to v4"})
	finish(t, s, r, true)
	if h := s.History("nt-shop"); len(h) != n {
		t.Errorf("an unchanged rollout with a note went into the history: %v", h[len(h)-1])
	}
	// Its note is the rollout's own: the next plain deploy has none.
	deploy(t, s, spec("nt-shop", 2), "sha256:ccc", "v5")
	if h := lastHistory(t, s, "nt-shop"); h.GetNote() != "" {
		t.Errorf("plain deploy after a rollback has note %q", h.GetNote())
	}
}
