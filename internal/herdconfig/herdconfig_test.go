package herdconfig

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/herd-run/herd/internal/pki"
)

// validFile returns a config with credentials issued by a new CA.
func validFile(t *testing.T) *File {
	t.Helper()
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.IssueBundle(pki.RoleOperator, "admin", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &File{
		Addrs: []string{"10.0.0.1:7700", "10.0.0.2:7700"},
		Name:  "admin",
		Role:  pki.RoleOperator,
		CA:    string(b.CAPEM),
		Cert:  string(b.CertPEM),
		Key:   string(b.KeyPEM),
	}
}

// writeRaw writes data at path with mode perm (whatever the umask).
func writeRaw(t *testing.T, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}

func TestWriteRead(t *testing.T) {
	f := validFile(t)
	path := filepath.Join(t.TempDir(), AdminFile)
	if err := Write(path, f); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %04o, want 0600", fi.Mode().Perm())
		}
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, f) {
		t.Errorf("Read = %+v, want %+v", got, f)
	}

	// Indented JSON with the documented keys.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "\n  \"addrs\": [") || !strings.HasSuffix(string(data), "}\n") {
		t.Errorf("not indented JSON ending in a newline:\n%s", data)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(data, &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"addrs", "name", "role", "ca", "cert", "key"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("key %q missing from %s", k, data)
		}
	}
}

func TestWriteOverwritesAtomically(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, AdminFile)
	first := validFile(t)
	if err := Write(path, first); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" {
		// An older file with a loose mode is replaced, mode and all.
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	second := validFile(t)
	second.Addrs = []string{"192.0.2.1:7700"}
	if err := Write(path, second); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, second) {
		t.Errorf("after overwrite Read = %+v, want the second file", got)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only %s (no temporary files left)", names, AdminFile)
	}
}

func TestWriteRefusesInvalid(t *testing.T) {
	f := validFile(t)
	f.Addrs = nil
	path := filepath.Join(t.TempDir(), AdminFile)
	if err := Write(path, f); err == nil || !strings.Contains(err.Error(), "addrs") {
		t.Fatalf("Write without addrs: err = %v, want one about addrs", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused Write left a file: %v", err)
	}
}

func TestWriteMissingDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", AdminFile)
	err := Write(path, validFile(t))
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want one naming %s", err, path)
	}
}

func TestReadMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), AdminFile)
	_, err := Read(path)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), path) || strings.Count(err.Error(), path) != 1 {
		t.Errorf("err = %q, want the path named once", err)
	}
}

func TestReadRefusesLooseMode(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix modes")
	}
	data, err := json.Marshal(validFile(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, perm := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o601} {
		path := filepath.Join(t.TempDir(), AdminFile)
		writeRaw(t, path, data, perm)
		_, err := Read(path)
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("mode %04o: err = %v, want one saying chmod 600 %s", perm, err, path)
		}
	}
	// Owner-only modes are fine, read-only included.
	for _, perm := range []os.FileMode{0o600, 0o400} {
		path := filepath.Join(t.TempDir(), AdminFile)
		writeRaw(t, path, data, perm)
		if _, err := Read(path); err != nil {
			t.Errorf("mode %04o: %v", perm, err)
		}
	}
}

func TestReadRefusesBadContent(t *testing.T) {
	other := validFile(t) // another CA, another key
	for _, tc := range []struct {
		name string
		edit func(f *File)
		raw  string
		want string
	}{
		{name: "not JSON", raw: "addrs: [a]\n", want: "not a herdctl config"},
		{name: "empty file", raw: "", want: "not a herdctl config"},
		{name: "no addrs", edit: func(f *File) { f.Addrs = nil }, want: "addrs"},
		{name: "blank addr", edit: func(f *File) { f.Addrs = []string{"10.0.0.1:7700", " "} }, want: "addrs[1]"},
		{name: "bad role", edit: func(f *File) { f.Role = "root" }, want: `role "root"`},
		{name: "no CA", edit: func(f *File) { f.CA = "" }, want: "no CA certificate"},
		{name: "bad CA", edit: func(f *File) { f.CA = "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n" }, want: `"ca"`},
		{name: "no cert", edit: func(f *File) { f.Cert = "" }, want: "no client certificate"},
		{name: "no key", edit: func(f *File) { f.Key = "" }, want: "no client certificate"},
		{name: "bad cert", edit: func(f *File) { f.Cert = "garbage" }, want: `"cert"/"key"`},
		{name: "key of another cert", edit: func(f *File) { f.Key = other.Key }, want: `"cert"/"key"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.raw)
			if tc.edit != nil {
				f := validFile(t)
				tc.edit(f)
				var err error
				if data, err = json.Marshal(f); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(t.TempDir(), AdminFile)
			writeRaw(t, path, data, 0o600)
			_, err := Read(path)
			if err == nil {
				t.Fatal("Read accepted it")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q, want one naming %s and saying %q", err, path, tc.want)
			}
		})
	}
}

func TestReadDirectory(t *testing.T) {
	dir := t.TempDir()
	if runtime.GOOS != "windows" {
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("err = %v, want one saying it is a directory", err)
	}
}

func TestReadTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), AdminFile)
	writeRaw(t, path, []byte(strings.Repeat(" ", maxSize+1)), 0o600)
	if _, err := Read(path); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v, want one about the size", err)
	}
}

func TestReaderRoleAndUnknownFields(t *testing.T) {
	f := validFile(t)
	f.Role = pki.RoleReader
	data, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	// A field a later herd may add does not make an older herdctl refuse
	// the file.
	data = append([]byte(`{"comment": "made by a newer herd",`), data[1:]...)
	path := filepath.Join(t.TempDir(), AdminFile)
	writeRaw(t, path, data, 0o600)
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Role != pki.RoleReader {
		t.Errorf("Role = %q", got.Role)
	}
}

func TestBundle(t *testing.T) {
	f := validFile(t)
	b := f.Bundle()
	if string(b.CAPEM) != f.CA || string(b.CertPEM) != f.Cert || string(b.KeyPEM) != f.Key {
		t.Fatal("Bundle does not hold the file's PEMs")
	}
	if _, err := pki.ClientTLS(b, pki.RoleFront); err != nil {
		t.Fatalf("ClientTLS: %v", err)
	}
}
