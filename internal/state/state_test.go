package state

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// Every test opens its own Raft member(s) on loopback; an election takes
// a second or two with Raft's default timeouts, so the tests run in
// parallel.

var quiet = slog.New(slog.DiscardHandler)

// member is one front's store in a test.
type member struct {
	*Store
	addr string
}

// openMember starts a Raft member on a new loopback listener, closed when
// the test ends.
func openMember(t *testing.T, dir, id string, bootstrap bool, onChange func()) member {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(Config{Dir: dir, ID: id, Stream: TCPStream(lis, ""), Bootstrap: bootstrap, Logger: quiet, OnChange: onChange})
	if err != nil {
		lis.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return member{Store: s, addr: lis.Addr().String()}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitLeader(t *testing.T, s *Store) {
	t.Helper()
	waitFor(t, 5*time.Second, s.ID()+" to become the leader", s.IsLeader)
	// A new leader applies the log it holds once its first entry commits.
	if err := s.Barrier(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// openLeader opens a single bootstrapped front and waits until it leads.
func openLeader(t *testing.T) *Store {
	t.Helper()
	t.Parallel()
	m := openMember(t, t.TempDir(), "f1", true, nil)
	waitLeader(t, m.Store)
	return m.Store
}

func spec(name string, workers uint32) *herdv1.AppSpec {
	return &herdv1.AppSpec{Name: name, Command: "gunicorn app:app", Workers: workers, Hosts: []string{name + ".test"}, Env: map[string]string{"A": "1"}}
}

func begin(t *testing.T, s *Store, sp *herdv1.AppSpec, digest string, force bool) *herdv1.Rollout {
	t.Helper()
	r, err := s.Begin(sp, digest, s.ID(), force)
	if err != nil {
		t.Fatalf("Begin(%s, %s): %v", sp.GetName(), digest, err)
	}
	return r
}

func finish(t *testing.T, s *Store, r *herdv1.Rollout, ok bool, nodes ...*herdv1.NodeResult) {
	t.Helper()
	fin := &herdv1.FinishRollout{App: r.GetRelease().GetApp(), Rollout: r.GetId(), Ok: ok, Nodes: nodes}
	if !ok {
		fin.Error = "health check failed"
	}
	if err := s.Finish(fin); err != nil {
		t.Fatalf("Finish(%s %s): %v", r.GetRelease().GetApp(), r.GetRelease().GetId(), err)
	}
}

func okNodes(names ...string) []*herdv1.NodeResult {
	var out []*herdv1.NodeResult
	for _, n := range names {
		out = append(out, &herdv1.NodeResult{Node: n, Ok: true})
	}
	return out
}

// deploy begins and finishes a rollout, failing the test unless its
// release is new and has the wanted id.
func deploy(t *testing.T, s *Store, sp *herdv1.AppSpec, digest, wantID string, nodes ...string) *herdv1.Release {
	t.Helper()
	r := begin(t, s, sp, digest, false)
	if !r.GetChanged() || r.GetRelease().GetId() != wantID {
		t.Fatalf("Begin(%s, %s) = %s changed=%v, want %s changed=true", sp.GetName(), digest, r.GetRelease().GetId(), r.GetChanged(), wantID)
	}
	finish(t, s, r, true, okNodes(nodes...)...)
	return r.GetRelease()
}

func ids(rels []*herdv1.Release) []string {
	var out []string
	for _, r := range rels {
		out = append(out, r.GetApp()+"/"+r.GetId())
	}
	return out
}

func assigned(s *Store, node, app string) string {
	return s.Assigned(node, app).GetId()
}

func TestBeginFinishNewApp(t *testing.T) {
	s := openLeader(t)
	sp := spec("shop", 2)
	r := begin(t, s, sp, "sha256:aaa", false)
	rel := r.GetRelease()
	if rel.GetId() != "v1" || rel.GetApp() != "shop" || rel.GetDigest() != "sha256:aaa" || !proto.Equal(rel.GetSpec(), sp) || rel.GetCreated() == nil {
		t.Errorf("release = %v", rel)
	}
	if !r.GetChanged() || r.GetId() == 0 || r.GetFront() != "f1" || r.GetStarted() == nil {
		t.Errorf("rollout = %v", r)
	}
	// Nothing is current until Finish.
	if _, err := s.Get("shop"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get before Finish: %v, want ErrNotFound", err)
	}
	if l := s.List(); len(l) != 0 {
		t.Errorf("List before Finish = %v, want empty", ids(l))
	}
	if ro := s.Rollouts(); len(ro) != 1 || !proto.Equal(ro[0], r) {
		t.Errorf("Rollouts = %v, want [%v]", ro, r)
	}
	// The release in progress can be assigned already.
	if got := assigned(s, "n9", "shop"); got != "" {
		t.Errorf("Assigned before any assignment = %q", got)
	}

	finish(t, s, r, true, okNodes("n1", "n2")...)
	got, err := s.Get("shop")
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, rel) {
		t.Errorf("Get after Finish = %v, want %v", got, rel)
	}
	if l := s.List(); len(l) != 1 || !proto.Equal(l[0], rel) {
		t.Errorf("List after Finish = %v", ids(l))
	}
	if ro := s.Rollouts(); len(ro) != 0 {
		t.Errorf("Rollouts after Finish = %v, want none", ro)
	}
	h := s.History("shop")
	if len(h) != 1 || !h[0].GetOk() || h[0].GetError() != "" || !proto.Equal(h[0].GetRelease(), rel) || h[0].GetFinished() == nil {
		t.Errorf("History = %v", h)
	}
	for _, n := range []string{"n1", "n2"} {
		if got := s.Assigned(n, "shop"); !proto.Equal(got, rel) {
			t.Errorf("Assigned(%s) = %v, want v1", n, got)
		}
	}
	if got := s.Assigned("n3", "shop"); got != nil {
		t.Errorf("Assigned(n3) = %v, want nil (it ran nothing)", got)
	}
	// A second Finish of the same rollout is a conflict.
	err = s.Finish(&herdv1.FinishRollout{App: "shop", Rollout: r.GetId(), Ok: true})
	if !errors.Is(err, ErrConflict) {
		t.Errorf("Finish of a finished rollout: %v, want ErrConflict", err)
	}
	// So is finishing a rollout of an app the state does not know.
	err = s.Finish(&herdv1.FinishRollout{App: "nope", Rollout: r.GetId(), Ok: true})
	if !errors.Is(err, ErrConflict) {
		t.Errorf("Finish of an unknown app: %v, want ErrConflict", err)
	}
}

func TestBeginUnchangedAndChanged(t *testing.T) {
	s := openLeader(t)
	v1 := deploy(t, s, spec("shop", 2), "sha256:aaa", "v1", "n1")

	// The same spec (an equal copy, not the same pointer) and digest.
	r := begin(t, s, spec("shop", 2), "sha256:aaa", false)
	if r.GetChanged() || !proto.Equal(r.GetRelease(), v1) {
		t.Fatalf("redeploy of the same release: %s changed=%v, want v1 changed=false", r.GetRelease().GetId(), r.GetChanged())
	}
	finish(t, s, r, true, okNodes("n1")...)
	if h := s.History("shop"); len(h) != 1 {
		t.Errorf("a rollout that changed nothing went into the history: %d entries", len(h))
	}

	edit := func(f func(*herdv1.AppSpec)) *herdv1.AppSpec {
		s := spec("shop", 2)
		f(s)
		return s
	}
	tests := []struct {
		name   string
		spec   *herdv1.AppSpec
		digest string
		wantID string
	}{
		{"new digest", spec("shop", 2), "sha256:bbb", "v2"},
		{"new command", edit(func(s *herdv1.AppSpec) { s.Command = "gunicorn other:app" }), "sha256:bbb", "v3"},
		{"new env", edit(func(s *herdv1.AppSpec) { s.Command = "gunicorn other:app"; s.Env["A"] = "2" }), "sha256:bbb", "v4"},
		{"new digest and workers", edit(func(s *herdv1.AppSpec) { s.Workers = 5 }), "sha256:ccc", "v5"},
		{"new hosts and workers", edit(func(s *herdv1.AppSpec) { s.Workers = 7; s.Hosts = []string{"other.test"} }), "sha256:ccc", "v6"},
	}
	for _, tt := range tests {
		rel := deploy(t, s, tt.spec, tt.digest, tt.wantID, "n1")
		cur, err := s.Get("shop")
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(cur, rel) {
			t.Fatalf("%s: current is %s, want %s", tt.name, cur.GetId(), tt.wantID)
		}
		if got := assigned(s, "n1", "shop"); got != tt.wantID {
			t.Fatalf("%s: n1 is assigned %s, want %s", tt.name, got, tt.wantID)
		}
	}
	if h := s.History("shop"); len(h) != 1+len(tests) {
		t.Errorf("History has %d entries, want %d", len(h), 1+len(tests))
	}
}

// Changing only the worker count scales the current release in place: the
// same id and digest, the new spec, and no id spent.
func TestScaleKeepsRelease(t *testing.T) {
	s := openLeader(t)
	v1 := deploy(t, s, spec("shop", 2), "sha256:aaa", "v1", "n1")

	r := begin(t, s, spec("shop", 5), "sha256:aaa", false)
	rel := r.GetRelease()
	if !r.GetChanged() || rel.GetId() != "v1" || rel.GetDigest() != "sha256:aaa" || rel.GetSpec().GetWorkers() != 5 {
		t.Fatalf("scaling to 5 workers: %v changed=%v, want v1 with 5 workers, changed", rel, r.GetChanged())
	}
	if !proto.Equal(rel.GetCreated(), v1.GetCreated()) {
		t.Errorf("scaling made a new release: created %v, was %v", rel.GetCreated(), v1.GetCreated())
	}
	// Nothing changes until Finish.
	if cur, _ := s.Get("shop"); cur.GetSpec().GetWorkers() != 2 {
		t.Fatalf("Begin changed the current release to %d workers", cur.GetSpec().GetWorkers())
	}
	finish(t, s, r, true, okNodes("n1")...)
	cur, _ := s.Get("shop")
	if cur.GetId() != "v1" || cur.GetSpec().GetWorkers() != 5 {
		t.Fatalf("after Finish: %s with %d workers, want v1 with 5", cur.GetId(), cur.GetSpec().GetWorkers())
	}
	if got := s.Assigned("n1", "shop"); got.GetId() != "v1" || got.GetSpec().GetWorkers() != 5 {
		t.Errorf("n1 is assigned %v, want v1 with 5 workers", got)
	}
	if r := begin(t, s, spec("shop", 5), "sha256:aaa", false); r.GetChanged() || r.GetRelease().GetId() != "v1" {
		t.Fatalf("deploying the scaled release again: %s changed=%v, want v1 unchanged", r.GetRelease().GetId(), r.GetChanged())
	} else {
		finish(t, s, r, true)
	}
	// Scaling spent no id.
	deploy(t, s, spec("shop", 5), "sha256:bbb", "v2")
}

// A release id is spent by Begin even if the rollout fails: ids are never
// reused. A failed rollout leaves the current release, goes into the
// history and assigns its release only to the nodes that run it.
func TestFailedRolloutSpendsID(t *testing.T) {
	s := openLeader(t)
	v1 := deploy(t, s, spec("shop", 2), "sha256:aaa", "v1", "n1", "n2", "n3")

	r := begin(t, s, spec("shop", 2), "sha256:bbb", false)
	if r.GetRelease().GetId() != "v2" {
		t.Fatalf("Begin = %s, want v2", r.GetRelease().GetId())
	}
	finish(t, s, r, false,
		&herdv1.NodeResult{Node: "n1", Ok: true},
		&herdv1.NodeResult{Node: "n2", Ok: false, Error: "exit 1"},
		&herdv1.NodeResult{Node: "n4", Ok: true}, // a node new to the app
	)
	// The rollout failed: v1 stays current.
	if cur, err := s.Get("shop"); err != nil || !proto.Equal(cur, v1) {
		t.Fatalf("current after a failed rollout = %v, %v; want v1", cur, err)
	}
	h := s.History("shop")
	if len(h) != 2 || h[1].GetOk() || h[1].GetError() != "health check failed" || !proto.Equal(h[1].GetRelease(), r.GetRelease()) {
		t.Fatalf("History after a failed rollout = %v", h)
	}
	for node, want := range map[string]string{"n1": "v2", "n2": "v1", "n3": "v1", "n4": "v2"} {
		if got := assigned(s, node, "shop"); got != want {
			t.Errorf("after the failed rollout %s is assigned %q, want %q", node, got, want)
		}
	}
	if got := s.Assigned("n1", "shop"); !proto.Equal(got, r.GetRelease()) {
		t.Errorf("Assigned(n1) = %v, want the failed release from the history", got)
	}
	if len(s.Rollouts()) != 0 {
		t.Errorf("Rollouts after a failed rollout = %v", s.Rollouts())
	}

	// Deploying v1's release again changes nothing.
	r = begin(t, s, spec("shop", 2), "sha256:aaa", false)
	if r.GetChanged() || r.GetRelease().GetId() != "v1" {
		t.Fatalf("Begin of the current release = %s changed=%v; want v1 unchanged", r.GetRelease().GetId(), r.GetChanged())
	}
	finish(t, s, r, true, okNodes("n1", "n2")...)
	for _, node := range []string{"n1", "n2", "n3", "n4"} {
		if got := assigned(s, node, "shop"); got != "v1" {
			t.Errorf("after rolling v1 back out %s is assigned %q, want v1", node, got)
		}
	}
	// The same artifact as the failed v2 still gets a new id.
	deploy(t, s, spec("shop", 2), "sha256:bbb", "v3")
}

func TestBusy(t *testing.T) {
	s := openLeader(t)
	first := begin(t, s, spec("shop", 2), "sha256:aaa", false)

	_, err := s.Begin(spec("shop", 2), "sha256:bbb", "f2", false)
	var busy *BusyError
	if !errors.As(err, &busy) {
		t.Fatalf("Begin while a rollout is in progress: %v, want a *BusyError", err)
	}
	if !errors.Is(err, ErrConflict) {
		t.Errorf("%v is not ErrConflict", err)
	}
	if !proto.Equal(busy.Rollout, first) {
		t.Errorf("BusyError.Rollout = %v, want %v", busy.Rollout, first)
	}
	for _, w := range []string{"--force", "shop", "v1", "f1"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}

	// Another app is not blocked.
	blog := begin(t, s, spec("blog", 1), "sha256:ccc", false)
	if blog.GetRelease().GetId() != "v1" {
		t.Errorf("blog's release = %s, want v1", blog.GetRelease().GetId())
	}

	// Force supersedes the rollout in progress.
	second, err := s.Begin(spec("shop", 2), "sha256:bbb", "f2", true)
	if err != nil {
		t.Fatal(err)
	}
	if second.GetId() == first.GetId() || second.GetRelease().GetId() != "v2" || second.GetFront() != "f2" {
		t.Errorf("forced rollout = %v, want a new rollout of v2 by f2", second)
	}
	h := s.History("shop")
	if len(h) != 1 || h[0].GetError() != "superseded" || h[0].GetOk() || !proto.Equal(h[0].GetRelease(), first.GetRelease()) {
		t.Errorf("History after superseding = %v", h)
	}
	rollouts := s.Rollouts()
	slices.SortFunc(rollouts, func(a, b *herdv1.Rollout) int {
		return strings.Compare(a.GetRelease().GetApp(), b.GetRelease().GetApp())
	})
	if len(rollouts) != 2 || !proto.Equal(rollouts[0], blog) || !proto.Equal(rollouts[1], second) {
		t.Errorf("Rollouts = %v, want blog's and the forced one", rollouts)
	}

	// The superseded rollout's end changes nothing.
	err = s.Finish(&herdv1.FinishRollout{App: "shop", Rollout: first.GetId(), Ok: true, Nodes: okNodes("n1")})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("Finish of the superseded rollout: %v, want ErrConflict", err)
	}
	if _, err := s.Get("shop"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the superseded rollout's Finish made a current release: %v", err)
	}
	if got := s.Assigned("n1", "shop"); got != nil {
		t.Errorf("the superseded rollout's Finish assigned %v", got)
	}
	if len(s.History("shop")) != 1 || len(s.Rollouts()) != 2 {
		t.Errorf("the superseded rollout's Finish changed the history or the rollouts")
	}

	// The forced one finishes.
	finish(t, s, second, true, okNodes("n1")...)
	if cur, err := s.Get("shop"); err != nil || !proto.Equal(cur, second.GetRelease()) {
		t.Errorf("Get after the forced rollout = %v, %v", cur, err)
	}
	// Forcing with nothing in progress is an ordinary Begin.
	r := begin(t, s, spec("shop", 2), "sha256:bbb", true)
	if r.GetChanged() || r.GetRelease().GetId() != "v2" {
		t.Errorf("forced Begin of the current release = %s changed=%v", r.GetRelease().GetId(), r.GetChanged())
	}
	if h := s.History("shop"); len(h) != 2 {
		t.Errorf("History = %v, want the superseded and the finished rollouts", h)
	}
}

// A successful rollout assigns its release to every node of the app, also
// those that were away and did not run it.
func TestFinishReassignsAwayNodes(t *testing.T) {
	s := openLeader(t)
	deploy(t, s, spec("shop", 2), "sha256:aaa", "v1", "n1", "n2", "n3")
	deploy(t, s, spec("blog", 1), "sha256:bbb", "v1", "n4")

	// n3 is away.
	r := begin(t, s, spec("shop", 2), "sha256:ccc", false)
	finish(t, s, r, true, okNodes("n1", "n2")...)
	for _, n := range []string{"n1", "n2", "n3"} {
		if got := assigned(s, n, "shop"); got != "v2" {
			t.Errorf("%s is assigned shop %q, want v2", n, got)
		}
	}
	// A node that never ran the app is not given it.
	if got := s.Assigned("n4", "shop"); got != nil {
		t.Errorf("n4 is assigned shop %v, want nothing", got)
	}
	if got := ids(s.Assignment("n4")); !slices.Equal(got, []string{"blog/v1"}) {
		t.Errorf("Assignment(n4) = %v", got)
	}
}

func TestAssign(t *testing.T) {
	s := openLeader(t)
	v1 := deploy(t, s, spec("shop", 2), "sha256:aaa", "v1")
	deploy(t, s, spec("shop", 3), "sha256:bbb", "v2")
	deploy(t, s, spec("blog", 1), "sha256:ccc", "v1")
	wiki := begin(t, s, spec("wiki", 1), "sha256:ddd", false)

	if got := s.Assignment("n1"); len(got) != 0 {
		t.Errorf("Assignment of a node never assigned = %v", ids(got))
	}
	if err := s.Assign("n1", "shop", "v2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Assign("n1", "blog", "v1"); err != nil {
		t.Fatal(err)
	}
	// A release in progress.
	if err := s.Assign("n1", "wiki", "v1"); err != nil {
		t.Fatal(err)
	}
	if got := ids(s.Assignment("n1")); !slices.Equal(got, []string{"blog/v1", "shop/v2", "wiki/v1"}) {
		t.Errorf("Assignment(n1) = %v, want blog/v1 shop/v2 wiki/v1", got)
	}
	if got := s.Assigned("n1", "wiki"); !proto.Equal(got, wiki.GetRelease()) {
		t.Errorf("Assigned(n1, wiki) = %v", got)
	}
	// An older release from the history.
	if err := s.Assign("n1", "shop", "v1"); err != nil {
		t.Fatal(err)
	}
	if got := s.Assigned("n1", "shop"); !proto.Equal(got, v1) {
		t.Errorf("Assigned(n1, shop) = %v, want v1 (2 workers)", got)
	}

	for _, tt := range []struct{ app, release string }{{"shop", "v9"}, {"nope", "v1"}} {
		err := s.Assign("n1", tt.app, tt.release)
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("Assign(%s %s) = %v, want ErrNotFound", tt.app, tt.release, err)
		}
	}
	if got := assigned(s, "n1", "shop"); got != "v1" {
		t.Errorf("a failed Assign changed n1's shop to %q", got)
	}

	// An empty release removes the assignment.
	if err := s.Assign("n1", "shop", ""); err != nil {
		t.Fatal(err)
	}
	if got := s.Assigned("n1", "shop"); got != nil {
		t.Errorf("Assigned after removal = %v", got)
	}
	if got := ids(s.Assignment("n1")); !slices.Equal(got, []string{"blog/v1", "wiki/v1"}) {
		t.Errorf("Assignment(n1) after removal = %v", got)
	}
	// Removing what is not there is fine.
	if err := s.Assign("n7", "shop", ""); err != nil {
		t.Errorf("removing a missing assignment: %v", err)
	}
}

func TestGetUnknown(t *testing.T) {
	s := openLeader(t)
	deploy(t, s, spec("shop", 2), "sha256:aaa", "v1")
	_, err := s.Get("nope")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(nope) = %v, want ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "nope") {
		t.Errorf("error %q does not name the app", err)
	}
	if h := s.History("nope"); len(h) != 0 {
		t.Errorf("History(nope) = %v", h)
	}
}

