package integration

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/task"
)

// TestReleaseUnderGCLeavesImageRemovable: a task's release removes its
// snapshot before the container that holds it. containerd's garbage
// collector deletes a snapshot it finds unreferenced without unlinking it
// from its parent, the image's top layer, whose explicit removal is then
// refused for good ("cannot remove snapshot with child"). A release that
// deleted the container first left the task's snapshot unreferenced for a
// round trip: CI's TestImageUnpackBomb once found its image's snapshot
// stuck that way. Here containerd collects garbage back to back while
// tasks of an image of their own run and are released; then the image and
// its snapshot must be removable.
func TestReleaseUnderGCLeavesImageRemovable(t *testing.T) {
	h := newHostileImage(t, "release-under-gc", func(rootfs string) error {
		// A layer of its own (no other test's image shares its snapshot).
		return os.WriteFile(filepath.Join(rootfs, "unique"), []byte(t.Name()+uniqueID("x")), 0o644)
	})
	img := h.importIt()
	chain := h.chain(img)
	m, c := testManagerBackend(t, func(*containerd.Config) {}, func(*runtime.Config) {})

	ctx, stop := context.WithCancel(h.ctx)
	var collections int
	var gcErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		ls := c.LeasesService()
		for ctx.Err() == nil {
			// Deleting a lease synchronously runs a collection and waits
			// for it.
			l, err := ls.Create(ctx, leases.WithRandomID())
			if err == nil {
				err = ls.Delete(ctx, l, leases.SynchronousDelete)
			}
			if err != nil {
				if ctx.Err() == nil {
					gcErr = err
				}
				return
			}
			collections++
		}
	})
	const tasks = 20
	for i := range tasks {
		res, err := m.Run(context.Background(), task.Task{ID: uniqueID("gcrace"), Image: h.ref, Command: []string{"true"}}, runtime.RunOptions{})
		if err != nil || res.ExitCode != 0 {
			t.Errorf("task %d: %+v, %v", i, res, err)
		}
	}
	stop()
	wg.Wait()
	if gcErr != nil {
		t.Fatalf("collect garbage: %v", gcErr)
	}
	if collections < tasks {
		t.Fatalf("%d collections beside %d tasks: the race was not run", collections, tasks)
	}
	t.Logf("%d collections beside %d tasks", collections, tasks)

	if err := c.ImageService().Delete(h.ctx, h.ref); err != nil {
		t.Fatalf("remove image %s: %v", h.ref, err)
	}
	err := c.SnapshotService(containerd.DefaultSnapshotter).Remove(h.ctx, chain)
	if err != nil && !errdefs.IsNotFound(err) {
		msg := err.Error()
		if strings.Contains(msg, "with child") {
			msg += ": a task's snapshot was collected before its release removed it, and left its link in the image's"
		}
		t.Errorf("remove the image's snapshot %s: %s", chain, msg)
	}
}

// TestSweepOfCrashedSpawnLeavesImageRemovable: gc removes a crashed
// spawn's snapshot before the lease that held it. Deleting the lease runs
// containerd's garbage collector at once (SynchronousDelete), which would
// delete the snapshot (no container holds it yet) without unlinking it
// from the image's top layer, and that layer's removal would be refused.
// Here the spawn died between its snapshot's Prepare and its container:
// a labelled lease and snapshot of a task with no container.
func TestSweepOfCrashedSpawnLeavesImageRemovable(t *testing.T) {
	h := newHostileImage(t, "sweep-crashed-spawn", func(rootfs string) error {
		return os.WriteFile(filepath.Join(rootfs, "unique"), []byte(t.Name()+uniqueID("x")), 0o644)
	})
	img := h.importIt()
	if err := img.Unpack(h.ctx, containerd.DefaultSnapshotter); err != nil {
		t.Fatal(err)
	}
	chain := h.chain(img)
	m, c := testManagerBackend(t, func(*containerd.Config) {}, func(*runtime.Config) {})

	id := uniqueID("crashed")
	labels := runtime.Labels(id, m.Owner())
	lease, err := c.LeasesService().Create(h.ctx, leases.WithRandomID(), leases.WithLabels(labels))
	if err != nil {
		t.Fatal(err)
	}
	sn := c.SnapshotService(containerd.DefaultSnapshotter)
	if _, err := sn.Prepare(leases.WithLease(h.ctx, lease.ID), id, chain, snapshots.WithLabels(labels)); err != nil {
		t.Fatal(err)
	}

	removed, err := m.CleanupOrphans(context.Background(), false)
	if err != nil || !slices.Contains(removed, "snapshot "+id) || !slices.Contains(removed, "lease "+lease.ID) {
		t.Errorf("gc: removed %v, %v; want the snapshot %s and the lease %s", removed, err, id, lease.ID)
	}
	if err := c.ImageService().Delete(h.ctx, h.ref); err != nil {
		t.Fatalf("remove image %s: %v", h.ref, err)
	}
	if err := sn.Remove(h.ctx, chain); err != nil && !errdefs.IsNotFound(err) {
		t.Errorf("remove the image's snapshot %s after gc: %v", chain, err)
	}
}
