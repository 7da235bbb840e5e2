package clustertest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herd-run/herd/internal/pki"
)

// TestGossipIsEncrypted: the first front made the cluster key (mode 0600);
// a node without it is told what to do and exits; a node with another key
// never becomes a member; herdctl keygen prints keys that parse.
func TestGossipIsEncrypted(t *testing.T) {
	c := Start(t, 1)
	fi, err := os.Stat(c.KeyFile())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cluster key %s: %v, mode %v; want 0600", c.KeyFile(), err, fi.Mode())
	}
	dir := t.TempDir()
	r := RunCtl(t, c.Bin.Node, "--data-dir", filepath.Join(dir, "a"), "--name", "keyless", "--gossip", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--join", c.Front.Addrs["gossip"])
	if r.Code == 0 || !strings.Contains(r.Stderr, "--cluster-key-file") {
		t.Fatalf("a node without the key: exit %d, %q", r.Code, r.Stderr)
	}
	out := RunCtl(t, c.Bin.Ctl, "keygen")
	other, err := pki.ParseClusterKey(out.Stdout)
	if out.Code != 0 || err != nil {
		t.Fatalf("herdctl keygen: %q %v", out.Stdout, err)
	}
	wrong := filepath.Join(dir, "wrong.key")
	if err := pki.WriteClusterKeyFile(wrong, other); err != nil {
		t.Fatal(err)
	}
	p := c.start("stranger", c.Bin.Node, "--name", "stranger", "--advertise", NodeIP(9), "--gossip", NodeIP(9)+":0",
		"--grpc", NodeIP(9)+":0", "--join", c.Front.Addrs["gossip"], "--cluster-key-file", wrong)
	defer p.Stop(10 * time.Second)
	time.Sleep(3 * time.Second)
	if r := c.Ctl("nodes"); strings.Contains(r.Stdout, "stranger") {
		t.Errorf("a node with another key became a member:\n%s", r.Stdout)
	}
	if !strings.Contains(p.Log(), "cannot join") {
		t.Errorf("the stranger's log does not say it cannot join:\n%s", tail(p.Log(), 20))
	}
}
