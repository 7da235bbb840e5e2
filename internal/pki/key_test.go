package pki

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestClusterKeyRoundTrip(t *testing.T) {
	k, err := NewClusterKey()
	if err != nil {
		t.Fatal(err)
	}
	if k == (ClusterKey{}) {
		t.Fatal("NewClusterKey returned the zero key")
	}
	k2, err := NewClusterKey()
	if err != nil {
		t.Fatal(err)
	}
	if k == k2 {
		t.Fatal("two new keys are equal")
	}
	s := k.String()
	if len(s) != 44 {
		t.Errorf("String() = %q, want 44 base64 characters", s)
	}
	for _, in := range []string{s, s + "\n", "  \t" + s + "\r\n"} {
		got, err := ParseClusterKey(in)
		if err != nil {
			t.Fatalf("ParseClusterKey(%q): %v", in, err)
		}
		if got != k {
			t.Fatalf("ParseClusterKey(%q) = %v, want %v", in, got, k)
		}
	}
}

func TestParseClusterKeyErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"not base64!", "cluster key: not base64"},
		{"abc", "cluster key: not base64"}, // bad padding
		{base64.RawStdEncoding.EncodeToString(make([]byte, 32)), "cluster key: not base64"},
		{base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)), "cluster key: not base64"},
		{"", "cluster key: want 32 bytes, got 0"},
		{base64.StdEncoding.EncodeToString(make([]byte, 16)), "cluster key: want 32 bytes, got 16"},
		{base64.StdEncoding.EncodeToString(make([]byte, 33)), "cluster key: want 32 bytes, got 33"},
	} {
		_, err := ParseClusterKey(tc.in)
		if err == nil || err.Error() != tc.want {
			t.Errorf("ParseClusterKey(%q) error = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestClusterKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cluster.key")
	k, _ := NewClusterKey()
	if err := WriteClusterKeyFile(path, k); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("mode = %04o, want 0600", fi.Mode().Perm())
		}
	}
	got, err := ReadClusterKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != k {
		t.Fatal("read key differs from written key")
	}

	// Refuses to overwrite, and leaves the file as it was.
	other, _ := NewClusterKey()
	err = WriteClusterKeyFile(path, other)
	if !errors.Is(err, os.ErrExist) {
		t.Fatalf("second write: error %v, want os.ErrExist", err)
	}
	if want := "cluster key: create " + path + ": file already exists"; err.Error() != want {
		t.Errorf("second write: error %q, want %q", err, want)
	}
	if got, _ := ReadClusterKeyFile(path); got != k {
		t.Fatal("refused write changed the file")
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("dir holds %v, want only cluster.key", names)
	}
}

func TestReadClusterKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.key")
	_, err := ReadClusterKeyFile(missing)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: error %v, want ErrNotExist naming the path", err)
	}

	garbage := filepath.Join(dir, "garbage.key")
	os.WriteFile(garbage, []byte("hello\n"), 0o600)
	_, err = ReadClusterKeyFile(garbage)
	if err == nil || !strings.Contains(err.Error(), garbage) || !strings.Contains(err.Error(), "cluster key: not base64") {
		t.Errorf("garbage file: error %v, want one naming the path and 'not base64'", err)
	}

	short := filepath.Join(dir, "short.key")
	os.WriteFile(short, []byte(base64.StdEncoding.EncodeToString(make([]byte, 8))), 0o600)
	_, err = ReadClusterKeyFile(short)
	if err == nil || !strings.Contains(err.Error(), short) || !strings.Contains(err.Error(), "want 32 bytes, got 8") {
		t.Errorf("short file: error %v", err)
	}

	big := filepath.Join(dir, "big.key")
	os.WriteFile(big, bytes.Repeat([]byte("A"), 10000), 0o600)
	if _, err := ReadClusterKeyFile(big); err == nil {
		t.Error("a 10 kB file was accepted as a key")
	}
}

