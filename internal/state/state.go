// Package state holds the cluster's desired state on a front: each app's
// current release (spec + artifact digest) and the release counter.
//
// Today it is a file in the front's data dir, written atomically; the Raft
// issue replaces the storage behind the same methods so that every front
// agrees on it.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// ErrNotFound is returned for an app the store does not hold.
var ErrNotFound = errors.New("no such app")

// Store is the desired state. Safe for concurrent use.
type Store struct {
	path string

	mu   sync.Mutex
	apps map[string]*appRecord
}

// appRecord is one app's entry: the current release and the last release
// number handed out (numbers are never reused, even after a failed deploy).
type appRecord struct {
	Current *herdv1.Release
	LastID  int
}

// storedApp is one app in the file; the release is protojson, so the file
// reads well and survives field additions.
type storedApp struct {
	App     string          `json:"app"`
	LastID  int             `json:"last_id"`
	Current json.RawMessage `json:"current,omitempty"`
}

// Open loads the store from dir/apps.json, creating it empty if absent.
func Open(dir string) (*Store, error) {
	s := &Store{path: filepath.Join(dir, "apps.json"), apps: map[string]*appRecord{}}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	var apps []storedApp
	if err := json.Unmarshal(b, &apps); err != nil {
		return nil, fmt.Errorf("read %s: %w", s.path, err)
	}
	for _, a := range apps {
		r := &appRecord{LastID: a.LastID}
		if len(a.Current) > 0 {
			r.Current = &herdv1.Release{}
			if err := protojson.Unmarshal(a.Current, r.Current); err != nil {
				return nil, fmt.Errorf("read %s: app %s: %w", s.path, a.App, err)
			}
		}
		s.apps[a.App] = r
	}
	return s, nil
}

// Get returns the app's current release.
func (s *Store) Get(app string) (*herdv1.Release, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.apps[app]
	if r == nil || r.Current == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, app)
	}
	return proto.CloneOf(r.Current), nil
}

// List returns every app's current release, sorted by app name.
func (s *Store) List() []*herdv1.Release {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*herdv1.Release
	for _, r := range s.apps {
		if r.Current != nil {
			out = append(out, proto.CloneOf(r.Current))
		}
	}
	slices.SortFunc(out, func(a, b *herdv1.Release) int { return strings.Compare(a.GetApp(), b.GetApp()) })
	return out
}

// Prepare returns the release that deploying spec with digest makes: the
// current one when nothing changed (changed=false), the current one with
// the new worker count when only that changed, else a new one with the
// next id. Nothing is recorded until Commit.
func (s *Store) Prepare(spec *herdv1.AppSpec, digest string) (rel *herdv1.Release, changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.apps[spec.GetName()]
	if r == nil {
		r = &appRecord{}
		s.apps[spec.GetName()] = r
	}
	if r.Current != nil && r.Current.GetDigest() == digest {
		if proto.Equal(r.Current.GetSpec(), spec) {
			return proto.CloneOf(r.Current), false, nil
		}
		// Only the worker count differs: the same release, scaled (nodes
		// add or remove workers and leave the others alone).
		a, b := proto.CloneOf(r.Current.GetSpec()), proto.CloneOf(spec)
		a.Workers, b.Workers = 0, 0
		if proto.Equal(a, b) {
			rel = proto.CloneOf(r.Current)
			rel.Spec = proto.CloneOf(spec)
			return rel, true, nil
		}
	}
	r.LastID++
	rel = &herdv1.Release{
		App:     spec.GetName(),
		Id:      "v" + strconv.Itoa(r.LastID),
		Digest:  digest,
		Spec:    proto.CloneOf(spec),
		Created: timestamppb.New(time.Now()),
	}
	// The id is spent even if the deploy fails, so ids stay unique.
	return rel, true, s.saveLocked()
}

// Commit makes rel the app's current release.
func (s *Store) Commit(rel *herdv1.Release) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.apps[rel.GetApp()]
	if r == nil {
		r = &appRecord{}
		s.apps[rel.GetApp()] = r
	}
	r.Current = proto.CloneOf(rel)
	return s.saveLocked()
}

func (s *Store) saveLocked() error {
	apps := make([]storedApp, 0, len(s.apps))
	for name, r := range s.apps {
		a := storedApp{App: name, LastID: r.LastID}
		if r.Current != nil {
			b, err := protojson.Marshal(r.Current)
			if err != nil {
				return err
			}
			a.Current = b
		}
		apps = append(apps, a)
	}
	slices.SortFunc(apps, func(a, b storedApp) int { return strings.Compare(a.App, b.App) })
	b, err := json.MarshalIndent(apps, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}
