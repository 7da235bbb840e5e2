//go:build unix

package release

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Modes are what Unpack promises whatever the process umask, e.g. the 077
// of a locked-down service.
func TestUnpackModesIgnoreUmask(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0o077))
	_, dest := destIn(t)
	e := file("d/run", "x")
	e.hdr.Mode = 0o700
	data := archive(t, dir("d/"), e, file("d/e/f", "x"))
	if err := Unpack(bytes.NewReader(data), dest, DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]fs.FileMode{
		".":     fs.ModeDir | 0o755,
		"d":     fs.ModeDir | 0o755,
		"d/e":   fs.ModeDir | 0o755,
		"d/run": 0o755,
		"d/e/f": 0o644,
	} {
		info, err := os.Lstat(filepath.Join(dest, name))
		if err != nil {
			t.Error(err)
		} else if info.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, info.Mode(), want)
		}
	}
}
