package ctl

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

func newStatusCmd(g *globals, stdio IO) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show each app's release and, per node, ready/desired workers",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withFront(cmd.Context(), g, func(c herdv1.ControlClient) error {
				resp, err := c.Status(cmd.Context(), &herdv1.StatusRequest{})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(stdio.Out, resp)
				}
				return printStatus(stdio.Out, resp)
			})
		},
	}
}

func printStatus(w io.Writer, resp *herdv1.StatusResponse) error {
	if len(resp.GetApps()) == 0 {
		_, err := fmt.Fprintln(w, "no apps deployed")
		return err
	}
	t := newTable(w, "APP", "RELEASE", "HOSTS", "NODE", "RUNS", "READY", "ERROR")
	for _, a := range resp.GetApps() {
		rel := a.GetRelease()
		hosts := strings.Join(rel.GetSpec().GetHosts(), ",")
		if hosts == "" {
			hosts = "-"
		}
		if len(a.GetNodes()) == 0 {
			t.row(rel.GetApp(), rel.GetId(), hosts, "-", "-", "-", "no live nodes")
		}
		for _, n := range a.GetNodes() {
			runs := n.GetRelease()
			if runs == "" {
				runs = "-"
			}
			errText := n.GetError()
			if errText == "" {
				errText = "-"
			}
			t.row(rel.GetApp(), rel.GetId(), hosts, n.GetNode(), runs, fmt.Sprintf("%d/%d", n.GetReady(), n.GetDesired()), errText)
		}
	}
	return t.flush()
}
