package proxy

import (
	"fmt"
	"testing"
)

// benchRoutes is a table of 100 routes: 80 exact hosts (half of them with
// two prefixes), 20 wildcard domains.
func benchRoutes() []Route {
	var rs []Route
	for i := range 40 {
		host := fmt.Sprintf("app%d.example.com", i)
		rs = append(rs,
			Route{App: fmt.Sprintf("app%d", i), Hosts: []string{host}, Prefix: "/", Endpoints: []string{"10.0.0.1:8000", "10.0.0.2:8000"}},
			Route{App: fmt.Sprintf("app%d-api", i), Hosts: []string{host}, Prefix: "/api/v1", Endpoints: []string{"10.0.0.3:8000"}},
		)
	}
	for i := 40; i < 80; i++ {
		rs = append(rs, Route{App: fmt.Sprintf("app%d", i), Hosts: []string{fmt.Sprintf("app%d.example.com", i)}, Endpoints: []string{"10.0.0.4:8000"}})
	}
	for i := range 20 {
		rs = append(rs, Route{App: fmt.Sprintf("tenant%d", i), Hosts: []string{fmt.Sprintf("*.tenant%d.example.net", i)}, Endpoints: []string{"10.0.1.1:8000"}})
	}
	return rs
}

func BenchmarkTableMatch(b *testing.B) {
	tab := newTable(benchRoutes())
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
