package cache

import (
	"fmt"
	"net/http"
	"testing"
)

func BenchmarkHit(b *testing.B) {
	c := New(0, nil)
	o := newOrigin("hello", "Cache-Control", "max-age=3600", "Content-Type", "text/html", "Vary", "Accept-Encoding")
	r := get("/page?id=1", "Accept-Encoding", "gzip")
	if _, _, err := c.Do("web", r, allLive, o.fetch); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, hit, _ := c.Do("web", r, allLive, o.fetch); !hit {
			b.Fatal("miss")
		}
	}
}

func BenchmarkHitParallel(b *testing.B) {
	c := New(0, nil)
	const paths = 64
	o := newOrigin("x", "Cache-Control", "max-age=3600")
	reqs := make([]*http.Request, paths)
	for i := range reqs {
		reqs[i] = get(fmt.Sprintf("/p/%d", i))
		if _, _, err := c.Do("web", reqs[i], allLive, o.fetch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, hit, _ := c.Do("web", reqs[i%paths], allLive, o.fetch); !hit {
				b.Error("miss")
			}
			i++
		}
	})
}
