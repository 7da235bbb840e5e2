// Package static serves an app's static files from its releases on the
// front, as nginx's `location /static/ { alias ...; }` does: validators
// and conditional requests, ranges, precompressed siblings, long caching
// for fingerprinted names; never a path outside the directory.
package static

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Dir is one release's directory for a URL prefix. Opening files through an
// os.Root means no path, and no symlink, can lead outside it.
type Dir struct {
	root *os.Root
}

// OpenDir opens dir (which must exist) for serving.
func OpenDir(dir string) (*Dir, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &Dir{root: r}, nil
}

// Close releases the directory.
func (d *Dir) Close() error { return d.root.Close() }

// fingerprinted names carry a content hash ("app.3f9a2c1d.css",
// "app-3f9a2c1d4b.js"): they never change, so clients may keep them.
var fingerprinted = regexp.MustCompile(`[.-][0-9a-fA-F]{8,}\.[A-Za-z0-9]+$`)

// ErrBadPath is a request path that can never name a file.
var ErrBadPath = errors.New("bad path")

// Clean checks a path below the URL prefix (already percent-decoded, as
// net/http gives it) and returns it relative to the directory. It refuses
// "..", backslashes, NUL and dotfiles (".env", ".git/config"): not found
// rather than served.
func Clean(rel string) (string, error) {
	if strings.ContainsAny(rel, "\\\x00") {
		return "", ErrBadPath
	}
	for _, seg := range strings.Split(rel, "/") {
		if seg == ".." || strings.HasPrefix(seg, ".") {
			return "", ErrBadPath
		}
	}
	clean := strings.TrimPrefix(path.Clean("/"+rel), "/")
	if clean == "" {
		return "", ErrBadPath
	}
	return clean, nil
}

// Serve answers r with the file rel from the first dir that has it
// (newest release first, so a page rendered by an older release still
// finds its fingerprinted assets in the older one). It reports whether a
// file was found; if not, nothing was written.
func Serve(w http.ResponseWriter, r *http.Request, dirs []*Dir, rel string) bool {
	name, err := Clean(rel)
	if err != nil {
		return false
	}
	for _, d := range dirs {
		if serveFrom(w, r, d, name) {
			return true
		}
	}
	return false
}

func serveFrom(w http.ResponseWriter, r *http.Request, d *Dir, name string) bool {
	f, fi, ok := open(d, name)
	if !ok {
		return false
	}
	defer f.Close()

	h := w.Header()
	if fingerprinted.MatchString(name) {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		// Revalidate every time: the next deploy may change the file.
		h.Set("Cache-Control", "no-cache")
	}
	ctype := contentType(name)
	h.Set("Content-Type", ctype)
	encoding := ""
	content, cfi := f, fi
	// A precompressed sibling, unless a range is asked for (ranges are of
	// the identity bytes).
	if r.Header.Get("Range") == "" && compressible(ctype) {
		h.Add("Vary", "Accept-Encoding")
		for _, enc := range accepted(r.Header.Get("Accept-Encoding")) {
			if zf, zfi, ok := open(d, name+suffix[enc]); ok {
				defer zf.Close()
				content, cfi, encoding = zf, zfi, enc
				break
			}
		}
	}
	if encoding != "" {
		h.Set("Content-Encoding", encoding)
	}
	// Size and modification time identify the bytes (releases are
	// immutable); the encoding is part of the representation.
	etag := `"` + strconv.FormatInt(cfi.Size(), 36) + "-" + strconv.FormatInt(cfi.ModTime().UnixNano(), 36)
	if encoding != "" {
		etag += "-" + encoding
	}
	h.Set("ETag", etag+`"`)
	// ServeContent does conditional requests, Range/206/416 and HEAD, and
	// copies an *os.File with sendfile when the writer allows it.
	http.ServeContent(w, r, name, fi.ModTime().Truncate(time.Second), content)
	return true
}

// open opens a regular file; directories and anything else are not found.
func open(d *Dir, name string) (*os.File, fs.FileInfo, bool) {
	f, err := d.root.Open(name)
	if err != nil {
		return nil, nil, false
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, false
	}
	return f, fi, true
}

var suffix = map[string]string{"br": ".br", "gzip": ".gz"}

// accepted lists the precompressed encodings the client takes, best first.
func accepted(header string) []string {
	var out []string
	q := map[string]float64{}
	for _, part := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		name = strings.ToLower(strings.TrimSpace(name))
		v := 1.0
		if k, val, ok := strings.Cut(strings.TrimSpace(params), "="); ok && strings.TrimSpace(k) == "q" {
			if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
				v = f
			}
		}
		q[name] = v
	}
	for _, enc := range []string{"br", "gzip"} {
		v, ok := q[enc]
		if !ok {
			v, ok = q["*"]
		}
		if ok && v > 0 {
			out = append(out, enc)
		}
	}
	if len(out) == 2 && q["gzip"] > q["br"] {
		out[0], out[1] = out[1], out[0]
	}
	return out
}

func contentType(name string) string {
	if t := mimeByExt(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}

func compressible(ctype string) bool {
	t, _, _ := strings.Cut(ctype, ";")
	switch {
	case strings.HasPrefix(t, "text/"):
		return true
	case t == "application/javascript", t == "application/json", t == "application/xml",
		t == "image/svg+xml", t == "application/wasm", t == "application/manifest+json":
		return true
	}
	return false
}

// String is for logs.
func (d *Dir) String() string { return fmt.Sprint(d.root.Name()) }
