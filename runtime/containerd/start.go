package containerd

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/cgroups"
	"github.com/nsn-run/nsn-run/internal/flock"
	"github.com/nsn-run/nsn-run/internal/privdir"
	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd/images"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// spawnLeaseExpiry bounds how long what a crashed spawn created survives:
// everything is created under a lease that expires, so containerd's garbage
// collector reclaims it if the spawn never finishes.
const spawnLeaseExpiry = 15 * time.Minute

// leaseReleaseWait bounds the release of a spawn's lease once its task
// has started.
const leaseReleaseWait = 5 * time.Second

// Start implements runtime.Backend: resolve and unpack the image, build and
// audit the spec, prepare the snapshot, create the container and its task
// with the shim logger, register the exit wait, start. Everything is created
// under an expiring lease, and undone on error.
//
// A runtime that refuses the per-user limits in the spec (runc before 1.4)
// makes this Backend set them itself from then on (limitUserNS), and the
// task is started again that way.
func (b *Backend) Start(ctx context.Context, req runtime.StartRequest) (runtime.Handle, error) {
	h, err := b.start(ctx, req)
	if errors.Is(err, errUserNSSysctlsRefused) {
		if b.userNSSysctls.Swap(false) {
			log.G(ctx).WithError(err).Warn("the runtime refuses user.* sysctls (runc before 1.4): nsn-run sets each task's per-user limits itself from now on")
		}
		return b.start(ctx, req)
	}
	return h, err
}

// errUserNSSysctlsRefused marks a task create that failed because the
// runtime refused the spec's user.* sysctls.
var errUserNSSysctlsRefused = errors.New("the runtime refuses user.* sysctls")

// runcFailed is the start of runc's own error line ("runc create failed:
// ", "runc run failed: "): whatever follows its first occurrence in a
// create error is runc's message, before any text of the task's (its
// command, its working dir) that runc quotes later on.
var runcFailed = regexp.MustCompile(`runc [a-z]+ failed: `)

// sysctlRefusal is runc's refusal of a user.* sysctl before 1.4, as its
// whole message: `sysctl "user.max_inotify_instances" is not in a separate
// kernel namespace`.
var sysctlRefusal = regexp.MustCompile(`^sysctl "(user\.max_[a-z_]+)" is not in a separate kernel namespace`)

// RefusesUserNSSysctls reports whether err is runc's refusal of one of the
// user.* sysctls in sysctls (runc before 1.4). Only runc's own message
// counts: a task whose command spells the refusal cannot make the backend
// stop putting the limits in the spec.
func RefusesUserNSSysctls(err error, sysctls map[string]string) bool {
	msg := err.Error()
	at := runcFailed.FindStringIndex(msg)
	if at == nil {
		return false
	}
	m := sysctlRefusal.FindStringSubmatch(msg[at[1]:])
	if m == nil {
		return false
	}
	_, ours := sysctls[m[1]]
	return ours
}

