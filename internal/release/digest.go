// Package release packs, stores and safely unpacks release artifacts (gzip'd
// tar files named by their sha256).
package release

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
)

// ValidDigest reports whether s is a lower-case hex sha256 (64 chars).
func ValidDigest(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// checkDigest rejects anything that is not a digest before it can be used to
// build a path.
func checkDigest(digest string) error {
	if !ValidDigest(digest) {
		// Digests come from the network; cap what ends up in logs.
		return fmt.Errorf("invalid digest %.80q", digest)
	}
	return nil
}

// hashingWriter computes the sha256 and length of everything written to it.
type hashingWriter struct {
	h hash.Hash
	n int64
}

func newHashingWriter() *hashingWriter {
	return &hashingWriter{h: sha256.New()}
}

func (w *hashingWriter) Write(p []byte) (int, error) {
	w.h.Write(p) // hash.Hash never returns an error
	w.n += int64(len(p))
	return len(p), nil
}

func (w *hashingWriter) digest() string {
	return hex.EncodeToString(w.h.Sum(nil))
}

// ChunkReader turns a stream of chunks (an artifact arriving as gRPC
// messages) into an io.Reader. next returns the next chunk, or io.EOF at
// the end.
func ChunkReader(next func() ([]byte, error)) io.Reader {
	return &chunkReader{next: next}
}

type chunkReader struct {
	buf  []byte
	next func() ([]byte, error)
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		b, err := r.next()
		if err != nil {
			return 0, err
		}
		r.buf = b
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}
