package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var testMtime = time.Unix(1700000000, 123456789)

// writeTree creates files (name -> content) below dir, with mode 0644 unless
// the name ends in ".sh" (0755), all with testMtime.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, testMtime, testMtime); err != nil {
			t.Fatal(err)
		}
	}
}

var sampleFiles = map[string]string{
	"index.html":         "<h1>hi</h1>\n",
	"run.sh":             "#!/bin/sh\necho hi\n",
	"static/app.js":      "console.log(1)\n",
	"static/css/app.css": "body{}\n",
	"a-b":                "dash\n",
	"a/x":                "x\n",
}

func sampleTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, sampleFiles)
	if err := os.Symlink("static/app.js", filepath.Join(dir, "app.js")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

func pack(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	digest, size, err := Pack(dir, &buf)
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	if size != int64(buf.Len()) {
		t.Errorf("Pack size = %d, wrote %d bytes", size, buf.Len())
	}
	sum := sha256.Sum256(buf.Bytes())
	if want := hex.EncodeToString(sum[:]); digest != want {
		t.Errorf("Pack digest = %s, sha256 of output = %s", digest, want)
	}
	return digest, buf.Bytes()
}

func readArchive(t *testing.T, data []byte) (*gzip.Reader, []*tar.Header) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var hdrs []*tar.Header
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		hdrs = append(hdrs, hdr)
	}
	return zr, hdrs
}

func TestPackDeterministic(t *testing.T) {
	dir := sampleTree(t)
	d1, b1 := pack(t, dir)
	d2, b2 := pack(t, dir)
	if d1 != d2 || !bytes.Equal(b1, b2) {
		t.Fatalf("packing twice differs: %s vs %s", d1, d2)
	}

	// Same content elsewhere, created in a different order and with a
	// different directory history (and so directory mtimes), packs the
	// same.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "junk"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(other, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeTree(t, other, sampleFiles)
	if err := os.Symlink("static/app.js", filepath.Join(other, "app.js")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(other, "junk")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{".", "static", "empty"} {
		old := time.Unix(1e9, 0)
		if err := os.Chtimes(filepath.Join(other, d), old, old); err != nil {
			t.Fatal(err)
		}
	}
	if d, _ := pack(t, other); d != d1 {
		t.Errorf("same content in another dir: digest %s, want %s", d, d1)
	}

	// One changed byte, same size and mtime.
	js := filepath.Join(dir, "static", "app.js")
	writeTree(t, dir, map[string]string{"static/app.js": "console.log(2)\n"})
	d3, _ := pack(t, dir)
	if d3 == d1 {
		t.Error("changing a byte kept the digest")
	}

	// Only the mtime changes: kept, so the digest changes too.
	if err := os.Chtimes(js, testMtime, testMtime.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if d4, _ := pack(t, dir); d4 == d3 {
		t.Error("changing an mtime kept the digest")
	}
}

func TestPackHeaders(t *testing.T) {
	dir := sampleTree(t)
	// Odd permissions on disk are normalised.
	if err := os.Chmod(filepath.Join(dir, "index.html"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "a-b"), 0o710); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/hosts", filepath.Join(dir, "abs")); err != nil {
		t.Fatal(err)
	}
	_, data := pack(t, dir)
	zr, hdrs := readArchive(t, data)
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header has name %q, mtime %v", zr.Name, zr.ModTime)
	}

	var names []string
	byName := map[string]*tar.Header{}
	for _, h := range hdrs {
		name := strings.TrimSuffix(h.Name, "/")
		names = append(names, name)
		byName[name] = h
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner %d/%d %q/%q", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if strings.HasPrefix(h.Name, "/") || strings.HasPrefix(h.Name, "./") || strings.Contains(h.Name, `\`) {
			t.Errorf("bad archive path %q", h.Name)
		}
	}
	want := []string{"a", "a-b", "a/x", "abs", "app.js", "empty", "index.html", "run.sh", "static", "static/app.js", "static/css", "static/css/app.css"}
	if !slices.Equal(names, want) {
		t.Errorf("entries = %q, want %q", names, want)
	}

	checks := []struct {
		name string
		typ  byte
		mode int64
	}{
		{"a", tar.TypeDir, 0o755},
		{"empty", tar.TypeDir, 0o755},
		{"a-b", tar.TypeReg, 0o755},
		{"index.html", tar.TypeReg, 0o644},
		{"run.sh", tar.TypeReg, 0o755},
		{"static/app.js", tar.TypeReg, 0o644},
		{"app.js", tar.TypeSymlink, -1},
	}
	for _, c := range checks {
		h := byName[c.name]
		if h == nil {
			continue // reported above
		}
		if h.Typeflag != c.typ {
			t.Errorf("%s: type %q, want %q", c.name, h.Typeflag, c.typ)
		}
		if c.mode >= 0 && h.Mode != c.mode {
			t.Errorf("%s: mode %o, want %o", c.name, h.Mode, c.mode)
		}
	}
	if h := byName["index.html"]; h != nil && !h.ModTime.Equal(time.Unix(testMtime.Unix(), 0)) {
		t.Errorf("index.html mtime %v, want %v truncated to seconds", h.ModTime, testMtime)
	}
	if h := byName["app.js"]; h != nil && h.Linkname != "static/app.js" {
		t.Errorf("app.js links to %q", h.Linkname)
	}
	if h := byName["abs"]; h != nil && h.Linkname != "/etc/hosts" {
		t.Errorf("abs links to %q, want target kept verbatim", h.Linkname)
	}
}

func TestPackRejectsSocket(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"ok.txt": "ok"})
	if err := os.Mkdir(filepath.Join(dir, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(dir, "run", "sock"))
	if err != nil {
		t.Skipf("cannot create unix socket: %v", err)
	}
	defer l.Close()
	var buf bytes.Buffer
	_, _, err = Pack(dir, &buf)
	if err == nil || !strings.Contains(err.Error(), "run/sock") {
		t.Errorf("Pack with a socket: err = %v, want error naming run/sock", err)
	}
}

func TestPackMissingDir(t *testing.T) {
	if _, _, err := Pack(filepath.Join(t.TempDir(), "nope"), io.Discard); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want ErrNotExist", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestPackWriteError(t *testing.T) {
	if _, _, err := Pack(sampleTree(t), failWriter{}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("err = %v, want the writer's error", err)
	}
}
