package clustertest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Load is continuous traffic through the fronts, as a test's witness that
// an operation cost users nothing: short GETs, slow requests (/sleep),
// streamed answers (/stream) and POSTs with bodies (/echo), each checked
// for its status, its body and the release that answered.
type Load struct {
	c      *Cluster
	host   string
	fronts []*Proc
	stop   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	mu    sync.Mutex
	stats LoadStats
}

// LoadStats counts what the load saw since the last Phase.
type LoadStats struct {
	Requests, Failed int
	// Errors are the first failures, for the test's message.
	Errors []string
	// Releases and Nodes count the answers by release and by node.
	Releases, Nodes map[string]int
}

func (s LoadStats) String() string {
	return fmt.Sprintf("%d requests, %d failed %q, releases %v, nodes %v", s.Requests, s.Failed, s.Errors, s.Releases, s.Nodes)
}

// StartLoad sends requests for host from n goroutines, spread over fronts,
// until Stop.
func (c *Cluster) StartLoad(host string, n int, fronts ...*Proc) *Load {
	if len(fronts) == 0 {
		fronts = []*Proc{c.Front}
	}
	l := &Load{c: c, host: host, fronts: fronts, stop: make(chan struct{})}
	l.reset()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: n}}
	for i := range n {
		l.wg.Go(func() {
			for k := i; ; k++ {
				select {
				case <-l.stop:
					return
				default:
				}
				front := fronts[k%len(fronts)]
				rel, node, err := l.one(client, front, k%4)
				l.mu.Lock()
				l.stats.Requests++
				if err != nil {
					l.stats.Failed++
					if len(l.stats.Errors) < 5 {
						l.stats.Errors = append(l.stats.Errors, fmt.Sprintf("%s via %s: %v", time.Now().Format("15:04:05.000"), front.Name, err))
					}
				} else {
					l.stats.Releases[rel]++
					l.stats.Nodes[node]++
				}
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *Load) reset() {
	l.stats = LoadStats{Releases: map[string]int{}, Nodes: map[string]int{}}
}

// Phase returns what the load saw since the last call and starts afresh.
func (l *Load) Phase() LoadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	l.reset()
	return s
}

// Stop ends the load and returns what it saw since the last Phase; it may
// be called more than once.
func (l *Load) Stop() LoadStats {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	return l.Phase()
}

// one sends request kind k (0 GET /, 1 /sleep, 2 /stream, 3 POST /echo) and
// returns the release and node that answered.
func (l *Load) one(client *http.Client, front *Proc, k int) (release, node string, err error) {
	base := "http://" + front.Addrs["http"]
	var req *http.Request
	var sum string
	switch k {
	case 0:
		req, err = http.NewRequest("GET", base+"/", nil)
	case 1:
		req, err = http.NewRequest("GET", base+"/sleep?ms=150", nil)
	case 2:
		req, err = http.NewRequest("GET", base+"/stream?n=3&ms=50", nil)
	default:
		body := make([]byte, 4096)
		rand.Read(body)
		h := sha256.Sum256(body)
		sum = hex.EncodeToString(h[:])
		req, err = http.NewRequest("POST", base+"/echo", bytes.NewReader(body))
	}
	if err != nil {
		return "", "", err
	}
	req.Host = l.host
	resp, err := client.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", "", fmt.Errorf("%s: reading the answer: %w", req.URL.Path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("%s: status %d: %.200s", req.URL.Path, resp.StatusCode, b)
	}
	if k == 2 {
		// "line i of n NODE WORKER RELEASE"
		sc := bufio.NewScanner(bytes.NewReader(b))
		lines := 0
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 7 {
				return "", "", fmt.Errorf("/stream: bad line %q", sc.Text())
			}
			node, release = f[4], f[6]
			lines++
		}
		if lines != 3 {
			return "", "", fmt.Errorf("/stream: %d lines, want 3: %q", lines, b)
		}
		return release, node, nil
	}
	var r struct {
		Release, Node string
		SHA256        string `json:"sha256"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return "", "", fmt.Errorf("%s: %v: %.200s", req.URL.Path, err, b)
	}
	if sum != "" && r.SHA256 != sum {
		return "", "", fmt.Errorf("/echo: the app saw a body with sha256 %s, sent %s", r.SHA256, sum)
	}
	return r.Release, r.Node, nil
}
