package agent

import (
	"errors"
	"iter"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/logfile"
	"github.com/herd-run/herd/internal/state"
)

// logBatch bounds the lines sent in one message.
const logBatch = 256

var errStopRead = errors.New("stop")

func (m *manager) logPath(app string, worker int) string {
	return filepath.Join(m.cfg.DataDir, "logs", app, strconv.Itoa(worker)+".log")
}

// Logs streams the kept output of an app's workers merged in time order,
// then, with follow, new lines as they are written.
func (s *service) Logs(req *herdv1.AgentLogsRequest, stream herdv1.Agent_LogsServer) error {
	m := s.m
	if !state.ValidAppName(req.GetApp()) {
		return status.Errorf(codes.InvalidArgument, "app name %q: want a DNS label", req.GetApp())
	}
	var files []string
	var workers []uint32
	if w := req.GetWorker(); w > 0 {
		files, workers = []string{m.logPath(req.GetApp(), int(w))}, []uint32{w}
	} else {
		paths, _ := filepath.Glob(filepath.Join(m.cfg.DataDir, "logs", req.GetApp(), "*.log"))
		for _, p := range paths {
			n, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(p), ".log"))
			if err == nil && n > 0 {
				files, workers = append(files, p), append(workers, uint32(n))
			}
		}
	}
	var since time.Time
	if req.GetSince() != nil {
		since = req.GetSince().AsTime()
	}

	out := &herdv1.AgentLogsResponse{}
	flush := func(caughtUp bool) error {
		if len(out.Lines) == 0 && !caughtUp {
			return nil
		}
		out.CaughtUp = caughtUp
		err := stream.Send(out)
		out = &herdv1.AgentLogsResponse{}
		return err
	}
	add := func(worker uint32, l logfile.Line) error {
		out.Lines = append(out.Lines, &herdv1.LogLine{
			Node: m.cfg.Name, App: req.GetApp(), Worker: worker, Time: timestamppb.New(l.Time), Text: l.Text,
		})
		if len(out.Lines) >= logBatch {
			return flush(false)
		}
		return nil
	}

	// History: a k-way merge of the workers' files by time.
	offsets := make([]int64, len(files))
	nexts := make([]func() (logfile.Line, bool), len(files))
	heads := make([]*logfile.Line, len(files))
	for i, path := range files {
		seq := func(yield func(logfile.Line) bool) {
			off, _ := logfile.ReadSince(path, logfile.DefaultKeep, since, func(l logfile.Line) error {
				if !yield(l) {
					return errStopRead
				}
				return nil
			})
			offsets[i] = off
		}
		next, stop := iter.Pull(iter.Seq[logfile.Line](seq))
		defer stop()
		nexts[i] = next
		if l, ok := next(); ok {
			heads[i] = &l
		}
	}
	for {
		best := -1
		for i, h := range heads {
			if h != nil && (best < 0 || h.Time.Before(heads[best].Time)) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		if err := add(workers[best], *heads[best]); err != nil {
			return err
		}
		if l, ok := nexts[best](); ok {
			heads[best] = &l
		} else {
			heads[best] = nil
		}
	}
	if err := flush(true); err != nil || !req.GetFollow() {
		return err
	}

	// Follow: every file in its own goroutine, lines sent as they come.
	ctx := stream.Context()
	lines := make(chan *herdv1.LogLine, logBatch)
	var wg sync.WaitGroup
	for i, path := range files {
		wg.Go(func() {
			logfile.Follow(ctx, path, logfile.DefaultKeep, offsets[i], func(l logfile.Line) error {
				select {
				case lines <- &herdv1.LogLine{Node: m.cfg.Name, App: req.GetApp(), Worker: workers[i], Time: timestamppb.New(l.Time), Text: l.Text}:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
		})
	}
	defer wg.Wait()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case l := <-lines:
			out.Lines = append(out.Lines, l)
			if len(out.Lines) >= logBatch {
				if err := flush(false); err != nil {
					return err
				}
			}
		case <-tick.C:
			if err := flush(false); err != nil {
				return err
			}
		}
	}
}
