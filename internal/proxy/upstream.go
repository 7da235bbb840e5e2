package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herd-run/herd/internal/balance"
)

// maxAttempts bounds how many endpoints one request tries.
const maxAttempts = 3

// upstream is the ReverseProxy's RoundTripper: it takes a slot on an
// endpoint (queueing if every worker is busy), sends the request over that
// endpoint's pool, and tries another endpoint when that is safe:
//   - a connect failure always (the request never reached a worker), if
//     the body can be sent again;
//   - another failure only for an idempotent method, within the app's retry
//     budget.
//
// Nothing is retried once a response arrived: the first byte to the
// client may follow it.
type upstream struct{ p *Proxy }

func (u upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	st := req.Context().Value(ctxKey{}).(*reqState)
	rt := st.route
	var tried balance.Tried
	var lastErr error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		ep, wait, err := rt.set.Acquire(req.Context(), st.key, &tried)
		st.wait += wait
		if err != nil {
			if lastErr != nil && errors.Is(err, balance.ErrNoEndpoint) {
				return nil, lastErr
			}
			return nil, err
		}
		if attempt > 0 {
			if req, err = rewind(req); err != nil {
				rt.set.Release(ep, 0, balance.Canceled)
				return nil, lastErr
			}
		}
		req.URL.Host = ep.Addr
		st.tries++
		start := time.Now()
		resp, err := ep.Transport.RoundTrip(req)
		if err == nil && !rt.NoBuffering && !streaming(req, resp) {
			// Read the answer as fast as the worker writes it and free the
			// worker; the client then gets it at its own pace.
			resp, err = u.p.spoolResponse(resp)
			if err == nil {
				st.ep = ep
				rt.set.Release(ep, time.Since(start), outcomeOf(resp.StatusCode))
				return resp, nil
			}
		} else if err == nil {
			st.ep = ep
			rb := &releaseBody{ReadCloser: resp.Body, set: rt.set, ep: ep, start: start, outcome: outcomeOf(resp.StatusCode)}
			if w, ok := resp.Body.(io.Writer); ok && resp.StatusCode == http.StatusSwitchingProtocols {
				// An upgraded connection (WebSocket) is a tunnel that
				// ReverseProxy writes to as well; it holds the worker's slot
				// until it closes.
				rt.app.tunnels.Add(1)
				rb.onRelease = func() { rt.app.tunnels.Add(-1) }
				resp.Body = tunnelBody{rb, w}
			} else {
				resp.Body = rb
			}
			return resp, nil
		}
		o := classify(req.Context(), err)
		rt.set.Release(ep, time.Since(start), o)
		tried.Add(ep)
		lastErr = err
		if o == balance.Canceled || !u.mayRetry(rt, req, o) {
			return nil, err
		}
		rt.app.retried(o)
		u.p.log.Debug("retrying on another endpoint", "app", rt.App, "endpoint", ep.Addr, "err", err)
	}
	return nil, lastErr
}

func (u upstream) mayRetry(rt *route, req *http.Request, o balance.Outcome) bool {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false // the body is gone
	}
	if o == balance.ConnectFailed {
		return true
	}
	return idempotent(req.Method) && rt.retry.allow()
}

// rewind gives the request a fresh copy of its body for another attempt.
func rewind(req *http.Request) (*http.Request, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, nil
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	req.Body = body
	return req, nil
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

func outcomeOf(status int) balance.Outcome {
	if status >= 500 {
		return balance.ServerError
	}
	return balance.OK
}

// classify says what an upstream error means for the endpoint.
func classify(ctx context.Context, err error) balance.Outcome {
	if ctx.Err() != nil {
		return balance.Canceled
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return balance.ConnectFailed
	}
	return balance.ServerError
}

// releaseBody gives the endpoint's slot back when the response has been
// read (or abandoned): a sync worker is busy until then.
type releaseBody struct {
	io.ReadCloser
	set     *balance.Set
	ep      *balance.Endpoint
	start   time.Time
	outcome balance.Outcome
	once    sync.Once
	// onRelease, if set, runs once with the release.
	onRelease func()
}

func (b *releaseBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.release(b.outcome)
	} else if err != nil {
		b.release(balance.ServerError)
	}
	return n, err
}

func (b *releaseBody) Close() error {
	err := b.ReadCloser.Close()
	// Closed before EOF: the client went away, or the copy failed.
	b.release(balance.Canceled)
	return err
}

func (b *releaseBody) release(o balance.Outcome) {
	b.once.Do(func() {
		b.set.Release(b.ep, time.Since(b.start), o)
		if b.onRelease != nil {
			b.onRelease()
		}
	})
}

// tunnelBody is an upgraded connection's body: readable, writable, and
// releasing its slot when closed.
type tunnelBody struct {
	*releaseBody
	w io.Writer
}

func (t tunnelBody) Write(p []byte) (int, error) { return t.w.Write(p) }

// Read ends like a connection does: either side hanging up says nothing
// about the worker's health.
func (t tunnelBody) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if err != nil {
		t.release(balance.Canceled)
	}
	return n, err
}

// retryBudget keeps retries (other than of connect failures) to about a
// fifth of an app's active requests, so a sick app is not hit twice as
// hard (Finagle's and Envoy's retry budgets).
type retryBudget struct {
	active   *atomic.Int64
	retrying atomic.Int64
	window   atomic.Int64 // unix seconds of the current window
}

const minRetriesPerSecond = 3

func (b *retryBudget) allow() bool {
	now := time.Now().Unix()
	if w := b.window.Load(); w != now && b.window.CompareAndSwap(w, now) {
		b.retrying.Store(0)
	}
	limit := max(minRetriesPerSecond, b.active.Load()/5)
	return b.retrying.Add(1) <= limit
}

// streaming answers are passed through as they come: upgrades, event
// streams, and whatever the app marks with X-Accel-Buffering: no.
func streaming(req *http.Request, resp *http.Response) bool {
	if resp.StatusCode == http.StatusSwitchingProtocols || req.Header.Get("Upgrade") != "" {
		return true
	}
	if strings.EqualFold(resp.Header.Get("X-Accel-Buffering"), "no") {
		return true
	}
	ct, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
}

// spoolResponse reads a worker's whole answer.
func (p *Proxy) spoolResponse(resp *http.Response) (*http.Response, error) {
	sp, err := newSpool(resp.Body, resp.ContentLength, responseMem, maxResponseSpool, p.cfg.TempDir, true)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = &spoolBody{Reader: sp.Reader(), s: sp}
	if resp.ContentLength < 0 {
		// A chunked answer now has a length.
		resp.ContentLength = sp.size
		resp.TransferEncoding = nil
		resp.Header.Del("Transfer-Encoding")
		resp.Header.Set("Content-Length", strconv.FormatInt(sp.size, 10))
	}
	return resp, nil
}
