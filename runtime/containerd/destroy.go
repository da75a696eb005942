package containerd

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc"

	"github.com/nsn-run/nsn-run/cgroups"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

// Stop implements runtime.Backend. A SIGKILL to every process that
// containerd cannot take, because it is down or restarting, goes to the
// task's cgroup directly (killCgroup): a deadline holds whether or not the
// daemon answers.
func (b *Backend) Stop(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	killAll := all && sig == syscall.SIGKILL
	daemonCtx := ctx
	if killAll {
		// containerd's client spends up to its dial timeout on a daemon
		// that is down; a kill does not wait that long for it.
		var cancel context.CancelFunc
		daemonCtx, cancel = context.WithTimeout(ctx, killDaemonWait)
		defer cancel()
	}
	tk, err := b.loadTask(daemonCtx, id)
	if err == nil {
		var opts []client.KillOpts
		if all {
			opts = append(opts, client.WithKillAll)
		}
		if err = tk.Kill(b.ns(daemonCtx), sig, opts...); err != nil {
			err = fmt.Errorf("signal task %s: %w", id, err)
		}
	}
	if err != nil && errdefs.IsUnavailable(err) {
		b.reconnectNow()
	}
	if err != nil && killAll && ctx.Err() == nil && (errdefs.IsUnavailable(err) || daemonCtx.Err() != nil) {
		defer runtime.ObservePhase(ctx, "wait/kill-cgroup", time.Now())
		if kerr := b.killCgroup(id); kerr != nil {
			return fmt.Errorf("%w; and killing its cgroup directly: %w", err, kerr)
		}
		return nil
	}
	return err
}

// reconnectNow has the client's connection dial containerd at its next
// call instead of after its backoff (up to the dial timeout): a signal
// retried within a grace must reach containerd as soon as it is back (an
// outside review saw a SIGTERM skipped with containerd answering again
// for 2 s before the grace ended).
func (b *Backend) reconnectNow() {
	if conn, ok := b.client.Conn().(*grpc.ClientConn); ok {
		conn.ResetConnectBackoff()
	}
}

// killDaemonWait bounds how long Stop waits for containerd to take a
// SIGKILL to every process before it kills the task's cgroup itself.
const killDaemonWait = time.Second

// killCgroup sends SIGKILL to every process in task id's cgroup without
// containerd, which did not answer. An outside review stopped
// containerd for longer than a task had left: its deadline passed, the
// signals failed, and the task ran on. The cgroup, /NAMESPACE/ID, is the
// task's alone while it has processes: a start refuses an id whose cgroup
// is populated, in any containerd on the host (checkHostWideID). The
// shim, still running, reports the exit once containerd is back. A group
// that is gone is the task gone (ErrNotFound), as containerd would say.
func (b *Backend) killCgroup(id string) error {
	return cgroups.Kill("/" + b.cfg.Namespace + "/" + id)
}

// Destroy implements runtime.Backend: kill and delete the task (the shim then
// stops its logger), delete the container and its snapshot, and close the
// task's handle. Idempotent.
func (b *Backend) Destroy(ctx context.Context, id string) error {
	ctx = b.ns(ctx)
	defer b.tasks.Remove(id)
	defer b.hostStats.Delete(id)
	sw := runtime.NewStopwatch(ctx)
	// Out of the group's count even when the release fails: whoever
	// finishes it (a later Destroy, gc in another process) may not be
	// this Backend.
	defer b.leaveGroup(id)
	if h := b.tasks.Get(id); h != nil && h.HasExited() && b.taskStopped(ctx, id) {
		return b.destroyExited(ctx, id, sw)
	}
	c, err := b.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		if err := b.removeSnapshot(ctx, id); err != nil {
			return err
		}
		return b.removeLeases(ctx, id)
	}
	if err != nil {
		return fmt.Errorf("load container %s: %w", id, err)
	}
	if tk, err := c.Task(ctx, nil); err == nil {
		var opts []client.ProcessDeleteOpts
		if h := b.tasks.Get(id); h == nil || !h.HasExited() {
			// A task whose exit this backend has seen needs no kill:
			// its pid namespace ended with its init, and a kill of a
			// stopped task still costs the shim a round of work.
			opts = append(opts, client.WithProcessKill)
		}
		st, err := tk.Delete(ctx, opts...)
		if err != nil && !errdefs.IsNotFound(err) && !b.taskGone(ctx, id) {
			return fmt.Errorf("delete task %s: %w", id, err)
		}
		sw.Lap("release/delete-task")
		if h := b.tasks.Get(id); h != nil && st != nil {
			// The exit a Wait still waiting gets, before the handle
			// closes under it.
			h.Exit(exitStatus(h, *st), nil)
		}
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("load task %s: %w", id, err)
	}
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) && !b.containerGone(ctx, id) {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	sw.Lap("release/delete-container")
	return b.removeSnapshotAndLeases(ctx, id, sw)
}

