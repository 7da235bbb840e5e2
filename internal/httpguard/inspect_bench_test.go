package httpguard

import "testing"

// typicalGet is a browser-like GET head of about 300 bytes.
const typicalGet = "GET /api/v1/items?page=2&sort=name HTTP/1.1\r\n" +
	"Host: app.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0\r\n" +
	"Accept: application/json, text/plain, */*\r\n" +
	"Accept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Cookie: session=3f9a1c\r\n" +
	"Connection: keep-alive\r\n" +
	"\r\n"

// BenchmarkInspectKeepAlive inspects one request head after another on one
// connection: in one Read each, and split mid-line across two Reads.
func BenchmarkInspectKeepAlive(b *testing.B) {
	p := []byte(typicalGet)
	b.Run("one-read", func(b *testing.B) {
		var in inspector
		b.SetBytes(int64(len(p)))
		b.ReportAllocs()
		for b.Loop() {
			in.feed(p)
		}
		if in.state != stHead {
			b.Fatalf("state %d, reason %q", in.state, reasonText[in.why])
		}
	})
	b.Run("split", func(b *testing.B) {
		var in inspector
		cut := len(p) / 2
		b.SetBytes(int64(len(p)))
		b.ReportAllocs()
		for b.Loop() {
			in.feed(p[:cut])
			in.feed(p[cut:])
		}
		if in.state != stHead {
			b.Fatalf("state %d, reason %q", in.state, reasonText[in.why])
		}
	})
}
