package release

import (
	"crypto/sha256"
	"encoding/hex"
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
