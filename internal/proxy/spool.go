package proxy

import (
	"bytes"
	"errors"
	"io"
	"os"
)

// errTooLarge is a body above its limit.
var errTooLarge = errors.New("body too large")

// spool holds a whole body: in memory up to memLimit, then in a temporary
// file, so a slow client's upload (or a big answer for a slow client)
// never holds a worker: the front reads or writes it at the client's pace
// on its own.
type spool struct {
	mem  bytes.Buffer
	file *os.File
	size int64
}

// newSpool reads r to the end. It fails with errTooLarge past max bytes
// (max < 0: no limit); dir is where a temporary file goes ("": the
// system's).
func newSpool(r io.Reader, memLimit, max int64, dir string) (*spool, error) {
	s := &spool{}
	lim := r
	if max >= 0 {
		lim = io.LimitReader(r, max+1)
	}
	n, err := io.Copy(&s.mem, io.LimitReader(lim, memLimit))
	s.size = n
	if err != nil {
		return nil, err
	}
	if n == memLimit {
		// More may follow: go on in a file.
		f, err := os.CreateTemp(dir, "herd-body-*")
		if err != nil {
			return nil, err
		}
		os.Remove(f.Name()) // gone when closed, even if we crash
		s.file = f
		m, err := io.Copy(f, lim)
		s.size += m
		if err != nil {
			s.Close()
			return nil, err
		}
	}
	if max >= 0 && s.size > max {
		s.Close()
		return nil, errTooLarge
	}
	return s, nil
}

// Reader returns a reader of the whole body from its start.
func (s *spool) Reader() io.ReadCloser {
	r := io.Reader(bytes.NewReader(s.mem.Bytes()))
	if s.file != nil {
		r = io.MultiReader(r, io.NewSectionReader(s.file, 0, s.size-int64(s.mem.Len())))
	}
	return io.NopCloser(r)
}

// Close drops the body.
func (s *spool) Close() error {
	if s.file != nil {
		err := s.file.Close()
		s.file = nil
		return err
	}
	return nil
}

// spoolBody is a response body read from a spool; closing it drops the
// spool.
type spoolBody struct {
	io.Reader
	s *spool
}

func (b *spoolBody) Close() error { return b.s.Close() }