// The store hands out copies: what callers do with them does not change it.
func TestReturnsCopies(t *testing.T) {
	s := openLeader(t)
	sp := spec("shop", 2)
	r := begin(t, s, sp, "sha256:aaa", false)
	sp.Workers = 99
	sp.Env["A"] = "mutated"
	r.Release.Id = "mutated"
	s.Rollouts()[0].Release.Spec.Workers = 98
	finish(t, s, r, true, okNodes("n1")...) // r's app is still shop

	check := func(when string) {
		t.Helper()
		got, err := s.Get("shop")
		if err != nil {
			t.Fatal(err)
		}
		if got.GetId() != "v1" || got.GetSpec().GetWorkers() != 2 || got.GetSpec().GetEnv()["A"] != "1" {
			t.Fatalf("store changed through %s: %v", when, got)
		}
	}
	check("a caller's pointer")

	got, _ := s.Get("shop")
	got.Spec.Workers = 77
	s.List()[0].Id = "mutated"
	s.History("shop")[0].Release.Id = "mutated"
	s.Assigned("n1", "shop").Spec.Env["A"] = "mutated"
	s.Assignment("n1")[0].Id = "mutated"
	check("a returned release")
	if h := s.History("shop"); h[0].GetRelease().GetId() != "v1" {
		t.Fatalf("history changed through a returned entry: %v", h)
	}
	if got := assigned(s, "n1", "shop"); got != "v1" {
		t.Fatalf("assignment changed through a returned release: %q", got)
	}

	r2 := begin(t, s, spec("shop", 2), "sha256:bbb", false)
	_, err := s.Begin(spec("shop", 2), "sha256:ccc", "f1", false)
	var busy *BusyError
	if !errors.As(err, &busy) {
		t.Fatal(err)
	}
	busy.Rollout.Release.Id = "mutated"
	if ro := s.Rollouts(); len(ro) != 1 || !proto.Equal(ro[0], r2) {
		t.Fatalf("rollout changed through a BusyError: %v", ro)
	}
}

