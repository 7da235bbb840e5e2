package compress

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
)

// errClosed is returned for writes and flushes after Close.
var errClosed = errors.New("compress: response already closed")

// state is where a Writer stands in the response.
type state uint8

const (
	stateNew       state = iota // no status yet
	stateBuffering              // status known; waiting for body bytes to decide
	statePlain                  // headers sent; the body goes out as is
	stateEncoding               // headers sent; the body goes through the encoder
	stateClosed                 // Close was called
)

// Writer wraps a ResponseWriter for one request and compresses the
// response if it pays. Get one with NewWriter and call the close func it
// returns after the handler returned: that ends the compressed stream (or
// sends a small buffered body) and returns the pooled encoder.
//
// The decision is taken when the status is known (WriteHeader, or the first
// Write, which implies 200), from the response headers. The body is
// compressed only if all of these hold:
//   - the status is not 1xx, 204, 206 or 304 (those have no body, or a
//     body that a client combines with other bytes);
//   - there is no Content-Encoding (never compress twice) and no
//     Content-Range;
//   - Cache-Control does not say no-transform;
//   - Compressible(Content-Type); with no Content-Type the type is sniffed
//     from the first bytes with http.DetectContentType, as net/http would;
//   - Content-Length, if set, is at least MinSize.
//
// With no Content-Length, up to MinSize bytes are held back to decide;
// if the handler ends before that, the body goes out as is with a
// Content-Length. A Flush decides at once (compressing if the type allows),
// so streamed responses still stream.
//
// When compressing, Writer sets Content-Encoding, removes Content-Length
// and Accept-Ranges (byte ranges would refer to the uncompressed body),
// weakens a strong ETag (the bytes differ, the meaning does not) and adds
// "Vary: Accept-Encoding". A response that could have been compressed but
// was too small gets the Vary too, so that caches keep variants apart.
//
// Informational responses (1xx other than 101) pass straight through.
// Header changes a handler makes after WriteHeader may still take effect
// while the body is buffered; net/http would ignore them.
//
// Like any ResponseWriter, a Writer is not safe for concurrent use.
type Writer struct {
	rw     http.ResponseWriter
	coding string // "br" or "gzip"
	cfg    settings
	state  state
	status int
	buf    *[]byte // body held back while buffering, from bufferPool
	enc    encoder // while encoding
}

// NewWriter returns a wrapper for w that compresses the response to r if
// r accepts br or gzip, and the func to call after the handler returned.
// A request that cannot get a compressed response at all is given w itself
// and a no-op func: no acceptable coding, a Range header (ranges are
// served from the uncompressed body), HEAD (passed through unchanged, so
// its headers show the uncompressed length), CONNECT and protocol upgrades
// (the connection is handed over, not a body).
func NewWriter(w http.ResponseWriter, r *http.Request, opts *Options) (http.ResponseWriter, func() error) {
	if r.Method == http.MethodHead || r.Method == http.MethodConnect {
		return w, nop
	}
	if _, ok := r.Header["Range"]; ok {
		return w, nop
	}
	if _, ok := r.Header["Upgrade"]; ok {
		return w, nop
	}
	coding := negotiateHeader(r.Header)
	if coding == "" {
		return w, nop
	}
	cw := &Writer{rw: w, coding: coding, cfg: opts.resolve()}
	return cw, cw.Close
}

func nop() error { return nil }

// Header returns the header map of the wrapped ResponseWriter.
func (w *Writer) Header() http.Header { return w.rw.Header() }

// Unwrap returns the wrapped ResponseWriter, for http.ResponseController.
func (w *Writer) Unwrap() http.ResponseWriter { return w.rw }

// WriteHeader records the status and decides, from the headers, whether
// to compress. Calls after the first are ignored, except for 1xx
// statuses, which are sent at once.
func (w *Writer) WriteHeader(code int) {
	if w.state != stateNew {
		return
	}
	if code < 100 || code > 999 {
		// Let the wrapped writer reject it as it would without us.
		w.status = code
		w.sendPlain()
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.rw.WriteHeader(code)
		return
	}
	w.status = code
	switch w.judge() {
	case skip:
		w.sendPlain()
	case skipSmall:
		addVary(w.rw.Header())
		w.sendPlain()
	case encodeNow:
		w.startEncoding()
	case wait:
		w.state = stateBuffering
	}
}

// Write writes body bytes, compressed or not, or holds them back while
// the size is undecided.
func (w *Writer) Write(p []byte) (int, error) {
	if w.state == stateNew {
		w.WriteHeader(http.StatusOK)
	}
	if w.state == stateBuffering {
		if len(w.pending())+len(p) < w.cfg.minSize {
			w.hold(p)
			return len(p), nil
		}
		if err := w.decide(p); err != nil {
			return 0, err
		}
	}
	switch w.state {
	case statePlain:
		return w.rw.Write(p)
	case stateEncoding:
		return w.enc.Write(p)
	}
	return 0, errClosed
}

// Flush sends everything written so far to the client. See FlushError.
func (w *Writer) Flush() { _ = w.FlushError() }

// FlushError sends everything written so far to the client: it decides
// about compression if that is still open (a handler that flushes is
// streaming, and holding its bytes back would stall the stream), flushes
// the encoder, then the wrapped writer. It is what
// http.ResponseController.Flush calls.
func (w *Writer) FlushError() error {
	if w.state == stateNew {
		w.WriteHeader(http.StatusOK)
	}
	switch w.state {
	case stateBuffering:
		if err := w.decide(nil); err != nil {
			return err
		}
	case stateClosed:
		return errClosed
	}
	if w.state == stateEncoding {
		if err := w.enc.Flush(); err != nil {
			return err
		}
	}
	return http.NewResponseController(w.rw).Flush()
}

