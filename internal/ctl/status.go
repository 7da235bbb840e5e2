package ctl

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

func newStatusCmd(g *globals, stdio IO) *cobra.Command {
	var workers bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each app's release and, per node, ready/desired workers",
		Long: `Show each app's release and, per node, the release it runs and its
ready/desired workers. With --workers, every worker: its state (starting,
ready, unhealthy, backoff, crash-looping, retiring), pid, restarts, uptime,
memory and CPU of its process group, and how its last run ended.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withFront(cmd.Context(), g, func(c herdv1.ControlClient) error {
				resp, err := c.Status(cmd.Context(), &herdv1.StatusRequest{Workers: workers})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(stdio.Out, resp)
				}
				if workers {
					return printWorkers(stdio.Out, resp)
				}
				return printStatus(stdio.Out, resp)
			})
		},
	}
	cmd.Flags().BoolVar(&workers, "workers", false, "list every worker process")
	return cmd
}

func printWorkers(w io.Writer, resp *herdv1.StatusResponse) error {
	t := newTable(w, "APP", "NODE", "WORKER", "RELEASE", "STATE", "PID", "RESTARTS", "UPTIME", "RSS", "CPU", "ADDRESS", "LAST EXIT")
	for _, a := range resp.GetApps() {
		for _, n := range a.GetNodes() {
			for _, wk := range n.GetWorkers() {
				uptime := "-"
				if wk.GetStarted() != nil && wk.GetPid() != 0 {
					uptime = time.Since(wk.GetStarted().AsTime()).Truncate(time.Second).String()
				}
				last := wk.GetLastExit()
				if last == "" {
					last = "-"
				}
				t.row(wk.GetApp(), n.GetNode(), wk.GetIndex(), wk.GetRelease(), wk.GetState(), wk.GetPid(), wk.GetRestarts(),
					uptime, fmt.Sprintf("%.1fM", float64(wk.GetRssBytes())/(1<<20)), fmt.Sprintf("%.2fs", wk.GetCpuSeconds()),
					wk.GetAddress(), last)
			}
		}
	}
	return t.flush()
}

func printStatus(w io.Writer, resp *herdv1.StatusResponse) error {
	if st := resp.GetState(); st != nil {
		fmt.Fprintln(w, freshness(st))
	}
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

// freshness says where the desired state shown comes from.
func freshness(st *herdv1.StateInfo) string {
	switch {
	case st.GetRaftState() == "leader":
		return fmt.Sprintf("desired state from %s, the raft leader (index %d)", st.GetFront(), st.GetAppliedIndex())
	case st.GetLeader() == "":
		return fmt.Sprintf("desired state from %s (%s, NO LEADER: may be stale; index %d)", st.GetFront(), st.GetRaftState(), st.GetAppliedIndex())
	}
	return fmt.Sprintf("desired state from %s (%s of %s, last contact %s ago, index %d)", st.GetFront(), st.GetRaftState(),
		st.GetLeader(), st.GetLastContact().AsDuration().Round(time.Millisecond), st.GetAppliedIndex())
}
