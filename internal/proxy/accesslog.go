package proxy

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

var (
	bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	logMu   sync.Mutex // one line at a time
)

// writeAccessLog writes nginx's "combined" format followed by herd's
// fields, or one JSON object per line.
func (p *Proxy) writeAccessLog(lw *logWriter, r *http.Request, app string, d time.Duration) {
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bufPool.Put(buf)
	remote, _, _ := net.SplitHostPort(r.RemoteAddr)
	upstream := "-"
	if lw.ep != nil {
		upstream = lw.ep.Addr
	}
	if p.cfg.AccessLogFormat == "json" {
		json.NewEncoder(buf).Encode(map[string]any{
			"time":        time.Now().UTC().Format(time.RFC3339Nano),
			"remote":      remote,
			"host":        r.Host,
			"method":      r.Method,
			"uri":         r.RequestURI,
			"proto":       r.Proto,
			"status":      lw.status(),
			"bytes":       lw.bytes,
			"duration_ms": float64(d.Microseconds()) / 1000,
			"queue_ms":    float64(lw.wait.Microseconds()) / 1000,
			"app":         app,
			"upstream":    upstream,
			"request_id":  lw.reqID,
			"referer":     r.Referer(),
			"user_agent":  r.UserAgent(),
		})
	} else {
		buf.WriteString(remote)
		buf.WriteString(" - - [")
		buf.WriteString(time.Now().Format("02/Jan/2006:15:04:05 -0700"))
		buf.WriteString(`] "`)
		buf.WriteString(r.Method + " " + r.RequestURI + " " + r.Proto)
		buf.WriteString(`" `)
		buf.WriteString(strconv.Itoa(lw.status()))
		buf.WriteByte(' ')
		buf.WriteString(strconv.FormatInt(lw.bytes, 10))
		buf.WriteString(` "` + dash(r.Referer()) + `" "` + dash(r.UserAgent()) + `"`)
		buf.WriteString(" rt=" + strconv.FormatFloat(d.Seconds(), 'f', 3, 64))
		buf.WriteString(" app=" + dash(app) + " upstream=" + upstream + " rid=" + dash(lw.reqID) + "\n")
	}
	logMu.Lock()
	p.cfg.AccessLog.Write(buf.Bytes())
	logMu.Unlock()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
