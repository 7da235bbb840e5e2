package compress

import "testing"

func TestOptionsValidate(t *testing.T) {
	cases := []struct {
		name string
		opts *Options
		ok   bool
	}{
		{"nil", nil, true},
		{"zero", &Options{}, true},
		{"set", &Options{MinSize: 256, GzipLevel: 9, BrotliQuality: 11}, true},
		{"negative MinSize", &Options{MinSize: -1}, false},
		{"GzipLevel too high", &Options{GzipLevel: 10}, false},
		{"GzipLevel negative", &Options{GzipLevel: -2}, false},
		{"BrotliQuality too high", &Options{BrotliQuality: 12}, false},
	}
	for _, tc := range cases {
		err := tc.opts.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestOptionsResolve(t *testing.T) {
	got := (&Options{GzipLevel: 42, BrotliQuality: 7}).resolve()
	want := settings{minSize: DefaultMinSize, gzipLevel: DefaultGzipLevel, brotliQuality: 7}
	if got != want {
		t.Errorf("resolve() = %+v, want %+v", got, want)
	}
	if got := (*Options)(nil).resolve(); got.minSize != DefaultMinSize {
		t.Errorf("nil resolve() = %+v", got)
	}
}
