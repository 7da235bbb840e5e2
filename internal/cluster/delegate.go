package cluster

import (
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/protobuf/proto"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// delegate is the Cluster as memberlist.Delegate. memberlist calls it from
// its network goroutines, possibly concurrently; no method may block.
type delegate Cluster

func (d *delegate) NodeMeta(limit int) []byte {
	c := (*Cluster)(d)
	c.mu.Lock()
	m := c.self
	c.mu.Unlock()
	b, err := m.encode(limit)
	if err != nil {
		c.log.Error("gossip meta", "err", err)
		return nil
	}
	return b
}

// herd sends no user messages: changes travel in the meta, state by
// push/pull and gRPC (a broadcast above UDPBufferSize is silently never
// sent, so bulky state must not go there).
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState gives every node state this member knows, so states spread
// through any member, not only from their node.
func (d *delegate) LocalState(join bool) []byte {
	c := (*Cluster)(d)
	c.mu.Lock()
	gs := &herdv1.GossipState{}
	for _, st := range c.states {
		gs.Nodes = append(gs.Nodes, st)
	}
	b, err := proto.Marshal(gs)
	c.mu.Unlock()
	if err != nil {
		c.log.Error("encode gossip state", "err", err)
		return nil
	}
	return b
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	c := (*Cluster)(d)
	var gs herdv1.GossipState
	if err := proto.Unmarshal(buf, &gs); err != nil {
		c.log.Warn("decode gossip state", "err", err)
		return
	}
	changed := false
	c.mu.Lock()
	for _, st := range gs.GetNodes() {
		if c.acceptLocked(st) {
			changed = true
		}
	}
	c.mu.Unlock()
	if changed {
		c.signal()
	}
}

// events is the Cluster as memberlist.EventDelegate; memberlist calls it
// from one goroutine at a time, and it must not block.
type events Cluster

func (e *events) NotifyJoin(n *memberlist.Node)   { (*Cluster)(e).seen(n) }
func (e *events) NotifyUpdate(n *memberlist.Node) { (*Cluster)(e).seen(n) }

func (e *events) NotifyLeave(n *memberlist.Node) {
	c := (*Cluster)(e)
	c.mu.Lock()
	if m := c.members[n.Name]; m != nil {
		// memberlist's event does not say whether the member left or was
		// declared dead; a member that announced its departure left.
		m.State = herdv1.MemberState_MEMBER_STATE_DEAD
		if m.Leaving {
			m.State = herdv1.MemberState_MEMBER_STATE_LEFT
		}
		m.Since = time.Now()
	}
	c.forgetLocked()
	c.mu.Unlock()
	c.signal()
}

func (c *Cluster) seen(n *memberlist.Node) {
	md, err := decodeMeta(n.Meta)
	if err != nil {
		c.log.Warn("member with unreadable meta", "member", n.Name, "err", err)
		return
	}
	c.mu.Lock()
	m := c.members[n.Name]
	if m == nil || m.State != herdv1.MemberState_MEMBER_STATE_ALIVE {
		m = &Member{Name: n.Name, Since: time.Now()}
		c.members[n.Name] = m
	}
	m.Role = parseRole(md.Role)
	m.Addr = n.Addr.String()
	m.GossipAddr = n.Address()
	m.GRPCAddr = md.GRPC
	m.RaftAddr = md.Raft
	m.Leaving = md.Leaving
	m.Generation = md.Generation
	m.State = herdv1.MemberState_MEMBER_STATE_ALIVE
	fetch := false
	if m.Role == herdv1.Role_ROLE_NODE && n.Name != c.cfg.Name && md.Generation > 0 {
		if st := c.states[n.Name]; st == nil || st.GetGeneration() < md.Generation {
			c.wanted[n.Name] = md.Generation
			fetch = true
		}
	}
	c.mu.Unlock()
	if fetch {
		c.wantFetch()
	}
	c.signal()
}

func (c *Cluster) forgetLocked() {
	for name, m := range c.members {
		if m.State != herdv1.MemberState_MEMBER_STATE_ALIVE && time.Since(m.Since) > forgetAfter {
			delete(c.members, name)
			delete(c.states, name)
		}
	}
}

// NotifyConflict is memberlist telling that a member of an existing name
// announced itself from another address. When the name is ours, another
// live process uses it: names must be unique, so this one must not go on.
func (e *events) NotifyConflict(existing, other *memberlist.Node) {
	c := (*Cluster)(e)
	if existing.Name != c.cfg.Name {
		c.log.Warn("a second member claims a name in use; ignored", "member", other.Name, "address", other.Address(), "in_use_by", existing.Address())
		return
	}
	select {
	case c.conflict <- other.Address():
	default:
	}
}
