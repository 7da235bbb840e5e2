package release

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

var (
	// ErrUnsafe is wrapped by Unpack errors for entries that could escape
	// the destination or have a forbidden type.
	ErrUnsafe = errors.New("unsafe archive entry")
	// ErrTooLarge is wrapped by Unpack errors for archives exceeding Limits.
	ErrTooLarge = errors.New("archive exceeds limits")
)

// Limits bound what Unpack accepts. A zero Limits accepts only an archive of
// nothing; start from DefaultLimits.
type Limits struct {
	MaxBytes int64 // total uncompressed bytes of regular files
	MaxFiles int   // number of entries
}

// DefaultLimits returns limits of 1 GiB and 100000 entries.
func DefaultLimits() Limits {
	return Limits{MaxBytes: 1 << 30, MaxFiles: 100000}
}

const (
	// entryOverhead is what the stream budget allows per entry on top of
	// file contents: a header block, a PAX header carrying a long path and
	// link target, and block padding.
	entryOverhead = 16 << 10
	// maxLinkTarget is Linux's PATH_MAX; longer targets cannot be created.
	maxLinkTarget = 4096
)

// Unpack extracts a gzip'd tar from r into dest, which must not exist yet.
//
// It extracts into a sibling temp dir and renames it to dest only when
// everything succeeded, so a partial unpack never looks complete; the temp
// dir is removed on error. It refuses, with an error naming the entry and
// wrapping ErrUnsafe: absolute paths, ".." components, symlinks whose target
// is absolute or resolves (following the archive's own symlinks) outside
// dest, entries below a symlink, hard links, devices, fifos and duplicate
// entries. Ownership is not restored; setuid/setgid/sticky bits are dropped;
// modes become 0755 for dirs and 0755/0644 for files (exec bit kept); file
// mtimes are restored. Exceeding lim is an error wrapping ErrTooLarge.
func Unpack(r io.Reader, dest string, lim Limits) (err error) {
	dest = filepath.Clean(dest)
	if _, err := os.Lstat(dest); err == nil {
		return fmt.Errorf("unpack: %s: %w", dest, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unpack: %w", err)
	}
	// A sibling so the final rename stays within one file system.
	tmp, err := os.MkdirTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".unpack-*")
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := extract(r, tmp, lim); err != nil {
		return fmt.Errorf("unpack %s: %w", dest, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	if err := os.Rename(tmp, dest); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	return nil
}

type kind int

const (
	kindDir         kind = iota
	kindImplicitDir      // created as the parent of an entry, not listed (yet)
	kindFile
	kindSymlink
)

type node struct {
	kind   kind
	target string // for symlinks
}

// extractor writes entries below root and keeps a model of everything it
// created, keyed by slash-separated path. Because no entry may sit below a
// symlink, every key is a physical path, which lets symlinks be checked
// against the model instead of the file system.
type extractor struct {
	root  *os.Root
	lim   Limits
	nodes map[string]node
	links []string // symlinks, created last
	files int
	bytes int64

	resolved  map[string][]string // symlink -> components of where it points
	resolving map[string]bool     // symlinks being resolved, to detect loops
}

func extract(r io.Reader, dir string, lim Limits) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("read archive: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()

	x := &extractor{
		root:      root,
		lim:       lim,
		nodes:     make(map[string]node),
		resolved:  make(map[string][]string),
		resolving: make(map[string]bool),
	}
	// The tar reader consumes PAX and GNU long-name headers without
	// returning them, so counting entries and file bytes alone would not
	// bound how much it decompresses.
	budget := streamBudget(lim)
	tr := tar.NewReader(&boundedReader{r: zr, left: budget, limit: budget})
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if err := x.add(hdr, tr); err != nil {
			return err
		}
	}
	return x.createLinks()
}

func (x *extractor) add(hdr *tar.Header, body io.Reader) error {
	x.files++
	if x.files > x.lim.MaxFiles {
		return fmt.Errorf("entry %q: %w: more than %d entries", hdr.Name, ErrTooLarge, x.lim.MaxFiles)
	}
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // archive-wide metadata, e.g. git archive's commit id
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	if name == "." {
		if hdr.Typeflag == tar.TypeDir {
			return nil // the "./" written by tar -C dir .
		}
		return fmt.Errorf("entry %q: %w: not a directory", hdr.Name, ErrUnsafe)
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		err = x.mkdir(name)
	case tar.TypeReg:
		err = x.writeFile(name, hdr, body)
	case tar.TypeSymlink:
		err = x.addLink(name, hdr.Linkname)
	case tar.TypeLink:
		err = fmt.Errorf("%w: hard link", ErrUnsafe)
	case tar.TypeChar, tar.TypeBlock:
		err = fmt.Errorf("%w: device", ErrUnsafe)
	case tar.TypeFifo:
		err = fmt.Errorf("%w: fifo", ErrUnsafe)
	default:
		err = fmt.Errorf("%w: unsupported type %q", ErrUnsafe, hdr.Typeflag)
	}
	if err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	return nil
}

// cleanName turns an archive path into a slash-separated path relative to the
// destination, or "." for the destination itself.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty name", ErrUnsafe)
	}
	if path.IsAbs(name) || filepath.IsAbs(name) {
		return "", fmt.Errorf("%w: absolute path", ErrUnsafe)
	}
	var parts []string
	for p := range strings.SplitSeq(name, "/") {
		switch p {
		case "", ".":
		case "..":
			return "", fmt.Errorf("%w: \"..\" in path", ErrUnsafe)
		default:
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return ".", nil
	}
	return strings.Join(parts, "/"), nil
}

