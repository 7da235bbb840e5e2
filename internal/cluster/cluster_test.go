package cluster

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/pki"
)

// memberSeq makes member names and their (never dialled) gRPC addresses
// unique across the test binary.
var memberSeq atomic.Int64

// registry plays the nodes' gRPC API: a front's Fetch asks the node cluster
// of that name for its LocalState.
type registry struct {
	mu      sync.Mutex
	nodes   map[string]*Cluster
	fetches atomic.Int64
}

func (r *registry) add(c *Cluster) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nodes == nil {
		r.nodes = map[string]*Cluster{}
	}
	r.nodes[c.cfg.Name] = c
}

func (r *registry) fetch(_ context.Context, m Member) (*herdv1.NodeState, error) {
	r.fetches.Add(1)
	r.mu.Lock()
	c := r.nodes[m.Name]
	r.mu.Unlock()
	if c == nil {
		return nil, fmt.Errorf("no node %s", m.Name)
	}
	return c.LocalState(), nil
}

// newMember starts a member on a kernel-chosen loopback port; edit tweaks
// its config (may be nil). It is closed when the test ends.
func newMember(t *testing.T, role herdv1.Role, edit func(*Config)) *Cluster {
	t.Helper()
	n := memberSeq.Add(1)
	cfg := Config{
		Name:      fmt.Sprintf("%s-%s-%d", roleName(role), strings.ReplaceAll(t.Name(), "/", "_"), n),
		Role:      role,
		Bind:      "127.0.0.1:0",
		Advertise: "127.0.0.1",
		GRPCAddr:  fmt.Sprintf("127.0.0.1:%d", n),
	}
	if edit != nil {
		edit(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func join(t *testing.T, c *Cluster, to *Cluster) {
	t.Helper()
	if err := c.Join([]string{to.GossipAddr()}); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it holds or d passes; it reports what cond
// last said.
func eventually(t *testing.T, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func memberOf(c *Cluster, name string) (Member, bool) {
	for _, m := range c.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

func nodeOf(c *Cluster, name string) (NodeView, bool) {
	for _, n := range c.Nodes() {
		if n.Name == name {
			return n, true
		}
	}
	return NodeView{}, false
}

func waitMemberState(t *testing.T, d time.Duration, c *Cluster, name string, want herdv1.MemberState) {
	t.Helper()
	eventually(t, d, func() (bool, string) {
		m, ok := memberOf(c, name)
		return ok && m.State == want, fmt.Sprintf("%s sees %s as %v (known=%v), want %v", c.cfg.Name, name, m.State, ok, want)
	})
}

// waitState waits until c knows node's state at generation gen and returns it.
func waitState(t *testing.T, d time.Duration, c *Cluster, node string, gen uint64) *herdv1.NodeState {
	t.Helper()
	var st *herdv1.NodeState
	eventually(t, d, func() (bool, string) {
		n, _ := nodeOf(c, node)
		st = n.State
		return st.GetGeneration() == gen, fmt.Sprintf("%s has state of %s at generation %d, want %d", c.cfg.Name, node, st.GetGeneration(), gen)
	})
	return st
}

func nodeState(apps ...string) *herdv1.NodeState {
	st := &herdv1.NodeState{Address: "127.0.0.1"}
	for i, a := range apps {
		st.Apps = append(st.Apps, &herdv1.AppState{
			App: a, Release: "v1", Digest: "sha256:" + a, Desired: 1,
			Endpoints: []*herdv1.Endpoint{{Address: fmt.Sprintf("127.0.0.1:%d", 9000+i), Worker: "1"}},
		})
	}
	return st
}

func appNames(st *herdv1.NodeState) string {
	var names []string
	for _, a := range st.GetApps() {
		names = append(names, a.GetApp())
	}
	return strings.Join(names, ",")
}

func TestValidate(t *testing.T) {
	valid := Config{Name: "n1", Role: herdv1.Role_ROLE_NODE, Bind: "127.0.0.1:7946"}
	tests := []struct {
		name string
		edit func(*Config)
		want string // in the error; "" means valid
	}{
		{"valid", func(c *Config) {}, ""},
		{"front", func(c *Config) { c.Role = herdv1.Role_ROLE_FRONT }, ""},
		{"any address", func(c *Config) { c.Bind = ":7946" }, ""},
		{"ipv6", func(c *Config) { c.Bind = "[::1]:0" }, ""},
		{"advertise", func(c *Config) { c.Advertise = "10.0.0.7" }, ""},
		{"no name", func(c *Config) { c.Name = "" }, "--name"},
		{"no role", func(c *Config) { c.Role = herdv1.Role_ROLE_UNSPECIFIED }, "role"},
		{"unknown role", func(c *Config) { c.Role = 7 }, "role"},
		{"no bind", func(c *Config) { c.Bind = "" }, "--gossip"},
		{"no port", func(c *Config) { c.Bind = "127.0.0.1" }, "--gossip"},
		{"host name", func(c *Config) { c.Bind = "localhost:7946" }, "--gossip"},
		{"advertise host name", func(c *Config) { c.Advertise = "node1.example.com" }, "--advertise"},
		{"advertise with port", func(c *Config) { c.Advertise = "10.0.0.7:7946" }, "--advertise"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.edit(&cfg)
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.want != "" && err == nil:
				t.Fatalf("Validate() = nil, want an error naming %s", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("Validate() = %q, want it to name %s", err, tt.want)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	for _, bind := range []string{"127.0.0.1:x", "localhost:0", "127.0.0.1"} {
		c, err := New(Config{Name: "n", Role: herdv1.Role_ROLE_NODE, Bind: bind})
		if err == nil {
			c.Close()
			t.Errorf("New with --gossip %q succeeded", bind)
			continue
		}
		if !strings.Contains(err.Error(), "--gossip") {
			t.Errorf("New with --gossip %q: %q does not name the flag", bind, err)
		}
	}
}

func TestAdvertiseIP(t *testing.T) {
	tests := []struct {
		flag  string
		binds []string
		want  string
	}{
		{"10.0.0.7", []string{"127.0.0.1"}, "10.0.0.7"},
		{"", []string{"127.0.0.1", "10.0.0.8"}, "127.0.0.1"},
		{"", []string{"", "0.0.0.0", "10.0.0.8"}, "10.0.0.8"},
		{"", []string{"::", "fd00::1"}, "fd00::1"},
	}
	for _, tt := range tests {
		got, err := AdvertiseIP(tt.flag, tt.binds...)
		if err != nil || got != tt.want {
			t.Errorf("AdvertiseIP(%q, %q) = %q, %v; want %q", tt.flag, tt.binds, got, err, tt.want)
		}
	}
	if _, err := AdvertiseIP("node1.example.com"); err == nil || !strings.Contains(err.Error(), "--advertise") {
		t.Errorf("AdvertiseIP of a host name: %v, want an error naming --advertise", err)
	}
	// Nothing given: some address of this host, never an unspecified one.
	got, err := AdvertiseIP("", "", "0.0.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(got); ip == nil || ip.IsUnspecified() {
		t.Errorf("AdvertiseIP() = %q, want a usable IP", got)
	}
}

func TestMeta(t *testing.T) {
	m := meta{Role: "node", GRPC: "10.0.0.7:7947", Generation: 1<<63 + 5, Leaving: true}
	b, err := m.encode(512)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("decode(encode(%+v)) = %+v, %v", m, got, err)
	}
	if _, err := m.encode(len(b) - 1); err == nil {
		t.Error("encode above the limit succeeded")
	}
	if _, err := decodeMeta(nil); err == nil {
		t.Error("decode of empty meta succeeded")
	}
	if _, err := decodeMeta([]byte("{")); err == nil {
		t.Error("decode of garbage succeeded")
	}
	for _, r := range []herdv1.Role{herdv1.Role_ROLE_FRONT, herdv1.Role_ROLE_NODE} {
		if got := parseRole(roleName(r)); got != r {
			t.Errorf("parseRole(roleName(%v)) = %v", r, got)
		}
	}
	if got := parseRole("bogus"); got != herdv1.Role_ROLE_UNSPECIFIED {
		t.Errorf("parseRole(bogus) = %v", got)
	}
}

func TestJoin(t *testing.T) {
	t.Parallel()
	f1 := newMember(t, herdv1.Role_ROLE_FRONT, nil)
	f2 := newMember(t, herdv1.Role_ROLE_FRONT, nil)
	n := newMember(t, herdv1.Role_ROLE_NODE, nil)
	join(t, f2, f1)
	join(t, n, f1)
	all := []*Cluster{f1, f2, n}
	for _, c := range all {
		eventually(t, 5*time.Second, func() (bool, string) {
			ms := c.Members()
			alive := 0
			for _, m := range ms {
				if m.State == herdv1.MemberState_MEMBER_STATE_ALIVE {
					alive++
				}
			}
			return len(ms) == 3 && alive == 3, fmt.Sprintf("%s sees %+v", c.cfg.Name, ms)
		})
		for _, other := range all {
			m, _ := memberOf(c, other.cfg.Name)
			want := Member{
				Name: other.cfg.Name, Role: other.cfg.Role, Addr: "127.0.0.1",
				GossipAddr: other.GossipAddr(), GRPCAddr: other.cfg.GRPCAddr,
				State: herdv1.MemberState_MEMBER_STATE_ALIVE,
			}
			m.Since = time.Time{}
			if m != want {
				t.Errorf("%s sees %+v, want %+v", c.cfg.Name, m, want)
			}
		}
		nodes := c.Nodes()
		if len(nodes) != 1 || nodes[0].Name != n.cfg.Name {
			t.Errorf("%s: Nodes() = %+v, want only %s", c.cfg.Name, nodes, n.cfg.Name)
		}
	}
	if got := n.AdvertiseIP(); got != "127.0.0.1" {
		t.Errorf("AdvertiseIP() = %q", got)
	}
}

func TestJoinFails(t *testing.T) {
	c := newMember(t, herdv1.Role_ROLE_NODE, nil)
	if err := c.Join(nil); err != nil {
		t.Fatalf("Join(nil) = %v", err)
	}
	// A member that is gone: its port is free again.
	gone := newMember(t, herdv1.Role_ROLE_FRONT, nil)
	addr := gone.GossipAddr()
	gone.Close()
	if err := c.Join([]string{addr}); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Join of a closed member = %v, want an error naming %s", err, addr)
	}
}

func TestStateReachesFrontByFetch(t *testing.T) {
	t.Parallel()
	reg := &registry{}
	var changes atomic.Int64
	f := newMember(t, herdv1.Role_ROLE_FRONT, func(c *Config) {
		c.Fetch = reg.fetch
		c.OnChange = func() { changes.Add(1) }
	})
	n := newMember(t, herdv1.Role_ROLE_NODE, nil)
	reg.add(n)
	join(t, n, f)

	before := changes.Load()
	pub := n.SetLocalState(nodeState("shop"))
	if pub.GetNode() != n.cfg.Name || pub.GetGeneration() == 0 {
		t.Fatalf("published %v", pub)
	}
	got := waitState(t, 5*time.Second, f, n.cfg.Name, pub.GetGeneration())
	if !proto.Equal(got, pub) {
		t.Fatalf("front has %v, want %v", got, pub)
	}
	if reg.fetches.Load() == 0 {
		t.Error("state arrived without a Fetch")
	}
	eventually(t, 2*time.Second, func() (bool, string) {
		return changes.Load() > before, "no OnChange after the node's state changed"
	})
	nv, _ := nodeOf(f, n.cfg.Name)
	if nv.Generation != pub.GetGeneration() {
		t.Errorf("member generation %d, want %d", nv.Generation, pub.GetGeneration())
	}

	// A second change arrives the same way.
	pub2 := n.SetLocalState(nodeState("shop", "blog"))
	if got := waitState(t, 5*time.Second, f, n.cfg.Name, pub2.GetGeneration()); appNames(got) != "shop,blog" {
		t.Fatalf("front has apps %s, want shop,blog", appNames(got))
	}
}

// Join does a push/pull, so a member joining after a node published its
// state learns it at once, from the node or from any member that has it.
func TestStateSpreadsOnJoin(t *testing.T) {
	t.Parallel()
	reg := &registry{}
	f := newMember(t, herdv1.Role_ROLE_FRONT, func(c *Config) { c.Fetch = reg.fetch })
	n := newMember(t, herdv1.Role_ROLE_NODE, nil)
	reg.add(n)
	join(t, n, f)
	pub := n.SetLocalState(nodeState("shop"))
	waitState(t, 5*time.Second, f, n.cfg.Name, pub.GetGeneration())

	fromNode := newMember(t, herdv1.Role_ROLE_FRONT, nil)
	join(t, fromNode, n)
	fromFront := newMember(t, herdv1.Role_ROLE_FRONT, nil)
	join(t, fromFront, f)
	for _, c := range []*Cluster{fromNode, fromFront} {
		got := waitState(t, time.Second, c, n.cfg.Name, pub.GetGeneration())
		if !proto.Equal(got, pub) {
			t.Errorf("%s has %v, want %v", c.cfg.Name, got, pub)
		}
	}
}

func TestPutStateGenerations(t *testing.T) {
	t.Parallel()
	var changes atomic.Int64
	f := newMember(t, herdv1.Role_ROLE_FRONT, func(c *Config) { c.OnChange = func() { changes.Add(1) } })
	n := newMember(t, herdv1.Role_ROLE_NODE, nil)
	join(t, n, f)
	name := n.cfg.Name
	eventually(t, 5*time.Second, func() (bool, string) {
		_, ok := nodeOf(f, name)
		return ok, "node never joined"
	})

	put := func(gen uint64, apps ...string) {
		st := nodeState(apps...)
		st.Node = name
		st.Generation = gen
		f.PutState(st)
	}
	steps := []struct {
		gen      uint64
		app      string
		accepted bool
		wantApps string
	}{
		{100, "a", true, "a"},
		{50, "b", false, "a"},  // older
		{100, "c", false, "a"}, // same generation
		{200, "d", true, "d"},  // newer
		{199, "e", false, "d"},
	}
	var wantGen uint64
	for _, s := range steps {
		before := changes.Load()
		put(s.gen, s.app)
		if s.accepted {
			wantGen = s.gen
		}
		nv, _ := nodeOf(f, name)
		if nv.State.GetGeneration() != wantGen || appNames(nv.State) != s.wantApps {
			t.Fatalf("after PutState(gen %d, %s): gen %d apps %s, want gen %d apps %s",
				s.gen, s.app, nv.State.GetGeneration(), appNames(nv.State), wantGen, s.wantApps)
		}
		if s.accepted {
			eventually(t, 2*time.Second, func() (bool, string) {
				return changes.Load() > before, fmt.Sprintf("no OnChange after PutState(gen %d)", s.gen)
			})
		}
	}

	// A state without a node name is ignored.
	f.PutState(&herdv1.NodeState{Generation: 1 << 62})
	f.mu.Lock()
	_, unnamed := f.states[""]
	f.mu.Unlock()
	if unnamed {
		t.Error("a state without a node name was recorded")
	}
}

// MergeRemoteState is the receiving end of push/pull: each state in it is
// taken only if newer than the one known.
func TestMergeRemoteState(t *testing.T) {
	a := newMember(t, herdv1.Role_ROLE_FRONT, nil)
	b := newMember(t, herdv1.Role_ROLE_FRONT, nil)
	st := func(node string, gen uint64, app string) *herdv1.NodeState {
		s := nodeState(app)
		s.Node = node
		s.Generation = gen
		return s
	}
	a.PutState(st("n1", 10, "a1"))
	a.PutState(st("n2", 20, "a2"))
	b.PutState(st("n1", 5, "old"))
	b.PutState(st("n2", 30, "new"))
	b.PutState(st("n3", 1, "a3"))

	(*delegate)(b).MergeRemoteState((*delegate)(a).LocalState(false), false)
	(*delegate)(b).MergeRemoteState([]byte("not a protobuf \xff\xff"), false) // ignored

	want := map[string]string{"n1": "a1", "n2": "new", "n3": "a3"}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.states) != len(want) {
		t.Errorf("b knows %d states, want %d", len(b.states), len(want))
	}
	for node, app := range want {
		if got := appNames(b.states[node]); got != app {
			t.Errorf("b has %s running %s, want %s", node, got, app)
		}
	}
}

func TestSetLocalStateGenerationIncreases(t *testing.T) {
	n := newMember(t, herdv1.Role_ROLE_NODE, nil)
	var last uint64
	publish := func(round string) {
		for i := range 100 {
			pub := n.SetLocalState(nodeState("shop"))
			if pub.GetGeneration() <= last {
				t.Fatalf("%s, call %d: generation %d after %d", round, i, pub.GetGeneration(), last)
			}
			if pub.GetNode() != n.cfg.Name {
				t.Fatalf("published state of %q, want %q", pub.GetNode(), n.cfg.Name)
			}
			last = pub.GetGeneration()
		}
	}
	publish("clock")
	// A relayed state from a clock an hour ahead puts the generation past
	// the clock, so every next one must come from the counter, not the clock.
	ahead := nodeState()
	ahead.Node = n.cfg.Name
	ahead.Generation = uint64(time.Now().Add(time.Hour).UnixNano())
	n.PutState(ahead)
	last = ahead.GetGeneration()
	publish("ahead of the clock")
	if got := n.LocalState().GetGeneration(); got != last {
		t.Fatalf("LocalState generation %d, want %d", got, last)
	}
	// The meta is updated asynchronously; it must end at the latest.
	eventually(t, 2*time.Second, func() (bool, string) {
		m, _ := memberOf(n, n.cfg.Name)
		return m.Generation == last, fmt.Sprintf("own member generation %d, want %d", m.Generation, last)
	})
	// The published copy is the caller's: changing it changes nothing.
	pub := n.SetLocalState(nodeState("shop"))
	pub.Apps = nil
	if appNames(n.LocalState()) != "shop" {
		t.Fatal("LocalState changed through the returned copy")
	}
}

// A state of this node relayed back by another member (e.g. from a previous
// run whose clock was ahead) never replaces what the node publishes, but the
// node's generation jumps past it so that everyone takes the node's state.
func TestRelayedOwnStateNotAccepted(t *testing.T) {
	t.Parallel()
	reg := &registry{}
	f := newMember(t, herdv1.Role_ROLE_FRONT, func(c *Config) { c.Fetch = reg.fetch })
	n := newMember(t, herdv1.Role_ROLE_NODE, nil)
	reg.add(n)
	join(t, n, f)
	pub := n.SetLocalState(nodeState("shop"))
	waitState(t, 5*time.Second, f, n.cfg.Name, pub.GetGeneration())

	stale := nodeState("ghost")
	stale.Node = n.cfg.Name
	stale.Generation = pub.GetGeneration() + 1_000_000
	// The front hears of the stale state first and takes it...
	f.PutState(stale)
	// ...then relays it to the node.
	n.PutState(stale)

	local := n.LocalState()
	if appNames(local) != "shop" {
		t.Fatalf("node took a relayed state of itself: runs %s, want shop", appNames(local))
	}
	if local.GetGeneration() <= stale.GetGeneration() {
		t.Fatalf("local generation %d, want above the relayed %d", local.GetGeneration(), stale.GetGeneration())
	}
	got := waitState(t, 5*time.Second, f, n.cfg.Name, local.GetGeneration())
	if appNames(got) != "shop" {
		t.Fatalf("front has the node running %s, want shop", appNames(got))
	}
	if next := n.SetLocalState(nodeState("shop", "blog")); next.GetGeneration() <= local.GetGeneration() {
		t.Fatalf("next generation %d, want above %d", next.GetGeneration(), local.GetGeneration())
	}
}

// Every push/pull brings the node's own current state back from members
// that have it; that echo is not newer and must not change the generation.
func TestOwnStateEchoKeepsGeneration(t *testing.T) {

	n := newMember(t, herdv1.Role_ROLE_NODE, nil)
	pub := n.SetLocalState(nodeState("shop"))
	n.PutState(proto.CloneOf(pub))
	if got := n.LocalState().GetGeneration(); got != pub.GetGeneration() {
		t.Fatalf("echo of the current state moved the generation from %d to %d", pub.GetGeneration(), got)
	}
	(*delegate)(n).MergeRemoteState((*delegate)(n).LocalState(false), false)
	if got := n.LocalState().GetGeneration(); got != pub.GetGeneration() {
		t.Fatalf("push/pull echo moved the generation from %d to %d", pub.GetGeneration(), got)
	}
}

func TestOnChangeOnJoin(t *testing.T) {
	// OnChange is called after the change: some call must see the node.
	var front atomic.Pointer[Cluster]
	sawNode := make(chan struct{})
	var once sync.Once
	f := newMember(t, herdv1.Role_ROLE_FRONT, func(c *Config) {
		c.OnChange = func() {
			if f := front.Load(); f != nil && len(f.Nodes()) > 0 {
				once.Do(func() { close(sawNode) })
			}
		}
	})
	front.Store(f)
	n := newMember(t, herdv1.Role_ROLE_NODE, nil)
	join(t, n, f)
	select {
	case <-sawNode:
	case <-time.After(5 * time.Second):
		t.Fatal("no OnChange after a node joined")
	}
}

func TestLeaveMarksLeft(t *testing.T) {
	t.Parallel()
	f1 := newMember(t, herdv1.Role_ROLE_FRONT, nil)
	f2 := newMember(t, herdv1.Role_ROLE_FRONT, nil)
	n := newMember(t, herdv1.Role_ROLE_NODE, nil)
	join(t, f2, f1)
	join(t, n, f1)
	name := n.cfg.Name
	for _, f := range []*Cluster{f1, f2} {
		waitMemberState(t, 5*time.Second, f, name, herdv1.MemberState_MEMBER_STATE_ALIVE)
	}

	n.Leaving()
	for _, f := range []*Cluster{f1, f2} {
		eventually(t, 5*time.Second, func() (bool, string) {
			m, _ := memberOf(f, name)
			return m.Leaving, fmt.Sprintf("%s does not see %s leaving", f.cfg.Name, name)
		})
	}
	if err := n.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, f := range []*Cluster{f1, f2} {
		waitMemberState(t, 5*time.Second, f, name, herdv1.MemberState_MEMBER_STATE_LEFT)
		if nv, ok := nodeOf(f, name); !ok || nv.Member.State != herdv1.MemberState_MEMBER_STATE_LEFT {
			t.Errorf("%s: Nodes() lists %s as %v", f.cfg.Name, name, nv.Member.State)
		}
	}
}

// herd-front calls Leave as soon as its servers have stopped, which can be
// right after Leaving.
func TestLeaveRightAfterLeavingMarksLeft(t *testing.T) {

	t.Parallel()
	f := newMember(t, herdv1.Role_ROLE_FRONT, nil)
	n := newMember(t, herdv1.Role_ROLE_NODE, nil)
	join(t, n, f)
	waitMemberState(t, 5*time.Second, f, n.cfg.Name, herdv1.MemberState_MEMBER_STATE_ALIVE)
	n.Leaving()
	if err := n.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		m, _ := memberOf(f, n.cfg.Name)
		return m.State != herdv1.MemberState_MEMBER_STATE_ALIVE, "the node never left"
	})
	if m, _ := memberOf(f, n.cfg.Name); m.State != herdv1.MemberState_MEMBER_STATE_LEFT {
		t.Fatalf("a member that called Leaving and Leave is %v, want LEFT", m.State)
	}
}

// Close must not wait for gossip it has just stopped.
func TestCloseIsPrompt(t *testing.T) {
	t.Parallel()
	f := newMember(t, herdv1.Role_ROLE_FRONT, nil)
	n := newMember(t, herdv1.Role_ROLE_NODE, nil)
	join(t, n, f)
	waitMemberState(t, 5*time.Second, f, n.cfg.Name, herdv1.MemberState_MEMBER_STATE_ALIVE)
	n.SetLocalState(nodeState("shop"))
	start := time.Now()
	n.Close()
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("Close took %v", d)
	}
}

func TestCloseMarksDead(t *testing.T) {
	t.Parallel()
	f1 := newMember(t, herdv1.Role_ROLE_FRONT, nil)
	f2 := newMember(t, herdv1.Role_ROLE_FRONT, nil)
	n := newMember(t, herdv1.Role_ROLE_NODE, nil)
	join(t, f2, f1)
	join(t, n, f1)
	name := n.cfg.Name
	for _, f := range []*Cluster{f1, f2} {
		waitMemberState(t, 5*time.Second, f, name, herdv1.MemberState_MEMBER_STATE_ALIVE)
	}
	start := time.Now()
	n.Close()
	for _, f := range []*Cluster{f1, f2} {
		waitMemberState(t, 20*time.Second, f, name, herdv1.MemberState_MEMBER_STATE_DEAD)
	}
	t.Logf("declared dead after %v", time.Since(start).Round(100*time.Millisecond))
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	reg := &registry{}
	var cs []*Cluster
	for i := range 3 {
		cfg := Config{
			Name:      fmt.Sprintf("leak-%d-%d", i, memberSeq.Add(1)),
			Role:      herdv1.Role_ROLE_FRONT,
			Bind:      "127.0.0.1:0",
			Advertise: "127.0.0.1",
			GRPCAddr:  "127.0.0.1:1",
			Fetch:     reg.fetch,
			OnChange:  func() {},
		}
		if i == 2 {
			cfg.Role = herdv1.Role_ROLE_NODE
			cfg.Fetch = nil
		}
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	reg.add(cs[2])
	for _, c := range cs[1:] {
		if err := c.Join([]string{cs[0].GossipAddr()}); err != nil {
			t.Fatal(err)
		}
	}
	pub := cs[2].SetLocalState(nodeState("shop"))
	waitState(t, 5*time.Second, cs[0], cs[2].cfg.Name, pub.GetGeneration())
	cs[2].Leaving()
	eventually(t, 5*time.Second, func() (bool, string) {
		m, _ := memberOf(cs[0], cs[2].cfg.Name)
		return m.Leaving, "the node's Leaving never arrived"
	})
	if err := cs[2].Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	cs[1].Close()
	cs[0].Close()

	eventually(t, 2*time.Second, func() (bool, string) {
		n := runtime.NumGoroutine()
		return n <= before+2, fmt.Sprintf("%d goroutines after closing every member, %d before", n, before)
	})
}

// TestDuplicateNameConflict: a second live member that takes a name in use
// learns it through Conflict (the process then stops), and the first keeps
// its name and address.
func TestDuplicateNameConflict(t *testing.T) {
	t.Parallel()
	f := newMember(t, herdv1.Role_ROLE_FRONT, nil)
	a := newMember(t, herdv1.Role_ROLE_NODE, nil)
	join(t, a, f)
	dup := newMember(t, herdv1.Role_ROLE_NODE, func(c *Config) { c.Name = a.cfg.Name })
	if err := dup.Join([]string{f.GossipAddr()}); err != nil {
		t.Fatal(err)
	}
	select {
	case other := <-dup.Conflict():
		if other != a.GossipAddr() {
			t.Errorf("Conflict() = %s, want the first member's address %s", other, a.GossipAddr())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the duplicate member was not told about the conflict")
	}
	select {
	case other := <-a.Conflict():
		t.Errorf("the first member was told of a conflict with %s", other)
	default:
	}
	m, ok := memberOf(f, a.cfg.Name)
	if !ok || m.GossipAddr != a.GossipAddr() {
		t.Errorf("the front sees %s at %s, want %s", a.cfg.Name, m.GossipAddr, a.GossipAddr())
	}
}

// TestGossipNeedsTheKey: members with the cluster key see each other; one
// without it, or with another key, cannot join; a member with the new key
// first and the old one second (a rotation under way) joins both.
func TestGossipNeedsTheKey(t *testing.T) {
	t.Parallel()
	key := func(b byte) pki.ClusterKey { var k pki.ClusterKey; k[0] = b; return k }
	f := newMember(t, herdv1.Role_ROLE_FRONT, func(c *Config) { c.Keys = []pki.ClusterKey{key(1)} })
	n := newMember(t, herdv1.Role_ROLE_NODE, func(c *Config) { c.Keys = []pki.ClusterKey{key(1)} })
	join(t, n, f)
	for _, keys := range [][]pki.ClusterKey{nil, {key(2)}} {
		stranger := newMember(t, herdv1.Role_ROLE_NODE, func(c *Config) { c.Keys = keys })
		if err := stranger.Join([]string{f.GossipAddr()}); err == nil {
			t.Errorf("a member with keys %v joined a cluster it has no key for", keys)
		}
	}
	// Rotation: the new key is installed second everywhere, then made
	// first; a member on either step talks to one on the other.
	installed := newMember(t, herdv1.Role_ROLE_NODE, func(c *Config) { c.Keys = []pki.ClusterKey{key(1), key(3)} })
	join(t, installed, f)
	switched := newMember(t, herdv1.Role_ROLE_NODE, func(c *Config) { c.Keys = []pki.ClusterKey{key(3), key(1)} })
	join(t, switched, installed)
	eventually(t, 5*time.Second, func() (bool, string) {
		_, ok := memberOf(installed, switched.cfg.Name)
		return ok, "members on two steps of a rotation do not see each other"
	})
	for _, m := range f.Members() {
		if strings.HasPrefix(m.Name, "node-") && m.Name != n.cfg.Name && m.Name != installed.cfg.Name && m.Name != switched.cfg.Name && m.State == herdv1.MemberState_MEMBER_STATE_ALIVE {
			t.Errorf("the front sees %s, which has no key", m.Name)
		}
	}
}
