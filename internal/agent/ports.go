package agent

import (
	"fmt"
	"net"
	"strconv"
	"sync"
)

// portPool hands out worker ports from a range. It goes round the range
// rather than reusing the lowest free port, so a port freed by a retired
// worker is not handed out again until the whole range was used: a front
// still holding a pooled connection to it cannot reach a stranger.
type portPool struct {
	host   string
	lo, hi int

	mu   sync.Mutex
	next int
	used map[int]bool
}

func newPortPool(host string, lo, hi int) *portPool {
	return &portPool{host: host, lo: lo, hi: hi, next: lo, used: map[int]bool{}}
}

func (p *portPool) get() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.hi - p.lo + 1
	for range n {
		port := p.next
		p.next++
		if p.next > p.hi {
			p.next = p.lo
		}
		if p.used[port] {
			continue
		}
		// Another program (or a worker of another node on this host) may
		// hold it.
		l, err := net.Listen("tcp", net.JoinHostPort(p.host, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		p.used[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("no free port in --port-range %d-%d on %s", p.lo, p.hi, p.host)
}

func (p *portPool) put(port int) {
	p.mu.Lock()
	delete(p.used, port)
	p.mu.Unlock()
}
