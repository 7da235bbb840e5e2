// Package cluster is herd's membership layer on hashicorp/memberlist: who is
// in the cluster (fronts and nodes), what role each member has and where its
// gRPC API is, and what each node runs (its NodeState).
//
// The node meta holds only the role, the gRPC address and the generation of
// the node's state, so that memberlist gossips every change of state by its
// own alive messages. The state itself travels by push/pull (anti-entropy)
// and, on fronts, by a gRPC fetch as soon as a newer generation is seen.
package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/protobuf/proto"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// Member is one front or node as gossip sees it.
type Member struct {
	Name       string
	Role       herdv1.Role
	Addr       string // IP
	GossipAddr string // host:port
	GRPCAddr   string // host:port
	RaftAddr   string // host:port of a front's Raft transport
	State      herdv1.MemberState
	// Leaving is set when the member announced that it is about to leave:
	// nobody should send it new work.
	Leaving bool
	// Generation of the member's state as its meta last said.
	Generation uint64
	Since      time.Time
}

// NodeView is a node member with the latest state known for it (nil if none
// arrived yet).
type NodeView struct {
	Member
	State *herdv1.NodeState
}

// forgetAfter is how long a dead or departed member stays listed.
const forgetAfter = 10 * time.Minute

// Cluster is this process's membership. Its methods are safe for concurrent use.
type Cluster struct {
	cfg Config
	log *slog.Logger
	ml  *memberlist.Memberlist

	mu      sync.Mutex
	self    meta
	local   *herdv1.NodeState // a node's own state
	members map[string]*Member
	states  map[string]*herdv1.NodeState
	wanted  map[string]uint64 // node -> newer generation to fetch

	changed  chan struct{}
	conflict chan string
	fetchc   chan struct{}
	metac    chan struct{}
	metaMu   sync.Mutex // one UpdateNode at a time
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// New starts gossip on cfg.Bind. Call Join to meet the rest of the cluster.
func New(cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cluster{
		cfg:      cfg,
		log:      log,
		self:     meta{Role: roleName(cfg.Role), GRPC: cfg.GRPCAddr, Raft: cfg.RaftAddr},
		conflict: make(chan string, 1),
		members:  map[string]*Member{},
		states:   map[string]*herdv1.NodeState{},
		wanted:   map[string]uint64{},
		changed:  make(chan struct{}, 1),
		fetchc:   make(chan struct{}, 1),
		metac:    make(chan struct{}, 1),
		ctx:      ctx,
		cancel:   cancel,
	}

	host, portStr, _ := net.SplitHostPort(cfg.Bind)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("--gossip %q: bad port", cfg.Bind)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	if host == "" {
		host = "0.0.0.0"
	}
	mc.BindAddr = host
	mc.BindPort = port
	mc.AdvertisePort = port
	if cfg.Advertise != "" {
		mc.AdvertiseAddr = cfg.Advertise
	} else if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		mc.AdvertiseAddr = host
	}
	// A member restarted under its old name from a new address would be
	// refused as a conflict (memberlist#157) until the dead one is reaped.
	mc.DeadNodeReclaimTime = 30 * time.Second
	if len(cfg.Keys) > 0 {
		keys := make([][]byte, len(cfg.Keys))
		for i := range cfg.Keys {
			keys[i] = cfg.Keys[i][:]
		}
		kr, err := memberlist.NewKeyring(keys[1:], keys[0])
		if err != nil {
			cancel()
			return nil, fmt.Errorf("--cluster-key-file: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	mc.Delegate = (*delegate)(c)
	mc.Events = (*events)(c)
	mc.Conflict = (*events)(c)
	mc.Logger = slog.NewLogLogger(log.With("component", "memberlist").Handler(), slog.LevelDebug)

	ml, err := memberlist.Create(mc)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.Bind, err)
	}
	c.ml = ml

	c.wg.Add(3)
	go c.notifyLoop()
	go c.fetchLoop()
	go c.metaLoop()
	return c, nil
}

// Join contacts the given members (host:port of their gossip) and returns
// once at least one answered.
func (c *Cluster) Join(addrs []string) error {
	if len(addrs) == 0 {
		return nil
	}
	n, err := c.ml.Join(addrs)
	if n == 0 {
		return fmt.Errorf("join %v: %w", addrs, err)
	}
	return nil
}

// Conflict delivers the gossip address of another live member that uses
// this member's name: the caller should stop, as memberlist will not let
// the two share it.
func (c *Cluster) Conflict() <-chan string { return c.conflict }

// GossipAddr is the host:port others join this member at.
func (c *Cluster) GossipAddr() string {
	return c.ml.LocalNode().Address()
}

// AdvertiseIP is the address other members reach this one at.
func (c *Cluster) AdvertiseIP() string {
	return c.ml.LocalNode().Addr.String()
}

// Members lists every member known, this one included, sorted by name.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Member, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// LiveFronts lists the fronts that can take calls: alive, not leaving,
// with a gRPC address; sorted by name.
func (c *Cluster) LiveFronts() []Member {
	var out []Member
	for _, m := range c.Members() {
		if m.Role == herdv1.Role_ROLE_FRONT && m.State == herdv1.MemberState_MEMBER_STATE_ALIVE && !m.Leaving && m.GRPCAddr != "" {
			out = append(out, m)
		}
	}
	return out
}

// Nodes lists the node members with their latest known states, sorted by name.
func (c *Cluster) Nodes() []NodeView {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []NodeView
	for _, m := range c.members {
		if m.Role != herdv1.Role_ROLE_NODE {
			continue
		}
		out = append(out, NodeView{Member: *m, State: c.states[m.Name]})
	}
	slices.SortFunc(out, func(a, b NodeView) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// SetLocalState publishes this node's state: it gets a new generation and
// gossip tells every member that it changed. It returns the published copy.
func (c *Cluster) SetLocalState(st *herdv1.NodeState) *herdv1.NodeState {
	st = proto.CloneOf(st)
	c.mu.Lock()
	gen := uint64(time.Now().UnixNano())
	if c.local != nil && gen <= c.local.GetGeneration() {
		gen = c.local.GetGeneration() + 1
	}
	st.Node = c.cfg.Name
	st.Generation = gen
	c.local = st
	c.states[c.cfg.Name] = st
	c.self.Generation = gen
	if m := c.members[c.cfg.Name]; m != nil {
		m.Generation = gen
	}
	c.mu.Unlock()
	c.updateMeta()
	c.signal()
	return proto.CloneOf(st)
}

// LocalState returns the state this node last published (nil on a front).
func (c *Cluster) LocalState() *herdv1.NodeState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return proto.CloneOf(c.local)
}

// PutState records a node's state obtained directly (e.g. in an Apply
// answer). An older generation than the one known is ignored.
func (c *Cluster) PutState(st *herdv1.NodeState) {
	c.mu.Lock()
	ok := c.acceptLocked(st)
	c.mu.Unlock()
	if ok {
		c.signal()
	}
}

// Leaving tells every member that this one is about to leave, so that they
// stop sending it work before its failure detector would notice. It waits
// (about a second) until the news has been gossiped: memberlist's leave
// message would otherwise replace it in the broadcast queue.
func (c *Cluster) Leaving() {
	c.mu.Lock()
	c.self.Leaving = true
	if m := c.members[c.cfg.Name]; m != nil {
		m.Leaving = true
	}
	c.mu.Unlock()
	c.metaMu.Lock()
	defer c.metaMu.Unlock()
	if err := c.ml.UpdateNode(2 * time.Second); err != nil {
		c.log.Debug("gossip leaving", "err", err)
	}
}

// Leave announces departure, waits up to timeout for it to spread, and
// stops gossip.
func (c *Cluster) Leave(timeout time.Duration) error {
	err := c.ml.Leave(timeout)
	c.Close()
	return err
}

// Close stops gossip without announcing it.
func (c *Cluster) Close() {
	c.cancel()
	c.ml.Shutdown()
	c.wg.Wait()
}

// updateMeta asks metaLoop to gossip the current meta.
func (c *Cluster) updateMeta() {
	select {
	case c.metac <- struct{}{}:
	default:
	}
}

// metaLoop gossips meta changes one at a time. memberlist's UpdateNode reads
// the meta and takes the next incarnation in two steps, so concurrent calls
// could leave an older meta with the newer incarnation, and members would
// keep the stale generation until the next push/pull.
func (c *Cluster) metaLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.metac:
			// Nothing needs the broadcast to have gone out, so do not wait
			// for it (UpdateNode queues it before it waits).
			c.metaMu.Lock()
			c.ml.UpdateNode(time.Millisecond)
			c.metaMu.Unlock()
		}
	}
}

