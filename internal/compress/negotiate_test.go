package compress

import (
	"net/http"
	"testing"
)

func TestNegotiate(t *testing.T) {
	cases := []struct {
		header string
		want   string
	}{
		{"", ""},
		{"gzip", "gzip"},
		{"br", "br"},
		{"gzip, br", "br"}, // br wins a tie
		{"br, gzip", "br"},
		{"br;q=1, gzip;q=0.5", "br"},
		{"br;q=0.5, gzip;q=1", "gzip"},
		{"gzip;q=0, br", "br"},
		{"gzip;q=0", ""},
		{"br;q=0, gzip;q=0", ""},
		{"*", "br"},
		{"*;q=0", ""},
		{"*;q=0.5, br;q=0", "gzip"}, // * covers only what is not named
		{"gzip;q=0.8, *;q=0.9", "br"},
		{"identity", ""},
		{"identity;q=0", ""},
		{"gzip;q=0.5, identity", ""},         // identity named and preferred
		{"gzip, identity;q=0.5", "gzip"},     // identity named but lower
		{"gzip;q=0.1", "gzip"},               // unnamed identity is only the fallback
		{" GZIP ; Q=0.5 , Br;q=0.4", "gzip"}, // case and spaces
		{"gzip;q=0.500,br;q=0.499", "gzip"},
		{"x-gzip", "gzip"},
		{"deflate, compress", ""},
		{"br;q=2, gzip", "gzip"},   // malformed q: entry ignored
		{"br;q=abc, gzip", "gzip"}, // likewise
		{"br;q=0.1234, gzip;q=0.1", "gzip"},
		{"br;level=5;q=0.2, gzip;q=0.1", "br"}, // other parameters are skipped
		{",,gzip,", "gzip"},
		{"zstd, gzip;q=0.9", "gzip"},
	}
	for _, tc := range cases {
		if got := Negotiate(tc.header); got != tc.want {
			t.Errorf("Negotiate(%q) = %q, want %q", tc.header, got, tc.want)
		}
	}
}

func TestNegotiateHeaderLines(t *testing.T) {
	h := http.Header{}
	h.Add("Accept-Encoding", "gzip;q=0.5")
	h.Add("Accept-Encoding", "br")
	if got := negotiateHeader(h); got != "br" {
		t.Errorf("two Accept-Encoding lines: got %q, want br", got)
	}
}

func TestParseQ(t *testing.T) {
	cases := []struct {
		in   string
		want int
		ok   bool
	}{
		{"0", 0, true},
		{"1", 1000, true},
		{"1.", 1000, true},
		{"1.000", 1000, true},
		{"0.5", 500, true},
		{"0.05", 50, true},
		{"0.001", 1, true},
		{"1.001", 0, false},
		{"0.0001", 0, false},
		{"2", 0, false},
		{".5", 0, false},
		{"", 0, false},
		{"0,5", 0, false},
	}
	for _, tc := range cases {
		got, ok := parseQ(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseQ(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func BenchmarkNegotiate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if Negotiate("gzip, deflate, br, zstd") != "br" {
			b.Fatal("wrong coding")
		}
	}
}
