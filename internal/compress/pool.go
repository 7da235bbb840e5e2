package compress

import (
	"io"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
)

// An encoder compresses one response body. Encoders are pooled: their
// tables weigh hundreds of kilobytes, too much to allocate per response.
type encoder interface {
	io.Writer
	// Flush writes out everything written so far, decodable by the
	// client before the stream ends.
	Flush() error
	// Close ends the stream.
	Close() error
	// release detaches the encoder from the response and returns it to
	// its pool; the encoder must not be used afterwards.
	release()
}

// sink is what a pooled encoder writes to. Pointing it at nil on release
// keeps the pool from pinning the last response (and its request) in
// memory, without the cost of resetting the encoder twice.
type sink struct{ w io.Writer }

func (s *sink) Write(p []byte) (int, error) { return s.w.Write(p) }

// The pools, one per level: an encoder's tables depend on its level.
var (
	gzipPools   [gzip.BestCompression + 1]sync.Pool
	brotliPools [brotli.BestCompression + 1]sync.Pool
)

type gzipEncoder struct {
	*gzip.Writer
	out   sink
	level int
}

func (e *gzipEncoder) release() {
	e.out.w = nil
	gzipPools[e.level].Put(e)
}

type brotliEncoder struct {
	*brotli.Writer
	out     sink
	quality int
}

func (e *brotliEncoder) release() {
	e.out.w = nil
	brotliPools[e.quality].Put(e)
}

// newEncoder returns a pooled encoder for coding ("br" or "gzip") writing
// to dst.
func newEncoder(coding string, s settings, dst io.Writer) encoder {
	if coding == "br" {
		e, ok := brotliPools[s.brotliQuality].Get().(*brotliEncoder)
		if ok {
			e.Writer.Reset(&e.out)
		} else {
			e = &brotliEncoder{quality: s.brotliQuality}
			e.Writer = brotli.NewWriterLevel(&e.out, s.brotliQuality)
		}
		e.out.w = dst
		return e
	}
	e, ok := gzipPools[s.gzipLevel].Get().(*gzipEncoder)
	if ok {
		e.Writer.Reset(&e.out)
	} else {
		e = &gzipEncoder{level: s.gzipLevel}
		// The level is in range (settings enforce it), so this cannot fail.
		e.Writer, _ = gzip.NewWriterLevel(&e.out, s.gzipLevel)
	}
	e.out.w = dst
	return e
}

// maxPooledBuffer caps the buffers kept for reuse, so that one response
// with a huge MinSize does not keep its buffer alive in the pool.
const maxPooledBuffer = 64 << 10

// bufferPool holds the buffers for bodies whose size is not known yet.
var bufferPool = sync.Pool{New: func() any {
	b := make([]byte, 0, DefaultMinSize)
	return &b
}}
