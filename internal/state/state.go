// Package state is the cluster's desired state, replicated among the fronts
// by Raft (hashicorp/raft, log and snapshots in raft-boltdb and files under
// each front's data dir): every app's current release, the release being
// rolled out, each node's assignment (which release it should run of each
// app) and the release history.
//
// Only the leader writes; a write on a follower fails with a
// *NotLeaderError that names the leader, and the Control API forwards the
// call there. Reads come from the local copy; Info says how fresh it is.
package state

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

var (
	// ErrNotFound is returned for an app or release the state does not hold.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned when a write lost a race with another (a
	// rollout in progress, a superseded rollout).
	ErrConflict = errors.New("conflict")
)

// NotLeaderError is returned by a write on a front that is not the leader.
type NotLeaderError struct {
	// Leader is the leader's server id (front name), empty if none is known.
	Leader string
}

func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		return "no Raft leader among the fronts (is a quorum of them up?)"
	}
	return "this front is not the Raft leader; the leader is " + e.Leader
}

// BusyError refuses a rollout while another of the same app is in progress.
type BusyError struct{ Rollout *herdv1.Rollout }

func (e *BusyError) Error() string {
	r := e.Rollout
	return fmt.Sprintf("a deploy of %s %s is in progress (started %s ago by front %s): wait for it, or pass --force to supersede it",
		r.GetRelease().GetApp(), r.GetRelease().GetId(), time.Since(r.GetStarted().AsTime()).Round(time.Second), r.GetFront())
}

func (e *BusyError) Unwrap() error { return ErrConflict }

// Config sets up a front's Raft member.
type Config struct {
	// Dir holds the Raft log (raft.db) and snapshots.
	Dir string
	// ID is the front's name, its Raft server id.
	ID string
	// Stream carries Raft's traffic (TLSStream).
	Stream raft.StreamLayer
	// Bootstrap starts a single-voter cluster when Dir holds no state yet
	// (the first front). Otherwise the front waits to be added by the
	// leader.
	Bootstrap bool
	Logger    *slog.Logger
	// OnChange is called after the state changed (from Raft's goroutine;
	// it must not block).
	OnChange func()
}

// Store is a front's copy of the desired state. Safe for concurrent use.
type Store struct {
	id    string
	raft  *raft.Raft
	fsm   *fsm
	trans *raft.NetworkTransport
	bolt  *raftboltdb.BoltStore
}

// Open starts this front's Raft member.
func Open(cfg Config) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dir := filepath.Join(cfg.Dir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	hl := newHCLog(cfg.Logger)
	bolt, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
	if err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	logs, err := raft.NewLogCache(512, bolt)
	if err != nil {
		bolt.Close()
		return nil, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hl)
	if err != nil {
		bolt.Close()
		return nil, fmt.Errorf("open raft snapshots: %w", err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  cfg.Stream,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  hl,
	})
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hl
	// A state change is small; snapshot often enough that a front that was
	// away catches up from a snapshot rather than a long log.
	rc.SnapshotThreshold = 1024
	rc.TrailingLogs = 1024

	f := newFSM()
	f.onChange = cfg.OnChange
	existing, err := raft.HasExistingState(logs, bolt, snaps)
	if err != nil {
		bolt.Close()
		trans.Close()
		return nil, err
	}
	r, err := raft.NewRaft(rc, f, logs, bolt, snaps, trans)
	if err != nil {
		bolt.Close()
		trans.Close()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	s := &Store{id: cfg.ID, raft: r, fsm: f, trans: trans, bolt: bolt}
	if !existing && cfg.Bootstrap {
		err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: raft.ServerID(cfg.ID), Address: trans.LocalAddr(),
		}}}).Error()
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("bootstrap raft: %w", err)
		}
	}
	return s, nil
}

// Close stops the member, handing leadership to another voter first so
// that writes go on without waiting for an election timeout.
func (s *Store) Close() error {
	if s.raft.State() == raft.Leader && s.voters() > 1 {
		if err := s.raft.LeadershipTransfer().Error(); err != nil {
			slog.Debug("raft leadership transfer", "err", err)
		}
	}
	err := s.raft.Shutdown().Error()
	s.trans.Close()
	s.bolt.Close()
	return err
}

func (s *Store) voters() int {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	n := 0
	for _, sv := range f.Configuration().Servers {
		if sv.Suffrage == raft.Voter {
			n++
		}
	}
	return n
}

// ID is this front's server id.
func (s *Store) ID() string { return s.id }

// IsLeader says whether this front is the leader now.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Leader is the leader's server id, empty when none is known.
func (s *Store) Leader() string {
	_, id := s.raft.LeaderWithID()
	return string(id)
}

// LeaderCh delivers true when this front becomes the leader and false when
// it stops being it (the latest value only; one reader).
func (s *Store) LeaderCh() <-chan bool { return s.raft.LeaderCh() }

