package clustertest

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
)

// TestStaticFiles: the front serves an app's static files from its own
// copy of the release, with validators, ranges and precompressed
// siblings, and refuses every way out of the directory.
func TestStaticFiles(t *testing.T) {
	c := Start(t, 1)
	dir := c.HelloDir(map[string]string{"secret.txt": "not static"})
	css := strings.Repeat("body { color: #123456 }\n", 100)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(css))
	zw.Close()
	files := map[string][]byte{
		"static/app.css":         []byte(css),
		"static/app.css.gz":      gz.Bytes(),
		"static/app.0123abcd.js": []byte("console.log(1)\n"),
		"static/sub/page.txt":    []byte("0123456789"),
		"static/big.txt":         []byte(strings.Repeat("herd compresses text on the fly\n", 200)),
		"static/.env":            []byte("SECRET=1"),
		"static/sub/.git/config": []byte("[core]"),
	}
	for name, b := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if r := deployHello(c, dir, "--workers", "1", "--static", "/static/=static/"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}

	get := func(path string, h http.Header) (*http.Response, string) {
		t.Helper()
		resp, body, err := c.Do("GET", helloHost, path, h, nil)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return resp, string(body)
	}

	resp, body := get("/static/app.css", nil)
	if resp.StatusCode != 200 || body != css || resp.Header.Get("Content-Type") != "text/css; charset=utf-8" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("app.css: %d %v", resp.StatusCode, resp.Header)
	}
	etag, lastMod := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	if etag == "" || lastMod == "" {
		t.Fatalf("no validators: %v", resp.Header)
	}
	if resp, _ := get("/static/app.css", http.Header{"If-None-Match": {etag}}); resp.StatusCode != 304 {
		t.Errorf("If-None-Match: %d, want 304", resp.StatusCode)
	}
	if resp, _ := get("/static/app.css", http.Header{"If-Modified-Since": {lastMod}}); resp.StatusCode != 304 {
		t.Errorf("If-Modified-Since: %d, want 304", resp.StatusCode)
	}
	if resp, body := get("/static/sub/page.txt", http.Header{"Range": {"bytes=2-4"}}); resp.StatusCode != 206 || body != "234" || resp.Header.Get("Content-Range") != "bytes 2-4/10" {
		t.Errorf("Range: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, _ := get("/static/sub/page.txt", http.Header{"Range": {"bytes=20-30"}}); resp.StatusCode != 416 {
		t.Errorf("unsatisfiable Range: %d, want 416", resp.StatusCode)
	}
	// The client (no automatic decompression: Accept-Encoding set by hand)
	// gets the precompressed sibling.
	resp, body = get("/static/app.css", http.Header{"Accept-Encoding": {"gzip"}})
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" || body != gz.String() || !strings.Contains(resp.Header.Get("Vary"), "Accept-Encoding") {
		t.Errorf("precompressed: %d %v (%d bytes)", resp.StatusCode, resp.Header, len(body))
	}
	if resp, _ := get("/static/app.0123abcd.js", nil); resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
		t.Errorf("fingerprinted: %d %v", resp.StatusCode, resp.Header)
	}
	for _, path := range []string{
		"/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/..%2fsecret.txt", "/static/sub/..%2f..%2fsecret.txt",
		"/static/..\\secret.txt", "/static/sub%5c..%5c..%5csecret.txt", "/static/.env", "/static/sub/.git/config",
		"/static/nope.css", "/static/sub", "/static/",
	} {
		resp, body := get(path, nil)
		if resp.StatusCode == 200 || strings.Contains(body, "not static") || strings.Contains(body, "SECRET") {
			t.Errorf("GET %s: %d %q", path, resp.StatusCode, body)
		}
	}
	if resp, _, _ := c.Do("POST", helloHost, "/static/app.css", nil, strings.NewReader("x")); resp.StatusCode != 405 {
		t.Errorf("POST to a static file: %d, want 405", resp.StatusCode)
	}
	// No precompressed sibling: compressed on the fly (brotli preferred),
	// but never for a range.
	big := strings.Repeat("herd compresses text on the fly\n", 200)
	resp, body = get("/static/big.txt", http.Header{"Accept-Encoding": {"gzip, br"}})
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "br" || !strings.Contains(resp.Header.Get("Vary"), "Accept-Encoding") {
		t.Errorf("on the fly: %d %v", resp.StatusCode, resp.Header)
	} else if plain, err := io.ReadAll(brotli.NewReader(strings.NewReader(body))); err != nil || string(plain) != big || len(body) >= len(big)/4 {
		t.Errorf("brotli body: %d bytes for %d, decodes to %d bytes, %v", len(body), len(big), len(plain), err)
	}
	if resp, body := get("/static/big.txt", http.Header{"Accept-Encoding": {"gzip, br"}, "Range": {"bytes=0-3"}}); resp.StatusCode != 206 || resp.Header.Get("Content-Encoding") != "" || body != "herd" {
		t.Errorf("range with Accept-Encoding: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	// Everything else still goes to the app.
	if h, err := c.GetHello(helloHost); err != nil || h.App != "hello" {
		t.Errorf("app behind the static prefix: %+v %v", h, err)
	}
}
