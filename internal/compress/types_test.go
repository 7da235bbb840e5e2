package compress

import "testing"

func TestCompressible(t *testing.T) {
	cases := []struct {
		contentType string
		want        bool
	}{
		{"text/html", true},
		{"text/html; charset=utf-8", true},
		{"TEXT/HTML; charset=UTF-8", true},
		{" text/plain ", true},
		{"text/css", true},
		{"text/csv", true},
		{"text/javascript", true},
		{"application/json", true},
		{"application/json; charset=utf-8", true},
		{"application/javascript", true},
		{"application/xml", true},
		{"application/wasm", true},
		{"application/ld+json", true},
		{"application/problem+json", true},
		{"application/vnd.api+json", true},
		{"application/rss+xml", true},
		{"application/xhtml+xml", true},
		{"image/svg+xml", true},
		{"font/ttf", true},
		{"text/event-stream", false},
		{"Text/Event-Stream; charset=utf-8", false},
		{"image/png", false},
		{"image/jpeg", false},
		{"image/webp", false},
		{"video/mp4", false},
		{"audio/mpeg", false},
		{"font/woff2", false},
		{"application/zip", false},
		{"application/gzip", false},
		{"application/x-gzip", false},
		{"application/octet-stream", false},
		{"application/pdf", false},
		{"application/grpc", false},
		{"application/+json", false},
		{"multipart/form-data; boundary=x", false},
		{"text", false},
		{"text/", false},
		{"", false},
	}
	for _, tc := range cases {
		if got := Compressible(tc.contentType); got != tc.want {
			t.Errorf("Compressible(%q) = %v, want %v", tc.contentType, got, tc.want)
		}
	}
}
