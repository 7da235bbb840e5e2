package release

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

func sha(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func openStore(t *testing.T) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "artifacts", "sha256")
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

// checkStoreFiles fails unless the store dir holds exactly the artifacts
// named by want: no temp files, nothing from failed Puts.
func checkStoreFiles(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	var names []string
	for _, d := range want {
		names = append(names, d+".tar.gz")
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("store holds %q, want %q", got, names)
	}
}

func TestOpenStoreCreatesPrivateDir(t *testing.T) {
	_, dir := openStore(t)
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o700 {
		t.Errorf("store dir mode %v, want 0700", info.Mode().Perm())
	}
	if _, err := OpenStore(dir); err != nil {
		t.Errorf("reopening: %v", err)
	}
}

func TestStorePutHasOpen(t *testing.T) {
	s, dir := openStore(t)
	data := bytes.Repeat([]byte("artifact"), 10000)
	digest := sha(data)

	if _, ok := s.Has(digest); ok {
		t.Fatal("Has before Put")
	}
	n, err := s.Put(digest, int64(len(data)), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(data)) {
		t.Errorf("Put = %d, want %d", n, len(data))
	}
	if size, ok := s.Has(digest); !ok || size != int64(len(data)) {
		t.Errorf("Has = %d, %v", size, ok)
	}
	if want := filepath.Join(dir, digest+".tar.gz"); s.Path(digest) != want {
		t.Errorf("Path = %s, want %s", s.Path(digest), want)
	}

	f, size, err := s.Open(digest)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if size != int64(len(data)) || !bytes.Equal(got, data) {
		t.Errorf("Open: size %d, %d bytes read, want %d", size, len(got), len(data))
	}
	checkStoreFiles(t, dir, digest)

	// Putting again, size unknown, replaces it with the same content.
	if n, err := s.Put(digest, -1, bytes.NewReader(data)); err != nil || n != int64(len(data)) {
		t.Errorf("second Put = %d, %v", n, err)
	}
	checkStoreFiles(t, dir, digest)
}

func TestStorePutRejectsMismatch(t *testing.T) {
	data := []byte("the real content")
	digest := sha(data)
	other := sha([]byte("something else"))
	tests := []struct {
		name    string
		digest  string
		size    int64
		r       io.Reader
		mention []string
	}{
		{"wrong digest", other, -1, bytes.NewReader(data), []string{"expected " + other, "got " + digest}},
		{"wrong digest with size", other, int64(len(data)), bytes.NewReader(data), []string{"expected " + other, "got " + digest}},
		{"short", digest, int64(len(data)) + 1, bytes.NewReader(data), []string{"expected 17 bytes", "got 16"}},
		{"long", digest, int64(len(data)) - 1, bytes.NewReader(data), []string{"expected 15 bytes", "got more"}},
		{"read error", digest, -1, io.MultiReader(bytes.NewReader(data[:4]), iotest.ErrReader(errors.New("connection reset"))), []string{"connection reset"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, dir := openStore(t)
			n, err := s.Put(tt.digest, tt.size, tt.r)
			if err == nil {
				t.Fatal("Put succeeded")
			}
			for _, m := range tt.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("err = %v, want it to mention %q", err, m)
				}
			}
			if n != 0 {
				t.Errorf("Put = %d on error", n)
			}
			if _, ok := s.Has(tt.digest); ok {
				t.Error("Has after failed Put")
			}
			checkStoreFiles(t, dir)
		})
	}
}

// A sender announcing a small size cannot make Put read (and store) an
// unbounded stream.
func TestStorePutStopsReadingPastSize(t *testing.T) {
	s, _ := openStore(t)
	r := &countingReader{r: bytes.NewReader(make([]byte, 1<<20))}
	if _, err := s.Put(sha(nil), 10, r); err == nil {
		t.Fatal("Put succeeded")
	}
	if r.n > 11 {
		t.Errorf("Put read %d bytes for a 10-byte artifact", r.n)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestStoreInvalidDigest(t *testing.T) {
	s, dir := openStore(t)
	valid := sha([]byte("x"))
	for _, d := range []string{"", "../../../etc/passwd", strings.ToUpper(valid), valid[:63], valid + ".tar.gz", "../" + valid[3:]} {
		if _, err := s.Put(d, -1, strings.NewReader("x")); err == nil {
			t.Errorf("Put(%q) succeeded", d)
		}
		if f, _, err := s.Open(d); err == nil {
			f.Close()
			t.Errorf("Open(%q) succeeded", d)
		} else if errors.Is(err, os.ErrNotExist) {
			t.Errorf("Open(%q): %v; want an invalid-digest error, not a file system lookup", d, err)
		}
		if _, ok := s.Has(d); ok {
			t.Errorf("Has(%q) = true", d)
		}
		if p := s.Path(d); p != "" {
			t.Errorf("Path(%q) = %q", d, p)
		}
	}
	checkStoreFiles(t, dir)
}

func TestStoreOpenMissing(t *testing.T) {
	s, _ := openStore(t)
	_, _, err := s.Open(sha([]byte("absent")))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want ErrNotExist", err)
	}
}

func TestStoreConcurrentPut(t *testing.T) {
	s, dir := openStore(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10)
	digest := sha(data)

	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Go(func() {
			if i%4 == 3 {
				// Readers must only ever see complete artifacts.
				if f, size, err := s.Open(digest); err == nil {
					got, _ := io.ReadAll(f)
					f.Close()
					if size != int64(len(data)) || !bytes.Equal(got, data) {
						errs <- errors.New("Open saw a partial artifact")
					}
				}
				return
			}
			if n, err := s.Put(digest, int64(len(data)), bytes.NewReader(data)); err != nil {
				errs <- err
			} else if n != int64(len(data)) {
				errs <- errors.New("short Put")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if size, ok := s.Has(digest); !ok || size != int64(len(data)) {
		t.Errorf("Has = %d, %v", size, ok)
	}
	checkStoreFiles(t, dir, digest)
}

// The store holds what Pack produced and Unpack consumes.
func TestStorePackUnpack(t *testing.T) {
	s, _ := openStore(t)
	var buf bytes.Buffer
	digest, size, err := Pack(sampleTree(t), &buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(digest, size, &buf); err != nil {
		t.Fatal(err)
	}
	f, _, err := s.Open(digest)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dest := filepath.Join(t.TempDir(), digest)
	if err := Unpack(f, dest, DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dest, "index.html")); err != nil || string(got) != sampleFiles["index.html"] {
		t.Errorf("index.html = %q, %v", got, err)
	}
}

func TestStoreListAndRemove(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("artifact")
	sum := sha256.Sum256(content)
	d := hex.EncodeToString(sum[:])
	if _, err := s.Put(d, int64(len(content)), bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(s.dir, "junk.tmp"), nil, 0o600)
	if got := s.List(); len(got) != 1 || got[0] != d {
		t.Fatalf("List() = %v, want [%s]", got, d)
	}
	if err := s.Remove(d); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Has(d); ok || len(s.List()) != 0 {
		t.Fatal("artifact still there after Remove")
	}
	if err := s.Remove("../x"); err == nil {
		t.Fatal("Remove of a non-digest succeeded")
	}
}
