package clustertest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	herdv1 "github.com/herd-run/herd/internal/gen/herd/v1"
)

// deployRaw uploads artifact as is (herdctl would never build it) and
// deploys it as app hello; it returns the deploy's error.
func deployRaw(t *testing.T, c *Cluster, artifact []byte, cmd string) error {
	t.Helper()
	conn, err := grpc.NewClient(c.Front.Addrs["grpc"], c.AdminDial())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctl := herdv1.NewControlClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sum := sha256.Sum256(artifact)
	digest := hex.EncodeToString(sum[:])
	up, err := ctl.UploadArtifact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	up.Send(&herdv1.UploadArtifactRequest{Msg: &herdv1.UploadArtifactRequest_Header{Header: &herdv1.ArtifactHeader{Digest: digest, Size: int64(len(artifact))}}})
	up.Send(&herdv1.UploadArtifactRequest{Msg: &herdv1.UploadArtifactRequest_Chunk{Chunk: artifact}})
	if _, err := up.CloseAndRecv(); err != nil {
		t.Fatalf("upload: %v", err)
	}
	stream, err := ctl.Deploy(ctx, &herdv1.DeployRequest{Digest: digest, Spec: &herdv1.AppSpec{
		Name: "hello", Command: cmd, Workers: 1, Concurrency: 1, Hosts: []string{helloHost}, HealthPath: "/healthz",
	}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		if msg.GetResult() != nil {
			return nil
		}
	}
}

func tarGz(t *testing.T, entries []tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, h := range entries {
		h := h
		body := []byte("x")
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(body)
		}
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// TestBadReleasesLeaveTheRunningOne: artifacts that are corrupt or try to
// escape their directory, and a command that does not exist, fail the
// deploy with a clear reason (also in status), and the running release
// keeps serving.
func TestBadReleasesLeaveTheRunningOne(t *testing.T) {
	c := Start(t, 1)
	if r := deployHello(c, c.HelloDir(nil), "--workers", "1"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	gz := tarGz(t, []tar.Header{{Name: "ok.txt", Typeflag: tar.TypeReg, Mode: 0o644}})
	cases := []struct {
		name     string
		artifact []byte
		cmd      string
		want     string
	}{
		{"corrupt", []byte("this is not a gzip file"), "exec ./hello", "unpack artifact"},
		{"truncated", gz[:len(gz)/2], "exec ./hello", "unpack artifact"},
		{"dot-dot", tarGz(t, []tar.Header{{Name: "../escape", Typeflag: tar.TypeReg, Mode: 0o644}}), "exec ./hello", "unpack artifact"},
		{"absolute", tarGz(t, []tar.Header{{Name: "/etc/escape", Typeflag: tar.TypeReg, Mode: 0o644}}), "exec ./hello", "unpack artifact"},
		{"symlink out", tarGz(t, []tar.Header{{Name: "out", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, {Name: "out/x", Typeflag: tar.TypeReg, Mode: 0o644}}), "exec ./hello", "unpack artifact"},
		{"no such command", gz, "exec ./no-such-program", "exited with status 127"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := deployRaw(t, c, tc.artifact, tc.cmd)
			if err == nil || !strings.Contains(err.Error(), "node-1") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("deploy error %v, want one naming node-1 and %q", err, tc.want)
			}
			var problem string
			if !Eventually(5*time.Second, func() bool {
				problem = statusProblemN(c, "v1", 1, 1, tc.want)
				return problem == ""
			}) {
				t.Fatalf("status: %s", problem)
			}
			if h, err := c.GetHello(helloHost); err != nil || h.Release != "v1" {
				t.Fatalf("running release after a bad deploy: %+v %v", h, err)
			}
		})
	}
	if _, err := os.Stat("/etc/escape"); err == nil {
		t.Fatal("an artifact wrote /etc/escape")
	}
}

// TestOldReleasesPruned: a node keeps the last few releases of an app for
// rollback and removes older ones and their artifacts.
func TestOldReleasesPruned(t *testing.T) {
	c := Start(t, 1)
	for i := 1; i <= 7; i++ {
		if r := deployHello(c, c.HelloDir(map[string]string{"n": fmt.Sprint(i)}), "--workers", "1"); r.Code != 0 {
			t.Fatalf("deploy %d: %s", i, r.Stderr)
		}
	}
	node := c.Nodes[0].DataDir
	var rels, arts []os.DirEntry
	if !Eventually(10*time.Second, func() bool {
		rels, _ = os.ReadDir(filepath.Join(node, "releases"))
		arts, _ = os.ReadDir(filepath.Join(node, "artifacts"))
		return len(rels) == 5 && len(arts) == 5
	}) {
		t.Fatalf("after 7 releases the node keeps %d release dirs and %d artifacts, want 5 each", len(rels), len(arts))
	}
	if h, err := c.GetHello(helloHost); err != nil || h.Release != "v7" {
		t.Fatalf("current release: %+v %v", h, err)
	}
}