func (b *Backend) start(ctx context.Context, req runtime.StartRequest) (h runtime.Handle, retErr error) {
	callerCtx := b.ns(ctx)
	t := req.Task
	sw := runtime.NewStopwatch(callerCtx)
	// Every call of the start waits on containerd: those before an
	// image's unpack, and those after it, each bounded by StartTimeout;
	// the start of the task's process by its deadline as well. A first
	// unpack, whose time grows with the image, only by the caller's
	// context. (An outside review held a start on a containerd stopped
	// before the unpack for 200 s, and on one stopped in the start for
	// good before these bounds.)
	bound := runtime.NewStartBound(callerCtx)
	ctx, cancelDaemon := bound.Within(callerCtx, b.cfg.StartTimeout)
	defer cancelDaemon()
	killed := "" // what the rollback did to the task's processes
	defer func() {
		if retErr != nil && bound.Expired() {
			retErr = fmt.Errorf("%w: task %s: containerd did not answer its start within %s or by the task's deadline (timeout %s)%s; gc removes what is left once containerd answers: %w",
				errdefs.ErrUnavailable, t.ID, b.cfg.StartTimeout, t.Limits.Timeout, killed, retErr)
		}
	}()
	// The spawn's lease is made while the id is checked and the spec
	// built and audited: a write to containerd's database (about 1 ms)
	// that nothing before the unpack needs. However the start ends, the
	// lease it made is deleted (spawnLease.end).
	lease := b.newSpawnLease(ctx, bound, t.ID, req.Owner)
	defer func() { lease.end(ctx, retErr != nil && bound.Expired()) }()
	if _, err := b.client.LoadContainer(ctx, t.ID); err == nil {
		return h, &runtime.TaskExistsError{ID: t.ID}
	} else if !errdefs.IsNotFound(err) {
		return h, fmt.Errorf("look up container %s: %w", t.ID, err)
	}

	releaseID, err := b.claimHostWideID(ctx, t)
	if err != nil {
		return h, err
	}
	// Held until the task exists in runc's state (or the start failed):
	// another containerd's start of the id then finds it there.
	defer releaseID()
	sw.Lap("start/check-id")
	group, err := b.joinGroup(ctx, t)
	if err != nil {
		return h, err
	}
	defer func() {
		if retErr != nil {
			b.leaveGroup(t.ID)
		}
	}()
	img, s, err := b.spec(ctx, req, group)
	if err != nil {
		return h, err
	}
	if err := b.ensureAppArmor(); err != nil {
		return h, err
	}
	// The task writes /output as its own user (its host ids, in its own
	// user namespace); nothing else on the host can reach the directory
	// (the state dir above it is private to root).
	uid, gid := s.Process.User.UID, s.Process.User.GID
	if r := req.UserNS; r != nil {
		uid, gid = r.HostID+uid, r.HostID+gid // spec.Opts checked both lie in the range
	}
	if err := os.Chown(req.OutputDir, int(uid), int(gid)); err != nil {
		return h, fmt.Errorf("prepare output dir: %w", err)
	}
	sw.Lap("start/spec-audit")

	leaseID, err := lease.wait(ctx)
	if err != nil {
		return h, fmt.Errorf("create lease: %w", err)
	}
	ctx = leases.WithLease(ctx, leaseID)
	sw.Lap("start/lease")
	withLease := func(ctx context.Context) context.Context { return leases.WithLease(ctx, leaseID) }
	guard := b.unpackGuard()
	guard.Unbounded = func(context.Context) context.Context {
		bound.Lift()
		return withLease(callerCtx)
	}
	parent, err := images.Unpack(ctx, img.Image, b.cfg.Snapshotter, guard)
	if err != nil {
		return h, err
	}
	sw.Lap("start/unpack-check")
	ctx, cancelRest := bound.Within(withLease(callerCtx), b.cfg.StartTimeout)
	defer cancelRest()
	sn := b.client.SnapshotService(b.cfg.Snapshotter)
	undo := []func(context.Context){func(ctx context.Context) { _ = sn.Remove(ctx, t.ID) }}
	created := false // the task's create was sent: runc may have made its processes
	defer func() {
		if retErr == nil {
			return
		}
		wait := undoWait
		if bound.Expired() || bound.CallerEnded() {
			// containerd did not answer in time, or the caller gave up
			// on a start that may be waiting on it: what runc made of
			// the task is killed without containerd, and the rollback
			// waits on it briefly (an outside review's interrupted run
			// on a hung containerd took 65 s to exit and left the task
			// running). What it cannot remove, gc removes.
			if created {
				killed = b.killTask(t.ID)
			}
			wait = unansweredUndoWait
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wait)
		defer cancel()
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i](cctx)
		}
	}()
	identity, rootfs, err := b.prepareRoot(ctx, bound, t.ID, req.Owner, parent, req.UserNS, s)
	if errdefs.IsAlreadyExists(err) {
		// Another spawn of this id, from another state dir sharing the
		// namespace, prepared it since the check above: its snapshot.
		undo = nil
		return h, fmt.Errorf("task %s already exists: %w", t.ID, err)
	}
	if err != nil {
		return h, err
	}
	sw.Lap("start/prepare-snapshot")

	sw.Lap("start/check-rootfs")
	var container client.Container
	err = bound.Answered(ctx, func(ctx context.Context) (err error) {
		container, err = b.client.NewContainer(ctx, t.ID,
			client.WithSpec(s),
			client.WithSnapshotter(b.cfg.Snapshotter),
			withPreparedSnapshot(t.ID),
			client.WithImageName(img.Name),
			client.WithContainerLabels(runtime.Labels(t.ID, req.Owner)),
			client.WithRuntime(runtimeOf(t, b.shim), b.runtimeOptions(t.Runtime)),
		)
		return err
	})
	if err != nil {
		if errdefs.IsAlreadyExists(err) {
			undo = nil // the snapshot is the other task's
			return h, fmt.Errorf("task %s already exists: %w", t.ID, errdefs.ErrAlreadyExists)
		}
		// A create the caller's cancel cut in flight may still have made
		// the container (an outside review's SIGINT did: a container
		// without its snapshot stayed, and held the id and the image).
		undo = append(undo, func(ctx context.Context) { b.deleteOwnContainer(ctx, t.ID, req.Owner) })
		return h, fmt.Errorf("create container %s: %w", t.ID, err)
	}
	undo = append(undo, func(ctx context.Context) { _ = container.Delete(ctx) })
	sw.Lap("start/create-container")

	created = true
	tk, sent, err := b.createTask(ctx, bound, container, rootfs, logs.ShimLoggerArgs(req.StateDir, b.cfg.LogLimits))
	if sent && tk == nil {
		// Created, but its handle could not be read: delete it through
		// the service, as the undo below would through the handle.
		undo = append(undo, func(ctx context.Context) {
			_, _ = b.client.TaskService().Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: t.ID})
		})
	}
	if err != nil {
		if len(s.Linux.Sysctl) > 0 && RefusesUserNSSysctls(err, s.Linux.Sysctl) {
			return h, fmt.Errorf("create task %s: %w: %w", t.ID, errUserNSSysctlsRefused, err)
		}
		if cerr := runtime.ParseCommandError(err, s.Process.Args[0], img.Name); cerr != nil {
			return h, cerr
		}
		return h, fmt.Errorf("create task %s: %w", t.ID, err)
	}
	undo = append(undo, func(ctx context.Context) { _, _ = tk.Delete(ctx, client.WithProcessKill) })
	sw.Lap("start/create-task")
	// The logger is ready (the shim waited for it) and the task not
	// started: what it copies from here on counts against the loggers'
	// quota.
	pid, err := logs.ShimLoggerPID(req.StateDir)
	if err == nil {
		err = cgroups.ConfineLogger(pid, b.cfg.LoggerCPUs)
	}
	if err != nil {
		return h, fmt.Errorf("create task %s: %w", t.ID, err)
	}
	sw.Lap("start/confine-logger")
	if req.UserNS != nil && len(s.Linux.Sysctl) == 0 {
		// The spec does not carry the namespace's limits (the audit
		// allowed that only because this backend sets them): set them now.
		if err := limitUserNS(ctx, tk.Pid()); err != nil {
			return h, err
		}
		sw.Lap("start/userns-limits")
	}

	// A new handle: one an earlier task of this id left (its OOM flag)
	// is not this task's.
	th := b.tasks.Add(t.ID)
	undo = append(undo, func(context.Context) { b.tasks.Remove(t.ID) })
	// As the handle: an entry an earlier task of this id left (removed by
	// another process) is not this task's.
	if t.Runtime == task.DefaultRuntime {
		b.hostStats.Store(t.ID, true)
	} else {
		b.hostStats.Delete(t.ID)
	}
	undo = append(undo, func(context.Context) { b.hostStats.Delete(t.ID) })
	if err := b.watchExit(th, tk); err != nil {
		return h, err
	}
	// The task's time starts with the request: runc may start its
	// process before containerd answers.
	startedAt := time.Now()
	startCtx, cancelStart := bound.Until(ctx, startedAt.Add(t.Limits.Timeout))
	defer cancelStart()
	if err := tk.Start(startCtx); err != nil {
		if cerr := runtime.ParseCommandError(err, s.Process.Args[0], img.Name); cerr != nil {
			return h, cerr
		}
		return h, fmt.Errorf("start task %s: %w", t.ID, err)
	}
	sw.Lap("start/start-task")
	return runtime.Handle{
		Version: runtime.HandleVersion, Backend: b.Name(), ID: t.ID, Image: img.Name,
		Pid: tk.Pid(), StartedAt: startedAt.UTC(), Identity: identity,
	}, nil
}

