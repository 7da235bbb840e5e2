package release

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// Fetch gets an artifact from the first front (gRPC address) that has it
// and keeps it in the store only if its sha256 matches. dial carries the
// caller's credentials.
func Fetch(ctx context.Context, store *Store, sources []string, digest string, dial grpc.DialOption) error {
	if len(sources) == 0 {
		return errors.New("no front to fetch the artifact from")
	}
	if dial == nil {
		return errors.New("no credentials to fetch the artifact with yet")
	}
	var errs []error
	for _, addr := range sources {
		err := fetchFrom(ctx, store, addr, digest, dial)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("from %s: %w", addr, err))
	}
	return fmt.Errorf("fetch artifact %.12s: %w", digest, errors.Join(errs...))
}

func fetchFrom(ctx context.Context, store *Store, addr, digest string, dial grpc.DialOption) error {
	conn, err := grpc.NewClient(addr, dial)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := herdv1.NewControlClient(conn).FetchArtifact(ctx, &herdv1.FetchArtifactRequest{Digest: digest})
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	pending := first.GetChunk()
	r := ChunkReader(func() ([]byte, error) {
		if pending != nil {
			b := pending
			pending = nil
			return b, nil
		}
		msg, err := stream.Recv()
		return msg.GetChunk(), err
	})
	_, err = store.Put(digest, first.GetSize(), r)
	return err
}
