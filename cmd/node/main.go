// Command herd-node runs the workers of herd apps on one host: it fetches
// releases, starts and checks worker processes, restarts crashed ones, swaps
// versions without dropping requests, and stops gracefully.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/herd-run/herd/internal/agent"
	"github.com/herd-run/herd/internal/cli"
	"github.com/herd-run/herd/internal/supervisor"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == supervisor.ShimArg {
		os.Exit(supervisor.RunShim(os.Args[2:]))
	}
	var cfg agent.Config
	var join cli.Strings
	fs := flag.NewFlagSet("herd-node", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herd-node [flags]\n\nRuns herd app workers on this host. Flags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for releases, logs and the node's state (required)")
	fs.StringVar(&cfg.Name, "name", "", "node name, unique in the cluster (default: the host name)")
	fs.StringVar(&cfg.Gossip, "gossip", ":7947", "gossip (memberlist) bind `ADDR`, UDP and TCP")
	fs.StringVar(&cfg.Advertise, "advertise", "", "`IP` fronts reach this node at; workers bind it (default: the bind IP or a private address)")
	fs.Var(&join, "join", "gossip `HOST:PORT` of a member to join (repeatable)")
	fs.StringVar(&cfg.ClusterKeyFile, "cluster-key-file", "", "`FILE` with the cluster key, as the first front wrote it to its DATA-DIR/cluster.key (default: DATA-DIR/cluster.key)")
	fs.StringVar(&cfg.Admin, "admin", "127.0.0.1:7711", "admin listener `ADDR` for /healthz, /metrics and grpc.health.v1 (plain HTTP/2, no client certificate); empty disables it")
	fs.StringVar(&cfg.GRPC, "grpc", ":7710", "Agent API listener `ADDR` (fronts call it)")
	labels := fs.String("labels", "", "node labels `k=v,...` (for app selectors)")
	ports := fs.String("port-range", "20000-29999", "worker ports are taken from `LO-HI`")
	fs.StringVar(&cfg.WorkerUser, "worker-user", "", "`USER` workers run as when herd-node runs as root (default nobody)")
	fs.BoolVar(&cfg.AllowRootWorkers, "allow-root-workers", false, "allow --worker-user root")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			return
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		cli.Fail("herd-node", fmt.Errorf("unexpected argument %q", fs.Arg(0)), 2)
	}
	var err error
	if cfg.Labels, err = agent.ParseLabels(*labels); err != nil {
		cli.Fail("herd-node", err, 2)
	}
	if cfg.PortLo, cfg.PortHi, err = agent.ParsePortRange(*ports); err != nil {
		cli.Fail("herd-node", err, 2)
	}
	cfg.Join = join
	if cfg.Logger, err = cli.Logger(*logLevel); err != nil {
		cli.Fail("herd-node", err, 2)
	}
	if cfg.Shim, err = os.Executable(); err != nil {
		cli.Fail("herd-node", fmt.Errorf("find herd-node's own executable for the worker shim: %w", err), 1)
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	if err := agent.Run(ctx, cfg); err != nil {
		cli.Fail("herd-node", err, 1)
	}
}
