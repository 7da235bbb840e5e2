package ctl

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/herd-run/herd/internal/pki"
)

func newKeygenCmd(stdio IO) *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Print a new cluster key (base64 of 32 random bytes)",
		Long: `Print a new cluster key. The first front makes one by itself
(<data-dir>/cluster.key); use keygen to choose it yourself, or to rotate it:
put the new key as a second line of every member's --cluster-key-file and
restart them one by one, then make it the first line everywhere (restart
again), then remove the old line. Gossip never splits: every member always
reads both keys. Keep the file mode 0600.`,
		Example: "  herdctl keygen > cluster.key && chmod 600 cluster.key",
		Args:    exactArgs(),
		RunE: func(*cobra.Command, []string) error {
			k, err := pki.NewClusterKey()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(stdio.Out, k.String())
			return err
		},
	}
}
