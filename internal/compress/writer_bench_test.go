package compress

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// discard is a ResponseWriter that keeps nothing, so the benchmarks
// measure the wrapper and the encoder, not a network.
type discard struct {
	h http.Header
	n int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) WriteHeader(int)             {}
func (d *discard) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }

func benchmarkResponse(b *testing.B, acceptEncoding string) {
	body := page(10 << 10)
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Accept-Encoding", acceptEncoding)
	contentType := []string{"text/html; charset=utf-8"}
	d := &discard{h: http.Header{}}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		clear(d.h)
		d.h["Content-Type"] = contentType
		w, done := NewWriter(d, r, nil)
		if _, err := w.Write(body); err != nil {
			b.Fatal(err)
		}
		if err := done(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(d.n)/float64(b.N), "out-bytes/op")
}

func BenchmarkGzip10KiB(b *testing.B)   { benchmarkResponse(b, "gzip") }
func BenchmarkBrotli10KiB(b *testing.B) { benchmarkResponse(b, "br") }

// BenchmarkSmallPassThrough is the cost for a response too small to
// compress: held back, then sent as is.
func BenchmarkSmallPassThrough(b *testing.B) {
	body := page(100)
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Accept-Encoding", "gzip, br")
	contentType := []string{"text/html; charset=utf-8"}
	d := &discard{h: http.Header{}}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		clear(d.h)
		d.h["Content-Type"] = contentType
		w, done := NewWriter(d, r, nil)
		w.Write(body)
		if err := done(); err != nil {
			b.Fatal(err)
		}
	}
}