// claim records name as a new node, creating missing parent
// directories. It refuses duplicates and anything below a symlink or a file.
func (x *extractor) claim(name string, n node) error {
	if _, ok := x.nodes[name]; ok {
		return fmt.Errorf("%w: duplicate entry", ErrUnsafe)
	}
	for i := range len(name) {
		if name[i] != '/' {
			continue
		}
		parent := name[:i]
		p, ok := x.nodes[parent]
		switch {
		case !ok:
			if err := x.makeDir(parent); err != nil {
				return err
			}
			x.nodes[parent] = node{kind: kindImplicitDir}
		case p.kind == kindSymlink:
			return fmt.Errorf("%w: parent %q is a symlink", ErrUnsafe, parent)
		case p.kind == kindFile:
			return fmt.Errorf("%w: parent %q is a file", ErrUnsafe, parent)
		}
	}
	x.nodes[name] = n
	return nil
}

func (x *extractor) mkdir(name string) error {
	if n, ok := x.nodes[name]; ok && n.kind == kindImplicitDir {
		// Listed after its contents, as some archivers do.
		x.nodes[name] = node{kind: kindDir}
		return nil
	}
	if err := x.claim(name, node{kind: kindDir}); err != nil {
		return err
	}
	return x.makeDir(name)
}

func (x *extractor) makeDir(name string) error {
	n := filepath.FromSlash(name)
	if err := x.root.Mkdir(n, 0o755); err != nil {
		return err
	}
	// Explicitly, since Mkdir's mode is subject to the umask.
	return x.root.Chmod(n, 0o755)
}

