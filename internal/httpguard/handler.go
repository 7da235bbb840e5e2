package httpguard

import (
	"bufio"
	"net"
	"net/http"
)

// Handler wraps h: a request on a Bad connection gets 400
// "bad request: <reason>" with Connection: close and never reaches h.
//
// net/http reads a whole request head before it calls a handler, so a bad
// head has been seen by the time its request gets here. It may also have
// read further: a bad request pipelined behind a good one can poison the
// connection before the good one is answered, which then gets the 400 too.
// That costs a client retry and nothing else.
//
// Once a request asks to upgrade, the inspector stops (what follows may be
// WebSocket frames, not HTTP/1). If h then does not switch protocols, the
// response carries Connection: close, so an ignored Upgrade field cannot turn
// the inspection off for the rest of a keep-alive connection.
func Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := FromContext(r.Context())
		if c == nil {
			h.ServeHTTP(w, r)
			return
		}
		if why := c.Bad(); why != "" {
			w.Header().Set("Connection", "close")
			http.Error(w, "bad request: "+why, http.StatusBadRequest)
			return
		}
		if !c.tunnel.Load() || r.ProtoMajor != 1 {
			h.ServeHTTP(w, r)
			return
		}
		uw := &upgradeWriter{ResponseWriter: w}
		h.ServeHTTP(uw, r)
		uw.final(http.StatusOK)
	})
}

// upgradeWriter closes the connection after a response to an upgrade
// request unless the handler switched protocols: by 101 or by hijacking.
type upgradeWriter struct {
	http.ResponseWriter
	decided bool
}

// final is called before the final status goes out.
func (w *upgradeWriter) final(code int) {
	if w.decided {
		return
	}
	w.decided = true
	if code != http.StatusSwitchingProtocols {
		w.Header().Set("Connection", "close")
	}
}

func (w *upgradeWriter) WriteHeader(code int) {
	if code == http.StatusSwitchingProtocols || code >= 200 {
		w.final(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *upgradeWriter) Write(p []byte) (int, error) {
	w.final(http.StatusOK)
	return w.ResponseWriter.Write(p)
}

func (w *upgradeWriter) FlushError() error {
	w.final(http.StatusOK)
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *upgradeWriter) Flush() { _ = w.FlushError() }

func (w *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.decided = true
	}
	return c, rw, err
}

// Unwrap lets http.ResponseController reach the other optional methods.
func (w *upgradeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
