package cli

import (
	"net/http"
	"strings"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Health is grpc.health.v1 for a daemon, served on its mTLS gRPC port
// and, without client certificates, on its admin port, so that
// grpc_health_probe and Kubernetes gRPC probes work.
type Health struct{ *health.Server }

// NewHealth returns a health service that says SERVING for the server as
// a whole ("") and for each named service.
func NewHealth(services ...string) *Health {
	h := &Health{health.NewServer()}
	for _, s := range append([]string{""}, services...) {
		h.SetServingStatus(s, healthpb.HealthCheckResponse_SERVING)
	}
	return h
}

// Register adds the health service to a gRPC server.
func (h *Health) Register(s *grpc.Server) { healthpb.RegisterHealthServer(s, h.Server) }

// AdminHandler serves gRPC health checks (HTTP/2 without TLS, as probes
// speak it) next to the admin HTTP handler.
func (h *Health) AdminHandler(admin http.Handler) http.Handler {
	g := grpc.NewServer()
	h.Register(g)
	return h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			g.ServeHTTP(w, r)
			return
		}
		admin.ServeHTTP(w, r)
	}), &http2.Server{})
}

// HealthMethods are the health service's methods, public on mTLS ports.
var HealthMethods = map[string]bool{
	"/grpc.health.v1.Health/Check": true,
	"/grpc.health.v1.Health/Watch": true,
	"/grpc.health.v1.Health/List":  true,
}
