package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// entry is one archive member built by hand, so tests can produce archives
// that Pack never would.
type entry struct {
	hdr  tar.Header
	body string
}

func file(name, body string) entry {
	return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: testMtime}, body: body}
}

func dir(name string) entry {
	return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
}

func symlink(name, target string) entry {
	return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}}
}

func special(name string, typ byte) entry {
	return entry{hdr: tar.Header{Name: name, Typeflag: typ, Mode: 0o644}}
}

func tarBytes(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := tw.WriteHeader(&e.hdr); err != nil {
			t.Fatalf("%s: %v", e.hdr.Name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatalf("%s: %v", e.hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func archive(t testing.TB, entries ...entry) []byte {
	t.Helper()
	return gzipBytes(t, tarBytes(t, entries...))
}

// destIn returns a fresh root and dest = root/app.
func destIn(t *testing.T) (root, dest string) {
	root = t.TempDir()
	return root, filepath.Join(root, "app")
}

// checkRoot fails unless root holds exactly dest (when wantDest) or nothing:
// no temp dir left behind and nothing escaped next to dest.
func checkRoot(t *testing.T, root string, wantDest bool) {
	t.Helper()
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	switch {
	case wantDest && (len(names) != 1 || names[0] != "app"):
		t.Errorf("root holds %q, want only app", names)
	case !wantDest && len(names) != 0:
		t.Errorf("root holds %q after a failed unpack, want nothing", names)
	}
}

var unsafeCases = []struct {
	name    string
	entries []entry
	mention string // in the error
}{
	{"dotdot", []entry{file("../x", "x")}, "../x"},
	{"absolute", []entry{file("/etc/x", "x")}, "/etc/x"},
	{"nested dotdot", []entry{file("a/../../x", "x")}, "a/../../x"},
	{"inner dotdot", []entry{file("a/b", "b"), file("a/../c", "c")}, "a/../c"},
	{"absolute symlink", []entry{symlink("etc", "/etc")}, "etc"},
	{"absolute symlink to root", []entry{symlink("root", "/")}, "root"},
	{"absolute symlink then write through it", []entry{symlink("link", "/etc"), file("link/passwd", "root::0:0::/:/bin/sh")}, "link"},
	{"write through inner symlink", []entry{dir("sub"), symlink("link", "sub"), file("link/passwd", "x")}, "link/passwd"},
	{"symlink then implicit dir below it", []entry{symlink("link", "sub"), dir("link/d/")}, "link/d/"},
	{"file then symlink in its parent's place", []entry{file("link/f", "x"), symlink("link", "sub")}, "link"},
	{"symlink up two", []entry{symlink("up", "../..")}, "up"},
	{"symlink up one", []entry{symlink("up", "..")}, "up"},
	{"nested symlink up", []entry{symlink("a/b/up", "../../..")}, "a/b/up"},
	{"symlink up through another symlink", []entry{symlink("x/y/s", "../.."), symlink("l", "x/y/s/../..")}, "l"},
	{"symlink chain", []entry{symlink("a", "b"), symlink("b", "../outside")}, "a"},
	{"symlink to later symlink", []entry{symlink("a", "d/s/../.."), symlink("d/s", "..")}, "a"},
	{"symlink loop", []entry{symlink("a", "b"), symlink("b", "a")}, "a"},
	{"empty symlink target", []entry{symlink("a", "")}, "a"},
	{"hard link", []entry{file("a", "x"), {hdr: tar.Header{Name: "b", Typeflag: tar.TypeLink, Linkname: "a"}}}, "b"},
	{"hard link outside", []entry{{hdr: tar.Header{Name: "passwd", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}}}, "passwd"},
	{"char device", []entry{special("dev/null", tar.TypeChar)}, "dev/null"},
	{"block device", []entry{special("dev/sda", tar.TypeBlock)}, "dev/sda"},
	{"fifo", []entry{special("pipe", tar.TypeFifo)}, "pipe"},
	{"duplicate file", []entry{file("a", "1"), file("a", "2")}, "a"},
	{"duplicate after cleaning", []entry{file("d/a", "1"), file("./d//a", "2")}, "./d//a"},
	{"duplicate dir", []entry{dir("d/"), dir("d/")}, "d/"},
	{"dir over file", []entry{file("d", "1"), dir("d/")}, "d/"},
	{"file under file", []entry{file("a", "1"), file("a/b", "2")}, "a/b"},
	{"file as root", []entry{file(".", "")}, "."},
}

func TestUnpackRejectsUnsafe(t *testing.T) {
	for _, tc := range unsafeCases {
		t.Run(tc.name, func(t *testing.T) {
			root, dest := destIn(t)
			err := Unpack(bytes.NewReader(archive(t, tc.entries...)), dest, DefaultLimits())
			if !errors.Is(err, ErrUnsafe) {
				t.Fatalf("err = %v, want ErrUnsafe", err)
			}
			if !strings.Contains(err.Error(), `"`+tc.mention+`"`) {
				t.Errorf("err = %v, want it to name %q", err, tc.mention)
			}
			checkRoot(t, root, false)
		})
	}
}

func TestUnpackAcceptsLegacyForms(t *testing.T) {
	root, dest := destIn(t)
	data := archive(t,
		entry{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "0123abc"}}},
		dir("./"),
		file("./a/b.txt", "b"),
		dir("a/"), // after its contents
		symlink("dangling", "missing/file"),
		symlink("self", "."),
		symlink("x/y/s", "../.."),
		symlink("via", "x/y/s/a/b.txt"),
		symlink("a/back", "../a/./b.txt"),
	)
	if err := Unpack(bytes.NewReader(data), dest, DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	checkRoot(t, root, true)
	for name, want := range map[string]string{"a/b.txt": "b", "via": "b", "a/back": "b", "self/a/b.txt": "b"} {
		got, err := os.ReadFile(filepath.Join(dest, name))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", name, got, err, want)
		}
	}
	if target, err := os.Readlink(filepath.Join(dest, "dangling")); err != nil || target != "missing/file" {
		t.Errorf("dangling: %q, %v", target, err)
	}
}

func TestUnpackModes(t *testing.T) {
	_, dest := destIn(t)
	withMode := func(e entry, mode int64) entry { e.hdr.Mode = mode; return e }
	data := archive(t,
		withMode(dir("sticky/"), 0o1777),
		withMode(dir("private/"), 0o700),
		withMode(file("setuid", "x"), 0o4755),
		withMode(file("setgid", "x"), 0o2644),
		withMode(file("private/secret", "x"), 0o600),
		withMode(file("userexec", "x"), 0o700),
		withMode(file("otherexec", "x"), 0o601),
	)
	if err := Unpack(bytes.NewReader(data), dest, DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	want := map[string]fs.FileMode{
		".":              fs.ModeDir | 0o755,
		"sticky":         fs.ModeDir | 0o755,
		"private":        fs.ModeDir | 0o755,
		"setuid":         0o755,
		"setgid":         0o644,
		"private/secret": 0o644,
		"userexec":       0o755,
		"otherexec":      0o755,
	}
	for name, mode := range want {
		info, err := os.Lstat(filepath.Join(dest, name))
		if err != nil {
			t.Error(err)
			continue
		}
		if info.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", name, info.Mode(), mode)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	src := sampleTree(t)
	if err := os.Symlink("static", filepath.Join(src, "assets")); err != nil {
		t.Fatal(err)
	}
	_, data := pack(t, src)
	root, dest := destIn(t)
	if err := Unpack(bytes.NewReader(data), dest, DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	checkRoot(t, root, true)

	seen := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		want, err := os.Lstat(p)
		if err != nil {
			return err
		}
		got, err := os.Lstat(filepath.Join(dest, rel))
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		seen++
		if got.Mode().Type() != want.Mode().Type() {
			t.Errorf("%s: type %v, want %v", rel, got.Mode().Type(), want.Mode().Type())
			return nil
		}
		switch {
		case want.Mode().IsRegular():
			wantBody, _ := os.ReadFile(p)
			gotBody, _ := os.ReadFile(filepath.Join(dest, rel))
			if !bytes.Equal(gotBody, wantBody) {
				t.Errorf("%s: content %q, want %q", rel, gotBody, wantBody)
			}
			if got.Mode().Perm() != fs.FileMode(fileMode(int64(want.Mode().Perm()))) {
				t.Errorf("%s: mode %v (source %v)", rel, got.Mode(), want.Mode())
			}
			if !got.ModTime().Equal(time.Unix(want.ModTime().Unix(), 0)) {
				t.Errorf("%s: mtime %v, want %v", rel, got.ModTime(), want.ModTime())
			}
		case want.Mode()&fs.ModeSymlink != 0:
			wantTarget, _ := os.Readlink(p)
			gotTarget, _ := os.Readlink(filepath.Join(dest, rel))
			if gotTarget != wantTarget {
				t.Errorf("%s: links to %q, want %q", rel, gotTarget, wantTarget)
			}
		case want.IsDir():
			if got.Mode().Perm() != 0o755 {
				t.Errorf("%s: mode %v", rel, got.Mode())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen < len(sampleFiles)+3 {
		t.Errorf("compared only %d paths", seen)
	}
	if _, err := os.Stat(filepath.Join(dest, "assets", "css", "app.css")); err != nil {
		t.Errorf("directory symlink does not resolve: %v", err)
	}
}

func TestUnpackLimits(t *testing.T) {
	three := archive(t, dir("d/"), file("d/a", "123456"), file("b", "12345"))
	tests := []struct {
		name    string
		lim     Limits
		wantErr bool
	}{
		{"files at limit", Limits{MaxFiles: 3, MaxBytes: 11}, false},
		{"too many files", Limits{MaxFiles: 2, MaxBytes: 11}, true},
		{"too many bytes", Limits{MaxFiles: 3, MaxBytes: 10}, true},
		{"first file too big", Limits{MaxFiles: 3, MaxBytes: 5}, true},
		{"unlimited", Limits{MaxFiles: math.MaxInt, MaxBytes: math.MaxInt64}, false},
		{"zero", Limits{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, dest := destIn(t)
			err := Unpack(bytes.NewReader(three), dest, tt.lim)
			if !tt.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				checkRoot(t, root, true)
				return
			}
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			checkRoot(t, root, false)
		})
	}
}

func TestUnpackEmptyArchiveWithZeroLimits(t *testing.T) {
	root, dest := destIn(t)
	if err := Unpack(bytes.NewReader(archive(t)), dest, Limits{}); err != nil {
		t.Fatal(err)
	}
	checkRoot(t, root, true)
}

// A header claiming fewer bytes than follow must not let the extra bytes
// through: tar's reader stops at the claimed size and the rest is read as a
// (broken) header.
func TestUnpackHeaderUnderstatesSize(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4}); err != nil {
		t.Fatal(err)
	}
	io.WriteString(tw, "AAAA")
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	buf.WriteString(strings.Repeat("A", 4096)) // the bytes the header does not admit to
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}

	root, dest := destIn(t)
	err := Unpack(bytes.NewReader(gzipBytes(t, buf.Bytes())), dest, Limits{MaxFiles: 10, MaxBytes: 100})
	if err == nil {
		t.Fatal("Unpack accepted an archive with undeclared file contents")
	}
	checkRoot(t, root, false)
}

// A file whose header already exceeds the limit is refused before its
// contents are read (or written to disk).
func TestUnpackRejectsDeclaredSizeEarly(t *testing.T) {
	big := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{}).Read(big) // incompressible, so compressed bytes read track file bytes
	data := archive(t, file("big", string(big)))
	r := &countingReader{r: bytes.NewReader(data)}
	root, dest := destIn(t)
	if err := Unpack(r, dest, Limits{MaxFiles: 10, MaxBytes: 512 << 10}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if r.n > 64<<10 {
		t.Errorf("read %d of %d compressed bytes before refusing", r.n, len(data))
	}
	checkRoot(t, root, false)
}

func TestCopyAtMost(t *testing.T) {
	tests := []struct {
		in      string
		max     int64
		wantErr bool
	}{
		{"", 0, false},
		{"abc", 3, false},
		{"abcd", 3, true},
		{strings.Repeat("x", 1<<20), 10, true},
		{"abc", math.MaxInt64, false},
	}
	for _, tt := range tests {
		var dst bytes.Buffer
		n, err := copyAtMost(&dst, strings.NewReader(tt.in), tt.max)
		if tt.wantErr != errors.Is(err, ErrTooLarge) {
			t.Errorf("copyAtMost(%d bytes, %d): err = %v", len(tt.in), tt.max, err)
		}
		if int64(dst.Len()) != n || (tt.max < math.MaxInt64 && n > tt.max+1) {
			t.Errorf("copyAtMost(%d bytes, %d) copied %d, reported %d", len(tt.in), tt.max, dst.Len(), n)
		}
	}
}

// Metadata the tar reader consumes itself (here a huge PAX record) still
// counts against the limits.
func TestUnpackStreamBudget(t *testing.T) {
	e := file("a", "x")
	e.hdr.PAXRecords = map[string]string{"comment": strings.Repeat("x", 512<<10)}
	data := archive(t, e)
	lim := Limits{MaxFiles: 10, MaxBytes: 1 << 10}

	root, dest := destIn(t)
	if err := Unpack(bytes.NewReader(data), dest, lim); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	checkRoot(t, root, false)

	if err := Unpack(bytes.NewReader(data), dest, DefaultLimits()); err != nil {
		t.Fatalf("with default limits: %v", err)
	}
}

func TestUnpackDestExists(t *testing.T) {
	for _, mk := range []func(string) error{
		func(p string) error { return os.Mkdir(p, 0o755) },
		func(p string) error { return os.WriteFile(p, []byte("keep"), 0o644) },
		func(p string) error { return os.Symlink("elsewhere", p) },
	} {
		root, dest := destIn(t)
		if err := mk(dest); err != nil {
			t.Fatal(err)
		}
		before, _ := os.Lstat(dest)
		err := Unpack(bytes.NewReader(archive(t, file("a", "x"))), dest, DefaultLimits())
		if !errors.Is(err, fs.ErrExist) {
			t.Errorf("err = %v, want ErrExist", err)
		}
		after, _ := os.Lstat(dest)
		if !os.SameFile(before, after) {
			t.Error("dest was replaced")
		}
		if ents, _ := os.ReadDir(root); len(ents) != 1 {
			t.Errorf("root holds %d entries, want only dest", len(ents))
		}
	}
}

func TestUnpackFailureCleansUp(t *testing.T) {
	good := archive(t, dir("d/"), file("d/a", strings.Repeat("a", 100<<10)), file("b", "b"))
	tests := map[string][]byte{
		"not gzip":       []byte("this is not an archive"),
		"truncated":      good[:len(good)/2],
		"bad after good": archive(t, file("ok", "fine"), dir("d/"), file("d/x", "x"), file("../evil", "x")),
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			root, dest := destIn(t)
			if err := Unpack(bytes.NewReader(data), dest, DefaultLimits()); err == nil {
				t.Fatal("Unpack succeeded")
			}
			checkRoot(t, root, false)
		})
	}
}

func TestUnpackMissingParent(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "no", "app")
	if err := Unpack(bytes.NewReader(archive(t, file("a", "x"))), dest, DefaultLimits()); err == nil {
		t.Error("Unpack into a missing parent succeeded")
	}
}