// destroyExited is Destroy of a task whose exit this Backend has seen (a
// Run's release, the common case), through containerd's services
// directly. The client's Task.Delete and Container.Delete read the task's
// state three times and the container's record twice (each answer
// carrying the whole spec, 80 KB with the seccomp profile) around their
// deletes: nine calls where five do. A stopped task needs none of their
// checks: its delete is not refused, it needs no kill (its pid namespace
// ended with its init), and the container's snapshot is the task's id
// (removeSnapshot). Only for a task containerd reports stopped
// (taskStopped): a task of this id that another process made after
// removing this one (an outside review: `rm -f` and a new `run` of the id
// while this Backend still held the old one's exit) may be created and
// not started, which the service's delete would kill where the client's
// refuses it.
func (b *Backend) destroyExited(ctx context.Context, id string, sw *runtime.Stopwatch) error {
	_, err := b.client.TaskService().Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: id})
	// Not found: another process's Destroy deleted the task, or the
	// container with it.
	if err = errgrpc.ToNative(err); err != nil && !errdefs.IsNotFound(err) && !b.taskGone(ctx, id) {
		return fmt.Errorf("delete task %s: %w", id, err)
	}
	sw.Lap("release/delete-task")
	// The snapshot before the container that holds it, as the client's
	// WithSnapshotCleanup does: once the container is gone nothing holds
	// the snapshot, and containerd's garbage collector, should it run
	// then, deletes it without unlinking it from the image's top layer,
	// whose own removal containerd then refuses ("cannot remove snapshot
	// with child") until its collector removes that layer too
	// (TestReleaseUnderGCLeavesImageRemovable).
	if err := b.removeSnapshot(ctx, id); err != nil {
		return err
	}
	sw.Lap("release/remove-snapshot")
	if err := b.client.ContainerService().Delete(ctx, id); err != nil && !errdefs.IsNotFound(err) && !b.containerGone(ctx, id) {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	sw.Lap("release/delete-container")
	err = b.removeLeases(ctx, id)
	sw.Lap("release/leases")
	return err
}

// taskStopped reports whether containerd has task id, stopped.
func (b *Backend) taskStopped(ctx context.Context, id string) bool {
	r, err := b.client.TaskService().Get(ctx, &tasks.GetRequest{ContainerID: id})
	return err == nil && r.Process != nil && r.Process.Status == tasktypes.Status_STOPPED
}

// removeSnapshotAndLeases ends a release: the task's snapshot (its key is
// the task's id) and any lease left with its label, after the container
// (destroyExited removes the snapshot first).
func (b *Backend) removeSnapshotAndLeases(ctx context.Context, id string, sw *runtime.Stopwatch) error {
	if err := b.removeSnapshot(ctx, id); err != nil {
		return err
	}
	err := b.removeLeases(ctx, id)
	sw.Lap("release/snapshot-leases")
	return err
}

// taskGone reports whether container id has no task any more: another
// process's Destroy of the same task (`nsn-run rm -f` while the task's
// supervisor releases it) may have deleted it while this one's delete was
// under way, which fails with something else than NotFound (the shim
// shutting down under it).
func (b *Backend) taskGone(ctx context.Context, id string) bool {
	_, err := b.client.TaskService().Get(ctx, &tasks.GetRequest{ContainerID: id})
	return errdefs.IsNotFound(errgrpc.ToNative(err))
}

// containerGone reports whether container id no longer exists (taskGone's
// reason, for the container).
func (b *Backend) containerGone(ctx context.Context, id string) bool {
	_, err := b.client.LoadContainer(ctx, id)
	return errdefs.IsNotFound(err)
}

// removeLeases deletes the spawn lease of a task whose manager died before
// releasing it.
func (b *Backend) removeLeases(ctx context.Context, id string) error {
	ls := b.client.LeasesService()
	found, err := ls.List(ctx, fmt.Sprintf("labels.%q==%s", runtime.LabelTaskID, id))
	if err != nil {
		return fmt.Errorf("list leases of task %s: %w", id, err)
	}
	for _, l := range found {
		if err := ls.Delete(ctx, l); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete lease %s: %w", l.ID, err)
		}
	}
	return nil
}

// removeSnapshot removes a task snapshot that outlived its container (a
// crash between prepare and create).
func (b *Backend) removeSnapshot(ctx context.Context, id string) error {
	err := b.client.SnapshotService(b.cfg.Snapshotter).Remove(ctx, id)
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove snapshot %s: %w", id, err)
	}
	return nil
}

