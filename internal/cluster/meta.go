package cluster

import (
	"encoding/json"
	"fmt"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// meta is what a member puts in memberlist's node meta. It must stay far
// below memberlist's 512-byte limit: the role, the gRPC address, and the
// generation of the member's state, so that a change of state is gossiped by
// memberlist's own alive messages (relayed and deduplicated for us) while the
// state itself travels by push/pull and gRPC.
type meta struct {
	Role       string `json:"r"`
	GRPC       string `json:"g,omitempty"`
	Raft       string `json:"ra,omitempty"`
	Generation uint64 `json:"v,omitempty"`
	Leaving    bool   `json:"l,omitempty"`
}

func roleName(r herdv1.Role) string {
	switch r {
	case herdv1.Role_ROLE_FRONT:
		return "front"
	case herdv1.Role_ROLE_NODE:
		return "node"
	}
	return ""
}

func parseRole(s string) herdv1.Role {
	switch s {
	case "front":
		return herdv1.Role_ROLE_FRONT
	case "node":
		return herdv1.Role_ROLE_NODE
	}
	return herdv1.Role_ROLE_UNSPECIFIED
}

func (m meta) encode(limit int) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("node meta is %d bytes, above memberlist's limit of %d", len(b), limit)
	}
	return b, nil
}

func decodeMeta(b []byte) (meta, error) {
	var m meta
	if len(b) == 0 {
		return m, fmt.Errorf("empty node meta")
	}
	err := json.Unmarshal(b, &m)
	return m, err
}