// Barrier waits until everything the log holds is applied here (a new
// leader calls it before it acts on its state).
func (s *Store) Barrier(timeout time.Duration) error { return s.raft.Barrier(timeout).Error() }

// Info says how fresh this front's copy of the state is.
func (s *Store) Info() *herdv1.StateInfo {
	st := s.raft.State()
	info := &herdv1.StateInfo{
		Front:        s.id,
		RaftState:    strings.ToLower(st.String()),
		Leader:       s.Leader(),
		AppliedIndex: s.raft.AppliedIndex(),
	}
	if st != raft.Leader {
		if t := s.raft.LastContact(); !t.IsZero() {
			info.LastContact = durationpb.New(time.Since(t))
		}
	}
	return info
}

// Get returns an app's current release.
func (s *Store) Get(app string) (*herdv1.Release, error) {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	a := s.fsm.apps[app]
	if a.GetCurrent() == nil {
		return nil, fmt.Errorf("%w: no app %s", ErrNotFound, app)
	}
	return proto.CloneOf(a.GetCurrent()), nil
}

// List returns every app's current release, sorted by app name.
func (s *Store) List() []*herdv1.Release {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	var out []*herdv1.Release
	for _, a := range s.fsm.apps {
		if a.GetCurrent() != nil {
			out = append(out, proto.CloneOf(a.GetCurrent()))
		}
	}
	slices.SortFunc(out, func(a, b *herdv1.Release) int { return strings.Compare(a.GetApp(), b.GetApp()) })
	return out
}

// Rollouts returns the rollouts in progress.
func (s *Store) Rollouts() []*herdv1.Rollout {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	var out []*herdv1.Rollout
	for _, a := range s.fsm.apps {
		if a.GetRollout() != nil {
			out = append(out, proto.CloneOf(a.GetRollout()))
		}
	}
	slices.SortFunc(out, func(a, b *herdv1.Rollout) int {
		return strings.Compare(a.GetRelease().GetApp(), b.GetRelease().GetApp())
	})
	return out
}

// History returns an app's finished rollouts, oldest first.
func (s *Store) History(app string) []*herdv1.HistoryEntry {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	var out []*herdv1.HistoryEntry
	for _, h := range s.fsm.apps[app].GetHistory() {
		out = append(out, proto.CloneOf(h))
	}
	return out
}

// Assigned returns the release a node should run of an app, nil if none
// is assigned.
func (s *Store) Assigned(node, app string) *herdv1.Release {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	id, ok := s.fsm.nodes[node].GetAssignments()[app]
	if !ok {
		return nil
	}
	if r := s.fsm.release(app, id); r != nil {
		return proto.CloneOf(r)
	}
	return nil
}

// Assignment returns every release assigned to a node, sorted by app.
func (s *Store) Assignment(node string) []*herdv1.Release {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	var out []*herdv1.Release
	for app, id := range s.fsm.nodes[node].GetAssignments() {
		if r := s.fsm.release(app, id); r != nil {
			out = append(out, proto.CloneOf(r))
		}
	}
	slices.SortFunc(out, func(a, b *herdv1.Release) int { return strings.Compare(a.GetApp(), b.GetApp()) })
	return out
}

// BeginRollout records a rollout of a spec with its artifact digest, run
// by a front: the release is new, or the current one when nothing changed
// (Changed false) or only the worker count did, or the current one
// restarted. A rollout of the app in progress refuses it with a
// *BusyError unless forced to supersede it.
func (s *Store) BeginRollout(b *herdv1.BeginRollout) (*herdv1.Rollout, error) {
	res, err := s.apply(&herdv1.StateCommand{Op: &herdv1.StateCommand_BeginRollout{BeginRollout: b}})
	if err != nil {
		return nil, err
	}
	br := res.(beginResult)
	if br.Busy != nil {
		return nil, &BusyError{Rollout: br.Busy}
	}
	return br.Rollout, nil
}

// Finish ends a rollout (see herdv1.FinishRollout).
func (s *Store) Finish(fin *herdv1.FinishRollout) error {
	_, err := s.apply(&herdv1.StateCommand{Op: &herdv1.StateCommand_FinishRollout{FinishRollout: fin}})
	return err
}

// Assign sets the release a node should run of an app ("" removes it).
func (s *Store) Assign(node, app, release string) error {
	_, err := s.apply(&herdv1.StateCommand{Op: &herdv1.StateCommand_AssignRelease{AssignRelease: &herdv1.AssignRelease{
		Node: node, App: app, Release: release,
	}}})
	return err
}

// Step records that a rollout's release command succeeded.
func (s *Store) Step(step *herdv1.RolloutStep) error {
	_, err := s.apply(&herdv1.StateCommand{Op: &herdv1.StateCommand_RolloutStep{RolloutStep: step}})
	return err
}

// Release finds one of an app's releases by id (current, in progress or
// in the history); nil if none.
func (s *Store) Release(app, id string) *herdv1.Release {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	if r := s.fsm.release(app, id); r != nil {
		return proto.CloneOf(r)
	}
	return nil
}

