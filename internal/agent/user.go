package agent

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// workerCredential decides whom workers run as. herd-node running as root
// never hands root to an app unless the operator says so.
func workerCredential(cfg Config) (*syscall.Credential, string, error) {
	name := cfg.WorkerUser
	if os.Geteuid() != 0 {
		me, err := user.Current()
		if err != nil {
			return nil, "", fmt.Errorf("--worker-user: %w", err)
		}
		if name != "" && name != me.Username && name != me.Uid {
			return nil, "", fmt.Errorf("--worker-user %s: herd-node runs as %s and can only run workers as itself (run it as root to run workers as another user)", name, me.Username)
		}
		return nil, me.Username, nil
	}
	if name == "" {
		name = "nobody"
	}
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return nil, "", fmt.Errorf("--worker-user %s: no such user", name)
		}
	}
	if u.Uid == "0" {
		if !cfg.AllowRootWorkers {
			return nil, "", fmt.Errorf("--worker-user %s: running workers as root needs --allow-root-workers", name)
		}
		return nil, u.Username, nil
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	var groups []uint32
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				groups = append(groups, uint32(n))
			}
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}, u.Username, nil
}

// checkReachable fails if a worker running as another user could not get
// to dir: every directory above it must let others through (o+x).
func checkReachable(dir, who string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("--data-dir %s: workers run as %s and cannot reach it: %s is mode %04o; make it traversable (chmod o+x %s) or choose another --data-dir", dir, who, d, fi.Mode().Perm(), d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}
