package static

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"a.css": "a.css", "sub/a.css": "sub/a.css", "sub//a.css": "sub/a.css",
		"../a": "", "sub/../../a": "", ".env": "", "sub/.git/config": "", `sub\..\a`: "", "a\x00b": "", "": "",
	} {
		got, err := Clean(in)
		if want == "" && err == nil || want != "" && got != want {
			t.Errorf("Clean(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// A symlink in the release that points outside is never followed, and a
// later release's file wins over an older one's.
func TestServe(t *testing.T) {
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644)
	newer, older := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(newer, "a.txt"), []byte("new"), 0o644)
	os.WriteFile(filepath.Join(older, "a.txt"), []byte("old"), 0o644)
	os.WriteFile(filepath.Join(older, "only-old.txt"), []byte("old only"), 0o644)
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(newer, "abs-link"))
	os.Symlink("../"+filepath.Base(outside)+"/secret", filepath.Join(newer, "rel-link"))
	os.Mkdir(filepath.Join(newer, "dir"), 0o755)
	var dirs []*Dir
	for _, p := range []string{newer, older} {
		d, err := OpenDir(p)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		dirs = append(dirs, d)
	}
	for path, want := range map[string]string{"a.txt": "new", "only-old.txt": "old only", "abs-link": "", "rel-link": "", "dir": "", "nope": ""} {
		w := httptest.NewRecorder()
		found := Serve(w, httptest.NewRequest("GET", "/"+path, nil), dirs, path)
		if found != (want != "") || want != "" && w.Body.String() != want {
			t.Errorf("%s: found %v, body %q; want %q", path, found, w.Body.String(), want)
		}
	}
}

func TestAccepted(t *testing.T) {
	for h, want := range map[string]string{
		"gzip": "gzip", "br, gzip": "br,gzip", "gzip;q=1, br;q=0.5": "gzip,br", "br;q=0, gzip": "gzip", "*": "br,gzip", "identity": "", "": "",
	} {
		got := ""
		for i, e := range accepted(h) {
			if i > 0 {
				got += ","
			}
			got += e
		}
		if got != want {
			t.Errorf("accepted(%q) = %q, want %q", h, got, want)
		}
	}
}
