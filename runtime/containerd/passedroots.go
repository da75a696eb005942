package containerd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// maxPassedRoots bounds Backend.passedRoots and the records of a
// passedRootsDir: past it, each starts again empty.
const maxPassedRoots = 256

// rootChecksVersion names the checks prepareRoot makes of a task's root
// (images.CheckMountPoints, images.CheckWorkingDir). It is part of every
// passedRootKey, so a record an older nsn-run wrote in this boot counts
// for nothing once the checks change: bump it with them.
const rootChecksVersion = "root-checks-1"

// passedRootKey names what prepareRoot's checks of a task's root read:
// the image's layers (parent, their chain ID) and what the spec asks of
// them (its working dir and mount destinations), unambiguously.
func passedRootKey(parent string, s *specs.Spec) string {
	key, _ := json.Marshal(append([]string{rootChecksVersion, parent, s.Process.Cwd}, mountDestinations(s)...))
	return string(key)
}

// passedRootsDir is the ProbeDir directory whose files record the roots
// that passed prepareRoot's checks in any process of this node, for this
// containerd (its UUID) and snapshotter: a file per passedRootKey, named
// by its SHA-256. The checks read only the image's committed layers,
// which containerd names by their chain ID once it has verified their
// diff IDs, so a root that passed passes again; what a record lets
// through unchecked is only as safe as the directory, which only root may
// write (trustedDir). "" without a ProbeDir.
func (b *Backend) passedRootsDir() string {
	if b.cfg.ProbeDir == "" || b.serverUUID == "" {
		return ""
	}
	return filepath.Join(b.cfg.ProbeDir, fmt.Sprintf("passed-roots-%s-%s", b.serverUUID, b.cfg.Snapshotter))
}

func passedRootFile(dir, key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(dir, hex.EncodeToString(sum[:]))
}

// rootPassedBefore reports whether a process of this node recorded that a
// root of key passed (recordRootPassed), in a directory only root can
// write.
func (b *Backend) rootPassedBefore(key string) bool {
	dir := b.passedRootsDir()
	if dir == "" || !trustedDir(dir) || !trustedDir(b.cfg.ProbeDir) {
		return false
	}
	_, err := os.Lstat(passedRootFile(dir, key))
	return err == nil
}

// recordRootPassed records, for later processes, that a root of key
// passed; a failure only costs them the inspection.
func (b *Backend) recordRootPassed(ctx context.Context, key string) {
	dir := b.passedRootsDir()
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o700); err != nil || !trustedDir(dir) || !trustedDir(b.cfg.ProbeDir) {
		log.G(ctx).WithError(err).Debugf("not recording passed roots in %s", dir)
		return
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) >= maxPassedRoots {
		for _, e := range entries {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	f, err := os.OpenFile(passedRootFile(dir, key), os.O_CREATE|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		log.G(ctx).WithError(err).Debug("record a passed root")
		return
	}
	_ = f.Close()
}

// trustedDir reports whether dir is a directory (not a link) of this
// process's user that nobody else may write to.
func trustedDir(dir string) bool {
	info, err := os.Lstat(dir)
	if err != nil || !info.IsDir() || info.Mode().Perm()&0o022 != 0 {
		return false
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}

// rememberRootPassed keeps, for this Backend's later starts, that a root
// of key passed.
func (b *Backend) rememberRootPassed(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.passedRoots == nil || len(b.passedRoots) >= maxPassedRoots {
		b.passedRoots = make(map[string]bool)
	}
	b.passedRoots[key] = true
}
