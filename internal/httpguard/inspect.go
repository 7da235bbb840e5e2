package httpguard

import (
	"bytes"
	"math"
)

// maxHead bounds one request head (request line, header lines, blank line).
// It is also the most the inspector ever buffers.
const maxHead = 64 << 10

// keepLine is the largest line buffer kept between heads; a longer one was
// for an unusual head and is left to the garbage collector.
const keepLine = 4 << 10

// reason says why a request stream is unsafe; the zero value: it is not.
type reason uint8

const (
	fine reason = iota
	bareLF
	bareCR
	obsFold
	dupContentLength
	badContentLength
	lengthAndChunked
	dupTransferEncoding
	badTransferEncoding
	headTooLarge
	badChunked
)

var reasonText = [...]string{
	fine:                "",
	bareLF:              "bare LF",
	bareCR:              "bare CR",
	obsFold:             "obs-fold",
	dupContentLength:    "duplicate Content-Length",
	badContentLength:    "invalid Content-Length",
	lengthAndChunked:    "Content-Length with Transfer-Encoding",
	dupTransferEncoding: "duplicate Transfer-Encoding",
	badTransferEncoding: "unsupported Transfer-Encoding",
	headTooLarge:        "header too large",
	badChunked:          "invalid chunked encoding",
}

type state uint8

const (
	stHead         state = iota // request line and fields, up to the blank line
	stBody                      // Content-Length bytes
	stChunkSize                 // hex digits starting a chunk
	stChunkSizeWS               // whitespace after them
	stChunkExt                  // ;extension, up to CR
	stChunkSizeLF               // LF ending the chunk-size line
	stChunkData                 // chunk bytes
	stChunkDataCR               // CR after them
	stChunkDataLF               // LF after that
	stTrailerStart              // start of a trailer line or of the final CRLF
	stTrailer                   // rest of a trailer line, up to CR
	stTrailerLF                 // LF ending a trailer line
	stTrailerEndLF              // LF ending the message
	stTunnel                    // the connection left HTTP/1: inspection over
	stBad                       // unsafe: inspection over
)

// inspector follows HTTP/1.x request framing over a byte stream fed in
// pieces of any size. The verdict depends only on the bytes, never on where
// they were split. In the head it flags:
//
//   - a line ending in a bare LF, or a CR not followed by LF;
//   - a field line starting with SP or HT (obs-fold);
//   - Content-Length more than once, even with equal values, or not 1+
//     ASCII digits (after trimming OWS), or above math.MaxInt64;
//   - Transfer-Encoding more than once, or other than "chunked"
//     (case-insensitive, OWS trimmed), or together with Content-Length;
//   - a head over maxHead bytes.
//
// Then it skips the body: Content-Length bytes, or chunked framing, where it
// flags bare LF and CR, a bad chunk size and data not followed by CRLF.
// Empty lines before a request line are skipped, as RFC 9112 section 2.2
// allows. After a request with an Upgrade field and an "upgrade" token in
// Connection, or after the HTTP/2 preface "PRI * HTTP/2.0", it stops: what
// follows is not HTTP/1 framing.
//
// An inspector never blocks. It copies only a head line split across feeds,
// into a buffer it reuses unless the line outgrew keepLine, so a steady
// stream of ordinary requests costs no allocation.
type inspector struct {
	state  state
	why    reason // once state is stBad
	remain uint64 // body or chunk bytes still to skip; the chunk size being read
	digits int    // hex digits of the chunk size so far
	tunnel bool   // the message being skipped ends HTTP/1 on this connection
	line   []byte // head line split across feeds
	head   head
}

// head is what the current request head has said so far.
type head struct {
	size        int  // bytes, once the request line has begun
	started     bool // the request line was seen
	preface     bool // the request line is the HTTP/2 preface's
	lengths     int  // Content-Length fields
	encodings   int  // Transfer-Encoding fields
	length      uint64
	upgrade     bool // an Upgrade field
	connUpgrade bool // an "upgrade" token in Connection
}

