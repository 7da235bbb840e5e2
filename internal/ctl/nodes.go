package ctl

import (
	"strings"

	"github.com/spf13/cobra"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

func newNodesCmd(g *globals, stdio IO) *cobra.Command {
	return &cobra.Command{
		Use:   "nodes",
		Short: "List the cluster's members (fronts and nodes) as gossip sees them",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withFront(cmd.Context(), g, func(c herdv1.ControlClient) error {
				resp, err := c.ListNodes(cmd.Context(), &herdv1.ListNodesRequest{})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(stdio.Out, resp)
				}
				t := newTable(stdio.Out, "NAME", "ROLE", "GOSSIP", "GRPC", "STATE")
				for _, m := range resp.GetMembers() {
					t.row(m.GetName(), enumWord(m.GetRole().String(), "ROLE_"), m.GetGossipAddress(), m.GetGrpcAddress(),
						enumWord(m.GetState().String(), "MEMBER_STATE_"))
				}
				return t.flush()
			})
		},
	}
}

// enumWord turns ROLE_FRONT into "front".
func enumWord(s, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(s, prefix))
}