// Close finishes the response: it ends the compressed stream, or sends a
// body that stayed below MinSize as is. It returns the encoder and buffer
// to their pools. Close is idempotent.
func (w *Writer) Close() error {
	var err error
	switch w.state {
	case stateBuffering:
		err = w.sendSmall()
	case stateEncoding:
		err = w.enc.Close()
		w.enc.release()
		w.enc = nil
	}
	w.state = stateClosed
	w.releaseBuffer()
	return err
}

// verdict is what the response headers say about compression.
type verdict uint8

const (
	skip      verdict = iota // send as is
	skipSmall                // compressible type but too small: as is, with Vary
	wait                     // buffer: the size or the type is not known yet
	encodeNow                // compress
)

func (w *Writer) judge() verdict {
	switch w.status {
	case http.StatusNoContent, http.StatusPartialContent, http.StatusNotModified:
		return skip
	}
	if w.status < 200 {
		return skip
	}
	h := w.rw.Header()
	if h.Get("Content-Encoding") != "" || h.Get("Content-Range") != "" || noTransform(h) {
		return skip
	}
	ct, typed := h["Content-Type"]
	if typed && (len(ct) == 0 || !Compressible(ct[0])) {
		return skip
	}
	size := int64(-1)
	if cl := h.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 {
			return skip // malformed: not ours to repair
		}
		size = n
	}
	switch {
	case size >= 0 && size < int64(w.cfg.minSize):
		if typed {
			return skipSmall
		}
		return skip // net/http sniffs the type; too small to care
	case typed && size >= 0:
		return encodeNow
	}
	return wait
}

// decide ends buffering: it compresses if the type allows, sniffing it
// from the held-back bytes (or next, the bytes about to be written) when
// the handler set none, and sends what was held back.
func (w *Writer) decide(next []byte) error {
	h := w.rw.Header()
	held := w.pending()
	if _, typed := h["Content-Type"]; !typed {
		sample := held
		if len(sample) == 0 {
			sample = next
		}
		if len(sample) > 0 {
			h.Set("Content-Type", http.DetectContentType(sample))
		}
	}
	if Compressible(h.Get("Content-Type")) {
		w.startEncoding()
	} else {
		w.sendPlain()
	}
	if len(held) == 0 {
		return nil
	}
	var err error
	if w.state == stateEncoding {
		_, err = w.enc.Write(held)
	} else {
		_, err = w.rw.Write(held)
	}
	w.releaseBuffer()
	return err
}

// sendSmall sends a body that ended before reaching MinSize, as is.
func (w *Writer) sendSmall() error {
	h := w.rw.Header()
	body := w.pending()
	if _, typed := h["Content-Type"]; !typed && len(body) > 0 {
		h.Set("Content-Type", http.DetectContentType(body))
	}
	if Compressible(h.Get("Content-Type")) {
		addVary(h)
	}
	// Trailers need a chunked body, which a Content-Length would prevent.
	if h.Get("Content-Length") == "" && !hasTrailers(h) {
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.sendPlain()
	if len(body) == 0 {
		return nil
	}
	_, err := w.rw.Write(body)
	return err
}

func (w *Writer) sendPlain() {
	w.state = statePlain
	w.rw.WriteHeader(w.status)
}

func (w *Writer) startEncoding() {
	h := w.rw.Header()
	h.Del("Content-Length")
	h.Del("Accept-Ranges")
	h.Set("Content-Encoding", w.coding)
	addVary(h)
	if etag := h.Get("Etag"); strings.HasPrefix(etag, `"`) {
		h.Set("Etag", "W/"+etag)
	}
	w.rw.WriteHeader(w.status)
	w.enc = newEncoder(w.coding, w.cfg, w.rw)
	w.state = stateEncoding
}

func (w *Writer) pending() []byte {
	if w.buf == nil {
		return nil
	}
	return *w.buf
}

func (w *Writer) hold(p []byte) {
	if len(p) == 0 {
		return
	}
	if w.buf == nil {
		w.buf = bufferPool.Get().(*[]byte)
	}
	*w.buf = append(*w.buf, p...)
}

func (w *Writer) releaseBuffer() {
	if w.buf == nil {
		return
	}
	if cap(*w.buf) <= maxPooledBuffer {
		*w.buf = (*w.buf)[:0]
		bufferPool.Put(w.buf)
	}
	w.buf = nil
}

// addVary adds "Vary: Accept-Encoding" unless the header already says so
// (in any case and any position of a list) or says "Vary: *".
func addVary(h http.Header) {
	for _, v := range h["Vary"] {
		for rest := v; rest != ""; {
			var field string
			field, rest, _ = strings.Cut(rest, ",")
			field = strings.TrimSpace(field)
			if field == "*" || strings.EqualFold(field, "Accept-Encoding") {
				return
			}
		}
	}
	h.Add("Vary", "Accept-Encoding")
}

// noTransform reports whether Cache-Control forbids intermediaries to
// change the body (RFC 9111 section 5.2.2.6).
func noTransform(h http.Header) bool {
	for _, v := range h["Cache-Control"] {
		for rest := v; rest != ""; {
			var directive string
			directive, rest, _ = strings.Cut(rest, ",")
			name, _, _ := strings.Cut(directive, "=")
			if strings.EqualFold(strings.TrimSpace(name), "no-transform") {
				return true
			}
		}
	}
	return false
}

// hasTrailers reports whether the handler announced trailers, either with
// a Trailer header or with http.TrailerPrefix keys.
func hasTrailers(h http.Header) bool {
	if _, ok := h["Trailer"]; ok {
		return true
	}
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}
