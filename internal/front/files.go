package front

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/proxy"
	"github.com/herd-run/herd/internal/release"
	"github.com/herd-run/herd/internal/static"
)

// releaseFiles keeps the front's own unpacked copies of releases, from
// which it serves the apps' static files, and the open directories for
// each (release, static dir).
type releaseFiles struct {
	dir       string // <data-dir>/releases
	artifacts *release.Store
	log       *slog.Logger
	onReady   func() // a release became available: rebuild routes

	mu      sync.Mutex
	busy    map[string]bool        // digests being unpacked
	opened  map[string]*static.Dir // "<digest>/<dir>" -> open directory
	failed  map[string]error       // digests that cannot be unpacked
	unpack  sync.Mutex             // one unpack at a time per front
	pending sync.WaitGroup
}

func newReleaseFiles(dataDir string, artifacts *release.Store, log *slog.Logger) *releaseFiles {
	return &releaseFiles{
		dir: filepath.Join(dataDir, "releases"), artifacts: artifacts, log: log,
		busy: map[string]bool{}, opened: map[string]*static.Dir{}, failed: map[string]error{},
	}
}

// ensure unpacks the release if the front does not have it yet.
func (f *releaseFiles) ensure(digest string) error {
	dest := filepath.Join(f.dir, digest)
	if _, err := os.Stat(dest); err == nil {
		return nil
	}
	f.unpack.Lock()
	defer f.unpack.Unlock()
	if _, err := os.Stat(dest); err == nil {
		return nil
	}
	a, _, err := f.artifacts.Open(digest)
	if err != nil {
		return fmt.Errorf("artifact %s is not on this front: %w", digest, err)
	}
	defer a.Close()
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return err
	}
	if err := release.Unpack(a, dest, release.DefaultLimits()); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("unpack artifact %s: %w", digest[:12], err)
	}
	return nil
}

// ensureAsync unpacks a release in the background (a release the front
// learnt of from a node rather than by a deploy through it).
func (f *releaseFiles) ensureAsync(digest string) {
	f.mu.Lock()
	if f.busy[digest] || f.failed[digest] != nil {
		f.mu.Unlock()
		return
	}
	if _, ok := f.artifacts.Has(digest); !ok {
		f.mu.Unlock()
		return
	}
	f.busy[digest] = true
	f.mu.Unlock()
	f.pending.Go(func() {
		err := f.ensure(digest)
		f.mu.Lock()
		delete(f.busy, digest)
		if err != nil {
			f.failed[digest] = err
		}
		f.mu.Unlock()
		if err != nil {
			f.log.Error("cannot unpack release for static files", "digest", digest, "err", err)
			return
		}
		if f.onReady != nil {
			f.onReady()
		}
	})
}

// mounts returns the static mounts of an app: for each of the spec's
// static dirs, the directory in every release in digests that the front
// has (in order: the desired release first). Releases it lacks are
// unpacked in the background.
func (f *releaseFiles) mounts(spec *herdv1.AppSpec, digests []string) []proxy.StaticMount {
	var out []proxy.StaticMount
	for _, sd := range spec.GetStatic() {
		m := proxy.StaticMount{Prefix: sd.GetUrlPrefix()}
		for _, d := range digests {
			if dir := f.open(d, sd.GetDir()); dir != nil {
				m.Dirs = append(m.Dirs, dir)
			}
		}
		out = append(out, m)
	}
	return out
}

func (f *releaseFiles) open(digest, sub string) *static.Dir {
	key := digest + "/" + sub
	f.mu.Lock()
	d := f.opened[key]
	f.mu.Unlock()
	if d != nil {
		return d
	}
	root := filepath.Join(f.dir, digest)
	if _, err := os.Stat(root); err != nil {
		f.ensureAsync(digest)
		return nil
	}
	d, err := static.OpenDir(filepath.Join(root, filepath.FromSlash(sub)))
	if err != nil {
		// The release has no such directory: nothing to serve from it.
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if old := f.opened[key]; old != nil {
		d.Close()
		return old
	}
	f.opened[key] = d
	return d
}

// close waits for background unpacks and closes every directory.
func (f *releaseFiles) close() {
	f.pending.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, d := range f.opened {
		d.Close()
		delete(f.opened, k)
	}
}
