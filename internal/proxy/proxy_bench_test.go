package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// benchRoutes is a table of 100 routes: 80 exact hosts (half of them with
// two prefixes), 20 wildcard domains.
func benchRoutes() []Route {
	var rs []Route
	for i := range 40 {
		host := fmt.Sprintf("app%d.example.com", i)
		rs = append(rs,
			Route{App: fmt.Sprintf("app%d", i), Hosts: []string{host}, Prefix: "/", Endpoints: []Endpoint{{Addr: "10.0.0.1:8000"}, {Addr: "10.0.0.2:8000"}}},
			Route{App: fmt.Sprintf("app%d-api", i), Hosts: []string{host}, Prefix: "/api/v1", Endpoints: []Endpoint{{Addr: "10.0.0.3:8000"}}},
		)
	}
	for i := 40; i < 80; i++ {
		rs = append(rs, Route{App: fmt.Sprintf("app%d", i), Hosts: []string{fmt.Sprintf("app%d.example.com", i)}, Endpoints: []Endpoint{{Addr: "10.0.0.4:8000"}}})
	}
	for i := range 20 {
		rs = append(rs, Route{App: fmt.Sprintf("tenant%d", i), Hosts: []string{fmt.Sprintf("*.tenant%d.example.net", i)}, Endpoints: []Endpoint{{Addr: "10.0.1.1:8000"}}})
	}
	return rs
}

func BenchmarkTableMatch(b *testing.B) {
	tab := newTestTable(benchRoutes())
	cases := []struct{ name, host, path string }{
		{"exact", "app42.example.com", "/index.html"},
		{"exact-prefix", "app7.example.com:8080", "/api/v1/users"},
		{"wildcard", "shop.tenant19.example.net", "/"},
		{"miss", "nowhere.example.org", "/"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tab.match(c.host, c.path)
			}
		})
	}
}

// BenchmarkProxy proxies GET requests to one backend answering 100 bytes.
// "handler" calls ServeHTTP directly (its allocations include the
// request and recorder it makes); "client" goes through a real front
// server with a keep-alive client, as a request from the edge would.
func BenchmarkProxy(b *testing.B) {
	body := strings.Repeat("x", 100)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, body)
	}))
	defer backend.Close()
	p := New(Config{})
	p.SetRoutes([]Route{{App: "shop", Hosts: []string{"shop.test"}, Endpoints: []Endpoint{{Addr: backend.Listener.Addr().String()}}}})
	defer p.SetRoutes(nil)

	b.Run("handler", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
			w := httptest.NewRecorder()
			p.ServeHTTP(w, r)
			if w.Code != http.StatusOK || w.Body.Len() != 100 {
				b.Fatalf("%d, %d bytes; want 200, 100 bytes", w.Code, w.Body.Len())
			}
		}
	})
	b.Run("client", func(b *testing.B) {
		front := httptest.NewServer(p)
		defer front.Close()
		client := front.Client()
		defer client.CloseIdleConnections()
		req, err := http.NewRequest(http.MethodGet, front.URL+"/", nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Host = "shop.test"
		b.ReportAllocs()
		for b.Loop() {
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || n != 100 {
				b.Fatalf("%d, %d bytes; want 200, 100 bytes", resp.StatusCode, n)
			}
		}
	})
}
