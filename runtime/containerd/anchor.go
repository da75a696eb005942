package containerd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"

	"github.com/nsn-run/nsn-run/internal/procstat"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// DefaultShimGroupSize is how many tasks share a group's shim at most
// (Config.ShimGroupSize); past it, a task gets a shim of its own.
const DefaultShimGroupSize = 8

// labelAnchorOwner marks a shim group's anchor container. Its value names
// the owning process (pid and start time), so gc can tell an anchor whose
// owner died from one in use; labelAnchorGroup names its group.
const (
	labelAnchorOwner = "nsn.anchor-owner"
	labelAnchorGroup = "nsn.anchor-group"
)

// anchorStopWait bounds the anchor's removal at Close.
const anchorStopWait = 10 * time.Second

// shimGroupName is a shim group's name, its length (at most
// maxShimGroupName) checked apart: a bounded repetition compiles into a
// state per repetition, at every start of a program linking this package.
var shimGroupName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)

const maxShimGroupName = 32

// shimGroup is a Backend's shim group (Config.ShimGroup): the runc shim its
// tasks share, kept running between tasks by an idle anchor container, so
// a task joins a running shim instead of starting one and ending it.
//
// The group's name is unique to the Backend (the configured name and a
// random suffix): its anchor is its own to remove at Close, and two
// managers never share a shim. Failure isolation is the price: a shim
// crash ends every task of its group (each Wait reports the error), and
// the next task starts a new anchor.
type shimGroup struct {
	name  string // the runc shim group annotation
	size  int
	owner string

	mu      sync.Mutex
	members map[string]bool // grouped tasks not yet destroyed
	anchor  client.Task     // nil until started, and once it has exited
	// started counts anchors: each has an id of its own, so a new one
	// never waits for containerd to finish with a dead one.
	started int
	// closed is set by Close: later tasks get shims of their own.
	closed bool
}

func newShimGroup(cfg Config, shim, version string) (*shimGroup, error) {
	if len(cfg.ShimGroup) > maxShimGroupName || !shimGroupName.MatchString(cfg.ShimGroup) {
		return nil, fmt.Errorf("%w: shim group %q: want 1-32 of a-z, 0-9, '_', '.', '-', starting with a letter or digit", errdefs.ErrInvalidArgument, cfg.ShimGroup)
	}
	if cfg.InitBinary == "" {
		return nil, fmt.Errorf("%w: shim group %q: its anchor runs nsn-init, and no InitBinary is configured", errdefs.ErrInvalidArgument, cfg.ShimGroup)
	}
	if cfg.ShimBinary == "" {
		return nil, fmt.Errorf("%w: shim group %q: its tasks run with nsn-shim, and no ShimBinary is configured", errdefs.ErrInvalidArgument, cfg.ShimGroup)
	}
	if shim == "" {
		// nsn-shim is containerd 2.4's runc shim, whose start takes its
		// settings only in the bootstrap protocol of containerd 2.3 and
		// later (and a grouped Debian 1.6 shim stalled under 64
		// concurrent tasks, docs/performance.md).
		return nil, fmt.Errorf("%w: shim groups need containerd 2.3 or later, this is %s", errdefs.ErrNotImplemented, version)
	}
	size := cfg.ShimGroupSize
	if size == 0 {
		size = DefaultShimGroupSize
	}
	if size < 1 {
		return nil, fmt.Errorf("%w: shim group size %d", errdefs.ErrInvalidArgument, size)
	}
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return nil, err
	}
	name := cfg.ShimGroup + "-" + hex.EncodeToString(suffix)
	owner, err := processToken(os.Getpid())
	if err != nil {
		return nil, err
	}
	return &shimGroup{name: name, size: size, owner: owner, members: map[string]bool{}}, nil
}