// SetDrain drains or undrains a node.
func (s *Store) SetDrain(d *herdv1.SetDrain) error {
	_, err := s.apply(&herdv1.StateCommand{Op: &herdv1.StateCommand_SetDrain{SetDrain: d}})
	return err
}

// Destroy removes an app (refused with a *BusyError during a rollout).
func (s *Store) Destroy(app string) error {
	_, err := s.apply(&herdv1.StateCommand{Op: &herdv1.StateCommand_DestroyApp{DestroyApp: &herdv1.DestroyApp{App: app}}})
	return err
}

// Node returns what the state says about a node (nil if nothing).
func (s *Store) Node(name string) *herdv1.NodeRecord {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	if n := s.fsm.nodes[name]; n != nil {
		return proto.CloneOf(n)
	}
	return nil
}

// Routable says, per node, which apps a front may route to it: those
// assigned to it, and every app with a rollout in progress (its nodes are
// assigned at the end).
func (s *Store) Routable() func(node, app string) bool {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	assigned := map[string]map[string]bool{}
	for name, n := range s.fsm.nodes {
		for app := range n.GetAssignments() {
			if assigned[name] == nil {
				assigned[name] = map[string]bool{}
			}
			assigned[name][app] = true
		}
	}
	rolling := map[string]bool{}
	for name, a := range s.fsm.apps {
		if a.GetRollout() != nil {
			rolling[name] = true
		}
	}
	return func(node, app string) bool { return rolling[app] || assigned[node][app] }
}

// AddOperator records an operator credential.
func (s *Store) AddOperator(o *herdv1.OperatorRecord) error {
	_, err := s.apply(&herdv1.StateCommand{Op: &herdv1.StateCommand_AddOperator{AddOperator: o}})
	return err
}

// RevokeOperator revokes every credential of an operator name.
func (s *Store) RevokeOperator(name string) error {
	_, err := s.apply(&herdv1.StateCommand{Op: &herdv1.StateCommand_RevokeOperator{RevokeOperator: &herdv1.RevokeOperator{Name: name}}})
	return err
}

// Operators lists the operator credentials issued, oldest first.
func (s *Store) Operators() []*herdv1.OperatorRecord {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	out := make([]*herdv1.OperatorRecord, len(s.fsm.operators))
	for i, o := range s.fsm.operators {
		out[i] = proto.CloneOf(o)
	}
	return out
}

// Revoked says whether a certificate serial (lower-case hex) was revoked.
func (s *Store) Revoked(serial string) bool {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	for _, o := range s.fsm.operators {
		if o.GetSerial() == serial && o.GetRevoked() {
			return true
		}
	}
	return false
}

// Drained returns the drained nodes.
func (s *Store) Drained() map[string]bool {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	out := map[string]bool{}
	for name, n := range s.fsm.nodes {
		if n.GetDrained() {
			out[name] = true
		}
	}
	return out
}

// Destroyed says whether an app was destroyed (and not deployed since).
func (s *Store) Destroyed(app string) bool {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	return s.fsm.apps[app].GetDestroyed()
}

// apply commits a command through the log and returns what the state
// machine made of it.
func (s *Store) apply(cmd *herdv1.StateCommand) (any, error) {
	if s.raft.State() != raft.Leader {
		return nil, &NotLeaderError{Leader: s.Leader()}
	}
	cmd.Time = timestamppb.Now()
	b, err := proto.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	f := s.raft.Apply(b, 10*time.Second)
	if err := s.leaderErr(f.Error()); err != nil {
		var nl *NotLeaderError
		if errors.As(err, &nl) {
			return nil, err
		}
		return nil, fmt.Errorf("raft: %w", err)
	}
	if err, ok := f.Response().(error); ok {
		return nil, err
	}
	return f.Response(), nil
}

// Peer is one front in the Raft configuration.
type Peer struct {
	ID, Address string
	Voter       bool
}

// Peers returns the Raft configuration.
func (s *Store) Peers() ([]Peer, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []Peer
	for _, sv := range f.Configuration().Servers {
		out = append(out, Peer{ID: string(sv.ID), Address: string(sv.Address), Voter: sv.Suffrage == raft.Voter})
	}
	return out, nil
}

// AddPeer adds a front (or changes its address, or promotes it to voter);
// leader only.
func (s *Store) AddPeer(id, addr string, voter bool) error {
	var f raft.IndexFuture
	if voter {
		f = s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 10*time.Second)
	} else {
		f = s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 10*time.Second)
	}
	return s.leaderErr(f.Error())
}

// RemovePeer removes a front from the configuration; leader only.
func (s *Store) RemovePeer(id string) error {
	return s.leaderErr(s.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error())
}

func (s *Store) leaderErr(err error) error {
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
		return &NotLeaderError{Leader: s.Leader()}
	}
	return err
}

// advertiseAddr is a net.Addr that keeps the address exactly as given.
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }
