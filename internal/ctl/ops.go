package ctl

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// rolloutEvent is a message of any rollout stream (deploy, rollback,
// scale, restart).
type rolloutEvent interface {
	GetProgress() *herdv1.DeployProgress
	GetResult() *herdv1.DeployResult
}

// follow prints a rollout's progress on progress (a bar per batch on a
// terminal, plain lines otherwise) and returns its result.
func follow[T rolloutEvent](recv func() (T, error), progress io.Writer) (*herdv1.DeployResult, error) {
	tty := false
	if f, ok := progress.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	started := false
	for {
		msg, err := recv()
		if err != nil {
			if started {
				// The command began: trying it again on another front
				// would not be the same command. Say so instead.
				return nil, fmt.Errorf("%s (the command had begun; herdctl status and history tell how it ended)", rpcError(err))
			}
			return nil, err
		}
		started = true
		if r := msg.GetResult(); r != nil {
			return r, nil
		}
		p := msg.GetProgress()
		if p == nil {
			continue
		}
		prefix := ""
		if p.GetBatches() > 1 {
			prefix = fmt.Sprintf("[batch %d/%d] ", p.GetBatch(), p.GetBatches())
			if tty && p.GetNode() == "" {
				const width = 20
				done := width * int(p.GetBatch()-1) / int(p.GetBatches())
				prefix = fmt.Sprintf("[%s%s] %d/%d ", strings.Repeat("#", done), strings.Repeat("-", width-done), p.GetBatch(), p.GetBatches())
			}
		}
		if p.GetNode() != "" {
			fmt.Fprintf(progress, "%s%s: %s\n", prefix, p.GetNode(), p.GetMessage())
		} else {
			fmt.Fprintf(progress, "%s%s\n", prefix, p.GetMessage())
		}
	}
}

func (g *globals) progress(stdio IO) io.Writer {
	if g.output == "json" {
		return io.Discard
	}
	return stdio.Err
}

func newRollbackCmd(g *globals, stdio IO) *cobra.Command {
	var to, batch string
	var force bool
	cmd := &cobra.Command{
		Use:   "rollback APP",
		Short: "Roll an app back to its previous release (or --to one), as a new release",
		Long: `Roll APP back to the release before the current one (the last one that
rolled out and differs from it), or to --to RELEASE, through the same
batches as a deploy but without health waits. The rollback is a new release
(herdctl history shows "rollback to vN"); the worker count stays as it is.`,
		Example: "  herdctl rollback shop\n  herdctl rollback shop --to v3 --batch 1",
		Args:    exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withFront(cmd.Context(), g, func(c herdv1.ControlClient) error {
				stream, err := c.Rollback(cmd.Context(), &herdv1.RollbackRequest{App: args[0], To: to, Batch: batch, Force: force})
				if err != nil {
					return err
				}
				r, err := follow(stream.Recv, g.progress(stdio))
				if err != nil {
					return err
				}
				return printRollout(stdio.Out, g.output, r, "rolled back to")
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the `RELEASE` to go back to (default: the previous one)")
	cmd.Flags().StringVar(&batch, "batch", "", "nodes per batch, `N` or P% (default: all at once)")
	cmd.Flags().BoolVar(&force, "force", false, "supersede a rollout of the app in progress")
	return cmd
}

func newScaleCmd(g *globals, stdio IO) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "scale APP WORKERS",
		Short:   "Set an app's worker processes per node, in place",
		Long:    "Set APP's workers per node on every node. Workers that stay are not touched; new ones join once ready; surplus ones are withdrawn before they stop. Running it twice changes nothing the second time.",
		Example: "  herdctl scale shop 6",
		Args:    exactArgs("APP", "WORKERS"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var n uint32
			if _, err := fmt.Sscanf(args[1], "%d", &n); err != nil || fmt.Sprint(n) != args[1] || n < 1 {
				return usageError{fmt.Errorf("WORKERS %q: want a whole number from 1", args[1])}
			}
			return withFront(cmd.Context(), g, func(c herdv1.ControlClient) error {
				stream, err := c.Scale(cmd.Context(), &herdv1.ScaleRequest{App: args[0], Workers: n, Force: force})
				if err != nil {
					return err
				}
				r, err := follow(stream.Recv, g.progress(stdio))
				if err != nil {
					return err
				}
				return printRollout(stdio.Out, g.output, r, fmt.Sprintf("scaled to %d workers per node,", n))
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "supersede a rollout of the app in progress")
	return cmd
}

func newRestartCmd(g *globals, stdio IO) *cobra.Command {
	var batch string
	var force bool
	cmd := &cobra.Command{
		Use:     "restart APP",
		Short:   "Replace every worker of an app, batch by batch (same release)",
		Long:    "Replace every worker of APP with a new one of the same release, node batch by node batch (--batch, default 1 node at a time). On each node the new workers start and pass the health check before the old ones are withdrawn and stopped.",
		Example: "  herdctl restart shop\n  herdctl restart shop --batch 50%",
		Args:    exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withFront(cmd.Context(), g, func(c herdv1.ControlClient) error {
				stream, err := c.Restart(cmd.Context(), &herdv1.RestartRequest{App: args[0], Batch: batch, Force: force})
				if err != nil {
					return err
				}
				r, err := follow(stream.Recv, g.progress(stdio))
				if err != nil {
					return err
				}
				return printRollout(stdio.Out, g.output, r, "restarted")
			})
		},
	}
	cmd.Flags().StringVar(&batch, "batch", "1", "nodes per batch, `N` or P%")
	cmd.Flags().BoolVar(&force, "force", false, "supersede a rollout of the app in progress")
	return cmd
}

func newDestroyCmd(g *globals, stdio IO) *cobra.Command {
	return &cobra.Command{
		Use:     "destroy APP",
		Short:   "Stop an app everywhere and remove its routes",
		Long:    "Remove APP from the desired state: every front drops its routes, then every node withdraws and stops its workers. Its history and release numbers stay; a later deploy brings it back.",
		Example: "  herdctl destroy shop",
		Args:    exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withFront(cmd.Context(), g, func(c herdv1.ControlClient) error {
				resp, err := c.Destroy(cmd.Context(), &herdv1.DestroyRequest{App: args[0]})
				if err != nil {
					return err
				}
				return g.done(stdio, resp, "%s destroyed\n", args[0])
			})
		},
	}
}

func newHistoryCmd(g *globals, stdio IO) *cobra.Command {
	return &cobra.Command{
		Use:     "history APP",
		Short:   "List an app's releases: time, digest, command and outcome",
		Example: "  herdctl history shop",
		Args:    exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withFront(cmd.Context(), g, func(c herdv1.ControlClient) error {
				resp, err := c.History(cmd.Context(), &herdv1.HistoryRequest{App: args[0]})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(stdio.Out, resp)
				}
				t := newTable(stdio.Out, "RELEASE", "FINISHED", "DIGEST", "WORKERS", "COMMAND", "OUTCOME")
				for _, it := range resp.GetItems() {
					rel := it.GetRelease()
					outcome := "ok"
					if !it.GetOk() {
						outcome = "FAILED"
					}
					if it.GetNote() != "" {
						outcome += ": " + it.GetNote()
					}
					id := rel.GetId()
					if id == resp.GetCurrent() && it == lastOK(resp.GetItems(), id) {
						id += " (current)"
					}
					t.row(id, it.GetFinished().AsTime().Local().Format(time.DateTime), shortDigest(rel.GetDigest()),
						rel.GetSpec().GetWorkers(), rel.GetSpec().GetCommand(), oneLineText(outcome))
				}
				return t.flush()
			})
		},
	}
}

