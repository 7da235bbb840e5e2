package ctl

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

func newOperatorCmd(g *globals, stdio IO) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Issue, list and revoke operator credentials (herdctl configs)",
	}
	var readOnly bool
	var out string
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Issue a herdctl config for an operator",
		Long: `Issue a herdctl config (fronts' addresses, the cluster CA, a certificate
and its key) for operator NAME and write it to --out (default NAME.herdctl,
mode 0600; an existing file is not replaced). A --read-only operator may
call status, nodes, logs, history and raft peers only.`,
		Example: "  herdctl operator add alice --read-only\n  HERD_CONFIG=alice.herdctl herdctl status",
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := out
			if path == "" {
				path = args[0] + ".herdctl"
			}
			if _, err := os.Stat(path); err == nil {
				return fmt.Errorf("%s exists: remove it or pass another --out", path)
			}
			return withFront(cmd.Context(), g, func(c herdv1.ControlClient) error {
				resp, err := c.AddOperator(cmd.Context(), &herdv1.AddOperatorRequest{Name: args[0], ReadOnly: readOnly})
				if err != nil {
					return err
				}
				f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
				if err != nil {
					return err
				}
				if _, err := f.WriteString(resp.GetConfig()); err != nil {
					f.Close()
					return err
				}
				if err := f.Close(); err != nil {
					return err
				}
				_, err = fmt.Fprintf(stdio.Out, "wrote %s for operator %s (mode 0600): herdctl --config %s\n", path, args[0], path)
				return err
			})
		},
	}
	add.Flags().BoolVar(&readOnly, "read-only", false, "the operator may only look (status, nodes, logs, history, raft peers)")
	add.Flags().StringVar(&out, "out", "", "`FILE` to write the config to (default NAME.herdctl)")
	revoke := &cobra.Command{
		Use:     "revoke NAME",
		Short:   "Revoke every credential issued to an operator",
		Example: "  herdctl operator revoke alice",
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withFront(cmd.Context(), g, func(c herdv1.ControlClient) error {
				resp, err := c.RevokeOperator(cmd.Context(), &herdv1.RevokeOperatorRequest{Name: args[0]})
				if err != nil {
					return err
				}
				return g.done(stdio, resp, "revoked %s\n", args[0])
			})
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the operator credentials issued",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withFront(cmd.Context(), g, func(c herdv1.ControlClient) error {
				resp, err := c.ListOperators(cmd.Context(), &herdv1.ListOperatorsRequest{})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(stdio.Out, resp)
				}
				t := newTable(stdio.Out, "NAME", "ROLE", "ISSUED", "SERIAL", "STATE")
				for _, o := range resp.GetOperators() {
					st := "valid"
					if o.GetRevoked() {
						st = "revoked"
					}
					t.row(o.GetName(), o.GetRole(), o.GetIssued().AsTime().Local().Format(time.DateTime), o.GetSerial(), st)
				}
				return t.flush()
			})
		},
	}
	cmd.AddCommand(add, revoke, list)
	return cmd
}