// spawnLease is the lease a start creates everything under, made
// while the start goes on (newSpawnLease).
type spawnLease struct {
	b    *Backend
	done chan struct{} // closed once containerd answered the create
	id   string
	own  bool // made by this start (not the caller's)
	err  error
}

// newSpawnLease starts making task id's spawn lease: it expires
// (spawnLeaseExpiry), so that containerd's garbage collector reclaims what
// a crashed spawn created under it, and it carries the task's labels, so
// that gc and the task's release find it. Its id is chosen here, and its
// create gets containerd's answer even when the caller gives up
// meanwhile (runtime.StartBound.Answered): a create cut in flight may still have made it
// (an outside review's cancelled starts left one in about one run in
// nine), and end deletes it by that id. A ctx that already names a lease
// keeps it (nothing is made).
func (b *Backend) newSpawnLease(ctx context.Context, bound *runtime.StartBound, id string, owner runtime.Owner) *spawnLease {
	l := &spawnLease{b: b, done: make(chan struct{})}
	if existing, ok := leases.FromContext(ctx); ok {
		l.id = existing
		close(l.done)
		return l
	}
	var named leases.Lease
	_ = leases.WithRandomID()(&named) // sets the id, never fails
	l.id, l.own = named.ID, true
	go func() {
		defer close(l.done)
		l.err = bound.Answered(ctx, func(ctx context.Context) error {
			_, err := b.client.LeasesService().Create(ctx, leases.WithID(l.id),
				leases.WithExpiration(spawnLeaseExpiry), leases.WithLabels(runtime.Labels(id, owner)))
			return err
		})
	}()
	return l
}