// lastOK is the last successful history item of a release id.
func lastOK(items []*herdv1.HistoryItem, id string) *herdv1.HistoryItem {
	for i := len(items) - 1; i >= 0; i-- {
		if items[i].GetRelease().GetId() == id && items[i].GetOk() {
			return items[i]
		}
	}
	return nil
}

func shortDigest(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

func oneLineText(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 100 {
		s = s[:97] + "..."
	}
	return s
}

func newDrainCmd(g *globals, stdio IO) *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "drain NODE",
		Short: "Stop sending requests to a node, then stop its workers",
		Long: `Mark NODE drained in the desired state: every front stops sending it new
requests within a second, requests in flight finish, then its workers stop
gracefully (--keep-workers leaves them running, idle). No rollout moves a
drained node; it catches up when undrained. The flag survives restarts of
the node and can be set while the node is unreachable.`,
		Example: "  herdctl drain node-3\n  herdctl undrain node-3",
		Args:    exactArgs("NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withFront(cmd.Context(), g, func(c herdv1.ControlClient) error {
				resp, err := c.Drain(cmd.Context(), &herdv1.DrainRequest{Node: args[0], KeepWorkers: keep})
				if err != nil {
					return err
				}
				return g.done(stdio, resp, "%s drained\n", args[0])
			})
		},
	}
	cmd.Flags().BoolVar(&keep, "keep-workers", false, "leave the node's workers running, idle")
	return cmd
}

func newUndrainCmd(g *globals, stdio IO) *cobra.Command {
	return &cobra.Command{
		Use:     "undrain NODE",
		Short:   "Let a drained node take requests again",
		Long:    "Clear NODE's drain flag: it starts its apps again, takes requests as its workers get ready, and catches up with releases deployed while it was drained.",
		Example: "  herdctl undrain node-3",
		Args:    exactArgs("NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withFront(cmd.Context(), g, func(c herdv1.ControlClient) error {
				resp, err := c.Undrain(cmd.Context(), &herdv1.UndrainRequest{Node: args[0]})
				if err != nil {
					return err
				}
				return g.done(stdio, resp, "%s undrained\n", args[0])
			})
		},
	}
}

// printRollout prints a rollout's result.
func printRollout(w io.Writer, format string, r *herdv1.DeployResult, verb string) error {
	if format == "json" {
		return printJSON(w, r)
	}
	rel := r.GetRelease()
	_, err := fmt.Fprintf(w, "%s %s %s on %d node(s)\n", rel.GetApp(), verb, rel.GetId(), len(r.GetNodes()))
	return err
}