func TestReadClusterKeyFileMode(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix file modes")
	}
	path := filepath.Join(t.TempDir(), "cluster.key")
	k, _ := NewClusterKey()
	if err := WriteClusterKeyFile(path, k); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o640, true}, // a service group may share the key
		{0o644, false},
		{0o604, false},
		{0o666, false},
	} {
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		got, err := ReadClusterKeyFile(path)
		if tc.ok {
			if err != nil || got != k {
				t.Errorf("mode %04o: %v", tc.mode, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("mode %04o: accepted a world-readable key file", tc.mode)
			continue
		}
		if !strings.Contains(err.Error(), "chmod 600") || !strings.Contains(err.Error(), path) {
			t.Errorf("mode %04o: error %q should name the path and say chmod 600", tc.mode, err)
		}
	}
}

func TestWriteClusterKeyFileBadDir(t *testing.T) {
	k, _ := NewClusterKey()
	err := WriteClusterKeyFile(filepath.Join(t.TempDir(), "no", "such", "dir", "k"), k)
	if err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}

func TestSignVerify(t *testing.T) {
	k, _ := NewClusterKey()
	msg := [][]byte{[]byte("join"), []byte("node-1"), []byte("nonce")}
	mac := k.Sign(msg...)
	if len(mac) != 32 {
		t.Fatalf("MAC is %d bytes, want 32", len(mac))
	}
	if !bytes.Equal(mac, k.Sign(msg...)) {
		t.Fatal("Sign is not deterministic")
	}
	if !k.Verify(mac, msg...) {
		t.Fatal("Verify rejects a good MAC")
	}

	// Part boundaries count.
	abThenC := k.Sign([]byte("ab"), []byte("c"))
	aThenBC := k.Sign([]byte("a"), []byte("bc"))
	if bytes.Equal(abThenC, aThenBC) {
		t.Fatal(`Sign("ab","c") == Sign("a","bc")`)
	}
	if k.Verify(abThenC, []byte("a"), []byte("bc")) {
		t.Fatal("Verify accepts a MAC across a moved part boundary")
	}
	if bytes.Equal(k.Sign([]byte("a")), k.Sign([]byte("a"), nil)) {
		t.Fatal(`Sign("a") == Sign("a", "")`)
	}
	if bytes.Equal(k.Sign(), k.Sign(nil)) {
		t.Fatal(`Sign() == Sign("")`)
	}

	// Another key, or any change to the MAC or message, fails.
	other, _ := NewClusterKey()
	if other.Verify(mac, msg...) {
		t.Fatal("Verify accepts a MAC made with another key")
	}
	bad := bytes.Clone(mac)
	bad[0] ^= 1
	if k.Verify(bad, msg...) {
		t.Fatal("Verify accepts a flipped bit")
	}
	if k.Verify(mac[:31], msg...) || k.Verify(nil, msg...) {
		t.Fatal("Verify accepts a short MAC")
	}
	if k.Verify(mac, []byte("join"), []byte("node-2"), []byte("nonce")) {
		t.Fatal("Verify accepts a changed message")
	}
}

func TestReadKeyring(t *testing.T) {
	dir := t.TempDir()
	a, _ := NewClusterKey()
	b, _ := NewClusterKey()
	path := filepath.Join(dir, "keys")
	if err := os.WriteFile(path, []byte("# rotating\n"+b.String()+"\n\n"+a.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := ReadKeyring(path)
	if err != nil || len(keys) != 2 || keys[0] != b || keys[1] != a {
		t.Fatalf("ReadKeyring = %v, %v; want [b a]", keys, err)
	}
	for _, bad := range []string{"# nothing\n", a.String() + "\nnot-a-key\n"} {
		os.WriteFile(path, []byte(bad), 0o600)
		if _, err := ReadKeyring(path); err == nil {
			t.Errorf("ReadKeyring(%q) succeeded", bad)
		}
	}
	os.Chmod(path, 0o644)
	os.WriteFile(path, []byte(a.String()), 0o644)
	if _, err := ReadKeyring(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a world-readable keyring: %v", err)
	}
}
