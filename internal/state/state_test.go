package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func spec(name string, workers uint32) *herdv1.AppSpec {
	return &herdv1.AppSpec{Name: name, Command: "gunicorn app:app", Workers: workers, Hosts: []string{name + ".test"}, Env: map[string]string{"A": "1"}}
}

// deploy prepares and commits, failing the test unless the release is new
// and has the wanted id.
func deploy(t *testing.T, s *Store, sp *herdv1.AppSpec, digest, wantID string) *herdv1.Release {
	t.Helper()
	rel, changed, err := s.Prepare(sp, digest)
	if err != nil {
		t.Fatal(err)
	}
	if !changed || rel.GetId() != wantID {
		t.Fatalf("Prepare(%s, %s) = %s changed=%v, want %s changed=true", sp.GetName(), digest, rel.GetId(), changed, wantID)
	}
	if err := s.Commit(rel); err != nil {
		t.Fatal(err)
	}
	return rel
}

func TestPrepareNewApp(t *testing.T) {
	s := open(t, t.TempDir())
	sp := spec("shop", 2)
	rel, changed, err := s.Prepare(sp, "sha256:aaa")
	if err != nil {
		t.Fatal(err)
	}
	if !changed {
		t.Error("changed=false for a new app")
	}
	if rel.GetId() != "v1" || rel.GetApp() != "shop" || rel.GetDigest() != "sha256:aaa" || !proto.Equal(rel.GetSpec(), sp) || rel.GetCreated() == nil {
		t.Errorf("release = %v", rel)
	}
	// Nothing is current until Commit.
	if _, err := s.Get("shop"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get before Commit: %v, want ErrNotFound", err)
	}
	if l := s.List(); len(l) != 0 {
		t.Errorf("List before Commit = %v, want empty", l)
	}
}

func TestPrepareUnchangedAndChanged(t *testing.T) {
	s := open(t, t.TempDir())
	v1 := deploy(t, s, spec("shop", 2), "sha256:aaa", "v1")

	// The same spec (an equal copy, not the same pointer) and digest.
	rel, changed, err := s.Prepare(spec("shop", 2), "sha256:aaa")
	if err != nil {
		t.Fatal(err)
	}
	if changed || rel.GetId() != "v1" || !proto.Equal(rel, v1) {
		t.Fatalf("redeploy of the same release: %s changed=%v, want v1 changed=false", rel.GetId(), changed)
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
	}
	for _, tt := range tests {
		deploy(t, s, tt.spec, tt.digest, tt.wantID)
		cur, err := s.Get("shop")
		if err != nil {
			t.Fatal(err)
		}
		if cur.GetId() != tt.wantID {
			t.Fatalf("%s: current is %s, want %s", tt.name, cur.GetId(), tt.wantID)
		}
	}
}

// Changing only the worker count scales the current release in place: the
// same id and digest, the new spec, and no id spent.
func TestScaleKeepsRelease(t *testing.T) {
	s := open(t, t.TempDir())
	v1 := deploy(t, s, spec("shop", 2), "sha256:aaa", "v1")

	rel, changed, err := s.Prepare(spec("shop", 5), "sha256:aaa")
	if err != nil {
		t.Fatal(err)
	}
	if !changed || rel.GetId() != "v1" || rel.GetDigest() != "sha256:aaa" || rel.GetSpec().GetWorkers() != 5 {
		t.Fatalf("scaling to 5 workers: %v changed=%v, want v1 with 5 workers, changed", rel, changed)
	}
	if !proto.Equal(rel.GetCreated(), v1.GetCreated()) {
		t.Errorf("scaling made a new release: created %v, was %v", rel.GetCreated(), v1.GetCreated())
	}
	// Nothing is recorded until Commit.
	if cur, _ := s.Get("shop"); cur.GetSpec().GetWorkers() != 2 {
		t.Fatalf("Prepare changed the current release to %d workers", cur.GetSpec().GetWorkers())
	}
	if err := s.Commit(rel); err != nil {
		t.Fatal(err)
	}
	if cur, _ := s.Get("shop"); cur.GetId() != "v1" || cur.GetSpec().GetWorkers() != 5 {
		t.Fatalf("after Commit: %s with %d workers, want v1 with 5", cur.GetId(), cur.GetSpec().GetWorkers())
	}
	if rel, changed, _ := s.Prepare(spec("shop", 5), "sha256:aaa"); changed || rel.GetId() != "v1" {
		t.Fatalf("deploying the scaled release again: %s changed=%v, want v1 unchanged", rel.GetId(), changed)
	}
	// Scaling spent no id.
	deploy(t, s, spec("shop", 5), "sha256:bbb", "v2")
}

