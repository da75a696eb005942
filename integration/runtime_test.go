package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

// leftovers describes what nsn-run objects remain in the test namespace:
// containers, tasks, non-image (active) snapshots and nsn-run leases.
func leftovers(t *testing.T, c *client.Client) string {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)
	var found []string
	cs, err := c.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ctr := range cs {
		found = append(found, "container "+ctr.ID())
	}
	ts, err := c.TaskService().List(ctx, &tasks.ListTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range ts.Tasks {
		found = append(found, "task "+tk.ID)
	}
	err = c.SnapshotService("overlayfs").Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind != snapshots.KindCommitted {
			found = append(found, "snapshot "+info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := c.LeasesService().List(ctx, fmt.Sprintf("labels.%q", runtime.LabelTaskID))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		found = append(found, "lease "+l.ID)
	}
	return strings.Join(found, ", ")
}

func seedTask(id string, cmd ...string) task.Task {
	return task.Task{ID: id, Image: "alpine:latest", Command: cmd, Limits: task.Limits{MemoryBytes: 512 * task.MiB}}
}

// TestSeedRun is the acceptance test of the Docker-based design nsn-run
// replaces, through the Go API: echo hello in alpine:latest with 512 MB,
// collect output, exit code 0, "hello" in stdout, clean up.
func TestSeedRun(t *testing.T) {
	m, c := testManager(t)
	id := uniqueID("seed")
	res, err := m.Run(context.Background(), seedTask(id, "echo", "hello"), runtime.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || res.Reason != task.ReasonExited || res.Stdout != "hello\n" || res.Stderr != "" {
		t.Errorf("result = exit %d reason %s stdout %q stderr %q", res.ExitCode, res.Reason, res.Stdout, res.Stderr)
	}
	if res.ID != id || res.Image != alpineRef || res.StartedAt.IsZero() || res.FinishedAt.Before(res.StartedAt) {
		t.Errorf("result identity/times = %+v", res)
	}
	if res.Stats.PeakMemoryBytes == 0 || res.Stats.CPUUsageSeconds <= 0 {
		t.Errorf("stats not sampled: %+v", res.Stats)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
	if _, err := os.Stat(taskDir(m, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir left behind: %v", err)
	}
}

// TestSpawnFailuresLeaveNothing: an unknown image, a missing binary, a
// non-executable command, bad input and a duplicate id are refused with a
// typed error and leave no container, snapshot, lease or state behind.
func TestSpawnFailuresLeaveNothing(t *testing.T) {
	m, c := testManager(t)
	ctx := context.Background()

	_, err := m.Run(ctx, task.Task{ID: uniqueID("img"), Image: "nosuch/image:1", Command: []string{"true"}}, runtime.RunOptions{})
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "docker.io/nosuch/image:1 not found") {
		t.Errorf("unknown image: %v", err)
	}
	var ce *runtime.CommandError
	_, err = m.Run(ctx, seedTask(uniqueID("bin"), "/no/such/binary"), runtime.RunOptions{})
	if !errors.As(err, &ce) || !ce.NotFound || ce.ExitCode() != 127 || !errdefs.IsNotFound(err) {
		t.Errorf("missing binary: %v", err)
	}
	_, err = m.Run(ctx, seedTask(uniqueID("bin"), "/etc"), runtime.RunOptions{})
	if !errors.As(err, &ce) || ce.NotFound || ce.ExitCode() != 126 {
		t.Errorf("non-executable command: %v", err)
	}
	_, err = m.Run(ctx, task.Task{ID: "Bad", Image: "alpine", Command: []string{"true"}}, runtime.RunOptions{})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad id: %v", err)
	}

	id := uniqueID("dup")
	if _, err := m.Spawn(ctx, seedTask(id, "sleep", "60")); err != nil {
		t.Fatal(err)
	}
	_, err = m.Spawn(ctx, seedTask(id, "echo", "second"))
	if !errdefs.IsAlreadyExists(err) {
		t.Errorf("duplicate id: %v", err)
	}
	if st, err := m.Inspect(ctx, id); err != nil || st.State != runtime.StateRunning {
		t.Errorf("the first task was disturbed by the duplicate: %+v %v", st, err)
	}
	if err := m.Remove(ctx, id, false); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("rm of a running task without force: %v", err)
	}
	if err := m.Remove(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if err := m.Cleanup(ctx, id); err != nil {
		t.Errorf("second cleanup is not idempotent: %v", err)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
	if entries, _ := os.ReadDir(filepath.Dir(taskDir(m, "x"))); len(entries) != 0 {
		t.Errorf("state dirs left behind: %v", entries)
	}
}

// TestTwentyInARow: 20 tasks leave zero containers, tasks and snapshots
// beyond the image's own.
func TestTwentyInARow(t *testing.T) {
	m, c := testManager(t)
	for i := range 20 {
		res, err := m.Run(context.Background(), seedTask(uniqueID("row"), "sh", "-c", fmt.Sprintf("echo %d > /output/n; echo %d", i, i)), runtime.RunOptions{})
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if res.Stdout != fmt.Sprintf("%d\n", i) || len(res.OutputFiles) != 1 {
			t.Errorf("run %d: stdout %q files %+v", i, res.Stdout, res.OutputFiles)
		}
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind after 20 runs: %s", l)
	}
}

// TestCancelStopsTask: cancelling the caller's context stops the task
// (reason killed) and still cleans up.
func TestCancelStopsTask(t *testing.T) {
	m, c := testManager(t)
	ctx, cancel := context.WithCancel(context.Background())
	id := uniqueID("cancel")
	tk := seedTask(id, "sleep", "60")
	tk.Limits.Grace = 200 * time.Millisecond
	if _, err := m.Spawn(ctx, tk); err != nil {
		t.Fatal(err)
	}
	cancel()
	res, err := m.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// sleep is pid 1 and has no SIGTERM handler, so SIGTERM does nothing
	// and the SIGKILL after the grace period ends it.
	if res.Reason != task.ReasonKilled || res.ExitCode != 137 {
		t.Errorf("result = reason %s exit %d, want killed by SIGKILL (137)", res.Reason, res.ExitCode)
	}
	if err := m.Cleanup(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
}
