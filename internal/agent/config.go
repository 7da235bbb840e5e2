package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is a node's configuration; cmd/node fills it from flags.
type Config struct {
	DataDir   string
	Name      string
	Gossip    string // gossip bind host:port
	Advertise string // IP fronts and workers use; workers bind it
	Join      []string
	GRPC      string // Agent API bind host:port
	// Admin is the listener for /healthz, /metrics and grpc.health.v1
	// without client certificates; empty: none.
	Admin string
	// ClusterKeyFile holds the cluster key(s) that encrypt gossip
	// (default <data-dir>/cluster.key).
	ClusterKeyFile string
	Labels         map[string]string
	PortLo         int // worker ports are taken from [PortLo, PortHi]
	PortHi         int
	// StopGrace is how long a worker may take to stop after SIGTERM.
	StopGrace time.Duration
	// AckWait caps how long the node waits for every front to acknowledge
	// that it stopped routing to withdrawn workers before stopping them.
	AckWait time.Duration
	// WorkerUser runs workers as this user when herd-node runs as root
	// (default "nobody"); "root" needs AllowRootWorkers. When herd-node is
	// not root, workers run as its own user and WorkerUser must be empty
	// or that user.
	WorkerUser       string
	AllowRootWorkers bool
	// Shim is the herd-node executable, re-run as each worker's shim so
	// that a worker's whole process group dies with the node; empty runs
	// workers without one.
	Shim   string
	Logger *slog.Logger
}

// Defaults fills zero fields.
func (c *Config) Defaults() {
	if c.Name == "" {
		c.Name, _ = os.Hostname()
	}
	if c.PortLo == 0 && c.PortHi == 0 {
		c.PortLo, c.PortHi = 20000, 29999
	}
	if c.StopGrace == 0 {
		c.StopGrace = 30 * time.Second
	}
	if c.AckWait == 0 {
		c.AckWait = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate rejects a config that cannot work, naming the flag at fault.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("--data-dir is required")
	}
	if c.Name == "" {
		return errors.New("--name is required (the host name is unknown)")
	}
	for flag, addr := range map[string]string{"--gossip": c.Gossip, "--grpc": c.GRPC} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%s %q: want HOST:PORT", flag, addr)
		}
	}
	if c.PortLo < 1 || c.PortHi > 65535 || c.PortLo > c.PortHi {
		return fmt.Errorf("--port-range %d-%d: want LO-HI within 1-65535", c.PortLo, c.PortHi)
	}
	return nil
}

// ParsePortRange reads "LO-HI".
func ParsePortRange(s string) (lo, hi int, err error) {
	a, b, ok := strings.Cut(s, "-")
	if ok {
		lo, err = strconv.Atoi(a)
		if err == nil {
			hi, err = strconv.Atoi(b)
		}
	}
	if !ok || err != nil || lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("--port-range %q: want LO-HI, e.g. 20000-29999", s)
	}
	return lo, hi, nil
}

// ParseLabels reads "k=v,k2=v2".
func ParseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--labels %q: want k=v,k2=v2", s)
		}
		out[k] = v
	}
	return out, nil
}
