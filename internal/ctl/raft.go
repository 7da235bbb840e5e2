package ctl

import (
	"github.com/spf13/cobra"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

func newRaftCmd(g *globals, stdio IO) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "raft",
		Short: "Inspect and repair the fronts' Raft configuration",
		Long: `The fronts keep the desired state (apps, releases, assignments) in Raft.
The leader adds fronts that gossip shows (voters up to --raft-voters, then
non-voters) and removes a front gone longer than --raft-remove-after.`,
	}
	peers := &cobra.Command{
		Use:   "peers",
		Short: "List the fronts in the Raft configuration",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withFront(cmd.Context(), g, func(c herdv1.ControlClient) error {
				resp, err := c.ListPeers(cmd.Context(), &herdv1.ListPeersRequest{})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(stdio.Out, resp)
				}
				t := newTable(stdio.Out, "NAME", "ADDRESS", "ROLE", "GOSSIP")
				for _, p := range resp.GetPeers() {
					role := "non-voter"
					switch {
					case p.GetLeader():
						role = "leader"
					case p.GetVoter():
						role = "voter"
					}
					gossip := enumWord(p.GetMemberState().String(), "MEMBER_STATE_")
					if gossip == "unspecified" {
						gossip = "unknown"
					}
					t.row(p.GetName(), p.GetAddress(), role, gossip)
				}
				return t.flush()
			})
		},
	}
	remove := &cobra.Command{
		Use:     "remove-peer FRONT",
		Short:   "Remove a front that is gone for good from the Raft configuration",
		Example: "  herdctl raft remove-peer front-3",
		Args:    exactArgs("FRONT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withFront(cmd.Context(), g, func(c herdv1.ControlClient) error {
				resp, err := c.RemovePeer(cmd.Context(), &herdv1.RemovePeerRequest{Name: args[0]})
				if err != nil {
					return err
				}
				return g.done(stdio, resp, "removed %s from the raft configuration\n", args[0])
			})
		},
	}
	cmd.AddCommand(peers, remove)
	return cmd
}