// wait returns the lease's id once containerd has made it, or ctx's
// error when ctx ends first.
func (l *spawnLease) wait(ctx context.Context) (string, error) {
	select {
	case <-l.done:
		return l.id, l.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// end deletes the lease this start made, within leaseReleaseWait. Once
// the container exists it references the snapshot, so the lease is no
// longer needed; on failure the rollback removed what it protected. It
// sends no delete where containerd is not answering (unanswered: the
// start failed on its bound on containerd; or the create itself got no
// answer), which would wait on it too, nor for a lease of that id that
// was another's (AlreadyExists). Bounded: the task runs already, and a
// containerd that hangs now (SIGSTOPped in a test, once in 1 of 2 full
// runs on containerd 1.6) held Start, and so the task's deadline, for
// good. A lease left behind expires (spawnLeaseExpiry), and the task's
// release and gc remove it by label.
func (l *spawnLease) end(ctx context.Context, unanswered bool) {
	if !l.own || unanswered {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaseReleaseWait)
	defer cancel()
	select {
	case <-l.done:
	case <-rctx.Done():
		return
	}
	if l.err != nil && (errdefs.IsCanceled(l.err) || errdefs.IsDeadlineExceeded(l.err) || errdefs.IsAlreadyExists(l.err)) {
		return
	}
	// Also after a create that failed otherwise: it may have been made.
	_ = l.b.client.LeasesService().Delete(rctx, leases.Lease{ID: l.id})
}

// undoWait bounds the rollback of a start that failed; unansweredUndoWait
// that of a start containerd did not answer (StartTimeout, or the task's
// deadline during its start), whose rollback would wait on it again: what
// the rollback cannot remove, gc removes once containerd answers.
const (
	undoWait           = time.Minute
	unansweredUndoWait = 5 * time.Second
)

// killTask kills every process in task id's cgroup without containerd,
// whose start containerd did not answer in time or its caller gave up on,
// and says what it did, for the start's error: runc may have created the
// task (its init waiting for the start) or started it, and nobody would
// end it. A containerd hung between runc starting a task and its answer
// had held Start with no bound, and the task ran with nobody enforcing its
// deadline (the session note of 2026-12-01).
func (b *Backend) killTask(id string) string {
	switch err := b.killCgroup(id); {
	case errdefs.IsNotFound(err):
		return "; its cgroup had no process"
	case err != nil:
		return "; killing its cgroup failed: " + err.Error()
	}
	return "; every process in its cgroup was killed"
}

// prepareRoot prepares the task's writable snapshot and inspects it: the
// image is attacker input, so one whose mount points are symlinks is
// refused before the runtime resolves them on the host. With a user
// namespace (ids) the snapshot is idmapped into the task's range where the
// snapshotter can; where the idmapped mount then fails on this host (a
// kernel or filesystem that refuses it, although the snapshotter claimed
// it could), the snapshot is prepared again plainly and the backend stops
// trying. Only a Backend's idmapped mounts until the first that works
// probe for that; later inspections mount plainly. It returns the
// identity level the task gets ("" without ids).
func (b *Backend) prepareRoot(ctx context.Context, bound *runtime.StartBound, id string, owner runtime.Owner, parent images.Parent, ids *task.IDRange, s *specs.Spec) (identity string, rootfs []mount.Mount, err error) {
	sn := b.client.SnapshotService(b.cfg.Snapshotter)
	passedKey := b.passedRootKey(parent, s)
	idmapped := false
	if ids != nil {
		if idmapped, err = b.idmapSnapshots(ctx); err != nil {
			return "", nil, err
		}
	}
	for {
		opts := []snapshots.Opt{snapshots.WithLabels(runtime.Labels(id, owner))}
		if idmapped {
			m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: ids.HostID, Size: ids.Size}}
			opts = append(opts, client.WithUserNSRemapperLabels(m, m))
		}
		// An active (writable) snapshot, not a view: runc must be able to
		// create mount points (/tmp, /output) the image lacks. The task
		// still sees a read-only root: runc remounts it read-only.
		var mounts []mount.Mount
		err := bound.Answered(ctx, func(ctx context.Context) (err error) {
			mounts, err = sn.Prepare(ctx, id, parent.ChainID, opts...)
			return err
		})
		if err != nil {
			return "", nil, fmt.Errorf("prepare snapshot for task %s: %w", id, err)
		}
		// What the shim is to mount: the inspection's idmapped mount
		// rewrites its mounts' options in place (lowerdir to the
		// temporary idmapped layers it removes after).
		rootfs = cloneMounts(mounts)
		// The inspection mounts the snapshot as the shim will, so that
		// an idmapped mount this host refuses shows here (probe, and
		// the fallback below). An idmapped mount costs a user namespace
		// (a process fork) and a mapped mount of each layer, about 10 ms
		// here, and changes no file's type: once one has worked for this
		// Backend, the inspection mounts plainly.
		inspect := mounts
		// Mount points to make (below) need the mount; otherwise a root
		// of the same parent that passed the same checks before passes
		// again without one: the checks read only the image's layers,
		// committed snapshots that no task and no later start changes
		// (the task's writes go to its own new snapshot, empty here).
		makePoints := ids != nil && !idmapped
		// A root known to have passed is known by its parent snapshot's
		// commit time (passedRootKey), and only where that is known.
		b.mu.Lock()
		probe := idmapped && !b.idmapMountWorks && !b.idmapMountWorked()
		remembered := !probe && !makePoints && !parent.Committed.IsZero()
		passed := remembered && b.passedRoots[passedKey]
		b.mu.Unlock()
		if !passed && remembered && b.rootPassedBefore(passedKey) {
			// Another process of this node inspected a root of the
			// same image and paths (each CLI run is a new process).
			passed = true
		}
		if passed && !b.parentStill(ctx, parent) {
			passed = false
		}
		if idmapped && !probe {
			inspect = mount.RemoveIDMapOption(mounts)
		}
		var refused error
		if passed {
			return identityOf(ids, idmapped), rootfs, nil
		}
		err = mount.WithTempMount(ctx, inspect, func(root string) error {
			if refused = images.CheckMountPoints(root, mountDestinations(s)); refused != nil {
				return refused
			}
			if refused = images.CheckWorkingDir(root, s.Process.Cwd); refused != nil {
				return refused
			}
			// In its own user namespace runc cannot create mount points
			// in the image's directories (they are host root's): make
			// them here. Idmapped, they are the task's root's, and runc
			// can.
			if makePoints {
				return images.CreateMountPoints(root, mountPoints(s))
			}
			return nil
		})
		switch {
		case refused != nil:
			return "", nil, refused
		case err != nil && probe:
			// The shim mounts the same way: it would fail there.
			log.G(ctx).WithError(err).Warn("idmapped task snapshots fail on this host; tasks get plain user namespaces")
			b.mu.Lock()
			no := false
			b.remapIDs = &no
			b.mu.Unlock()
			if rerr := sn.Remove(ctx, id); rerr != nil {
				return "", nil, fmt.Errorf("remove snapshot of task %s: %w", id, rerr)
			}
			idmapped = false
			continue
		case err != nil:
			return "", nil, fmt.Errorf("inspect root filesystem of task %s: %w", id, err)
		}
		if remembered && b.parentStill(ctx, parent) {
			b.rememberRootPassed(passedKey)
			b.recordRootPassed(ctx, passedKey)
		}
		if probe {
			b.mu.Lock()
			b.idmapMountWorks = true
			b.mu.Unlock()
			b.recordIdmapMountWorks(ctx)
		}
		return identityOf(ids, idmapped), rootfs, nil
	}
}

