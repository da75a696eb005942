package containerd

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/internal/privdir"
	"github.com/nsn-run/nsn-run/runtime/containerd/images"
)

// maxPassedRoots bounds Backend.passedRoots and the records in
// ProbeDir's passedRootsDir: past it, each starts again empty.
const maxPassedRoots = 256

// passedRootsDir, in ProbeDir, holds a record of each root that passed
// prepareRoot's checks in any process of this node (recordRootPassed).
const passedRootsDir = "passed-roots"

// rootChecksVersion names the checks prepareRoot makes of a task's root
// (images.CheckMountPoints, images.CheckWorkingDir, and what they rely
// on). A record counts only for the build that wrote it (rootChecks): a
// bump is needed only where a change of the checks could leave a binary's
// build ID as it was.
const rootChecksVersion = "root-checks-1"

// rootChecks names the checks this process makes and the boot it runs in,
// for passedRootKey: rootChecksVersion, the running executable's Go build
// ID (which any change of its code or dependencies changes: an outside
// review's build with a stricter check, its version not bumped, ran a
// hostile task on an older build's record) and the boot's id (a record
// outlives a reboot where ProbeDir is not on a tmpfs). Empty if the build
// ID or the boot's id cannot be read: the records are then not used.
var rootChecks = sync.OnceValue(func() string {
	build := goBuildID()
	boot := bootID()
	if build == "" || boot == "" {
		return ""
	}
	return rootChecksVersion + "/" + build + "/" + boot
})

// goBuildID is the hex SHA-256 of the running executable's Go build ID
// note, "" where it has none or cannot be read.
func goBuildID() string {
	f, err := elf.Open("/proc/self/exe")
	if err != nil {
		return ""
	}
	defer f.Close()
	sec := f.Section(".note.go.buildid")
	if sec == nil {
		return ""
	}
	note, err := sec.Data()
	if err != nil || len(note) == 0 {
		return ""
	}
	sum := sha256.Sum256(note)
	return hex.EncodeToString(sum[:])
}

// passedRootKey names what prepareRoot's checks of a task's root read,
// unambiguously: the image's layers (parent: the snapshot of their chain
// ID in this containerd, snapshotter and namespace, committed at that
// time: snapshots are the namespace's, and containerd commits one under
// any name a client gives it, so an image removed and a root committed
// under its chain ID since is another snapshot) and what the spec asks of
// them (its working dir and mount destinations), and the checks that
// passed it (rootChecks).
func (b *Backend) passedRootKey(parent images.Parent, s *specs.Spec) string {
	committed := ""
	if !parent.Committed.IsZero() {
		committed = parent.Committed.UTC().Format(time.RFC3339Nano)
	}
	key, _ := json.Marshal(append([]string{rootChecks(), b.serverUUID, b.cfg.Snapshotter, b.cfg.Namespace, parent.ChainID, committed, s.Process.Cwd}, mountDestinations(s)...))
	return string(key)
}

// passedRootRecords is the ProbeDir directory of the roots that passed
// in any process of this node: a file per passedRootKey, named by its
// SHA-256. The checks read only the image's committed layers, which no
// task writes to, so a root that passed passes again; what a record lets
// through unchecked is only as safe as the directory, which only root may
// write (privdir). "" without a ProbeDir, or where rootChecks is unknown.
func (b *Backend) passedRootRecords() string {
	if b.cfg.ProbeDir == "" || b.serverUUID == "" || rootChecks() == "" {
		return ""
	}
	return filepath.Join(b.cfg.ProbeDir, passedRootsDir)
}

func passedRootFile(dir, key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(dir, hex.EncodeToString(sum[:]))
}

// rootPassedBefore reports whether a process of this node recorded that a
// root of key passed (recordRootPassed), in a directory only root can
// write.
func (b *Backend) rootPassedBefore(key string) bool {
	dir := b.passedRootRecords()
	if dir == "" || !privdir.Is(b.cfg.ProbeDir) {
		return false
	}
	root, err := privdir.Open(dir)
	if err != nil {
		return false
	}
	defer root.Close()
	info, err := root.Lstat(filepath.Base(passedRootFile(dir, key)))
	return err == nil && info.Mode().IsRegular()
}

// recordRootPassed records, for later processes, that a root of key
// passed; a failure only costs them the inspection. What it lists,
// removes and creates it does through the directory it judged private.
func (b *Backend) recordRootPassed(ctx context.Context, key string) {
	dir := b.passedRootRecords()
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o700); err != nil || !privdir.Is(b.cfg.ProbeDir) {
		log.G(ctx).WithError(err).Debugf("not recording passed roots in %s", dir)
		return
	}
	root, err := privdir.Open(dir)
	if err != nil {
		log.G(ctx).WithError(err).Debugf("not recording passed roots in %s", dir)
		return
	}
	defer root.Close()
	privdir.EmptyIfFull(root, maxPassedRoots)
	f, err := root.OpenFile(filepath.Base(passedRootFile(dir, key)), os.O_CREATE|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		log.G(ctx).WithError(err).Debug("record a passed root")
		return
	}
	_ = f.Close()
}

// parentStill reports whether the task's snapshot, prepared, is on the
// parent snapshot the key named: the one of its chain ID committed at
// parent.Committed. The commit time was read before the prepare, and a
// client of containerd could have removed that snapshot and committed
// another under its name meanwhile (an outside review's race); once the
// task's snapshot is prepared on it, containerd keeps the parent (it
// removes no snapshot with children and commits no second one of a name),
// so one look now settles which it is.
func (b *Backend) parentStill(ctx context.Context, parent images.Parent) bool {
	info, err := b.client.SnapshotService(b.cfg.Snapshotter).Stat(ctx, parent.ChainID)
	return err == nil && info.Created.Equal(parent.Committed)
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
