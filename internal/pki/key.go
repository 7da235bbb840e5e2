// Package pki is herd's small public key infrastructure: the certificates
// and keys that herd-front, herd-node and herdctl use to authenticate one
// another with mutual TLS.
//
// A cluster has two secrets:
//
//   - the cluster key (ClusterKey), 32 random bytes that every member
//     knows; a newcomer proves it knows the key (HMAC, see Sign) to be
//     handed a certificate, so the key is only needed when joining;
//   - the cluster CA (CA), which signs one leaf certificate per process.
//
// A leaf certificate names what its holder may do (a role: front, node,
// operator or read-only operator) and who it is (a member or operator
// name) in a URI SAN "herd://<role>/<name>". Peers are reached by IP:port,
// so certificates are checked against the CA and their role, never against
// a hostname (see ClientTLS).
package pki

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// ClusterKey is the cluster's shared secret: 32 random bytes, kept
// base64-encoded (standard encoding) in a file readable only by its owner.
type ClusterKey [32]byte

// NewClusterKey draws a fresh key from crypto/rand.
func NewClusterKey() (ClusterKey, error) {
	var k ClusterKey
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("cluster key: %w", err)
	}
	return k, nil
}

// String returns the key in base64, the form written to files and typed by
// operators. It is the secret itself: do not log it.
func (k ClusterKey) String() string {
	return base64.StdEncoding.EncodeToString(k[:])
}

// ParseClusterKey reads a key written by String; surrounding white space
// (such as a file's final newline) is ignored.
func ParseClusterKey(s string) (ClusterKey, error) {
	var k ClusterKey
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return k, errors.New("cluster key: not base64")
	}
	if len(b) != len(k) {
		return k, fmt.Errorf("cluster key: want %d bytes, got %d", len(k), len(b))
	}
	copy(k[:], b)
	return k, nil
}

// ReadClusterKeyFile reads a key file written by WriteClusterKeyFile. It
// refuses a file that any user may read (the key lets one join the
// cluster), asking for chmod 600 instead; group-readable files are allowed
// so that a service group can share the key.
func ReadClusterKeyFile(path string) (ClusterKey, error) {
	b, err := readKeyFile(path)
	if err != nil {
		return ClusterKey{}, err
	}
	k, err := ParseClusterKey(string(b))
	if err != nil {
		return ClusterKey{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// ReadKeyring reads a key file that may hold several keys, one per line
// (blank lines and lines starting with # are skipped): the first is the
// one in use, the others are still accepted. That is how a key is rotated
// without splitting the cluster: add the new key as a second line on every
// member, then make it the first everywhere, then drop the old one.
func ReadKeyring(path string) ([]ClusterKey, error) {
	b, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	var keys []ClusterKey
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := ParseClusterKey(line)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, i+1, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("cluster key file %s holds no key", path)
	}
	return keys, nil
}

// readKeyFile reads a key file, refusing one every user may read.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	defer f.Close()
	// Check the mode of the file we opened, not of whatever the path
	// names a moment later.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o004 != 0 {
		return nil, fmt.Errorf("cluster key file %s is readable by all users (mode %04o): run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	// A key file holds a few dozen bytes; reading at most 4 KiB keeps a
	// wrong path (a log, a device) from being read whole.
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, fmt.Errorf("cluster key: read %s: %w", path, err)
	}
	return b, nil
}

// WriteClusterKeyFile writes k to a new file with mode 0600. It never
// replaces an existing file (the error wraps os.ErrExist): overwriting a
// cluster's key by mistake would lock new members out. The file appears
// whole or not at all.
func WriteClusterKeyFile(path string, k ClusterKey) error {
	if err := writeFileAtomic(path, []byte(k.String()+"\n"), 0o600, false); err != nil {
		return fmt.Errorf("cluster key: %w", err)
	}
	return nil
}

// Sign returns HMAC-SHA256 of parts under the key: whoever sends it proves
// it knows the key without sending the key. Each part is preceded by its
// length, so ("ab", "c") and ("a", "bc") sign differently.
func (k ClusterKey) Sign(parts ...[]byte) []byte {
	m := hmac.New(sha256.New, k[:])
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		m.Write(n[:])
		m.Write(p)
	}
	return m.Sum(nil)
}

// Verify reports whether mac is Sign(parts...), in constant time.
func (k ClusterKey) Verify(mac []byte, parts ...[]byte) bool {
	return hmac.Equal(mac, k.Sign(parts...))
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, so readers see the old content or the new, never a part. With
// replace false it fails with os.ErrExist rather than replace a file: the
// temporary file is hard-linked into place, which (unlike rename) never
// overwrites.
func writeFileAtomic(path string, data []byte, perm os.FileMode, replace bool) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a rename it is gone; after a link it is a second name
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if replace {
		return os.Rename(tmp, path)
	}
	exists := &os.PathError{Op: "create", Path: path, Err: os.ErrExist}
	err = os.Link(tmp, path)
	if err == nil {
		return nil
	}
	if errors.Is(err, os.ErrExist) {
		return exists // not the link error, which names the temporary file
	}
	// The file system has no hard links: check, then rename. Only a
	// concurrent writer of the same path can slip in between.
	if _, serr := os.Lstat(path); serr == nil {
		return exists
	}
	return os.Rename(tmp, path)
}
