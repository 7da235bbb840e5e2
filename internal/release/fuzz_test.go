package release

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzUnpack feeds Unpack arbitrary tar streams and checks that, whatever
// the outcome, nothing was written outside dest and everything under dest
// resolves inside it. The fuzzer mutates uncompressed tar bytes and the
// target gzips them: mutating gzip directly would mostly break the deflate
// stream and never reach the tar logic.
func FuzzUnpack(f *testing.F) {
	f.Add(tarBytes(f))
	f.Add(tarBytes(f,
		dir("./"),
		file("index.html", "<h1>hi</h1>"),
		file("bin/run.sh", "#!/bin/sh\n"),
		dir("bin/"),
		symlink("static", "bin"),
		symlink("bin/self", "../bin/run.sh"),
		symlink("x/y/s", "../.."),
		symlink("dangling", "nope/../nope"),
	))
	for _, tc := range unsafeCases {
		f.Add(tarBytes(f, tc.entries...))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.NoCompression)
		zw.Write(data)
		zw.Close()

		// Nest dest so that escapes by ".." land somewhere we can see.
		base := t.TempDir()
		root := filepath.Join(base, "a", "b")
		if err := os.MkdirAll(root, 0o755); err != nil {
			t.Fatal(err)
		}
		dest := filepath.Join(root, "dest")
		err := Unpack(&gz, dest, Limits{MaxBytes: 1 << 20, MaxFiles: 256})

		if cerr := checkOnlyDest(base, dest); cerr != nil {
			t.Fatalf("Unpack returned %v, and: %v", err, cerr)
		}
		if err != nil {
			if _, serr := os.Lstat(dest); !errors.Is(serr, fs.ErrNotExist) {
				t.Fatalf("Unpack failed (%v) but dest exists", err)
			}
			return
		}
		if err := checkContained(dest); err != nil {
			t.Fatal(err)
		}
	})
}

// checkOnlyDest reports anything in base but the directories leading to
// dest and dest's own contents.
func checkOnlyDest(base, dest string) error {
	var errs []error
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dest {
			return filepath.SkipDir
		}
		if p != base && !strings.HasPrefix(dest, p+string(filepath.Separator)) {
			errs = append(errs, fmt.Errorf("unexpected %s outside dest", p))
		}
		return nil
	})
	return errors.Join(append(errs, err)...)
}

// checkContained reports any path under dest that resolves outside it, has
// a mode Unpack does not produce, or is not a regular file, directory or
// symlink.
func checkContained(dest string) error {
	real, err := filepath.EvalSymlinks(dest)
	if err != nil {
		return err
	}
	var errs []error
	report := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	inside := func(p string) bool {
		return p == real || strings.HasPrefix(p, real+string(filepath.Separator))
	}
	err = filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch m := info.Mode(); {
		case m.IsDir() && m != fs.ModeDir|0o755:
			report("%s: directory mode %v", p, m)
		case m.IsRegular() && m != 0o755 && m != 0o644:
			report("%s: file mode %v", p, m)
		case !m.IsDir() && !m.IsRegular() && m.Type() != fs.ModeSymlink:
			report("%s: type %v", p, m.Type())
		}
		if resolved, err := filepath.EvalSymlinks(p); err == nil && !inside(resolved) {
			report("%s resolves to %s, outside dest", p, resolved)
		}
		// EvalSymlinks gives up on dangling links; they must not point
		// outside either, or creating the missing part would escape.
		if resolved, ok := resolveLenient(p); ok && !inside(resolved) {
			report("%s points to %s, outside dest", p, resolved)
		}
		return nil
	})
	return errors.Join(append(errs, err)...)
}

// resolveLenient resolves the absolute path p on the real file system, like
// the kernel, except that missing components are taken as plain names. ok is
// false for symlink loops, which resolve nowhere.
func resolveLenient(p string) (string, bool) {
	cur := string(filepath.Separator)
	rest := strings.Split(p, string(filepath.Separator))
	for hops := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, c)
		target, err := os.Readlink(next)
		if err != nil {
			cur = next // not a symlink, or missing
			continue
		}
		if hops++; hops > 40 {
			return "", false
		}
		if filepath.IsAbs(target) {
			cur = string(filepath.Separator)
		}
		rest = append(strings.Split(target, string(filepath.Separator)), rest...)
	}
	return cur, true
}

// The fuzz invariant checks must themselves notice an escape.
func TestFuzzChecksCatchEscapes(t *testing.T) {
	base := t.TempDir()
	dest := filepath.Join(base, "dest")
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../outside/x", filepath.Join(dest, "dangling")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "escaped"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	if err := checkOnlyDest(base, dest); err == nil {
		t.Error("checkOnlyDest missed a file next to dest")
	}
	if err := checkContained(dest); err == nil {
		t.Error("checkContained missed a dangling symlink pointing outside")
	}
}