// Concurrent Begin calls never hand out the same id.
func TestConcurrentBegin(t *testing.T) {
	s := openLeader(t)
	apps := []string{"shop", "blog"}
	const n = 20

	// Without force, one rollout per app wins; the others are busy.
	var wins, busy atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		for _, app := range apps {
			wg.Go(func() {
				_, err := s.Begin(spec(app, 1), fmt.Sprintf("sha256:%d", i), "f1", false)
				var be *BusyError
				switch {
				case err == nil:
					wins.Add(1)
				case errors.As(err, &be):
					busy.Add(1)
				default:
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if wins.Load() != int32(len(apps)) || busy.Load() != int32(len(apps)*(n-1)) {
		t.Fatalf("%d rollouts began and %d were busy, want %d and %d", wins.Load(), busy.Load(), len(apps), len(apps)*(n-1))
	}

	// With force, every one begins (superseding the one before) with an id
	// of its own.
	type res struct {
		app     string
		rollout *herdv1.Rollout
	}
	out := make(chan res, len(apps)*n)
	for i := range n {
		for _, app := range apps {
			wg.Go(func() {
				r, err := s.Begin(spec(app, 1), fmt.Sprintf("sha256:f%d", i), "f1", true)
				if err != nil {
					t.Error(err)
					return
				}
				out <- res{app, r}
			})
		}
	}
	wg.Wait()
	close(out)
	rels := map[string]bool{}
	rollouts := map[uint64]bool{}
	for r := range out {
		id := r.app + "/" + r.rollout.GetRelease().GetId()
		if rels[id] {
			t.Fatalf("release id %s handed out twice", id)
		}
		rels[id] = true
		if rollouts[r.rollout.GetId()] {
			t.Fatalf("rollout id %d handed out twice", r.rollout.GetId())
		}
		rollouts[r.rollout.GetId()] = true
	}
	// v1 went to the first round.
	for _, app := range apps {
		for i := 2; i <= n+1; i++ {
			if id := fmt.Sprintf("%s/v%d", app, i); !rels[id] {
				t.Errorf("release %s was never handed out", id)
			}
		}
		if h := s.History(app); len(h) != n {
			t.Errorf("%s's history has %d entries, want %d superseded", app, len(h), n)
		}
	}
	if ro := s.Rollouts(); len(ro) != len(apps) {
		t.Errorf("%d rollouts in progress, want %d", len(ro), len(apps))
	}
}

func TestReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var changes atomic.Int32
	m := openMember(t, dir, "f1", true, func() { changes.Add(1) })
	s := m.Store
	waitLeader(t, s)
	deploy(t, s, spec("shop", 2), "sha256:aaa", "v1", "n1", "n2")
	deploy(t, s, spec("blog", 1), "sha256:ccc", "v1", "n1")
	// Part of the state goes into a snapshot, the rest stays in the log.
	if err := s.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	shop := deploy(t, s, spec("shop", 2), "sha256:bbb", "v2", "n1", "n2")
	failed := begin(t, s, spec("blog", 1), "sha256:eee", false)
	finish(t, s, failed, false)
	wiki := begin(t, s, spec("wiki", 1), "sha256:ddd", false) // never finished
	if err := s.Assign("n3", "blog", "v2"); err != nil {
		t.Fatal(err)
	}
	if changes.Load() == 0 {
		t.Error("OnChange was never called")
	}
	want := s.fsm.snapshotMsg()
	wantList := s.List()
	wantHistory := s.History("blog")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Bootstrap again: the dir holds state, so it must not bootstrap anew.
	r := openMember(t, dir, "f1", true, nil).Store
	waitLeader(t, r)
	if got := r.fsm.snapshotMsg(); !proto.Equal(got, want) {
		t.Errorf("after reopening the state is\n%v\nwant\n%v", got, want)
	}
	if got := r.List(); len(got) != 2 || !proto.Equal(got[0], wantList[0]) || !proto.Equal(got[1], shop) {
		t.Errorf("after reopening, List = %v, want [blog/v1 shop/v2]", ids(got))
	}
	if _, err := r.Get("wiki"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of an app never finished after reopening: %v, want ErrNotFound", err)
	}
	if got := r.History("blog"); len(got) != len(wantHistory) || !proto.Equal(got[len(got)-1], wantHistory[len(wantHistory)-1]) {
		t.Errorf("after reopening, History(blog) = %v", got)
	}
	if got := ids(r.Assignment("n1")); !slices.Equal(got, []string{"blog/v1", "shop/v2"}) {
		t.Errorf("after reopening, Assignment(n1) = %v", got)
	}
	if peers, err := r.Peers(); err != nil || len(peers) != 1 || peers[0].ID != "f1" || !peers[0].Voter {
		t.Errorf("after reopening, Peers = %v, %v; want f1 alone", peers, err)
	}
	if ro := r.Rollouts(); len(ro) != 1 || !proto.Equal(ro[0], wiki) {
		t.Errorf("after reopening, Rollouts = %v, want wiki's", ro)
	}

	// The id sequences go on.
	deploy(t, r, spec("shop", 9), "sha256:fff", "v3")
	deploy(t, r, spec("blog", 9), "sha256:fff", "v3")
	if _, err := r.Begin(spec("wiki", 9), "sha256:fff", "f1", false); !errors.Is(err, ErrConflict) {
		t.Errorf("Begin of wiki after reopening: %v, want busy (its rollout is still in progress)", err)
	}
	if next := begin(t, r, spec("wiki", 9), "sha256:fff", true); next.GetRelease().GetId() != "v2" || next.GetId() <= wiki.GetId() {
		t.Errorf("forced Begin of wiki after reopening = rollout %d of %s, want v2 after rollout %d", next.GetId(), next.GetRelease().GetId(), wiki.GetId())
	}
}

func TestThreeMembers(t *testing.T) {
	t.Parallel()
	f1 := openMember(t, t.TempDir(), "f1", true, nil)
	waitLeader(t, f1.Store)
	deploy(t, f1.Store, spec("shop", 2), "sha256:aaa", "v1", "n1")
	// f3 joins after the log up to here went into a snapshot and was
	// dropped, so it starts from the snapshot.
	rc := f1.raft.ReloadableConfig()
	rc.TrailingLogs = 0
	if err := f1.raft.ReloadConfig(rc); err != nil {
		t.Fatal(err)
	}

	f2 := openMember(t, t.TempDir(), "f2", false, nil)
	if err := f1.AddPeer("f2", f2.addr, true); err != nil {
		t.Fatal(err)
	}
	deploy(t, f1.Store, spec("blog", 1), "sha256:bbb", "v1", "n1")
	if err := f1.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	f3 := openMember(t, t.TempDir(), "f3", false, nil)
	if err := f1.AddPeer("f3", f3.addr, true); err != nil {
		t.Fatal(err)
	}

	// A write on the leader reaches the followers.
	shop := deploy(t, f1.Store, spec("shop", 2), "sha256:ccc", "v2", "n1")
	want := []string{"blog/v1", "shop/v2"}
	for _, f := range []member{f2, f3} {
		waitFor(t, 5*time.Second, f.ID()+" to catch up", func() bool { return slices.Equal(ids(f.List()), want) })
		if got, err := f.Get("shop"); err != nil || !proto.Equal(got, shop) {
			t.Errorf("Get(shop) on %s = %v, %v", f.ID(), got, err)
		}
		if got := ids(f.Assignment("n1")); !slices.Equal(got, want) {
			t.Errorf("Assignment(n1) on %s = %v", f.ID(), got)
		}
		waitFor(t, 5*time.Second, f.ID()+" to know the leader", func() bool { return f.Leader() == "f1" })
	}
	waitFor(t, 5*time.Second, "the followers to apply as far as the leader", func() bool {
		return f2.Info().GetAppliedIndex() == f1.Info().GetAppliedIndex() && f3.Info().GetAppliedIndex() == f1.Info().GetAppliedIndex()
	})
	if got, want := f3.fsm.snapshotMsg(), f1.fsm.snapshotMsg(); !proto.Equal(got, want) {
		t.Errorf("f3's state is\n%v\nthe leader's is\n%v", got, want)
	}

	// A write on a follower names the leader.
	_, err := f2.Begin(spec("shop", 2), "sha256:ddd", "f2", false)
	var nl *NotLeaderError
	if !errors.As(err, &nl) || nl.Leader != "f1" || !strings.Contains(err.Error(), "f1") {
		t.Fatalf("Begin on a follower: %v, want a *NotLeaderError naming f1", err)
	}
	for name, err := range map[string]error{
		"Finish":  f3.Finish(&herdv1.FinishRollout{App: "shop", Rollout: 1, Ok: true}),
		"Assign":  f3.Assign("n1", "shop", "v1"),
		"AddPeer": f3.AddPeer("f9", "127.0.0.1:1", true),
	} {
		if !errors.As(err, &nl) || nl.Leader != "f1" {
			t.Errorf("%s on a follower: %v, want a *NotLeaderError naming f1", name, err)
		}
	}

	for _, f := range []member{f1, f2, f3} {
		peers, err := f.Peers()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range peers {
			if !p.Voter {
				t.Errorf("%s is not a voter", p.ID)
			}
			got = append(got, p.ID+"@"+p.Address)
		}
		slices.Sort(got)
		if want := []string{"f1@" + f1.addr, "f2@" + f2.addr, "f3@" + f3.addr}; !slices.Equal(got, want) {
			t.Errorf("Peers on %s = %v, want %v", f.ID(), got, want)
		}
	}

	info := f2.Info()
	if info.GetFront() != "f2" || info.GetRaftState() != "follower" || info.GetLeader() != "f1" || info.GetAppliedIndex() == 0 || info.GetLastContact() == nil {
		t.Errorf("Info on a follower = %v", info)
	}
	if info := f1.Info(); info.GetRaftState() != "leader" || info.GetLeader() != "f1" || info.GetLastContact() != nil {
		t.Errorf("Info on the leader = %v", info)
	}

	// The leader goes: another takes over.
	if err := f1.Close(); err != nil {
		t.Fatal(err)
	}
	var leader, other member
	waitFor(t, 10*time.Second, "a new leader", func() bool {
		switch {
		case f2.IsLeader():
			leader, other = f2, f3
		case f3.IsLeader():
			leader, other = f3, f2
		default:
			return false
		}
		return true
	})
	if err := leader.Barrier(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	r, err := leader.Begin(spec("shop", 2), "sha256:ddd", leader.ID(), false)
	if err != nil {
		t.Fatalf("Begin on the new leader %s: %v", leader.ID(), err)
	}
	if r.GetRelease().GetId() != "v3" {
		t.Errorf("the new leader began %s, want v3", r.GetRelease().GetId())
	}
	finish(t, leader.Store, r, true, okNodes("n1")...)
	waitFor(t, 5*time.Second, other.ID()+" to see v3", func() bool { return assigned(other.Store, "n1", "shop") == "v3" })
	waitFor(t, 5*time.Second, other.ID()+" to know the new leader", func() bool { return other.Leader() == leader.ID() })
	if _, err := other.Begin(spec("blog", 1), "sha256:eee", other.ID(), false); !errors.As(err, &nl) || nl.Leader != leader.ID() {
		t.Errorf("Begin on %s: %v, want a *NotLeaderError naming %s", other.ID(), err, leader.ID())
	}

	if err := leader.RemovePeer("f1"); err != nil {
		t.Fatal(err)
	}
	peers, err := leader.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 2 || slices.ContainsFunc(peers, func(p Peer) bool { return p.ID == "f1" }) {
		t.Errorf("Peers after removing f1 = %v", peers)
	}
}

// A front that was never added to a cluster has no leader to name.
func TestNoLeader(t *testing.T) {
	t.Parallel()
	s := openMember(t, t.TempDir(), "f2", false, nil)
	_, err := s.Begin(spec("shop", 1), "sha256:aaa", "f2", false)
	var nl *NotLeaderError
	if !errors.As(err, &nl) || nl.Leader != "" || !strings.Contains(err.Error(), "no Raft leader") {
		t.Fatalf("Begin without a leader: %v, want a *NotLeaderError naming none", err)
	}
	if info := s.Info(); info.GetRaftState() != "follower" || info.GetLeader() != "" || info.GetFront() != "f2" {
		t.Errorf("Info = %v", info)
	}
	if l := s.List(); len(l) != 0 {
		t.Errorf("List = %v", ids(l))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Closing twice is harmless (the test's cleanup closes it again).
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A directory where the log should be.
	dbDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dbDir, "raft", "raft.db"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, dir, want string }{
		{"dir is a file", file, "file"},
		{"log is a dir", dbDir, "raft log"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer lis.Close()
			s, err := Open(Config{Dir: tt.dir, ID: "f1", Stream: TCPStream(lis, ""), Bootstrap: true, Logger: quiet})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestTCPStreamAdvertise(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	if got := TCPStream(lis, "").Addr().String(); got != lis.Addr().String() {
		t.Errorf("Addr without advertise = %s, want %s", got, lis.Addr())
	}
	if got := TCPStream(lis, "10.1.2.3:7000").Addr().String(); got != "10.1.2.3:7000" {
		t.Errorf("Addr with advertise = %s, want 10.1.2.3:7000", got)
	}
	// Dial reaches the listener.
	go func() {
		if c, err := lis.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := TCPStream(lis, "").Dial(raft.ServerAddress(lis.Addr().String()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
