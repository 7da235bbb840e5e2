// Command herd-front is herd's reverse proxy and control plane: it routes
// client requests to app workers found by gossip and takes herdctl's
// commands over gRPC.
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/herd-run/herd/internal/cli"
	"github.com/herd-run/herd/internal/front"
)

func main() {
	var cfg front.Config
	var join cli.Strings
	fs := flag.NewFlagSet("herd-front", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herd-front [flags]\n\nherd's reverse proxy and control plane. Flags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for the front's state and artifacts (required)")
	fs.StringVar(&cfg.Name, "name", "", "member name, unique in the cluster (default: HOSTNAME-front)")
	fs.StringVar(&cfg.HTTP, "http", ":8080", "client HTTP listener `ADDR`")
	fs.StringVar(&cfg.HTTPS, "https", "", "client HTTPS listener `ADDR` (TLS 1.2+, HTTP/2); needs --tls-cert/--tls-key or --tls-dir")
	var certs, keys cli.Strings
	fs.Var(&certs, "tls-cert", "certificate `FILE` (PEM, with its chain) for --https; repeatable, paired in order with --tls-key, chosen by SNI")
	fs.Var(&keys, "tls-key", "private key `FILE` for the --tls-cert at the same position")
	fs.StringVar(&cfg.TLSDir, "tls-dir", "", "`DIR` of NAME.crt + NAME.key pairs for --https (SIGHUP re-reads it)")
	fs.StringVar(&cfg.GRPC, "grpc", ":7700", "Control API (herdctl, nodes) listener `ADDR`")
	fs.StringVar(&cfg.Admin, "admin", "127.0.0.1:7701", "admin listener `ADDR` for /healthz, /metrics, /debug/pprof and grpc.health.v1 (plain HTTP/2, no client certificate); empty disables it")
	fs.StringVar(&cfg.Gossip, "gossip", ":7946", "gossip (memberlist) bind `ADDR`, UDP and TCP")
	fs.StringVar(&cfg.Advertise, "advertise", "", "`IP` other members reach this front at (default: the bind IP or a private address)")
	fs.Var(&join, "join", "gossip `HOST:PORT` of a member to join (repeatable); the first front starts without it and bootstraps the Raft cluster")
	fs.StringVar(&cfg.ClusterKeyFile, "cluster-key-file", "", "`FILE` with the cluster key(s) that encrypt gossip (default: DATA-DIR/cluster.key, made by the first front; see herdctl keygen)")
	fs.StringVar(&cfg.Raft, "raft", ":7702", "Raft listener `ADDR` for the fronts' desired state")
	fs.IntVar(&cfg.RaftVoters, "raft-voters", 3, "how many fronts vote in Raft (`N`, odd: 1, 3 or 5); more fronts join as non-voters")
	fs.DurationVar(&cfg.RaftRemoveAfter, "raft-remove-after", 10*time.Minute, "the leader removes a front from Raft after it is gone from gossip this long")
	fs.DurationVar(&cfg.DeployTimeout, "deploy-timeout", time.Minute, "how long nodes may take to run a release healthy")
	fs.StringVar(&cfg.AccessLog, "access-log", "off", "access log: off, stdout or a file `PATH`")
	fs.StringVar(&cfg.AccessLogFormat, "access-log-format", "combined", "access log format: combined (nginx's) or json")
	var trusted cli.Strings
	fs.Var(&trusted, "trusted-proxy", "`CIDR` of a proxy in front of this one whose X-Forwarded-*/Forwarded headers are kept (repeatable)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM, how long in-flight requests may take to finish")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			return
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		cli.Fail("herd-front", fmt.Errorf("unexpected argument %q", fs.Arg(0)), 2)
	}
	cfg.Join = join
	if len(certs) != len(keys) {
		cli.Fail("herd-front", fmt.Errorf("--tls-cert and --tls-key come in pairs: got %d and %d", len(certs), len(keys)), 2)
	}
	for i := range certs {
		cfg.TLSCerts = append(cfg.TLSCerts, front.CertPair{Cert: certs[i], Key: keys[i]})
	}
	for _, t := range trusted {
		pfx, err := netip.ParsePrefix(t)
		if err != nil {
			if addr, aerr := netip.ParseAddr(t); aerr == nil {
				pfx, err = addr.Prefix(addr.BitLen())
			}
		}
		if err != nil {
			cli.Fail("herd-front", fmt.Errorf("--trusted-proxy %q: want a CIDR or an IP", t), 2)
		}
		cfg.TrustedProxies = append(cfg.TrustedProxies, pfx)
	}
	log, err := cli.Logger(*logLevel)
	if err != nil {
		cli.Fail("herd-front", err, 2)
	}
	cfg.Logger = log
	ctx, stop := cli.SignalContext()
	defer stop()
	// SIGHUP re-reads the TLS certificates; connections stay up.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	cfg.Reload = reload
	if err := front.Run(ctx, cfg); err != nil {
		cli.Fail("herd-front", err, 1)
	}
}
