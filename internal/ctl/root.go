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
	addrs      []string // --addr, or HERD_ADDR; empty: the config file's
	output     string
	config     string // --config, or HERD_CONFIG
	configFlag string // which of the two named config, for messages

	// front is what withFront dials with, loaded from the config file the
	// first time a command needs it (see setup).
	front *frontSetup
}

// rootLong is herdctl's help text.
const rootLong = `herdctl operates a herd cluster through any of its fronts.

The fronts' gRPC API takes mutual TLS only: herdctl needs a config file
that names the fronts and holds the cluster CA certificate and an
operator's certificate and key. The first front writes one for the
administrator to its <data-dir>/admin.herdctl. Copy it (keep it mode 0600:
it holds a private key) and pass it with --config FILE or HERD_CONFIG=FILE.

herdctl tries the config's fronts in turn until one can take the command;
--addr (repeatable) or HERD_ADDR (comma-separated) replaces that list.
Commands that do not talk to a front (keygen, help) need no config.`

// Main runs herdctl with args and returns the exit status: 0 on success,
// 1 when the command failed, 2 for bad usage. Errors are one line on Err.
func Main(args []string, stdio IO) int {
	g := &globals{}
	root := &cobra.Command{
		Use:           "herdctl",
		Short:         "herdctl operates a herd cluster through any of its fronts",
		SilenceErrors: true,
		SilenceUsage:  true,
		Long:          rootLong,
		Example: `  herdctl --config ~/.herd/admin.herdctl status
  export HERD_CONFIG=~/.herd/admin.herdctl; herdctl nodes
  HERD_CONFIG=admin.herdctl herdctl --addr 10.0.0.2:7700 status`,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if g.output != "table" && g.output != "json" {
				return usageError{fmt.Errorf("-o %q: want table or json", g.output)}
			}
			if len(g.addrs) == 0 {
				g.addrs = splitAddrs(os.Getenv("HERD_ADDR"))
			}
			g.configFlag = "--config"
			if g.config == "" {
				g.config, g.configFlag = os.Getenv("HERD_CONFIG"), "HERD_CONFIG"
			}
			return nil
		},
	}
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	root.SetArgs(args)
	root.PersistentFlags().StringVar(&g.config, "config", "", "herdctl config `FILE`: fronts and operator credentials (env HERD_CONFIG; the first front writes <data-dir>/admin.herdctl)")
	root.PersistentFlags().StringArrayVar(&g.addrs, "addr", nil, "front gRPC `HOST:PORT`, repeatable, instead of the config's; the next is tried if one is down (env HERD_ADDR, comma-separated)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newDeployCmd(g, stdio), newStatusCmd(g, stdio), newNodesCmd(g, stdio), newLogsCmd(g, stdio), newRaftCmd(g, stdio),
		newRollbackCmd(g, stdio), newScaleCmd(g, stdio), newRestartCmd(g, stdio), newDestroyCmd(g, stdio),
		newHistoryCmd(g, stdio), newDrainCmd(g, stdio), newUndrainCmd(g, stdio), newKeygenCmd(stdio), newOperatorCmd(g, stdio))
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

// splitAddrs reads HERD_ADDR: comma-separated, blanks ignored.
func splitAddrs(s string) []string {
	var addrs []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", " ")), " ")
}
