package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzUnpack feeds Unpack arbitrary archives and checks that, whatever the
// outcome, nothing was written outside dest and everything under dest
// resolves inside it. The fuzzer mutates a compact description of the
// entries (see buildFuzzArchive) rather than tar bytes: nearly every
// mutation of a tar header breaks its checksum, so raw bytes would exercise
// tar's parser, not the path and symlink checks.
func FuzzUnpack(f *testing.F) {
	f.Add(fuzzSpec(
		dir("./"),
		file("index.html", "<h1>hi</h1>"),
		file("bin/run.sh", "#!/bin/sh"),
		dir("bin/"),
		symlink("static", "bin"),
		symlink("bin/self", "../bin/run.sh"),
		symlink("x/y/s", "../.."),
		symlink("dangling", "nope/../nope"),
	))
	for _, tc := range unsafeCases {
		f.Add(fuzzSpec(tc.entries...))
	}

	f.Fuzz(func(t *testing.T, spec string) {
		data, ok := buildFuzzArchive(spec)
		if !ok {
			t.Skip("not encodable as tar")
		}
		// Nest dest so that escapes by ".." land somewhere we can see.
		base := t.TempDir()
		root := filepath.Join(base, "a", "b")
		if err := os.MkdirAll(root, 0o755); err != nil {
			t.Fatal(err)
		}
		dest := filepath.Join(root, "dest")
		err := Unpack(bytes.NewReader(data), dest, Limits{MaxBytes: 1 << 16, MaxFiles: 64})

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

// fuzzSpec describes entries in the format buildFuzzArchive reads.
func fuzzSpec(entries ...entry) string {
	var b strings.Builder
	for _, e := range entries {
		arg := e.body
		if e.hdr.Typeflag == tar.TypeSymlink || e.hdr.Typeflag == tar.TypeLink {
			arg = e.hdr.Linkname
		}
		fmt.Fprintf(&b, "%c%s|%s|%o\n", e.hdr.Typeflag, e.hdr.Name, arg, e.hdr.Mode)
	}
	return b.String()
}

// buildFuzzArchive makes a gzip'd tar from spec, one entry per line: the
// type flag byte, then name|arg|octal mode, where arg is the link target of
// links and the contents of anything else. ok is false if tar cannot encode
// an entry.
func buildFuzzArchive(spec string) (data []byte, ok bool) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.NoCompression) // cheap; compression is not under test
	tw := tar.NewWriter(zw)
	for line := range strings.SplitSeq(spec, "\n") {
		if line == "" {
			continue
		}
		name, rest, _ := strings.Cut(line[1:], "|")
		arg, mode, _ := strings.Cut(rest, "|")
		hdr := tar.Header{Typeflag: line[0], Name: name, ModTime: testMtime}
		hdr.Mode, _ = strconv.ParseInt(mode, 8, 64)
		body := ""
		switch hdr.Typeflag {
		case tar.TypeSymlink, tar.TypeLink:
			hdr.Linkname = arg
		default:
			body = arg
			hdr.Size = int64(len(body))
		}
		if tw.WriteHeader(&hdr) != nil {
			return nil, false
		}
		if _, err := io.WriteString(tw, body); err != nil {
			return nil, false
		}
	}
	if tw.Close() != nil || zw.Close() != nil {
		return nil, false
	}
	return buf.Bytes(), true
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
	realDest, err := filepath.EvalSymlinks(dest)
	if err != nil {
		return err
	}
	var errs []error
	report := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	inside := func(p string) bool {
		return p == realDest || strings.HasPrefix(p, realDest+string(filepath.Separator))
	}
	err = filepath.WalkDir(realDest, func(p string, d fs.DirEntry, err error) error {
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
		if resolved, ok := resolveLenient(realDest, p); ok && !inside(resolved) {
			report("%s points to %s, outside dest", p, resolved)
		}
		return nil
	})
	return errors.Join(append(errs, err)...)
}

// resolveLenient resolves p, below the symlink-free directory dir, on the
// real file system like the kernel does, except that missing components are
// taken as plain names. ok is false for symlink loops, which resolve nowhere.
func resolveLenient(dir, p string) (string, bool) {
	rel, err := filepath.Rel(dir, p)
	if err != nil {
		return "", false
	}
	cur := dir
	rest := strings.Split(rel, string(filepath.Separator))
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