// shimRuntime is the runtime runc-runtime tasks run with (Backend.shim):
// cfg.ShimBinary, checked and resolved (CheckShimBinary), where
// containerd (of version) is 2.3 or later; "" without one, or on an older
// containerd, which cannot run nsn-shim.
func shimRuntime(cfg Config, version string) (string, error) {
	if cfg.ShimBinary == "" {
		return "", nil
	}
	usable := atLeast(version, 2, 3)
	// A shim group needs nsn-shim, so a bad one is the group's
	// configuration error on any containerd. Otherwise nsn-shim is
	// checked only where containerd would run it: one found beside the
	// program on a host with an older containerd stops no task.
	if !usable && cfg.ShimGroup == "" {
		return "", nil
	}
	if !filepath.IsAbs(cfg.ShimBinary) {
		return "", fmt.Errorf("%w: shim binary %q is not an absolute path", errdefs.ErrInvalidArgument, cfg.ShimBinary)
	}
	resolved, err := CheckShim(cfg.ShimBinary)
	if err != nil {
		return "", fmt.Errorf("%w: shim binary: %w", errdefs.ErrInvalidArgument, err)
	}
	if !usable {
		return "", nil
	}
	return resolved, nil
}

// ShimDaemonName is the full shim that nsn-shim (the front containerd
// runs, cmd/nsn-shim) execs from beside itself: cmd/nsn-shimd.
const ShimDaemonName = "nsn-shimd"

// CheckShim is CheckShimBinary for nsn-shim, and for the nsn-shimd it
// runs, as root too, from beside it. It returns nsn-shim's resolved path.
func CheckShim(path string) (string, error) {
	resolved, err := CheckShimBinary(path)
	if err != nil {
		return "", err
	}
	if _, err := CheckShimBinary(filepath.Join(filepath.Dir(resolved), ShimDaemonName)); err != nil {
		return "", fmt.Errorf("%s, which %s runs: %w", ShimDaemonName, filepath.Base(resolved), err)
	}
	return resolved, nil
}

// CheckShimBinary refuses a shim binary that someone other than root
// could have written or could replace: containerd runs it as root, as the
// shim of tasks. It returns the path with its symlinks resolved (what
// containerd should run: a link could be swapped later), which must be a
// regular file of root's that group and others cannot write, in
// directories of root's that group and others cannot write to, or only
// with the sticky bit (/tmp), where they cannot rename or remove root's
// entries.
func CheckShimBinary(path string) (string, error) {
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", err
	}
	if resolved, err = filepath.Abs(resolved); err != nil {
		return "", err
	}
	info, err := os.Stat(resolved)
	if err != nil {
		return "", err
	}
	if !info.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", resolved)
	}
	if err := rootOnly(resolved, info, false); err != nil {
		return "", err
	}
	for dir := filepath.Dir(resolved); ; dir = filepath.Dir(dir) {
		info, err := os.Stat(dir)
		if err != nil {
			return "", err
		}
		if err := rootOnly(dir, info, true); err != nil {
			return "", err
		}
		if dir == "/" {
			return resolved, nil
		}
	}
}

// rootOnly refuses what is not root's, or what group or others may write
// (for a directory, unless it is sticky).
func rootOnly(path string, info os.FileInfo, dir bool) error {
	st, ok := info.Sys().(*syscall.Stat_t)
	switch {
	case !ok || st.Uid != 0:
		return fmt.Errorf("%s is not owned by root", path)
	case info.Mode().Perm()&0o022 != 0 && !(dir && info.Mode()&os.ModeSticky != 0):
		return fmt.Errorf("%s is writable by group or others (%v)", path, info.Mode().Perm())
	}
	return nil
}

// atLeast reports whether a containerd version string ("v2.4.2",
// "1.6.20~ds1") is major.minor or later.
func atLeast(version string, major, minor int) bool {
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	maj, _ := strconv.Atoi(parts[0])
	var mnr int
	if len(parts) > 1 {
		// The minor's leading digits: "4-rc.1" is 4 (Atoi of it all was 0).
		minor := strings.TrimLeftFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' })
		end := strings.IndexFunc(minor, func(r rune) bool { return r < '0' || r > '9' })
		if end >= 0 {
			minor = minor[:end]
		}
		mnr, _ = strconv.Atoi(minor)
	}
	return maj > major || (maj == major && mnr >= minor)
}

