// Package herdconfig reads and writes herdctl's config file: where a
// cluster's fronts are and the operator credentials (cluster CA, client
// certificate and key) to reach them over mTLS. The first front writes one
// for its administrator to <data-dir>/admin.herdctl; it plays the part a
// kubeconfig plays for kubectl.
//
// The file is JSON and holds a private key, so it must be readable by its
// owner only: Read refuses a file that group or others may read.
package herdconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/herd-run/herd/internal/pki"
)

// AdminFile is the name of the config the first front writes in its data
// directory for the cluster's administrator.
const AdminFile = "admin.herdctl"

// maxSize bounds what Read reads: a config holds a few PEM blocks, a few
// KiB. A wrong path (a log, a device) is not read whole.
const maxSize = 1 << 20

// File is a herdctl config: where the fronts are and who the operator is.
type File struct {
	Addrs []string `json:"addrs"` // fronts' gRPC host:port
	Name  string   `json:"name"`  // operator name ("admin")
	Role  string   `json:"role"`  // pki.RoleOperator or pki.RoleReader
	CA    string   `json:"ca"`    // PEM: the cluster CA certificate
	Cert  string   `json:"cert"`  // PEM: the operator's client certificate
	Key   string   `json:"key"`   // PEM: its private key
}

// Bundle returns the file's credentials as a pki.Bundle, for
// pki.ClientTLS.
func (f *File) Bundle() *pki.Bundle {
	return &pki.Bundle{CAPEM: []byte(f.CA), CertPEM: []byte(f.Cert), KeyPEM: []byte(f.Key)}
}

// Validate checks that f can be used: at least one address, a known
// operator role (if one is given), a CA certificate, and a certificate
// with its matching key. It does not check expiry (see pki.Bundle.Expiry).
func (f *File) Validate() error {
	if len(f.Addrs) == 0 {
		return errors.New(`no front addresses ("addrs" is empty)`)
	}
	for i, a := range f.Addrs {
		if strings.TrimSpace(a) == "" {
			return fmt.Errorf("addrs[%d] is empty", i)
		}
	}
	if f.Role != "" && f.Role != pki.RoleOperator && f.Role != pki.RoleReader {
		return fmt.Errorf("role %q: want %q or %q", f.Role, pki.RoleOperator, pki.RoleReader)
	}
	b := f.Bundle()
	if strings.TrimSpace(f.CA) == "" {
		return errors.New(`no CA certificate ("ca" is empty)`)
	}
	if _, err := b.Pool(); err != nil {
		return fmt.Errorf(`"ca": %w`, err)
	}
	if strings.TrimSpace(f.Cert) == "" || strings.TrimSpace(f.Key) == "" {
		return errors.New(`no client certificate ("cert" and "key" are both required)`)
	}
	if _, err := b.TLSCertificate(); err != nil {
		return fmt.Errorf(`"cert"/"key": %w`, err)
	}
	return nil
}

// Read reads and validates the config at path. Every error names path. A
// file that group or others may read (mode & 0o077 != 0) is refused with
// the chmod that fixes it; a missing file's error wraps fs.ErrNotExist.
func Read(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, unwrapPath(err))
	}
	defer fh.Close()
	// Check the mode of the file opened, not of whatever the path names a
	// moment later.
	fi, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, unwrapPath(err))
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("config file %s is a directory, not a file", path)
	}
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("config file %s holds a private key but group or others may read it (mode %04o): run chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(fh, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, unwrapPath(err))
	}
	if len(data) > maxSize {
		return nil, fmt.Errorf("config file %s is larger than %d bytes: not a herdctl config", path, maxSize)
	}
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("config file %s is not a herdctl config (JSON): %w", path, err)
	}
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return &f, nil
}

// Write writes f to path as indented JSON with mode 0600, replacing any
// file there. It writes a temporary file in the same directory and renames
// it into place, so a reader sees the old file or the new, never a part.
// It refuses a File that Read would refuse.
func Write(path string, f *File) error {
	if err := f.Validate(); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	data = append(data, '\n')
	if err := writeAtomic(path, data); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// writeAtomic writes data to a temporary file next to path, mode 0600
// from its creation (os.CreateTemp), then renames it over path.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name) // gone after a successful rename
	if err := tmp.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	// Make the rename durable; not every system can sync a directory.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// unwrapPath drops an *fs.PathError's operation and path (the caller names
// the path once) and keeps its cause, so errors.Is still works.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
