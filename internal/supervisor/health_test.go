package supervisor

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestProbe(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/created", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) })
	mux.HandleFunc("/unavailable", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "draining", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	tests := []struct {
		url     string
		wantErr string // "" for success
	}{
		{srv.URL + "/ok", ""},
		{srv.URL + "/created", ""},
		{srv.URL + "/unavailable", "status 503"},
		{srv.URL + "/missing", "status 404"},
		{srv.URL + "/slow", "timed out"},
		{"http://" + freeAddr(t) + "/healthz", "connection refused"},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := Probe(ctx, client, tt.url)
		cancel()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("Probe(%s) = %v, want nil", tt.url, err)
		case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
			t.Errorf("Probe(%s) = %v, want %q", tt.url, err, tt.wantErr)
		}
	}
}

func TestProbeBadURL(t *testing.T) {
	err := Probe(context.Background(), http.DefaultClient, "://nope")
	if err == nil || !strings.Contains(err.Error(), "missing protocol scheme") {
		t.Fatalf("got %v", err)
	}
}

// freeAddr returns a loopback address that nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
