package agent

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
)

// keepReleases is how many recent releases per app a node keeps unpacked
// (and their artifacts), so a rollback needs no fetch.
const keepReleases = 5

const historyFile = "release-history.json"

// remember records that app now runs digest (most recent first) and
// removes the releases no app remembers. Called with the app's lock held.
func (m *manager) remember(app, digest string) {
	m.histMu.Lock()
	defer m.histMu.Unlock()
	if m.history == nil {
		m.history = map[string][]string{}
		if b, err := os.ReadFile(filepath.Join(m.cfg.DataDir, historyFile)); err == nil {
			json.Unmarshal(b, &m.history)
		}
	}
	h := slices.DeleteFunc(m.history[app], func(d string) bool { return d == digest })
	h = append([]string{digest}, h...)
	if len(h) > keepReleases {
		h = h[:keepReleases]
	}
	m.history[app] = h
	if b, err := json.Marshal(m.history); err == nil {
		path := filepath.Join(m.cfg.DataDir, historyFile)
		if os.WriteFile(path+".tmp", b, 0o600) == nil {
			os.Rename(path+".tmp", path)
		}
	}
	m.pruneLocked()
}

// pruneLocked removes unpacked releases and artifacts that no app's history
// names and no worker runs.
func (m *manager) pruneLocked() {
	keep := map[string]bool{}
	for _, h := range m.history {
		for _, d := range h {
			keep[d] = true
		}
	}
	m.mu.Lock()
	for _, a := range m.apps {
		keep[a.rel.GetDigest()] = true
	}
	m.mu.Unlock()
	dirs, _ := os.ReadDir(filepath.Join(m.cfg.DataDir, "releases"))
	for _, d := range dirs {
		if !keep[d.Name()] && !m.inFlight(d.Name()) {
			if err := os.RemoveAll(filepath.Join(m.cfg.DataDir, "releases", d.Name())); err != nil {
				m.log.Warn("remove old release", "digest", d.Name(), "err", err)
			} else {
				m.log.Info("removed old release", "digest", short(d.Name()))
			}
		}
	}
	for _, d := range m.store.List() {
		if !keep[d] && !m.inFlight(d) {
			if err := m.store.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
				m.log.Warn("remove old artifact", "digest", d, "err", err)
			}
		}
	}
}

// inFlight reports whether an Apply of another app is using digest right
// now (it may be unpacking or starting it).
func (m *manager) inFlight(digest string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applying[digest] > 0
}