var _ runtime.OrphanSweeper = (*Backend)(nil)

// SweepOrphans implements runtime.OrphanSweeper: nsn-run's leases and task
// snapshots whose task is neither in keep nor has a container, the empty
// cgroups of tasks that are gone (sweepCgroups), shims that serve nothing
// (sweepShims), and idmapped layer mounts that outlived their overlay
// (sweepIDMappedMounts).
func (b *Backend) SweepOrphans(ctx context.Context, o runtime.Owner, keep map[string]bool) ([]string, error) {
	ctx = b.ns(ctx)
	orphan := func(labels map[string]string) bool {
		id := labels[runtime.LabelTaskID]
		if id == "" || keep[id] || o.Disowns(labels) {
			return false
		}
		_, err := b.client.LoadContainer(ctx, id)
		return errdefs.IsNotFound(err)
	}
	removed, anchorErr := b.sweepAnchors(ctx)
	// The snapshots before the leases that hold them: a lease's delete
	// runs containerd's garbage collector, which would delete a crashed
	// spawn's snapshot without unlinking it from the image's top layer
	// (destroyExited says what that does).
	sn := b.client.SnapshotService(b.cfg.Snapshotter)
	var names []string
	err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Labels[runtime.LabelManager] == runtime.ManagerName && orphan(info.Labels) {
			names = append(names, info.Name)
		}
		return nil
	}, fmt.Sprintf("labels.%q==%s", runtime.LabelManager, runtime.ManagerName))
	if err != nil {
		return removed, fmt.Errorf("list snapshots: %w", err)
	}
	for _, name := range names {
		if err := sn.Remove(ctx, name); err != nil && !errdefs.IsNotFound(err) {
			return removed, fmt.Errorf("remove snapshot %s: %w", name, err)
		}
		removed = append(removed, "snapshot "+name)
	}
	ls := b.client.LeasesService()
	all, err := ls.List(ctx, fmt.Sprintf("labels.%q==%s", runtime.LabelManager, runtime.ManagerName))
	if err != nil {
		return removed, fmt.Errorf("list leases: %w", err)
	}
	for _, l := range all {
		if !orphan(l.Labels) {
			continue
		}
		if err := ls.Delete(ctx, l, leases.SynchronousDelete); err != nil && !errdefs.IsNotFound(err) {
			return removed, fmt.Errorf("delete lease %s: %w", l.ID, err)
		}
		removed = append(removed, "lease "+l.ID)
	}
	removed = append(removed, b.sweepCgroups(ctx, keep)...)
	removed = append(removed, b.sweepShims(ctx)...)
	return append(removed, b.sweepIDMappedMounts()...), anchorErr
}

// cgroupRoot is where the host's cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// sweepCgroups removes the empty cgroups of tasks that are gone. A create
// given up on midway (an outside review interrupted run during it 12
// times: 23 cgroups left, gc --force removing none) can leave the task's
// cgroup, /NAMESPACE/ID in every hierarchy, with no container and no runc
// state to delete it. One whose id is kept, has a container in this
// containerd, or has runc state in the shim's root (a task of this or
// another containerd with a namespace of the same name) stays; rmdir
// leaves one with processes or children. It returns one line per task.
func (b *Backend) sweepCgroups(ctx context.Context, keep map[string]bool) []string {
	ns := b.cfg.Namespace
	parents := []string{filepath.Join(cgroupRoot, ns)}
	if cgroups.Mode() != "unified" {
		parents = parents[:0]
		hierarchies, _ := os.ReadDir(cgroupRoot)
		for _, h := range hierarchies {
			parents = append(parents, filepath.Join(cgroupRoot, h.Name(), ns))
		}
	}
	dirs := map[string][]string{}
	for _, p := range parents {
		entries, _ := os.ReadDir(p)
		for _, e := range entries {
			if e.IsDir() && task.ValidateID(e.Name()) == nil {
				dirs[e.Name()] = append(dirs[e.Name()], filepath.Join(p, e.Name()))
			}
		}
	}
	var removed []string
	for _, id := range slices.Sorted(maps.Keys(dirs)) {
		if keep[id] {
			continue
		}
		if _, err := os.Lstat(filepath.Join(runcRoot, ns, id)); err == nil {
			continue
		}
		if _, err := b.client.LoadContainer(ctx, id); !errdefs.IsNotFound(err) {
			continue
		}
		gone := false
		for _, d := range dirs[id] {
			if os.Remove(d) == nil {
				gone = true
			}
		}
		if gone {
			removed = append(removed, "cgroup /"+ns+"/"+id)
		}
	}
	return removed
}