// A release number is spent by Prepare even if the deploy never commits:
// ids are never reused (see appRecord and the comment in Prepare).
func TestFailedPrepareSpendsID(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	deploy(t, s, spec("shop", 2), "sha256:aaa", "v1")
	if rel, _, err := s.Prepare(spec("shop", 2), "sha256:bbb"); err != nil || rel.GetId() != "v2" {
		t.Fatalf("Prepare = %s, %v; want v2", rel.GetId(), err)
	}
	// The deploy of v2 failed: v1 stays current.
	if cur, err := s.Get("shop"); err != nil || cur.GetId() != "v1" {
		t.Fatalf("current after a failed deploy = %s, %v; want v1", cur.GetId(), err)
	}
	// Deploying v1's release again changes nothing.
	if rel, changed, err := s.Prepare(spec("shop", 2), "sha256:aaa"); err != nil || changed || rel.GetId() != "v1" {
		t.Fatalf("Prepare of the current release = %s changed=%v, %v; want v1 unchanged", rel.GetId(), changed, err)
	}
	deploy(t, s, spec("shop", 2), "sha256:bbb", "v3")
	// The spent id survives a restart too.
	if rel, _, err := open(t, dir).Prepare(spec("shop", 2), "sha256:ccc"); err != nil || rel.GetId() != "v4" {
		t.Fatalf("Prepare after reopening = %s, %v; want v4", rel.GetId(), err)
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	shop := deploy(t, s, spec("shop", 2), "sha256:aaa", "v1")
	shop = deploy(t, s, spec("shop", 2), "sha256:bbb", "v2")
	blog := deploy(t, s, spec("blog", 1), "sha256:ccc", "v1")
	if _, _, err := s.Prepare(spec("wiki", 1), "sha256:ddd"); err != nil { // never committed
		t.Fatal(err)
	}

	r := open(t, dir)
	for _, want := range []*herdv1.Release{shop, blog} {
		got, err := r.Get(want.GetApp())
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Errorf("after reopening, Get(%s) = %v, want %v", want.GetApp(), got, want)
		}
	}
	if _, err := r.Get("wiki"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of an app never committed after reopening: %v, want ErrNotFound", err)
	}
	list := r.List()
	if len(list) != 2 || !proto.Equal(list[0], blog) || !proto.Equal(list[1], shop) {
		t.Errorf("after reopening, List = %v, want [blog shop]", list)
	}
	for app, want := range map[string]string{"shop": "v3", "blog": "v2", "wiki": "v2"} {
		deploy(t, r, spec(app, 9), "sha256:eee", want)
	}
}

func TestGetUnknown(t *testing.T) {
	s := open(t, t.TempDir())
	deploy(t, s, spec("shop", 2), "sha256:aaa", "v1")
	_, err := s.Get("nope")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(nope) = %v, want ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "nope") {
		t.Errorf("error %q does not name the app", err)
	}
}

func TestOpenEmptyDir(t *testing.T) {
	s := open(t, t.TempDir())
	if l := s.List(); len(l) != 0 {
		t.Fatalf("new store lists %v", l)
	}
}

func TestOpenCorrupt(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string // in the error
	}{
		{"not json", "{not json", []string{"apps.json"}},
		{"wrong shape", `{"app": "shop"}`, []string{"apps.json"}},
		{"bad release", `[{"app": "shop", "last_id": 1, "current": {"id": 7}}]`, []string{"apps.json", "shop"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "apps.json"), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(dir)
			if err == nil {
				t.Fatalf("Open of a corrupt apps.json succeeded: %v", s.List())
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestOpenUnreadable(t *testing.T) {
	dir := t.TempDir()
	// A directory where the file should be cannot be read.
	if err := os.Mkdir(filepath.Join(dir, "apps.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir)
	if err == nil || !strings.Contains(err.Error(), "apps.json") {
		t.Fatalf("Open = %v, want an error naming apps.json", err)
	}
}

func TestSaveFailure(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "missing"))
	if _, _, err := s.Prepare(spec("shop", 1), "sha256:aaa"); err == nil {
		t.Fatal("Prepare into a missing directory succeeded")
	}
}

// The store hands out copies: what callers do with them does not change it.
func TestReturnsCopies(t *testing.T) {
	s := open(t, t.TempDir())
	sp := spec("shop", 2)
	rel := deploy(t, s, sp, "sha256:aaa", "v1")
	sp.Workers = 99
	rel.Id = "mutated"
	got, err := s.Get("shop")
	if err != nil {
		t.Fatal(err)
	}
	if got.GetId() != "v1" || got.GetSpec().GetWorkers() != 2 {
		t.Fatalf("store changed through a caller's pointer: %v", got)
	}
	got.Spec.Workers = 77
	s.List()[0].Id = "mutated"
	if again, _ := s.Get("shop"); again.GetId() != "v1" || again.GetSpec().GetWorkers() != 2 {
		t.Fatalf("store changed through a returned release: %v", again)
	}
}

func TestConcurrentPrepare(t *testing.T) {
	s := open(t, t.TempDir())
	const n = 20
	ids := make(chan string, 2*n)
	var wg sync.WaitGroup
	for i := range n {
		for _, app := range []string{"shop", "blog"} {
			wg.Go(func() {
				rel, _, err := s.Prepare(spec(app, 1), fmt.Sprintf("sha256:%d", i))
				if err != nil {
					t.Error(err)
					return
				}
				ids <- app + "/" + rel.GetId()
			})
		}
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		if seen[id] {
			t.Fatalf("release id %s handed out twice", id)
		}
		seen[id] = true
	}
	for _, app := range []string{"shop", "blog"} {
		for i := 1; i <= n; i++ {
			if id := fmt.Sprintf("%s/v%d", app, i); !seen[id] {
				t.Errorf("release %s was never handed out", id)
			}
		}
	}
}
