package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"

	"github.com/herd-run/herd/internal/balance"
)

// statusClientClosed is nginx's 499: the client went away before the
// answer. It is logged, never sent.
const statusClientClosed = 499

// statusFor is the one place where a failure on the way to a worker becomes
// an HTTP status.
func statusFor(r *http.Request, err error) (status int, retryAfter bool) {
	var ne net.Error
	switch {
	case r.Context().Err() != nil:
		return statusClientClosed, false
	case errors.Is(err, balance.ErrNoEndpoint), errors.Is(err, balance.ErrQueueFull), errors.Is(err, balance.ErrQueueTimeout):
		return http.StatusServiceUnavailable, true
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return http.StatusGatewayTimeout, false
	}
	return http.StatusBadGateway, false
}

// fail is the ReverseProxy's ErrorHandler.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, retryAfter := statusFor(r, err)
	st, _ := r.Context().Value(ctxKey{}).(*reqState)
	app := ""
	if st != nil {
		app = st.route.App
		if st.lw != nil {
			st.lw.err = err
			if status == statusClientClosed {
				st.lw.code = statusClientClosed
			}
		}
	}
	if status == statusClientClosed {
		return
	}
	p.log.Warn("request failed", "app", app, "host", r.Host, "path", r.URL.Path, "status", status, "err", err)
	if retryAfter {
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	w.Write([]byte(http.StatusText(status) + "\n"))
}
