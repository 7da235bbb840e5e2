// Package ctl is herdctl: the operator's commands over the Control gRPC API.
// Each command has its own file with an options struct; output goes to the
// writers in IO so tests capture it.
package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// IO is where commands read and write.
type IO struct {
	Out, Err io.Writer
}

// globals are the flags every command takes.
type globals struct {
	addrs  []string
	output string
}

// Main runs herdctl with args and returns the exit status: 0 on success,
// 1 when the command failed, 2 for bad usage. Errors are one line on Err.
func Main(args []string, stdio IO) int {
	g := &globals{}
	root := &cobra.Command{
		Use:           "herdctl",
		Short:         "herdctl operates a herd cluster through any of its fronts",
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if g.output != "table" && g.output != "json" {
				return usageError{fmt.Errorf("-o %q: want table or json", g.output)}
			}
			if len(g.addrs) == 0 {
				if env := os.Getenv("HERD_ADDR"); env != "" {
					g.addrs = strings.Split(env, ",")
				} else {
					g.addrs = []string{"127.0.0.1:7700"}
				}
			}
			return nil
		},
	}
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	root.SetArgs(args)
	root.PersistentFlags().StringArrayVar(&g.addrs, "addr", nil, "front gRPC `HOST:PORT`, repeatable; the next is tried if one is down (env HERD_ADDR, comma-separated; default 127.0.0.1:7700)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newDeployCmd(g, stdio), newStatusCmd(g, stdio), newNodesCmd(g, stdio), newLogsCmd(g, stdio), newRaftCmd(g, stdio),
		newRollbackCmd(g, stdio), newScaleCmd(g, stdio), newRestartCmd(g, stdio), newDestroyCmd(g, stdio),
		newHistoryCmd(g, stdio), newDrainCmd(g, stdio), newUndrainCmd(g, stdio), newKeygenCmd(stdio))
	root.CompletionOptions.DisableDefaultCmd = true

	err := root.ExecuteContext(context.Background())
	if err == nil {
		return 0
	}
	fmt.Fprintf(stdio.Err, "herdctl: %s\n", oneLine(err))
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		return 2
	}
	return 1
}

// usageError is a mistake in the command line rather than a failure.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// exactArgs is cobra.ExactArgs with a message that names the arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usageError{fmt.Errorf("%s needs %s (got %d argument(s)); see herdctl %s --help",
				cmd.Name(), strings.Join(names, " and "), len(args), cmd.Name())}
		}
		return nil
	}
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", " ")), " ")
}