func (in *inspector) stopped() bool { return in.state >= stTunnel }

func (in *inspector) fail(r reason) {
	in.state, in.why = stBad, r
	in.line = nil
}

// feed shows the inspector the next bytes of the stream.
func (in *inspector) feed(p []byte) {
	for len(p) > 0 {
		var n int
		switch in.state {
		case stHead:
			n = in.headBytes(p)
		case stBody, stChunkData:
			n = in.skip(p)
		case stTunnel, stBad:
			return
		default:
			in.frame(p[0])
			n = 1
		}
		p = p[n:]
	}
}

// headBytes takes p up to and including its first LF, or all of p, and
// returns how much it took. Whole lines are looked at in place; only a line
// split across feeds is copied.
func (in *inspector) headBytes(p []byte) int {
	i := bytes.IndexByte(p, '\n')
	n := i + 1
	if i < 0 {
		n = len(p)
	}
	if in.head.size += n; in.head.size > maxHead {
		in.fail(headTooLarge)
		return n
	}
	if i < 0 {
		in.line = append(in.line, p...)
		return n
	}
	line := p[:n]
	if len(in.line) > 0 {
		in.line = append(in.line, line...)
		line = in.line
	}
	in.headLine(line[:len(line)-1])
	in.line = in.line[:0]
	return n
}

// headLine looks at one head line, without its LF.
func (in *inspector) headLine(s []byte) {
	if len(s) == 0 || s[len(s)-1] != '\r' {
		in.fail(bareLF)
		return
	}
	s = s[:len(s)-1]
	if bytes.IndexByte(s, '\r') >= 0 {
		in.fail(bareCR)
		return
	}
	switch {
	case !in.head.started:
		if len(s) == 0 {
			in.head.size = 0
			return
		}
		in.head.started = true
		in.head.preface = string(s) == "PRI * HTTP/2.0"
	case len(s) == 0:
		in.endHead()
	case s[0] == ' ' || s[0] == '\t':
		in.fail(obsFold)
	default:
		in.field(s)
	}
}

func (in *inspector) field(s []byte) {
	i := bytes.IndexByte(s, ':')
	if i < 0 {
		return // net/http refuses the line itself
	}
	name, v := s[:i], trimOWS(s[i+1:])
	switch {
	case equalFold(name, "content-length"):
		in.contentLength(v)
	case equalFold(name, "transfer-encoding"):
		if in.head.encodings++; in.head.encodings > 1 {
			in.fail(dupTransferEncoding)
		} else if !equalFold(v, "chunked") {
			in.fail(badTransferEncoding)
		}
	case equalFold(name, "upgrade"):
		in.head.upgrade = in.head.upgrade || len(v) > 0
	case equalFold(name, "connection"):
		in.head.connUpgrade = in.head.connUpgrade || hasToken(v, "upgrade")
	}
}

func (in *inspector) contentLength(v []byte) {
	if in.head.lengths++; in.head.lengths > 1 {
		in.fail(dupContentLength)
		return
	}
	if len(v) == 0 {
		in.fail(badContentLength)
		return
	}
	var n uint64
	for _, c := range v {
		d := uint64(c - '0')
		if c < '0' || c > '9' || n > (math.MaxInt64-d)/10 {
			in.fail(badContentLength)
			return
		}
		n = n*10 + d
	}
	in.head.length = n
}

func (in *inspector) endHead() {
	h := in.head
	in.head = head{}
	if cap(in.line) > keepLine {
		in.line = nil
	}
	if h.lengths > 0 && h.encodings > 0 {
		in.fail(lengthAndChunked)
		return
	}
	in.tunnel = h.preface || h.upgrade && h.connUpgrade
	switch {
	case h.encodings > 0:
		in.state, in.remain, in.digits = stChunkSize, 0, 0
	case h.length > 0:
		in.state, in.remain = stBody, h.length
	default:
		in.endMessage()
	}
}

