package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

// TestCancelledStartsLeaveNothing: a start whose caller gives up at any
// moment leaves no lease, container, task or snapshot. An outside review
// stepped a Spawn's timeout through the start: containerd made the spawn
// lease, or the container, of a call the cancel cut in flight, and those
// stayed (a container without its snapshot then held the id and the
// image) until gc. The sweep covers a whole start, as a warm one here
// took.
func TestCancelledStartsLeaveNothing(t *testing.T) {
	m, c := testManager(t)
	ctx := context.Background()
	// How long a warm start takes, to sweep it: the second start (the
	// first may unpack the image and probe the host's idmapped mounts).
	var spawnTook time.Duration
	for i := range 2 {
		began := time.Now()
		h, err := m.Spawn(ctx, task.Task{ID: uniqueID("cancel-first"), Image: "busybox:latest", Command: []string{"true"}})
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			spawnTook = time.Since(began)
		}
		if err := m.Remove(ctx, h.ID, true); err != nil {
			t.Fatal(err)
		}
	}
	nctx := namespaces.WithNamespace(ctx, testNamespace)
	left := func(id string) []string {
		var found []string
		if _, err := c.ContainerService().Get(nctx, id); !errdefs.IsNotFound(err) {
			found = append(found, fmt.Sprintf("container (%v)", err))
		}
		if _, err := c.SnapshotService("overlayfs").Stat(nctx, id); !errdefs.IsNotFound(err) {
			found = append(found, fmt.Sprintf("snapshot (%v)", err))
		}
		ls, err := c.LeasesService().List(nctx, fmt.Sprintf("labels.%q==%q", runtime.LabelTaskID, id))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			found = append(found, "lease "+l.ID)
		}
		return found
	}
	step := max(spawnTook/150, 50*time.Microsecond)
	t.Logf("a start took %s; cancelling every %s up to %s", spawnTook, step, spawnTook+2*step)
	cancelled := 0
	for d := time.Duration(0); d <= spawnTook+2*step; d += step {
		id := uniqueID("cancel")
		sctx, cancel := context.WithTimeout(ctx, d)
		_, err := m.Spawn(sctx, task.Task{ID: id, Image: "busybox:latest", Command: []string{"true"}})
		cancel()
		if err == nil {
			if err := m.Remove(ctx, id, true); err != nil {
				t.Fatalf("remove %s: %v", id, err)
			}
		} else {
			cancelled++
		}
		if found := left(id); len(found) > 0 {
			t.Errorf("a start cancelled after %s (%v) left %v", d, err, found)
			_, _ = m.CleanupOrphans(ctx, true)
		}
	}
	if cancelled == 0 {
		t.Fatal("no start was cancelled: the sweep tested nothing")
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("after the sweep: %s", l)
	}
}
