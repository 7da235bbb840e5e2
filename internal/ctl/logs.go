package ctl

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

type logsOptions struct {
	app    string
	follow bool
	node   string
	worker uint32
	since  time.Duration
}

func newLogsCmd(g *globals, stdio IO) *cobra.Command {
	o := &logsOptions{}
	cmd := &cobra.Command{
		Use:   "logs APP",
		Short: "Print an app's worker output from every node",
		Long: `Print what an app's workers wrote to stdout and stderr, from every live
node, in time order, each line prefixed by its node and worker. Each node
keeps about 40 MB per worker (10 MB files, 3 rotated). With -f, keep
printing new lines until interrupted.`,
		Example: `  herdctl logs hello --since 10m
  herdctl logs hello -f --node web-1 --worker 2`,
		Args: exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.app = args[0]
			return o.run(cmd, g, stdio)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.follow, "follow", "f", false, "keep printing new lines")
	f.StringVar(&o.node, "node", "", "only this node")
	f.Uint32Var(&o.worker, "worker", 0, "only this worker slot (1..N)")
	f.DurationVar(&o.since, "since", 0, "only lines from the last `D` (e.g. 10m); default: all that is kept")
	return cmd
}

func (o *logsOptions) run(cmd *cobra.Command, g *globals, stdio IO) error {
	if o.since < 0 {
		return usageError{fmt.Errorf("--since %v must not be negative", o.since)}
	}
	req := &herdv1.LogsRequest{App: o.app, Node: o.node, Worker: o.worker, Follow: o.follow}
	if o.since > 0 {
		req.Since = timestamppb.New(time.Now().Add(-o.since))
	}
	ctx := cmd.Context()
	return withFront(ctx, g, func(c herdv1.ControlClient) error {
		stream, err := c.Logs(ctx, req)
		if err != nil {
			return err
		}
		for {
			msg, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			for _, l := range msg.GetLines() {
				if err := printLogLine(stdio.Out, g.output, l); err != nil {
					return err
				}
			}
		}
	})
}

func printLogLine(w io.Writer, format string, l *herdv1.LogLine) error {
	if format == "json" {
		b, err := protojson.Marshal(l)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintf(w, "%s %s/%d | %s\n", l.GetTime().AsTime().Local().Format("15:04:05.000"), l.GetNode(), l.GetWorker(), l.GetText())
	return err
}
