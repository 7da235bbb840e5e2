package clustertest

import (
	"testing"
	"time"
)

// TestKilledNodeLeavesNoWorker: kill -9 of herd-node takes every worker
// process with it, including what a worker's shell left in the background.
func TestKilledNodeLeavesNoWorker(t *testing.T) {
	c := Start(t, 1)
	if r := deployHello(c, c.HelloDir(nil), "--cmd", "sleep 600 & exec ./hello"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	node := c.Nodes[0]
	// Per worker: its shim, hello, and the background sleep.
	if pids := ProcsUnder(node.DataDir); len(pids) < 6 {
		t.Fatalf("want at least 6 worker processes under %s, found %v", node.DataDir, pids)
	}
	node.Kill()
	var left []int
	if !Eventually(5*time.Second, func() bool {
		left = ProcsUnder(node.DataDir)
		return len(left) == 0
	}) {
		t.Fatalf("processes left after kill -9 of herd-node: %v", left)
	}
}
