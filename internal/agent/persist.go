package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protojson"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// The node remembers what it runs in <data-dir>/node-apps.json, so a
// restarted node serves again without waiting for a front.
const appsFile = "node-apps.json"

func (m *manager) save() error {
	m.mu.Lock()
	var rels []json.RawMessage
	for _, a := range m.apps {
		b, err := protojson.Marshal(a.rel)
		if err != nil {
			m.mu.Unlock()
			return err
		}
		rels = append(rels, b)
	}
	m.mu.Unlock()
	b, err := json.MarshalIndent(rels, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(m.cfg.DataDir, appsFile)
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// restore starts the workers of every release the node ran before it
// stopped. They are advertised as they become healthy.
func (m *manager) restore() error {
	b, err := os.ReadFile(filepath.Join(m.cfg.DataDir, appsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var rels []json.RawMessage
	if err := json.Unmarshal(b, &rels); err != nil {
		return fmt.Errorf("read %s: %w", appsFile, err)
	}
	for _, raw := range rels {
		rel := &herdv1.Release{}
		if err := protojson.Unmarshal(raw, rel); err != nil {
			return fmt.Errorf("read %s: %w", appsFile, err)
		}
		if err := validateRelease(rel); err != nil {
			m.log.Warn("not restoring app", "app", rel.GetApp(), "err", err)
			continue
		}
		dir := filepath.Join(m.cfg.DataDir, "releases", rel.GetDigest())
		if _, err := os.Stat(dir); err != nil {
			m.log.Warn("not restoring app: release directory missing", "app", rel.GetApp(), "release", rel.GetId())
			continue
		}
		var slots []*slot
		if m.drained != "stop" {
			// A drained node keeps its apps but runs their workers only
			// if it was drained with --keep-workers.
			if slots, err = m.startSlots(rel, dir); err != nil {
				m.log.Warn("not restoring app", "app", rel.GetApp(), "err", err)
				continue
			}
		}
		m.mu.Lock()
		m.apps[rel.GetApp()] = &appRun{rel: rel, slots: slots}
		m.mu.Unlock()
		m.log.Info("restored app", "app", rel.GetApp(), "release", rel.GetId(), "workers", len(slots))
	}
	return nil
}
