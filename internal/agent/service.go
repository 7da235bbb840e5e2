package agent

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// defaultApplyTimeout bounds an Apply that does not say how long it may take.
const defaultApplyTimeout = 60 * time.Second

// timeoutOr is a request's timeout, or defaultApplyTimeout when it has none.
func timeoutOr(d *durationpb.Duration) time.Duration {
	if d.AsDuration() > 0 {
		return d.AsDuration()
	}
	return defaultApplyTimeout
}

// service is the Agent gRPC API.
type service struct {
	herdv1.UnimplementedAgentServer
	m *manager
}

func (s *service) Apply(ctx context.Context, req *herdv1.ApplyRequest) (*herdv1.ApplyResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, timeoutOr(req.GetTimeout()))
	defer cancel()
	if err := s.m.apply(ctx, req.GetRelease(), req.GetArtifactSources()); err != nil {
		return nil, toStatus(err)
	}
	return &herdv1.ApplyResponse{State: s.m.cl.LocalState()}, nil
}

func (s *service) GetState(context.Context, *herdv1.GetStateRequest) (*herdv1.GetStateResponse, error) {
	return &herdv1.GetStateResponse{State: s.m.cl.LocalState()}, nil
}

// toStatus is the one place where node errors become gRPC codes.
func toStatus(err error) error {
	switch {
	case errors.Is(err, errInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.FailedPrecondition, err.Error())
}

func (s *service) AckState(_ context.Context, req *herdv1.AckStateRequest) (*herdv1.AckStateResponse, error) {
	s.m.applied.ack(req.GetFront(), req.GetGeneration())
	return &herdv1.AckStateResponse{}, nil
}

func (s *service) Remove(_ context.Context, req *herdv1.RemoveRequest) (*herdv1.RemoveResponse, error) {
	s.m.remove(req.GetApp())
	return &herdv1.RemoveResponse{State: s.m.cl.LocalState()}, nil
}

func (s *service) SetDrained(_ context.Context, req *herdv1.SetDrainedRequest) (*herdv1.SetDrainedResponse, error) {
	if err := s.m.setDrained(req.GetDrained(), req.GetKeepWorkers()); err != nil {
		return nil, toStatus(err)
	}
	return &herdv1.SetDrainedResponse{State: s.m.cl.LocalState()}, nil
}

func (s *service) RunTask(ctx context.Context, req *herdv1.RunTaskRequest) (*herdv1.RunTaskResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, timeoutOr(req.GetTimeout()))
	defer cancel()
	resp, err := s.m.runTask(ctx, req.GetRelease(), req.GetCommand(), req.GetArtifactSources())
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

func (s *service) ListWorkers(_ context.Context, req *herdv1.ListWorkersRequest) (*herdv1.ListWorkersResponse, error) {
	return &herdv1.ListWorkersResponse{Workers: s.m.workers(req.GetApp())}, nil
}