// deleteOwnContainer deletes container id if it is there and labelled
// as this start made it (runtime.Labels of id and owner): after a create
// whose answer was lost, a container of the id is this start's unless
// its labels say otherwise.
func (b *Backend) deleteOwnContainer(ctx context.Context, id string, owner runtime.Owner) {
	c, err := b.client.ContainerService().Get(ctx, id)
	if err != nil {
		return
	}
	for k, v := range runtime.Labels(id, owner) {
		if c.Labels[k] != v {
			return
		}
	}
	_ = b.client.ContainerService().Delete(ctx, id)
}

// identityOf is the identity level of a task with host ids ids (nil: the
// host's), idmapped or not.
func identityOf(ids *task.IDRange, idmapped bool) string {
	switch {
	case ids == nil:
		return ""
	case idmapped:
		return task.IdentityIDMapped
	}
	return task.IdentityUserNS
}

// createTask creates the task of container, its root the mounts of the
// snapshot prepareRoot prepared and its stdout and stderr the shim's
// logger, and returns its handle, and whether containerd created it (a
// handle it then failed to read leaves a task to delete). It sends what client.Container.NewTask
// sends, without NewTask's reads before it: three of the container's record
// (each answer carrying the whole spec, about 35 KB of JSON with the
// seccomp profile), one of the snapshot's mounts (prepareRoot has them)
// and a decode of the spec's JSON. In a cold CLI process those reads were
// 8% of its CPU (grpc's receive buffers, then 1 MiB each, cleared for each
// answer; protoCodec's are 64 KiB).
func (b *Backend) createTask(ctx context.Context, bound *runtime.StartBound, container client.Container, rootfs []mount.Mount, loggerArgs map[string]string) (tk client.Task, created bool, err error) {
	logURI, err := cio.LogURIGenerator("binary", b.cfg.LoggerBinary, loggerArgs)
	if err != nil {
		return nil, false, err
	}
	req := &tasks.CreateTaskRequest{ContainerID: container.ID(), Stdout: logURI.String(), Stderr: logURI.String()}
	for _, m := range rootfs {
		req.Rootfs = append(req.Rootfs, &types.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	err = bound.Answered(ctx, func(ctx context.Context) error {
		_, err := b.client.TaskService().Create(ctx, req)
		return err
	})
	if err != nil {
		return nil, false, errgrpc.ToNative(err)
	}
	tk, err = container.Task(ctx, nil)
	return tk, true, err
}

func cloneMounts(mounts []mount.Mount) []mount.Mount {
	c := make([]mount.Mount, len(mounts))
	for i, m := range mounts {
		m.Options = slices.Clone(m.Options)
		c[i] = m
	}
	return c
}

// withPreparedSnapshot is client.WithSnapshot without its check that the
// snapshot exists (a Mounts call to containerd): prepareRoot has just
// prepared it, under the lease the container is created in.
func withPreparedSnapshot(key string) client.NewContainerOpts {
	return func(_ context.Context, _ *client.Client, c *containers.Container) error {
		c.SnapshotKey = key
		return nil
	}
}

// mountPoints are s's mount destinations, binds of host files as files.
func mountPoints(s *specs.Spec) []images.MountPoint {
	points := make([]images.MountPoint, 0, len(s.Mounts))
	for _, m := range s.Mounts {
		file := false
		if m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind") {
			if info, err := os.Stat(m.Source); err == nil && !info.IsDir() {
				file = true
			}
		}
		points = append(points, images.MountPoint{Dest: m.Destination, File: file})
	}
	return points
}

func mountDestinations(s *specs.Spec) []string {
	dests := make([]string, 0, len(s.Mounts))
	for _, m := range s.Mounts {
		dests = append(dests, m.Destination)
	}
	return dests
}

// runtimeOf is the runtime task t's container runs with: nsn-shim (shim,
// a path, which containerd runs as the shim) for a task of the runc
// runtime where the Backend has it (a task in a shim group always does),
// else the runtime the task names.
func runtimeOf(t task.Task, shim string) string {
	if shim != "" && t.Runtime == task.DefaultRuntime {
		return shim
	}
	return t.Runtime
}

// Preview implements runtime.Backend: the OCI runtime spec Start would
// create req's container with, audited, as `nsn-run spec` prints it.
// Nothing is created.
func (b *Backend) Preview(ctx context.Context, req runtime.StartRequest) ([]byte, error) {
	var group string
	if b.group != nil && req.Task.Runtime == task.DefaultRuntime {
		group = b.group.name // as a task that joins the group
	}
	_, s, err := b.spec(b.ns(ctx), req, group)
	if err != nil {
		return nil, err
	}
	return spec.Marshal(s)
}

// spec resolves req's image and generates and audits its spec: the one
// path both Start and Preview take, so what `nsn-run spec` prints is what
// runs (but for the per-user limits of a Backend that has not yet seen
// runc refuse them, Start).
func (b *Backend) spec(ctx context.Context, req runtime.StartRequest, group string) (images.Image, *specs.Spec, error) {
	img, err := images.Resolve(ctx, b.client, req.Task.Image, &b.configs)
	if err != nil {
		return images.Image{}, nil, err
	}
	s, err := b.generate(ctx, req.Task, img.Config, req, group)
	if err != nil {
		return images.Image{}, nil, err
	}
	return img, s, nil
}

// generate builds the task's spec with its granted GPUs, applies the
// operator's options and the shim group (group, if not empty), and audits
// the result: a spec with findings never reaches runc.
func (b *Backend) generate(ctx context.Context, t task.Task, img ocispec.ImageConfig, req runtime.StartRequest, group string) (*specs.Spec, error) {
	if req.UserNS == nil {
		img = spec.SharedIdentityImage(img, spec.HostIdentityTaken)
	}
	o := spec.Options{OutputDir: req.OutputDir, GPUDevices: req.GPUDevices, OOMScoreAdj: b.cfg.AuditPolicy.OOMScoreAdj, AppArmorProfile: b.cfg.AuditPolicy.AppArmorProfile, InitBinary: b.cfg.InitBinary, CDI: b.cfg.CDI, UserNS: req.UserNS,
		UserNSSysctls: t.Runtime == task.DefaultRuntime && b.userNSSysctls.Load()}
	opts, err := spec.Opts(t, img, o)
	if err != nil {
		return nil, err
	}
	opts = append(opts, b.cfg.SpecOpts...)
	if group != "" {
		opts = append(opts, oci.WithAnnotations(map[string]string{audit.AnnotationShimGroup: group}))
	}
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: t.ID}, opts...)
	if err != nil {
		return nil, fmt.Errorf("generate spec for task %s: %w", t.ID, err)
	}
	p := b.cfg.AuditPolicy
	p.Namespace = b.cfg.Namespace
	p.TasksDir = filepath.Dir(req.StateDir)
	p.ResolveSource = filepath.EvalSymlinks
	p.CDI = b.cfg.CDI
	p.HostIdentity = req.UserNS == nil
	p.UserNS = req.UserNS                    // an operator's SpecOpt may not move the mapping
	p.UserNSLimitsOutside = !o.UserNSSysctls // Start sets them (limitUserNS)
	p.ShimGroup = group
	if findings := audit.Check(ctx, s, p); len(findings) > 0 {
		return nil, fmt.Errorf("%w: spec for task %s fails the audit (%d findings), first: %s", errdefs.ErrFailedPrecondition, t.ID, len(findings), findings[0])
	}
	return s, nil
}

