// Command herdctl is the operator's CLI for a herd cluster.
package main

import (
	"os"

	"github.com/herd-run/herd/internal/ctl"
)

func main() {
	os.Exit(ctl.Main(os.Args[1:], ctl.IO{Out: os.Stdout, Err: os.Stderr}))
}
