// Package logfile keeps a worker's output as timestamped lines in a
// size-capped file with a few rotated predecessors, and reads them back:
// everything since a time, then (if asked) new lines as they come.
package logfile

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

const (
	// DefaultMaxSize is the size at which a file is rotated.
	DefaultMaxSize = 10 << 20
	// DefaultKeep is how many rotated files are kept (name.1 ... name.N).
	DefaultKeep = 3
	// maxLine bounds one line; longer output is split.
	maxLine = 16 << 10
	// stampLen is the length of the timestamp that starts every line.
	stampLen = len("2006-01-02T15:04:05.000000000Z")
	stamp    = "2006-01-02T15:04:05.000000000Z"
)

// Writer turns output into lines "TIMESTAMP TEXT\n" in path, rotating it at
// MaxSize. It is safe for concurrent use; several Writers may append to one
// path (a worker slot's successive processes).
type Writer struct {
	path    string
	maxSize int64
	keep    int

	mu      sync.Mutex
	f       *os.File
	size    int64
	partial []byte // output after the last newline
}

// Open appends to path (created 0600).
func Open(path string, maxSize int64, keep int) (*Writer, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	if keep <= 0 {
		keep = DefaultKeep
	}
	w := &Writer{path: path, maxSize: maxSize, keep: keep}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) open() error {
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// Write takes raw output; complete lines are stamped and written.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	now := time.Now().UTC()
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.partial = append(w.partial, p...)
			if len(w.partial) >= maxLine {
				if err := w.line(now, w.partial); err != nil {
					return 0, err
				}
				w.partial = w.partial[:0]
			}
			break
		}
		line := p[:i]
		if len(w.partial) > 0 {
			line = append(w.partial, line...)
			w.partial = w.partial[:0]
		}
		if err := w.line(now, line); err != nil {
			return 0, err
		}
		p = p[i+1:]
	}
	return n, nil
}

func (w *Writer) line(t time.Time, text []byte) error {
	if w.f == nil {
		return errors.New("log file closed")
	}
	buf := make([]byte, 0, stampLen+2+len(text))
	buf = t.AppendFormat(buf, stamp)
	buf = append(buf, ' ')
	buf = append(buf, bytes.TrimSuffix(text, []byte("\r"))...)
	buf = append(buf, '\n')
	if w.size+int64(len(buf)) > w.maxSize && w.size > 0 {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	n, err := w.f.Write(buf)
	w.size += int64(n)
	return err
}

// rotate shifts path.N-1 → path.N ... path → path.1 and starts afresh.
// Another Writer on the same path notices by the file's identity.
func (w *Writer) rotate() error {
	w.f.Close()
	for i := w.keep - 1; i >= 1; i-- {
		os.Rename(w.path+"."+strconv.Itoa(i), w.path+"."+strconv.Itoa(i+1))
	}
	if err := os.Rename(w.path, w.path+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return w.open()
}

// Close writes an unfinished last line and closes the file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.line(time.Now().UTC(), w.partial)
		w.partial = nil
	}
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// Line is one logged line.
type Line struct {
	Time time.Time
	Text string
}

// parse splits a stored line; a line without a valid stamp keeps zero time.
func parse(s string) Line {
	if len(s) > stampLen && s[stampLen] == ' ' {
		if t, err := time.Parse(stamp, s[:stampLen]); err == nil {
			return Line{Time: t, Text: s[stampLen+1:]}
		}
	}
	return Line{Text: s}
}

// ReadSince calls fn for every line at or after since, oldest file first.
// It returns the current file's size at the time it finished, for Follow.
func ReadSince(path string, keep int, since time.Time, fn func(Line) error) (int64, error) {
	if keep <= 0 {
		keep = DefaultKeep
	}
	for i := keep; i >= 1; i-- {
		if _, err := readFile(path+"."+strconv.Itoa(i), 0, since, fn); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
	}
	off, err := readFile(path, 0, since, fn)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	return off, err
}

func readFile(path string, off int64, since time.Time, fn func(Line) error) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return off, err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return off, err
	}
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		s, err := r.ReadString('\n')
		if err != nil {
			// An unfinished line is left for the next read.
			return off, nil
		}
		off += int64(len(s))
		l := parse(s[:len(s)-1])
		if !l.Time.Before(since) {
			if err := fn(l); err != nil {
				return off, err
			}
		}
	}
}

// Follow calls fn for lines appended to path after offset, until ctx ends,
// following rotations (keep is the Writer's).
func Follow(ctx context.Context, path string, keep int, offset int64, fn func(Line) error) error {
	if keep <= 0 {
		keep = DefaultKeep
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	ident := fileID(path)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if id := fileID(path); id != ident {
			// Rotated (maybe more than once): finish the file we were
			// reading, now path.N, then every newer one, then start over.
			if ident != "" {
				for i := 1; i <= keep; i++ {
					if fileID(path+"."+strconv.Itoa(i)) != ident {
						continue
					}
					for j := i; j >= 1; j-- {
						if _, err := readFile(path+"."+strconv.Itoa(j), offset, time.Time{}, fn); err != nil && !errors.Is(err, os.ErrNotExist) {
							return err
						}
						offset = 0
					}
					break
				}
			}
			ident, offset = id, 0
		}
		off, err := readFile(path, offset, time.Time{}, fn)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		offset = off
	}
}

func fileID(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprint(st.Dev, ":", st.Ino)
	}
	return fi.ModTime().String()
}
