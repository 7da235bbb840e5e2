package release

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// Store is a content-addressed directory of artifacts: <dir>/<digest>.tar.gz.
// Safe for concurrent use: artifacts only ever appear by an atomic rename of
// a verified file, so readers never see partial content.
type Store struct {
	dir string
}

// OpenStore opens the store in dir, creating dir with mode 0700 if needed.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return &Store{dir: dir}, nil
}

// Path returns where the artifact with digest is (or would be) stored, or ""
// if digest is not valid.
func (s *Store) Path(digest string) string {
	if !ValidDigest(digest) {
		return ""
	}
	return filepath.Join(s.dir, digest+".tar.gz")
}

// Has reports whether the artifact with digest is stored, and its size.
func (s *Store) Has(digest string) (size int64, ok bool) {
	if !ValidDigest(digest) {
		return 0, false
	}
	info, err := os.Stat(s.Path(digest))
	if err != nil || !info.Mode().IsRegular() {
		return 0, false
	}
	return info.Size(), true
}

// Put copies r into the store, computing sha256 as it goes, and returns the
// artifact's size. If the result does not equal digest (or its size differs
// from size when size >= 0), nothing is kept and the error says expected vs
// got. Concurrent Puts of the same digest are fine: each writes its own temp
// file in the store dir, fsyncs it and renames it into place.
func (s *Store) Put(digest string, size int64, r io.Reader) (int64, error) {
	if err := checkDigest(digest); err != nil {
		return 0, fmt.Errorf("put: %w", err)
	}
	f, err := os.CreateTemp(s.dir, "."+digest+".*.tmp")
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", digest, err)
	}
	n, err := fill(f, digest, size, r)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("put %s: %w", digest, cerr)
	}
	if err == nil {
		if rerr := os.Rename(f.Name(), s.Path(digest)); rerr != nil {
			err = fmt.Errorf("put %s: %w", digest, rerr)
		}
	}
	if err != nil {
		os.Remove(f.Name())
		return 0, err
	}
	// Make the rename itself durable.
	if err := syncDir(s.dir); err != nil {
		return 0, fmt.Errorf("put %s: %w", digest, err)
	}
	return n, nil
}

// fill copies r to f, verifies size and digest, and syncs f.
func fill(f *os.File, digest string, size int64, r io.Reader) (int64, error) {
	if size >= 0 && size < math.MaxInt64 {
		// A sender with more than it announced is wrong already; do not
		// let it fill the disk before we can tell.
		r = io.LimitReader(r, size+1)
	}
	hw := newHashingWriter()
	n, err := io.Copy(io.MultiWriter(f, hw), r)
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", digest, err)
	}
	switch {
	case size >= 0 && n > size:
		return 0, fmt.Errorf("put %s: size mismatch: expected %d bytes, got more", digest, size)
	case size >= 0 && n < size:
		return 0, fmt.Errorf("put %s: size mismatch: expected %d bytes, got %d", digest, size, n)
	}
	if got := hw.digest(); got != digest {
		return 0, fmt.Errorf("put %s: digest mismatch: expected %s, got %s", digest, digest, got)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("put %s: %w", digest, err)
	}
	return n, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Open returns the artifact with digest for reading, and its size. The error
// wraps os.ErrNotExist if it is not stored.
func (s *Store) Open(digest string) (*os.File, int64, error) {
	if err := checkDigest(digest); err != nil {
		return nil, 0, fmt.Errorf("open artifact: %w", err)
	}
	f, err := os.Open(s.Path(digest))
	if err != nil {
		return nil, 0, fmt.Errorf("open artifact %s: %w", digest, err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open artifact %s: %w", digest, err)
	}
	return f, info.Size(), nil
}

// List returns the digests of the stored artifacts.
func (s *Store) List() []string {
	ents, _ := os.ReadDir(s.dir)
	var out []string
	for _, e := range ents {
		if d, ok := strings.CutSuffix(e.Name(), ".tar.gz"); ok && ValidDigest(d) {
			out = append(out, d)
		}
	}
	return out
}

// Remove deletes the artifact with digest.
func (s *Store) Remove(digest string) error {
	if !ValidDigest(digest) {
		return fmt.Errorf("remove artifact: %q is not a sha256", digest)
	}
	return os.Remove(s.Path(digest))
}