// processToken names process pid for as long as it lives, as this process
// sees it: "PID.START.PIDNS.BOOT", its pid and start time (which a later
// process of the same pid does not share), the pid namespace both are
// numbers in, and the boot they belong to.
func processToken(pid int) (string, error) {
	start, err := procstat.StartTime(pid)
	if err != nil {
		return "", err
	}
	pidns, boot, err := pidNamespaceAndBoot()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d.%s.%s.%s", pid, start, pidns, boot), nil
}

// pidNamespaceAndBoot identify this process's pid namespace (its inode)
// and the current boot.
func pidNamespaceAndBoot() (pidns, boot string, err error) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/pid", &st); err != nil {
		return "", "", fmt.Errorf("pid namespace: %w", err)
	}
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", "", fmt.Errorf("boot id: %w", err)
	}
	return strconv.FormatUint(st.Ino, 10), strings.TrimSpace(string(b)), nil
}

// ownerAlive reports whether the process an anchor's owner label names may
// still run: it does, or it lives in another pid namespace (where this
// process cannot tell) of this boot.
func ownerAlive(label string) bool {
	parts := strings.Split(label, ".")
	if len(parts) != 4 {
		return false
	}
	pidns, boot, err := pidNamespaceAndBoot()
	switch {
	case err != nil:
		return true // cannot tell: keep it
	case parts[3] != boot:
		return false // from an earlier boot
	case parts[2] != pidns:
		return true
	}
	n, err := strconv.Atoi(parts[0])
	if err != nil {
		return false
	}
	tok, err := processToken(n)
	return err == nil && tok == label
}

// joinGroup returns the group a new task joins (its anchor running), or
// "" when the group is full, or the task asks for another runtime than
// runc's, and the task gets a shim of its own.
func (b *Backend) joinGroup(ctx context.Context, t task.Task) (string, error) {
	g := b.group
	if g == nil || t.Runtime != task.DefaultRuntime {
		return "", nil
	}
	id := t.ID
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || len(g.members) >= g.size {
		return "", nil
	}
	if g.anchor == nil {
		if err := b.startAnchor(ctx); err != nil {
			return "", err
		}
	}
	g.members[id] = true
	return g.name, nil
}

// leaveGroup forgets task id's membership (its container is gone, or its
// start failed).
func (b *Backend) leaveGroup(id string) {
	if g := b.group; g != nil {
		g.mu.Lock()
		delete(g.members, id)
		g.mu.Unlock()
	}
}

