package proxy

import (
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/herd-run/herd/internal/balance"
)

// logWriter records what was sent to the client, for metrics and the
// access log. http.NewResponseController reaches the real writer through
// Unwrap, so flushing and upgrades work through it.
type logWriter struct {
	http.ResponseWriter
	code  int
	bytes int64
	reqID string
	ep    *balance.Endpoint
	wait  time.Duration
	err   error
}

var logWriterPool = sync.Pool{New: func() any { return new(logWriter) }}

func newLogWriter(w http.ResponseWriter) *logWriter {
	lw := logWriterPool.Get().(*logWriter)
	*lw = logWriter{ResponseWriter: w}
	return lw
}

func (w *logWriter) release() {
	*w = logWriter{}
	logWriterPool.Put(w)
}

func (w *logWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ReadFrom keeps the connection's sendfile path open for static files
// (io.Copy looks for io.ReaderFrom on the writer it is given).
func (w *logWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
	}
	w.bytes += n
	return n, err
}

func (w *logWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}
