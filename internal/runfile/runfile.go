// Package runfile records the addresses a herd process actually listens on
// in <data-dir>/addrs.json, so scripts and tests that bind port 0 can find
// them.
package runfile

import (
	"encoding/json"
	"os"
	"path/filepath"
)

// Name is the file's name inside a data dir.
const Name = "addrs.json"

// Write stores addrs (e.g. "grpc": "127.0.0.1:40123") atomically.
func Write(dataDir string, addrs map[string]string) error {
	b, err := json.MarshalIndent(addrs, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dataDir, Name+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dataDir, Name))
}

// Read loads the addresses a process wrote.
func Read(dataDir string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, Name))
	if err != nil {
		return nil, err
	}
	var addrs map[string]string
	return addrs, json.Unmarshal(b, &addrs)
}

// Remove deletes the file when the process stops.
func Remove(dataDir string) {
	os.Remove(filepath.Join(dataDir, Name))
}