// acceptLocked records st if it is newer than what is known. A relayed state
// of this node itself is never taken; if it is newer (a previous run of this
// node with a clock ahead of ours) our generation jumps past it.
func (c *Cluster) acceptLocked(st *herdv1.NodeState) bool {
	name := st.GetNode()
	if name == "" {
		return false
	}
	if name == c.cfg.Name {
		// An equal generation is only our own state echoed back.
		if c.local != nil && st.GetGeneration() > c.local.GetGeneration() {
			bumped := proto.CloneOf(c.local)
			bumped.Generation = st.GetGeneration() + 1
			c.local = bumped
			c.states[name] = bumped
			c.self.Generation = bumped.Generation
			c.updateMeta()
		}
		return false
	}
	if cur := c.states[name]; cur != nil && cur.GetGeneration() >= st.GetGeneration() {
		return false
	}
	c.states[name] = st
	if c.wanted[name] <= st.GetGeneration() {
		delete(c.wanted, name)
	}
	return true
}

func (c *Cluster) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *Cluster) notifyLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.changed:
			if c.cfg.OnChange != nil {
				c.cfg.OnChange()
			}
		}
	}
}

// fetchLoop fetches the states that meta generations announced, so that a
// front routes to new endpoints within one gossip round instead of waiting
// for the next push/pull.
func (c *Cluster) fetchLoop() {
	defer c.wg.Done()
	if c.cfg.Fetch == nil {
		return
	}
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.fetchc:
		case <-retry.C:
		}
		c.mu.Lock()
		var todo []Member
		for name, gen := range c.wanted {
			m := c.members[name]
			if m == nil || m.State != herdv1.MemberState_MEMBER_STATE_ALIVE || m.GRPCAddr == "" {
				delete(c.wanted, name)
				continue
			}
			if st := c.states[name]; st != nil && st.GetGeneration() >= gen {
				delete(c.wanted, name)
				continue
			}
			todo = append(todo, *m)
		}
		c.mu.Unlock()
		for _, m := range todo {
			ctx, cancel := context.WithTimeout(c.ctx, 3*time.Second)
			st, err := c.cfg.Fetch(ctx, m)
			cancel()
			if err != nil {
				c.log.Debug("fetch node state", "node", m.Name, "err", err)
				continue
			}
			if st.GetNode() != m.Name {
				c.log.Warn("node answered with another node's state", "node", m.Name, "state_of", st.GetNode())
				continue
			}
			c.PutState(st)
		}
	}
}

func (c *Cluster) wantFetch() {
	select {
	case c.fetchc <- struct{}{}:
	default:
	}
}
