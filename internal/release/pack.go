package release

import (
	"archive/tar"
	"cmp"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Pack writes dir as a deterministic gzip'd tar to w and returns the sha256
// (lower-case hex) and size of what it wrote.
//
// Deterministic: entries sorted by path, uid/gid 0, no user/group names, gzip
// header without name/mtime, file modes kept as 0755 for dirs and for files
// either 0755 (if any exec bit) or 0644; file mtimes are kept (static files
// need Last-Modified later) truncated to seconds. Regular files, directories
// and symlinks (stored as symlinks, target kept verbatim) only; other types
// (sockets, devices, fifos) give an error naming the path. Paths in the
// archive are relative, slash-separated, no leading "./". The same directory
// content packs to the same digest (for a given Go release, whose compressor
// output is what gets hashed).
func Pack(dir string, w io.Writer) (digest string, size int64, err error) {
	// Reading through an os.Root means a symlink swapped in while packing
	// cannot make us archive files from outside dir.
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", 0, fmt.Errorf("pack: %w", err)
	}
	defer root.Close()

	entries, err := listTree(root)
	if err != nil {
		return "", 0, err
	}

	hw := newHashingWriter()
	zw := gzip.NewWriter(io.MultiWriter(w, hw)) // zero Header: no name, no mtime
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		if err := addEntry(tw, root, e); err != nil {
			return "", 0, err
		}
	}
	if err := tw.Close(); err != nil {
		return "", 0, fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := zw.Close(); err != nil {
		return "", 0, fmt.Errorf("pack %s: %w", dir, err)
	}
	return hw.digest(), hw.n, nil
}

type treeEntry struct {
	name string // slash-separated, relative to the root
	info fs.FileInfo
}

// listTree returns every entry below root sorted by path. WalkDir's
// per-directory order is not a total order on paths ("a/x" comes before
// "a-b"), so sort explicitly.
func listTree(root *os.Root) ([]treeEntry, error) {
	var entries []treeEntry
	err := fs.WalkDir(root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("pack %s: %w", name, err)
		}
		if name == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("pack %s: %w", name, err)
		}
		switch t := info.Mode().Type(); t {
		case 0, fs.ModeDir, fs.ModeSymlink:
		default:
			return fmt.Errorf("pack %s: unsupported file type %v", name, t)
		}
		entries = append(entries, treeEntry{name: name, info: info})
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(entries, func(a, b treeEntry) int { return cmp.Compare(a.name, b.name) })
	return entries, nil
}

// epoch is the mtime of directories and symlinks: a directory's mtime changes
// whenever anything inside it is added or removed, so keeping it would make
// the digest depend on history rather than content.
var epoch = time.Unix(0, 0)

func addEntry(tw *tar.Writer, root *os.Root, e treeEntry) error {
	hdr := &tar.Header{Name: e.name, ModTime: epoch}
	switch e.info.Mode().Type() {
	case fs.ModeDir:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
		hdr.Mode = 0o755
	case fs.ModeSymlink:
		target, err := root.Readlink(filepath.FromSlash(e.name))
		if err != nil {
			return fmt.Errorf("pack %s: %w", e.name, err)
		}
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = target
		hdr.Mode = 0o777
	default:
		return addFile(tw, root, hdr)
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("pack %s: %w", e.name, err)
	}
	return nil
}

func addFile(tw *tar.Writer, root *os.Root, hdr *tar.Header) error {
	f, err := root.Open(filepath.FromSlash(hdr.Name))
	if err != nil {
		return fmt.Errorf("pack %s: %w", hdr.Name, err)
	}
	defer f.Close()
	// Stat the open file so size, mode and mtime describe the bytes we read.
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("pack %s: %w", hdr.Name, err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("pack %s: changed type while packing", hdr.Name)
	}
	hdr.Typeflag = tar.TypeReg
	hdr.Size = info.Size()
	hdr.Mode = fileMode(int64(info.Mode().Perm()))
	hdr.ModTime = time.Unix(info.ModTime().Unix(), 0)
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("pack %s: %w", hdr.Name, err)
	}
	if _, err := io.CopyN(tw, f, hdr.Size); err != nil {
		return fmt.Errorf("pack %s: %w", hdr.Name, err)
	}
	return nil
}

// fileMode normalises permission bits to 0755 or 0644, keeping only whether
// the file is executable.
func fileMode(perm int64) int64 {
	if perm&0o111 != 0 {
		return 0o755
	}
	return 0o644
}
