// Package compress compresses HTTP responses on the fly (brotli or gzip, as
// the client accepts) when that pays: compressible types, big enough, not
// already encoded, never for ranges or streams.
package compress
