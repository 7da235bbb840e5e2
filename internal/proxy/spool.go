package proxy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
)

// errTooLarge is a body above its limit.
var errTooLarge = errors.New("body too large")

// spool holds a whole body: in memory up to memLimit, then in a temporary
// file, so a slow client's upload (or a big answer for a slow client)
// never holds a worker: the front reads or writes it at the client's pace
// on its own.
type spool struct {
	mem  []byte
	buf  *[]byte // pooled backing of mem, if any
	file *os.File
	size int64
}

// spoolBufs recycles the memory part of spools: a small body costs no
// allocation once the front is warm.
var spoolBufs = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

// newSpool reads r to the end. It fails with errTooLarge past max bytes
// (max < 0: no limit); dir is where a temporary file goes ("": the
// system's). sizeHint is the declared length (-1: unknown). pooled takes
// the memory from a pool, to go back on Close: only for bodies nothing can
// read after Close (a request body may still be read by the transport
// after the answer came, so it is never pooled).
func newSpool(r io.Reader, sizeHint, memLimit, max int64, dir string, pooled bool) (*spool, error) {
	s := &spool{}
	lim := r
	if max >= 0 {
		lim = io.LimitReader(r, max+1)
	}
	if !pooled || sizeHint < 0 || sizeHint > 32<<10 {
		b := make([]byte, 0, min(max64(sizeHint+1, 32<<10), memLimit))
		s.mem = b
	} else {
		s.buf = spoolBufs.Get().(*[]byte)
		s.mem = (*s.buf)[:0]
	}
	n, err := readInto(&s.mem, io.LimitReader(lim, memLimit))
	s.size = n
	if err != nil {
		s.Close()
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

// readInto appends all of r to *b, growing it as needed.
func readInto(b *[]byte, r io.Reader) (int64, error) {
	var n int64
	for {
		if len(*b) == cap(*b) {
			*b = append(*b, 0)[:len(*b)]
		}
		m, err := r.Read((*b)[len(*b):cap(*b)])
		*b = (*b)[:len(*b)+m]
		n += int64(m)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// Reader returns a reader of the whole body from its start.
func (s *spool) Reader() io.ReadCloser {
	r := io.Reader(bytes.NewReader(s.mem))
	if s.file != nil {
		r = io.MultiReader(r, io.NewSectionReader(s.file, 0, s.size-int64(len(s.mem))))
	}
	return io.NopCloser(r)
}

// Close drops the body; no reader may be used after it.
func (s *spool) Close() error {
	if s.buf != nil {
		if cap(s.mem) <= 64<<10 {
			*s.buf = s.mem[:0]
			spoolBufs.Put(s.buf)
		}
		s.buf, s.mem = nil, nil
	}
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