func (x *extractor) writeFile(name string, hdr *tar.Header, body io.Reader) error {
	if err := x.claim(name, node{kind: kindFile}); err != nil {
		return err
	}
	left := x.lim.MaxBytes - x.bytes
	if hdr.Size > left {
		return fmt.Errorf("%w: file contents exceed %d bytes", ErrTooLarge, x.lim.MaxBytes)
	}
	n := filepath.FromSlash(name)
	f, err := x.root.OpenFile(n, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	written, err := copyAtMost(f, body, left)
	x.bytes += written
	if err != nil {
		f.Close()
		if errors.Is(err, ErrTooLarge) {
			return fmt.Errorf("%w: file contents exceed %d bytes", err, x.lim.MaxBytes)
		}
		return err
	}
	if err := f.Chmod(os.FileMode(fileMode(hdr.Mode))); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return x.root.Chtimes(n, hdr.ModTime, hdr.ModTime)
}

// copyAtMost copies src to dst and fails with ErrTooLarge once more than max
// bytes arrive. It counts what is actually copied rather than trusting a
// header's size.
func copyAtMost(dst io.Writer, src io.Reader, max int64) (int64, error) {
	limit := max
	if limit < math.MaxInt64 {
		limit++ // one byte more, to tell "exactly max" from "more than max"
	}
	n, err := io.Copy(dst, io.LimitReader(src, limit))
	if err != nil {
		return n, err
	}
	if n > max {
		return n, ErrTooLarge
	}
	return n, nil
}

func (x *extractor) addLink(name, target string) error {
	switch {
	case target == "":
		return fmt.Errorf("%w: empty symlink target", ErrUnsafe)
	case len(target) > maxLinkTarget:
		return fmt.Errorf("%w: symlink target longer than %d bytes", ErrUnsafe, maxLinkTarget)
	case path.IsAbs(target) || filepath.IsAbs(target):
		// Artifacts are unpacked at different places on different nodes,
		// so an absolute target can never reliably stay inside dest.
		return fmt.Errorf("%w: absolute symlink target %q", ErrUnsafe, target)
	}
	if err := x.claim(name, node{kind: kindSymlink, target: target}); err != nil {
		return err
	}
	x.links = append(x.links, name)
	return nil
}

// createLinks checks and creates the symlinks once the whole tree is known:
// whether a target escapes can depend on symlinks listed after it.
func (x *extractor) createLinks() error {
	for _, name := range x.links {
		if _, err := x.follow(name); err != nil {
			return fmt.Errorf("entry %q: symlink to %q: %w", name, x.nodes[name].target, err)
		}
	}
	for _, name := range x.links {
		if err := x.root.Symlink(x.nodes[name].target, filepath.FromSlash(name)); err != nil {
			return fmt.Errorf("entry %q: %w", name, err)
		}
	}
	return nil
}

// follow returns the path components, relative to the destination, of where
// the symlink name points.
func (x *extractor) follow(name string) ([]string, error) {
	if r, ok := x.resolved[name]; ok {
		return r, nil
	}
	if x.resolving[name] {
		return nil, fmt.Errorf("%w: symlink loop through %q", ErrUnsafe, name)
	}
	x.resolving[name] = true
	defer delete(x.resolving, name)

	var dir []string
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		dir = strings.Split(name[:i], "/")
	}
	r, err := x.walk(dir, x.nodes[name].target)
	if err != nil {
		return nil, err
	}
	x.resolved[name] = r
	return r, nil
}

// walk resolves target from the directory cur the way the kernel would,
// following the archive's symlinks. Components that do not exist are taken
// lexically, so a target cannot be made to escape later by creating them.
func (x *extractor) walk(cur []string, target string) ([]string, error) {
	cur = slices.Clone(cur)
	for c := range strings.SplitSeq(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if len(cur) == 0 {
				return nil, fmt.Errorf("%w: target leaves the destination", ErrUnsafe)
			}
			cur = cur[:len(cur)-1]
		default:
			cur = append(cur, c)
			p := strings.Join(cur, "/")
			if n, ok := x.nodes[p]; !ok || n.kind != kindSymlink {
				continue
			}
			r, err := x.follow(p)
			if err != nil {
				return nil, err
			}
			cur = slices.Clone(r)
		}
	}
	return cur, nil
}

// streamBudget is how many decompressed bytes an archive within lim can
// need, saturating instead of overflowing.
func streamBudget(lim Limits) int64 {
	files := max(int64(lim.MaxFiles), 0)
	if files >= math.MaxInt64/entryOverhead-1 {
		return math.MaxInt64
	}
	overhead := (files + 1) * entryOverhead
	if lim.MaxBytes > math.MaxInt64-overhead {
		return math.MaxInt64
	}
	return max(lim.MaxBytes, 0) + overhead
}

// boundedReader fails with ErrTooLarge once more than limit bytes are read.
type boundedReader struct {
	r     io.Reader
	left  int64
	limit int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("%w: archive expands to more than %d bytes", ErrTooLarge, b.limit)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}