// idmapMountsDir, in ProbeDir, holds a record per containerd (its UUID)
// and snapshotter whose idmapped snapshots mounted in this boot, so that
// later processes skip the probe. Bounded by maxIdmapMountRecords: a
// private containerd has a UUID of its own each time it starts on a new
// root (every test run's does), and records kept one file each in
// ProbeDir itself until the twenty-first session (69 on a development
// machine whose /run is not a tmpfs).
const idmapMountsDir = "idmap-mounts"

// maxIdmapMountRecords bounds the records in idmapMountsDir: past it, the
// dir starts again empty (a record lost costs one probe).
const maxIdmapMountRecords = 64

// legacyIdmapMountRecords matches the records of the earlier layout, in
// ProbeDir itself; recordIdmapMountWorks removes them.
const legacyIdmapMountRecords = "idmap-mounts-*"

// idmapMountRecord is the name, in idmapMountsDir, of the record of this
// containerd's snapshotter: its content is the boot's id, so a record from
// before a reboot (another kernel) counts for nothing, wherever ProbeDir
// lives. "" where there is no record to keep: no ProbeDir or UUID, or a
// name that is not one path element.
func (b *Backend) idmapMountRecord() string {
	name := b.serverUUID + "-" + b.cfg.Snapshotter
	if b.cfg.ProbeDir == "" || b.serverUUID == "" || strings.ContainsAny(name, "/\x00") || name != filepath.Base(name) {
		return ""
	}
	return name
}

