package release

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"
	"testing"
)

func TestValidDigest(t *testing.T) {
	sum := sha256.Sum256([]byte("hello"))
	good := hex.EncodeToString(sum[:])
	tests := []struct {
		in   string
		want bool
	}{
		{good, true},
		{strings.Repeat("0", 64), true},
		{"", false},
		{good[:63], false},
		{good + "0", false},
		{strings.ToUpper(good), false},
		{"g" + good[1:], false},
		{"../" + good[3:], false},
		{good[:62] + "\x00a", false},
	}
	for _, tt := range tests {
		if got := ValidDigest(tt.in); got != tt.want {
			t.Errorf("ValidDigest(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestHashingWriter(t *testing.T) {
	w := newHashingWriter()
	w.Write([]byte("hel"))
	w.Write([]byte("lo"))
	sum := sha256.Sum256([]byte("hello"))
	if got, want := w.digest(), hex.EncodeToString(sum[:]); got != want {
		t.Errorf("digest = %s, want %s", got, want)
	}
	if w.n != 5 {
		t.Errorf("n = %d, want 5", w.n)
	}
}

func TestChunkReader(t *testing.T) {
	chunks := [][]byte{[]byte("ab"), nil, []byte("cde"), []byte("f")}
	r := ChunkReader(func() ([]byte, error) {
		if len(chunks) == 0 {
			return nil, io.EOF
		}
		c := chunks[0]
		chunks = chunks[1:]
		return c, nil
	})
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "abcdef" {
		t.Fatalf("ReadAll = %q, %v", b, err)
	}
}
