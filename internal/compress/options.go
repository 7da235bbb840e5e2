package compress

import (
	"fmt"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
)

// Defaults for the zero fields of Options.
const (
	// DefaultMinSize is below the size where compression starts to win:
	// a smaller body fits in one packet either way, and the encoder
	// framing plus the CPU time would be spent for nothing.
	DefaultMinSize = 1024
	// DefaultGzipLevel favours speed: a proxy compresses every response
	// and levels above 5 cost much more CPU for a few percent.
	DefaultGzipLevel = 5
	// DefaultBrotliQuality is brotli's sweet spot for dynamic content,
	// already smaller than gzip at level 9 and far faster than 11.
	DefaultBrotliQuality = 4
)

// Options tunes compression. A zero field means its default, so the zero
// Options (or a nil *Options) is ready to use.
type Options struct {
	// MinSize is the smallest body, in bytes, worth compressing
	// (default DefaultMinSize). A response with a Content-Length below it
	// is sent as is; with no Content-Length, up to MinSize bytes are
	// buffered to decide.
	MinSize int
	// GzipLevel is the gzip level, 1 (fastest) to 9 (smallest); default
	// DefaultGzipLevel.
	GzipLevel int
	// BrotliQuality is the brotli quality, 1 to 11; default
	// DefaultBrotliQuality. (Quality 0 cannot be asked for: zero means
	// the default.)
	BrotliQuality int
}

// Validate rejects values out of range. NewWriter does not fail on them
// (it uses the default instead), so call Validate when loading the config.
func (o *Options) Validate() error {
	if o == nil {
		return nil
	}
	if o.MinSize < 0 {
		return fmt.Errorf("compress: MinSize %d is negative (0 means the default, %d)", o.MinSize, DefaultMinSize)
	}
	if o.GzipLevel != 0 && (o.GzipLevel < gzip.BestSpeed || o.GzipLevel > gzip.BestCompression) {
		return fmt.Errorf("compress: GzipLevel %d is out of range %d..%d (0 means the default, %d)",
			o.GzipLevel, gzip.BestSpeed, gzip.BestCompression, DefaultGzipLevel)
	}
	if o.BrotliQuality != 0 && (o.BrotliQuality < 1 || o.BrotliQuality > brotli.BestCompression) {
		return fmt.Errorf("compress: BrotliQuality %d is out of range 1..%d (0 means the default, %d)",
			o.BrotliQuality, brotli.BestCompression, DefaultBrotliQuality)
	}
	return nil
}

// settings are Options with the defaults filled in and the ranges enforced.
type settings struct {
	minSize       int
	gzipLevel     int
	brotliQuality int
}

func (o *Options) resolve() settings {
	s := settings{minSize: DefaultMinSize, gzipLevel: DefaultGzipLevel, brotliQuality: DefaultBrotliQuality}
	if o == nil {
		return s
	}
	if o.MinSize > 0 {
		s.minSize = o.MinSize
	}
	if o.GzipLevel >= gzip.BestSpeed && o.GzipLevel <= gzip.BestCompression {
		s.gzipLevel = o.GzipLevel
	}
	if o.BrotliQuality >= 1 && o.BrotliQuality <= brotli.BestCompression {
		s.brotliQuality = o.BrotliQuality
	}
	return s
}