// bootID is this boot's random id (empty if unreadable).
func bootID() string {
	id, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(id))
}

// idmapMountWorked reports whether another process of this boot recorded
// that an idmapped snapshot mounts (recordIdmapMountWorks), in a dir only
// root can write. Called with b.mu held; on a hit the Backend takes it as
// its own finding.
func (b *Backend) idmapMountWorked() bool {
	name := b.idmapMountRecord()
	if name == "" || !privdir.Is(b.cfg.ProbeDir) {
		return false
	}
	root, err := privdir.Open(filepath.Join(b.cfg.ProbeDir, idmapMountsDir))
	if err != nil {
		return false
	}
	defer root.Close()
	got, err := root.ReadFile(name)
	if id := bootID(); err != nil || id == "" || strings.TrimSpace(string(got)) != id {
		return false
	}
	b.idmapMountWorks = true
	return true
}

// recordIdmapMountWorks writes the record idmapMountWorked reads, through
// the dir it judged private; a failure only costs later processes the
// probe.
func (b *Backend) recordIdmapMountWorks(ctx context.Context) {
	name, id := b.idmapMountRecord(), bootID()
	if name == "" || id == "" {
		return
	}
	dir := filepath.Join(b.cfg.ProbeDir, idmapMountsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil || !privdir.Is(b.cfg.ProbeDir) {
		log.G(ctx).WithError(err).Debugf("not recording idmapped mounts in %s", dir)
		return
	}
	root, err := privdir.Open(dir)
	if err != nil {
		log.G(ctx).WithError(err).Debugf("not recording idmapped mounts in %s", dir)
		return
	}
	defer root.Close()
	privdir.EmptyIfFull(root, maxIdmapMountRecords)
	tmp := ".tmp-" + rand.Text()
	werr := root.WriteFile(tmp, []byte(id+"\n"), 0o600)
	if werr == nil {
		werr = root.Rename(tmp, name)
	}
	if werr != nil {
		_ = root.Remove(tmp)
		log.G(ctx).WithError(werr).Debug("record idmapped mounts")
	}
	removeLegacyIdmapMountRecords(b.cfg.ProbeDir)
}

// removeLegacyIdmapMountRecords removes the records the earlier layout
// kept in ProbeDir itself (regular files only), through ProbeDir held
// private.
func removeLegacyIdmapMountRecords(probeDir string) {
	root, err := privdir.Open(probeDir)
	if err != nil {
		return
	}
	defer root.Close()
	d, err := root.Open(".")
	if err != nil {
		return
	}
	entries, _ := d.ReadDir(-1)
	d.Close()
	for _, e := range entries {
		if ok, _ := filepath.Match(legacyIdmapMountRecords, e.Name()); ok && e.Type().IsRegular() {
			_ = root.Remove(e.Name())
		}
	}
}

// runcRoot is where the runc v2 shim keeps runc's state (the shim's
// process.RuncRoot; nsn-run does not change it): one directory per
// containerd namespace, the same for every containerd on the host.
const runcRoot = "/run/containerd/runc"

// checkHostWideID refuses an id that a task of another containerd on this
// host holds. runc's state (runcRoot/NAMESPACE/ID) and the task's cgroup
// (/NAMESPACE/ID) are named by namespace and id alone, so two containerds
// with a namespace of the same name share them: an outside review's run
// in a second containerd failed at runc create ("container with given ID
// already exists"), and the shim's cleanup of "its" container killed the
// first containerd's running task. Only runc's shim keeps its state there;
// another runtime's task is not checked.
func (b *Backend) checkHostWideID(t task.Task) error {
	if !runsUnderRuncRoot(t.Runtime) {
		return nil
	}
	state := filepath.Join(runcRoot, b.cfg.Namespace, t.ID)
	if _, err := os.Lstat(state); err == nil {
		return fmt.Errorf("task %s already exists on this host, in another containerd with a namespace %q or left by one (runc state %s; if no containerd runs it, `runc --root %s delete --force %s` removes it): %w",
			t.ID, b.cfg.Namespace, state, filepath.Dir(state), t.ID, errdefs.ErrAlreadyExists)
	}
	group := "/" + b.cfg.Namespace + "/" + t.ID
	if busy, err := cgroups.Populated(cgroups.PidsRoot(), group); err == nil && busy {
		return fmt.Errorf("task %s already exists on this host: its cgroup %s has processes (another containerd with a namespace %q): %w",
			t.ID, group, b.cfg.Namespace, errdefs.ErrAlreadyExists)
	}
	return nil
}

// runsUnderRuncRoot reports whether runtime's shim keeps runc's state in
// runcRoot: runc's v2 shim, and its v1 (an outside review passed the
// check with io.containerd.runc.v1 and reached runc create).
func runsUnderRuncRoot(runtime string) bool {
	return runtime == "" || runtime == task.DefaultRuntime || runtime == "io.containerd.runc.v1"
}

// claimHostWideID takes the node-wide claim on the task's namespace and id
// (a lock in ProbeDir, which every nsn-run on the node shares, whatever its
// containerd), then checks that no other containerd's task holds them
// (checkHostWideID). Without the claim, two starts of one id in two
// containerds both passed the check, and one's failed runc create killed
// the other's task (an outside review, 2 runs of 6). release gives the
// claim up. Without a ProbeDir there is no claim, only the check.
func (b *Backend) claimHostWideID(ctx context.Context, t task.Task) (release func(), err error) {
	release = func() {}
	if b.cfg.ProbeDir != "" && runsUnderRuncRoot(t.Runtime) {
		dir := filepath.Join(b.cfg.ProbeDir, "task-ids", b.cfg.Namespace)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("claim task id %s: %w", t.ID, err)
		}
		if release, err = flock.Exclusive(ctx, filepath.Join(dir, t.ID)); err != nil {
			return nil, fmt.Errorf("claim task id %s: %w", t.ID, err)
		}
	}
	if err := b.checkHostWideID(t); err != nil {
		release()
		return nil, err
	}
	return release, nil
}
