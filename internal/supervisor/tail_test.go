package supervisor

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestTailBufferKeepsLastLines(t *testing.T) {
	tb := newTailBuffer(3)
	if got := tb.Lines(); len(got) != 0 {
		t.Fatalf("empty buffer: got %q", got)
	}
	// Chunks deliberately split lines to mimic pipe reads.
	for _, chunk := range []string{"one\ntw", "o\r\nthree\n", "four\nfi", "ve\n"} {
		if _, err := tb.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := tb.Lines(), []string{"three", "four", "five"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestTailBufferIncludesUnterminatedLine(t *testing.T) {
	tb := newTailBuffer(2)
	fmt.Fprint(tb, "a\nb\npanic: boom")
	if got, want := tb.Lines(), []string{"b", "panic: boom"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	fmt.Fprint(tb, "\n")
	if got, want := tb.Lines(), []string{"b", "panic: boom"}; !slices.Equal(got, want) {
		t.Fatalf("after newline: got %q, want %q", got, want)
	}
}

func TestTailBufferBoundsLineLength(t *testing.T) {
	tb := newTailBuffer(2)
	long := strings.Repeat("x", 3*maxLineBytes)
	fmt.Fprint(tb, long[:maxLineBytes/2], long[maxLineBytes/2:], "\nshort\n")
	got := tb.Lines()
	if len(got) != 2 || len(got[0]) != maxLineBytes || got[1] != "short" {
		t.Fatalf("got %d lines, first %d bytes: %.40q", len(got), len(got[0]), got)
	}
}

func TestTailBufferCopies(t *testing.T) {
	tb := newTailBuffer(2)
	fmt.Fprint(tb, "a\n")
	got := tb.Lines()
	got[0] = "changed"
	if tb.Lines()[0] != "a" {
		t.Fatal("Lines exposed internal storage")
	}
}
