package control

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/state"
)

// nodeBatch is one message from a node's log stream.
type nodeBatch struct {
	lines    []*herdv1.LogLine
	caughtUp bool
	err      error
}

// Logs merges the log streams of every live node (or the one named): the
// kept lines in time order across nodes, then, with follow, new lines as
// they arrive.
func (s *Service) Logs(req *herdv1.LogsRequest, stream herdv1.Control_LogsServer) error {
	if !state.ValidAppName(req.GetApp()) {
		return toStatus(fmt.Errorf("%w: app name %q: want a DNS label", errInvalid, req.GetApp()))
	}
	var feeds []chan nodeBatch
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	for _, n := range s.liveNodes() {
		if req.GetNode() != "" && n.Name != req.GetNode() {
			continue
		}
		c, err := s.Agents.Client(n.GRPCAddr)
		if err != nil {
			return toStatus(err)
		}
		ns, err := c.Logs(ctx, &herdv1.AgentLogsRequest{App: req.GetApp(), Worker: req.GetWorker(), Since: req.GetSince(), Follow: req.GetFollow()})
		if err != nil {
			return status.Errorf(status.Code(err), "logs from node %s: %s", n.Name, status.Convert(err).Message())
		}
		feed := make(chan nodeBatch, 4)
		feeds = append(feeds, feed)
		go func() {
			defer close(feed)
			for {
				msg, err := ns.Recv()
				if err != nil {
					if ctx.Err() == nil && status.Code(err) != codes.Canceled {
						feed <- nodeBatch{err: fmt.Errorf("node %s: %w", n.Name, err)}
					}
					return
				}
				select {
				case feed <- nodeBatch{lines: msg.GetLines(), caughtUp: msg.GetCaughtUp()}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	if len(feeds) == 0 {
		if req.GetNode() != "" {
			return status.Errorf(codes.NotFound, "node %s is not a live node", req.GetNode())
		}
		return status.Error(codes.FailedPrecondition, "no live nodes")
	}

	// History: merge by time; a node's next line is needed before any line
	// can go out, until the node says it caught up.
	type cursor struct {
		feed     chan nodeBatch
		pending  []*herdv1.LogLine
		caughtUp bool
	}
	cur := make([]*cursor, len(feeds))
	for i, f := range feeds {
		cur[i] = &cursor{feed: f}
	}
	out := &herdv1.LogsResponse{}
	send := func() error {
		if len(out.Lines) == 0 {
			return nil
		}
		err := stream.Send(out)
		out = &herdv1.LogsResponse{}
		return err
	}
	for {
		best := -1
		for i, c := range cur {
			for len(c.pending) == 0 && !c.caughtUp {
				b, ok := <-c.feed
				if !ok {
					c.caughtUp = true
					break
				}
				if b.err != nil {
					return toStatus(b.err)
				}
				c.pending, c.caughtUp = b.lines, b.caughtUp
			}
			if len(c.pending) > 0 && (best < 0 || c.pending[0].GetTime().AsTime().Before(cur[best].pending[0].GetTime().AsTime())) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		out.Lines = append(out.Lines, cur[best].pending[0])
		cur[best].pending = cur[best].pending[1:]
		if len(out.Lines) >= 256 {
			if err := send(); err != nil {
				return err
			}
		}
	}
	if err := send(); err != nil || !req.GetFollow() {
		return err
	}

	// Follow: forward whatever any node sends.
	merged := make(chan nodeBatch)
	for _, f := range feeds {
		go func() {
			for b := range f {
				select {
				case merged <- b:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case b := <-merged:
			if b.err != nil {
				return toStatus(b.err)
			}
			if len(b.lines) > 0 {
				if err := stream.Send(&herdv1.LogsResponse{Lines: b.lines}); err != nil {
					return err
				}
			}
		}
	}
}
