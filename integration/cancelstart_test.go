package integration

import (
	"context"
	"testing"
	"time"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

// TestCancelledStartsLeaveNothing: a start whose caller gives up at any
// moment leaves nothing on the backend: on containerd no lease,
// container, task or snapshot; on Docker no container. An outside review
// stepped a Spawn's timeout through the start: containerd made the spawn
// lease, or the container, of a call the cancel cut in flight, and those
// stayed (a container without its snapshot then held the id and the
// image) until gc; dockerd made the container after the rollback had
// removed it by name. The sweep covers a whole start, as a warm one here
// took, in about 100 steps.
func TestCancelledStartsLeaveNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backendCase, m *runtime.Manager) {
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
		step := max(spawnTook/100, 50*time.Microsecond)
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
			if l := b.leftovers(t); l != "" {
				t.Errorf("a start cancelled after %s (%v) left %s", d, err, l)
				_, _ = m.CleanupOrphans(ctx, true)
			}
		}
		if cancelled == 0 {
			t.Fatal("no start was cancelled: the sweep tested nothing")
		}
	})
}
