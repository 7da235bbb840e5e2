package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-run/herd/internal/cluster"
	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
	"github.com/herd-run/herd/internal/release"
)

const (
	// maxArtifact bounds an upload (compressed).
	maxArtifact = 1 << 30
	chunkSize   = 256 << 10
)

var errInvalid = errors.New("invalid request")

func (s *Service) StatArtifact(_ context.Context, req *herdv1.StatArtifactRequest) (*herdv1.StatArtifactResponse, error) {
	if !release.ValidDigest(req.GetDigest()) {
		return nil, toStatus(fmt.Errorf("%w: digest %q is not a sha256", errInvalid, req.GetDigest()))
	}
	size, ok := s.Artifacts.Has(req.GetDigest())
	return &herdv1.StatArtifactResponse{Present: ok, Size: size}, nil
}

// UploadArtifact keeps the artifact only if it matches the header's digest
// and size.
func (s *Service) UploadArtifact(stream herdv1.Control_UploadArtifactServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	switch {
	case h == nil:
		return toStatus(fmt.Errorf("%w: an upload starts with a header", errInvalid))
	case !release.ValidDigest(h.GetDigest()):
		return toStatus(fmt.Errorf("%w: digest %q is not a sha256", errInvalid, h.GetDigest()))
	case h.GetSize() < 0 || h.GetSize() > maxArtifact:
		return toStatus(fmt.Errorf("%w: artifact size %d is outside 0..%d", errInvalid, h.GetSize(), maxArtifact))
	}
	r := release.ChunkReader(func() ([]byte, error) {
		msg, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if msg.GetHeader() != nil {
			return nil, fmt.Errorf("%w: a second header in one upload", errInvalid)
		}
		return msg.GetChunk(), nil
	})
	n, err := s.Artifacts.Put(h.GetDigest(), h.GetSize(), r)
	if err != nil {
		if errors.Is(err, errInvalid) {
			return toStatus(err)
		}
		return status.Errorf(codes.InvalidArgument, "artifact %s rejected: %v", h.GetDigest(), err)
	}
	s.Log.Info("artifact stored", "digest", h.GetDigest(), "bytes", n)
	return stream.SendAndClose(&herdv1.UploadArtifactResponse{Digest: h.GetDigest(), Size: n})
}

// FetchArtifact streams an artifact: the size in the first message, then
// the bytes.
func (s *Service) FetchArtifact(req *herdv1.FetchArtifactRequest, stream herdv1.Control_FetchArtifactServer) error {
	if !release.ValidDigest(req.GetDigest()) {
		return toStatus(fmt.Errorf("%w: digest %q is not a sha256", errInvalid, req.GetDigest()))
	}
	f, size, err := s.Artifacts.Open(req.GetDigest())
	if errors.Is(err, os.ErrNotExist) {
		return status.Errorf(codes.NotFound, "artifact %s is not on this front", req.GetDigest())
	}
	if err != nil {
		return toStatus(err)
	}
	defer f.Close()
	buf := make([]byte, chunkSize)
	msg := &herdv1.FetchArtifactResponse{Size: size}
	for first := true; ; first = false {
		n, err := f.Read(buf)
		if n > 0 || first {
			msg.Chunk = buf[:n]
			if err := stream.Send(msg); err != nil {
				return err
			}
			msg = &herdv1.FetchArtifactResponse{}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return toStatus(err)
		}
	}
}

// PullArtifact makes this front hold an artifact, fetched from the first
// source that has it.
func (s *Service) PullArtifact(ctx context.Context, req *herdv1.PullArtifactRequest) (*herdv1.PullArtifactResponse, error) {
	if !release.ValidDigest(req.GetDigest()) {
		return nil, toStatus(fmt.Errorf("%w: digest %q is not a sha256", errInvalid, req.GetDigest()))
	}
	if size, ok := s.Artifacts.Has(req.GetDigest()); ok {
		return &herdv1.PullArtifactResponse{Size: size}, nil
	}
	var sources []string
	for _, src := range req.GetSources() {
		if src != s.Self {
			sources = append(sources, src)
		}
	}
	if err := release.Fetch(ctx, s.Artifacts, sources, req.GetDigest(), s.Agents.FrontDial()); err != nil {
		return nil, status.Errorf(codes.NotFound, "front %s: %v", s.Name, err)
	}
	size, _ := s.Artifacts.Has(req.GetDigest())
	s.Log.Info("artifact copied from another front", "digest", req.GetDigest(), "bytes", size)
	return &herdv1.PullArtifactResponse{Size: size}, nil
}

// replicate makes every live front hold the artifact and returns the gRPC
// addresses of those that do (this one first). It fails unless at least
// two fronts (or all, if fewer are live) hold it.
func (s *Service) replicate(ctx context.Context, digest string) ([]string, error) {
	fronts := s.liveFronts()
	var all []string
	for _, f := range fronts {
		all = append(all, f.GRPCAddr)
	}
	if len(fronts) == 0 || fronts[0].Name != s.Name {
		// Gossip does not list us yet (just started): count ourselves.
		all = append([]string{s.Self}, all...)
		fronts = append([]cluster.Member{{Name: s.Name, GRPCAddr: s.Self}}, fronts...)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	errs := make([]error, len(fronts))
	var wg sync.WaitGroup
	for i, f := range fronts {
		wg.Go(func() {
			if f.Name == s.Name {
				_, errs[i] = s.PullArtifact(ctx, &herdv1.PullArtifactRequest{Digest: digest, Sources: all})
				return
			}
			c, err := s.Agents.Control(f.GRPCAddr)
			if err == nil {
				_, err = c.PullArtifact(ctx, &herdv1.PullArtifactRequest{Digest: digest, Sources: all})
			}
			errs[i] = err
		})
	}
	wg.Wait()
	var holders []string
	var why []string
	for i, f := range fronts {
		if errs[i] == nil {
			holders = append(holders, f.GRPCAddr)
		} else {
			why = append(why, f.Name+": "+status.Convert(errs[i]).Message())
		}
	}
	need := min(2, len(fronts))
	if len(holders) < need {
		return nil, status.Errorf(codes.FailedPrecondition, "artifact %.19s is on %d front(s), a deploy needs it on %d (upload it again): %s",
			digest, len(holders), need, strings.Join(why, "; "))
	}
	return holders, nil
}
