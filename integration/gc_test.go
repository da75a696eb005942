package integration

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nsn-run/nsn-run/runtime"
)

// TestGCDuringSpawns: `nsn-run gc` (without --force), run back to back from
// another process over the same state dir, while 16 tasks start and finish
// through the library: none of them breaks, and nothing is left once they
// are done. Before spawns were marked in flight, every one of 12 such runs
// failed ("write task record: ... no such file or directory", "cannot
// start a container that has stopped").
func TestGCDuringSpawns(t *testing.T) {
	m, c := testManager(t)
	_, addr := containerdClient(t)
	nsnRun(t)
	global := []string{"--address", addr, "--namespace", testNamespace, "--state-dir", m.StateDir()}

	const spawns = 16
	var wg sync.WaitGroup
	var running atomic.Int32
	running.Store(spawns)
	errs := make(chan error, spawns)
	for range spawns {
		wg.Go(func() {
			defer running.Add(-1)
			res, err := m.Run(context.Background(), seedTask(uniqueID("gc"), "sh", "-c", "echo ok"), runtime.RunOptions{})
			if err == nil && (res.ExitCode != 0 || res.Stdout != "ok\n") {
				t.Errorf("task %s: exit %d stdout %q stderr %q", res.ID, res.ExitCode, res.Stdout, res.Stderr)
			}
			errs <- err
		})
	}
	sweeps := 0
	for running.Load() > 0 {
		if r := cli(t, global, "gc"); r.code != 0 {
			t.Errorf("gc: exit %d stderr %q", r.code, r.stderr)
		}
		sweeps++
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a task gc ran beside: %v", err)
		}
	}
	t.Logf("%d gc sweeps ran while %d tasks started and finished", sweeps, spawns)
	if sweeps < 2 {
		t.Errorf("only %d gc sweeps overlapped the spawns: the test proved nothing", sweeps)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
	if entries, _ := os.ReadDir(filepath.Join(m.StateDir(), "tasks")); len(entries) != 0 {
		t.Errorf("state dirs left: %v", entries)
	}
	// The marks of finished tasks are swept by the next gc.
	if r := cli(t, global, "gc"); r.code != 0 {
		t.Errorf("last gc: exit %d stderr %q", r.code, r.stderr)
	}
	for _, dir := range []string{"busy", "spawning", "waiting"} {
		if entries, _ := os.ReadDir(filepath.Join(m.StateDir(), dir)); len(entries) != 0 {
			t.Errorf("%s marks left after a gc: %v", dir, entries)
		}
	}
}
