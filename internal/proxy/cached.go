package proxy

import (
	"bytes"
	"context"
	"net/http"

	"github.com/herd-run/herd/internal/cache"
)

// maxCacheBody is the biggest response body the cache path holds in
// memory; a bigger one streams to its client and is not cached.
const maxCacheBody = 1 << 20

// serveCached answers a GET or HEAD of an app with --cache on: from the
// front's cache when a fresh entry exists, else from a worker (one fetch
// for concurrent misses of a key), storing what may be stored.
func (p *Proxy) serveCached(w http.ResponseWriter, r *http.Request, rt *route, st *reqState) {
	var streamed bool
	resp, hit, err := p.cache.Do(rt.App, r, rt.live, func() (*cache.Response, bool, error) {
		cw := &captureWriter{client: w, header: http.Header{}}
		p.rp.ServeHTTP(cw, r.WithContext(context.WithValue(r.Context(), ctxKey{}, st)))
		if cw.passthrough {
			streamed = true
			return &cache.Response{Status: cw.status(), Header: cw.header}, true, nil
		}
		release := ""
		if st.ep != nil {
			release = st.ep.Release
		}
		return &cache.Response{Status: cw.status(), Header: cw.header, Body: cw.buf.Bytes(), Release: release}, false, nil
	})
	if streamed {
		return // the response already went to the client as it came
	}
	if err != nil {
		p.fail(w, r, err)
		return
	}
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	if hit {
		h.Set("X-Cache", "HIT")
	} else {
		h.Set("X-Cache", "MISS")
	}
	w.WriteHeader(resp.Status)
	if r.Method != http.MethodHead {
		w.Write(resp.Body)
	}
}

// captureWriter holds a worker's response for the cache. A response that
// grows past maxCacheBody, or that the proxy flushes (a stream), switches
// to passing through to the client as it comes, uncached.
type captureWriter struct {
	client      http.ResponseWriter
	header      http.Header
	code        int
	buf         bytes.Buffer
	passthrough bool
}

func (c *captureWriter) Header() http.Header { return c.header }

func (c *captureWriter) WriteHeader(code int) {
	if c.code == 0 && code >= 200 {
		c.code = code
	}
	if c.passthrough {
		c.client.WriteHeader(code)
	}
}

func (c *captureWriter) status() int {
	if c.code == 0 {
		return http.StatusOK
	}
	return c.code
}

func (c *captureWriter) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	if c.passthrough {
		return c.client.Write(b)
	}
	if c.buf.Len()+len(b) > maxCacheBody {
		if err := c.pass(); err != nil {
			return 0, err
		}
		return c.client.Write(b)
	}
	return c.buf.Write(b)
}

// Flush means the proxy is streaming: stop holding the response.
func (c *captureWriter) Flush() {
	if !c.passthrough {
		c.pass()
	}
	http.NewResponseController(c.client).Flush()
}

// pass sends what was held and goes on as a plain writer.
func (c *captureWriter) pass() error {
	c.passthrough = true
	h := c.client.Header()
	for k, v := range c.header {
		h[k] = v
	}
	h.Set("X-Cache", "MISS")
	c.client.WriteHeader(c.status())
	_, err := c.client.Write(c.buf.Bytes())
	c.buf.Reset()
	return err
}
