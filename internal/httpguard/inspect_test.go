package httpguard

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// outcome is what an inspector has concluded so far. Two inspectors fed the
// same bytes must agree on it however the bytes were split.
type outcome struct {
	state  state
	why    reason
	remain uint64
	digits int
	tunnel bool
	head   head
	line   string
}

func outcomeOf(in *inspector) outcome {
	if in.stopped() {
		// Where exactly a stopped inspector stopped reading is no verdict.
		return outcome{state: in.state, why: in.why}
	}
	return outcome{in.state, in.why, in.remain, in.digits, in.tunnel, in.head, string(in.line)}
}

// feedSplit feeds p in pieces cut at the given offsets.
func feedSplit(p []byte, cuts ...int) outcome {
	var in inspector
	last := 0
	for _, c := range cuts {
		in.feed(p[last:c])
		last = c
	}
	in.feed(p[last:])
	return outcomeOf(&in)
}

const (
	get       = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	postLen   = "POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
	postChunk = "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"4;name=val\r\nwiki\r\n5 \t\r\npedia\r\n00E;a;b=\"c\"\r\n in\r\n\r\nchunks.\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n"
	upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n"
)

// withBody is a POST carrying body by Content-Length.
func withBody(body string) string {
	return fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

func TestInspector(t *testing.T) {
	bigField := "X-Big: " + strings.Repeat("a", maxHead-len(get)-len("X-Big: \r\n")) + "\r\n"
	for _, tc := range []struct {
		name  string
		in    string
		why   reason
		state state // when why is fine
	}{
		{"get", get, fine, stHead},
		{"keep-alive", get + postLen + postChunk + get, fine, stHead},
		{"field names in any case, values with OWS", "POST / HTTP/1.1\r\ncontent-LENGTH:\t3 \r\n\r\nabc" +
			"POST / HTTP/1.1\r\nTRANSFER-ENCODING:  Chunked \r\n\r\n0\r\n\r\n", fine, stHead},
		{"body that looks like a head", withBody("Transfer-Encoding: chunked\r\nContent-Length: 4\n\r\n x\r\n") + get, fine, stHead},
		{"empty lines before a request line", postLen + "\r\n\r\n" + get, fine, stHead},
		{"Content-Length 0", "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n" + get, fine, stHead},
		{"largest Content-Length", "POST / HTTP/1.1\r\nContent-Length: 9223372036854775807\r\n\r\nabc", fine, stBody},
		{"16 hex digits", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n000000000000000a\r\n0123456789\r\n0\r\n\r\n", fine, stHead},
		{"head of exactly maxHead bytes", "GET / HTTP/1.1\r\n" + bigField + "Host: x\r\n\r\n", fine, stHead},
		{"upgrade then anything", upgrade + "\x81\x05\n\r\x00junk\n\n Content-Length: 1\r\n", fine, stTunnel},
		{"upgrade with a body", "POST /ws HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nContent-Length: 2\r\n\r\nhi\n\x00", fine, stTunnel},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\n", fine, stTunnel},

		{"Content-Length and chunked", "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", lengthAndChunked, 0},
		{"chunked and Content-Length", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n", lengthAndChunked, 0},
		{"equal Content-Lengths", "POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd", dupContentLength, 0},
		{"Content-Lengths in two cases", "POST / HTTP/1.1\r\nContent-Length: 4\r\ncontent-length: 4\r\n\r\nabcd", dupContentLength, 0},
		{"Content-Length with a sign", "POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\nabcd", badContentLength, 0},
		{"empty Content-Length", "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", badContentLength, 0},
		{"Content-Length list", "POST / HTTP/1.1\r\nContent-Length: 4, 4\r\n\r\n", badContentLength, 0},
		{"Content-Length overflow", "POST / HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n", badContentLength, 0},
		{"gzip", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", badTransferEncoding, 0},
		{"identity", "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", badTransferEncoding, 0},
		{"two Transfer-Encodings", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", dupTransferEncoding, 0},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", obsFold, 0},
		{"obs-fold with a tab", "GET / HTTP/1.1\r\nX-A: a\r\n\tContent-Length: 4\r\n\r\n", obsFold, 0},
		{"bare LF", "GET / HTTP/1.1\nHost: x\n\n", bareLF, 0},
		{"bare LF ending the head", "GET / HTTP/1.1\r\nHost: x\r\n\n", bareLF, 0},
		{"bare LF before the request line", postLen + "\n" + get, bareLF, 0},
		{"bare CR", "GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", bareCR, 0},
		{"head over maxHead bytes", "GET / HTTP/1.1\r\n" + bigField + "Host: xy\r\n\r\n", headTooLarge, 0},
		{"line over maxHead bytes", "GET /" + strings.Repeat("a", maxHead), headTooLarge, 0},
		{"bad in a later request", get + postLen + "GET / HTTP/1.1\r\nX: 1\r\n x\r\n\r\n", obsFold, 0},
		{"verdict sticks", "GET / HTTP/1.1\n\n" + get + "GET / HTTP/1.1\r\nX: 1\r\n x\r\n\r\n", bareLF, 0},
		{"Upgrade without Connection: upgrade", "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x05\n", bareLF, 0},
		{"Connection: upgrade without Upgrade", "GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n\x81\x05\n", bareLF, 0},

		{"chunk size ending in bare LF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", bareLF, 0},
		{"chunk size not hex", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", badChunked, 0},
		{"no chunk size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n;a\r\n", badChunked, 0},
		{"space before a chunk extension", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 ;a\r\nhello\r\n", badChunked, 0},
		{"17 hex digits", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000005\r\n", badChunked, 0},
		{"chunk data too long", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n", badChunked, 0},
		{"chunk data ending in bare LF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n", bareLF, 0},
		{"chunk data ending in bare CR", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r0\r\n\r\n", bareCR, 0},
		{"bare CR in a chunk extension", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n", bareCR, 0},
		{"bare LF in a trailer", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\r\n", bareLF, 0},
		{"obs-fold in a trailer", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n z\r\n\r\n", obsFold, 0},
		{"bare LF ending chunks", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n", bareLF, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := []byte(tc.in)
			want := feedSplit(p)
			if want.why != tc.why {
				t.Fatalf("reason %q, want %q", reasonText[want.why], reasonText[tc.why])
			}
			if tc.why == fine && want.state != tc.state {
				t.Fatalf("ends in state %d, want %d", want.state, tc.state)
			}
			// Every split into two Reads; long inputs at a stride.
			stride := max(1, len(p)/2048)
			for i := 0; i <= len(p); i += stride {
				if got := feedSplit(p, i); got != want {
					t.Fatalf("split at %d: %+v, whole: %+v", i, got, want)
				}
			}
			if len(p) <= 4096 {
				cuts := make([]int, len(p))
				for i := range cuts {
					cuts[i] = i
				}
				if got := feedSplit(p, cuts...); got != want {
					t.Fatalf("a byte at a time: %+v, whole: %+v", got, want)
				}
			}
		})
	}
}

func TestInspectorBuffersOnlySplitLines(t *testing.T) {
	var in inspector
	in.feed([]byte(get + get))
	if in.line != nil {
		t.Fatalf("whole lines were copied: %q", in.line)
	}
	in.feed([]byte("GET / HTTP/1.1\r\nHo"))
	if string(in.line) != "Ho" {
		t.Fatalf("line buffer %q, want %q", in.line, "Ho")
	}
	in.feed([]byte("st: x\r\n"))
	if len(in.line) != 0 {
		t.Fatalf("line buffer %q after the line ended", in.line)
	}
}

func TestInspectorDropsLargeLineBuffer(t *testing.T) {
	var in inspector
	field := "X-Big: " + strings.Repeat("b", 2*keepLine) + "\r\n"
	in.feed([]byte("GET / HTTP/1.1\r\n" + field[:10]))
	in.feed([]byte(field[10:] + "\r\n"))
	if in.state != stHead || in.why != fine {
		t.Fatalf("state %d, reason %q", in.state, reasonText[in.why])
	}
	if cap(in.line) > keepLine {
		t.Fatalf("kept a %d-byte line buffer", cap(in.line))
	}
}

func FuzzInspector(f *testing.F) {
	for _, s := range []string{
		get, postLen, postChunk, upgrade + "\x81\x00", get + postLen + postChunk,
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", "GET / HTTP/1.1\nHost: x\n\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\nX: y\r\n\r\n",
	} {
		f.Add([]byte(s), uint16(len(s)/3), uint16(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, p []byte, a, b uint16) {
		i, j := int(a)%(len(p)+1), int(b)%(len(p)+1)
		if i > j {
			i, j = j, i
		}
		var in inspector
		for k := range p {
			in.feed(p[k : k+1])
			if len(in.line) > maxHead {
				t.Fatalf("buffered %d bytes", len(in.line))
			}
		}
		bytewise := outcomeOf(&in)
		whole := feedSplit(p)
		if split := feedSplit(p, i, j); split != whole {
			t.Fatalf("split at %d and %d: %+v, whole: %+v", i, j, split, whole)
		}
		if bytewise != whole {
			t.Fatalf("a byte at a time: %+v, whole: %+v", bytewise, whole)
		}
		if whole.state == stBad && whole.why == fine || whole.state != stBad && whole.why != fine {
			t.Fatalf("state %d with reason %q", whole.state, reasonText[whole.why])
		}
		// A verdict is final whatever follows.
		if whole.state >= stTunnel {
			if more := feedSplit(append(bytes.Clone(p), "\n\r \x00GET"...)); more != whole {
				t.Fatalf("verdict changed after more bytes: %+v, was %+v", more, whole)
			}
		}
	})
}