func (in *inspector) endMessage() {
	if in.tunnel {
		in.state = stTunnel
		in.line = nil
		return
	}
	in.state = stHead
}

// skip passes over body or chunk bytes and returns how many it took.
func (in *inspector) skip(p []byte) int {
	if uint64(len(p)) < in.remain {
		in.remain -= uint64(len(p))
		return len(p)
	}
	n := int(in.remain)
	in.remain = 0
	if in.state == stBody {
		in.endMessage()
	} else {
		in.state = stChunkDataCR
	}
	return n
}

// frame takes one byte of chunked framing outside chunk data. It mirrors
// net/http's chunked reader: chunk-size, optional OWS, optional ;extension,
// CRLF; at most 16 hex digits; no OWS before the semicolon.
func (in *inspector) frame(c byte) {
	switch in.state {
	case stChunkSize:
		if d, ok := unhex(c); ok {
			if in.digits == 16 {
				in.fail(badChunked)
				return
			}
			in.remain = in.remain<<4 | d
			in.digits++
			return
		}
		if in.digits == 0 {
			in.fail(badChunked)
			return
		}
		switch c {
		case ';':
			in.state = stChunkExt
		case ' ', '\t':
			in.state = stChunkSizeWS
		default:
			in.lineEnd(c, stChunkSizeLF)
		}
	case stChunkSizeWS:
		if c != ' ' && c != '\t' {
			in.lineEnd(c, stChunkSizeLF)
		}
	case stChunkExt:
		in.skipToCR(c, stChunkSizeLF)
	case stTrailer:
		in.skipToCR(c, stTrailerLF)
	case stChunkSizeLF:
		if in.lf(c) {
			in.digits = 0
			if in.remain == 0 {
				in.state = stTrailerStart
			} else {
				in.state = stChunkData
			}
		}
	case stChunkDataCR:
		in.lineEnd(c, stChunkDataLF)
	case stChunkDataLF:
		if in.lf(c) {
			in.state = stChunkSize
		}
	case stTrailerStart:
		switch c {
		case ' ', '\t':
			in.fail(obsFold)
		case '\r', '\n':
			in.lineEnd(c, stTrailerEndLF)
		default:
			in.state = stTrailer
		}
	case stTrailerLF:
		if in.lf(c) {
			in.state = stTrailerStart
		}
	case stTrailerEndLF:
		if in.lf(c) {
			in.endMessage()
		}
	}
}

// lineEnd expects the CR of a CRLF and moves to next, the state awaiting
// the LF.
func (in *inspector) lineEnd(c byte, next state) {
	switch c {
	case '\r':
		in.state = next
	case '\n':
		in.fail(bareLF)
	default:
		in.fail(badChunked)
	}
}

// skipToCR passes over the bytes of a line up to its CR, then moves to
// next, the state awaiting the LF.
func (in *inspector) skipToCR(c byte, next state) {
	switch c {
	case '\r':
		in.state = next
	case '\n':
		in.fail(bareLF)
	}
}

// lf expects the LF after a CR.
func (in *inspector) lf(c byte) bool {
	if c != '\n' {
		in.fail(bareCR)
		return false
	}
	return true
}

func unhex(c byte) (uint64, bool) {
	switch {
	case '0' <= c && c <= '9':
		return uint64(c - '0'), true
	case 'a' <= c && c <= 'f':
		return uint64(c - 'a' + 10), true
	case 'A' <= c && c <= 'F':
		return uint64(c - 'A' + 10), true
	}
	return 0, false
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold reports whether b is lower, ignoring ASCII case; lower must be
// lower case.
func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated list v holds token.
func hasToken(v []byte, token string) bool {
	for len(v) > 0 {
		var t []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			t, v = v[:i], v[i+1:]
		} else {
			t, v = v, nil
		}
		if equalFold(trimOWS(t), token) {
			return true
		}
	}
	return false
}
