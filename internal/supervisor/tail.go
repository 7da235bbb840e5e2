package supervisor

import (
	"bytes"
	"sync"
)

// maxLineBytes bounds one remembered line so that a process writing without
// newlines cannot grow the buffer without limit.
const maxLineBytes = 1024

// tailBuffer is an io.Writer that remembers the last lines written to it.
type tailBuffer struct {
	mu      sync.Mutex
	lines   []string // ring of complete lines
	next    int      // index in lines for the next complete line
	full    bool     // the ring has wrapped
	partial []byte   // text after the last newline
}

func newTailBuffer(n int) *tailBuffer {
	return &tailBuffer{lines: make([]string, n)}
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.appendPartial(p)
			break
		}
		t.appendPartial(p[:i])
		t.push(string(bytes.TrimSuffix(t.partial, []byte("\r"))))
		t.partial = t.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (t *tailBuffer) appendPartial(p []byte) {
	if room := maxLineBytes - len(t.partial); len(p) > room {
		p = p[:room]
	}
	t.partial = append(t.partial, p...)
}

func (t *tailBuffer) push(line string) {
	t.lines[t.next] = line
	t.next = (t.next + 1) % len(t.lines)
	if t.next == 0 {
		t.full = true
	}
}

// Lines returns the remembered lines, oldest first. An unterminated last line
// is included because a crashing process often dies mid-line.
func (t *tailBuffer) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	if t.full {
		out = append(out, t.lines[t.next:]...)
	}
	out = append(out, t.lines[:t.next]...)
	if len(t.partial) > 0 {
		out = append(out, string(t.partial))
		if len(out) > len(t.lines) {
			out = out[1:]
		}
	}
	return out
}