// startAnchor starts a new anchor for the group. An earlier one (its shim
// died) is removed where containerd lets it, else at Close. Called with
// g.mu held.
func (b *Backend) startAnchor(ctx context.Context) error {
	g := b.group
	if err := b.ensureAppArmor(); err != nil {
		return err
	}
	// Best effort: containerd may not yet have noticed that a crashed
	// shim's anchor is dead ("ttrpc: closed"); Close removes it then.
	_ = b.removeGroupAnchors(ctx)
	g.started++
	// Upper case: no task id can name an anchor (task.ValidateID), so
	// rm, kill and a task's own id never reach one.
	id := fmt.Sprintf("NSN-anchor-%s-%d", g.name, g.started)
	opts, err := spec.AnchorOpts(id, b.cfg.InitBinary, b.cfg.AuditPolicy.AppArmorProfile)
	if err != nil {
		return err
	}
	opts = append(opts, oci.WithAnnotations(map[string]string{audit.AnnotationShimGroup: g.name}))
	c, err := b.client.NewContainer(ctx, id,
		client.WithNewSpec(opts...),
		client.WithContainerLabels(map[string]string{labelAnchorOwner: g.owner, labelAnchorGroup: g.name}),
		client.WithRuntime(b.shim, b.runtimeOptions(task.DefaultRuntime)),
	)
	if err != nil {
		return fmt.Errorf("shim group %s: create anchor: %w", g.name, err)
	}
	// A tmpfs root of its own: runc makes the mount points in it, and
	// the shim unmounts it at delete, leaving the bundle's rootfs empty
	// for containerd to remove (an unmounted rootfs dir with runc's mount
	// points in it would keep the bundle, and block the next anchor).
	root := []mount.Mount{{Type: "tmpfs", Source: "tmpfs", Options: []string{"size=64k", "mode=0755", "nosuid", "nodev", "noexec"}}}
	tk, err := c.NewTask(ctx, cio.NullIO, client.WithRootFS(root))
	if err == nil {
		var exited <-chan client.ExitStatus
		if exited, err = tk.Wait(b.anchorCtx); err == nil {
			if err = tk.Start(ctx); err == nil {
				g.anchor = tk
				go func() {
					// The anchor exits with its shim (a crash) or when
					// removed: the next task starts a new one.
					<-exited
					g.mu.Lock()
					if g.anchor == tk {
						g.anchor = nil
					}
					g.mu.Unlock()
				}()
				return nil
			}
		}
	}
	_ = b.removeAnchor(ctx, id)
	return fmt.Errorf("shim group %s: start anchor: %w", g.name, err)
}

// removeGroupAnchors removes every anchor of this Backend's group.
func (b *Backend) removeGroupAnchors(ctx context.Context) error {
	cs, err := b.client.Containers(ctx, fmt.Sprintf("labels.%q==%s", labelAnchorGroup, b.group.name))
	if err != nil {
		return fmt.Errorf("list anchors: %w", err)
	}
	var errs []error
	for _, c := range cs {
		errs = append(errs, b.removeAnchor(ctx, c.ID()))
	}
	return errors.Join(errs...)
}

// removeAnchor kills and deletes anchor container id, if it exists.
func (b *Backend) removeAnchor(ctx context.Context, id string) error {
	c, err := b.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load anchor %s: %w", id, err)
	}
	if tk, err := c.Task(ctx, nil); err == nil {
		// Killed and waited for, then deleted.
		_, _ = tk.Delete(ctx, client.WithProcessKill)
	}
	// Through the task service as well: a task whose shim died cannot
	// be loaded, and must still be deleted.
	if _, err := b.client.TaskService().Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: id}); err != nil {
		if err := errgrpc.ToNative(err); !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete anchor task %s: %w", id, err)
		}
	}
	if err := c.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete anchor %s: %w", id, err)
	}
	return nil
}

// closeGroup removes this Backend's anchor: tasks still running in the
// group keep their shim until they end.
func (b *Backend) closeGroup() error {
	g := b.group
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	ctx, cancel := context.WithTimeout(b.ns(context.Background()), anchorStopWait)
	defer cancel()
	g.anchor = nil
	g.closed = true
	return b.removeGroupAnchors(ctx)
}

// sweepAnchors removes the anchors whose owner process is gone.
func (b *Backend) sweepAnchors(ctx context.Context) ([]string, error) {
	cs, err := b.client.Containers(ctx, fmt.Sprintf("labels.%q", labelAnchorOwner))
	if err != nil {
		return nil, fmt.Errorf("list anchors: %w", err)
	}
	var removed []string
	var errs []error
	for _, c := range cs {
		labels, err := c.Labels(ctx)
		if err != nil || ownerAlive(labels[labelAnchorOwner]) {
			continue
		}
		// One that cannot go yet (containerd still cleaning up after
		// its dead shim) does not stop the rest of the sweep.
		if err := b.removeAnchor(ctx, c.ID()); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "anchor "+c.ID())
	}
	return removed, errors.Join(errs...)
}
