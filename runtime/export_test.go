package runtime

import (
	"context"
	"path/filepath"
	"time"

	"github.com/nsn-run/nsn-run/internal/flock"

	"github.com/nsn-run/nsn-run/task"
)

// TaskDir is the task's private host directory, for the tests' checks of
// what a step left.
var TaskDir = (*Manager).taskDir

// OutputOf is the directory task id's container binds at /output, as its
// record names it.
func OutputOf(m *Manager, id string) string {
	rec, _ := m.readRecord(id)
	return m.outputOf(id, rec)
}

// DirOutput is an OutputFS that leaves the output dir a plain directory:
// the Manager's policy tests run without root (and so without mounts).
// Only collection's caps bound what a task leaves there.
type DirOutput struct{}

func (DirOutput) Prepare(string, task.Limits) error { return nil }
func (DirOutput) Release(string) error              { return nil }

// SetMaxBackgroundReleases changes the bound on releases in flight until
// the returned func restores it.
func SetMaxBackgroundReleases(n int) (restore func()) {
	old := maxBackgroundReleases
	maxBackgroundReleases = n
	return func() { maxBackgroundReleases = old }
}

// TakeOutputDest is Run's hold of its output directory, for the test of
// two runs given the same one.
func TakeOutputDest(dest string) (release func(), err error) {
	d, err := takeOutputDest(dest)
	if err != nil {
		return nil, err
	}
	return d.release, nil
}

// Hold is the busy mark a spawn, wait or run holds on its task.
func Hold(m *Manager, id string) (release func(), err error) {
	return m.hold(context.Background(), id)
}

// SetStopRetryFor changes how long a signal the daemon cannot take is
// tried again, until the returned func restores it.
func SetStopRetryFor(d time.Duration) (restore func()) {
	old := stopRetryFor
	stopRetryFor = d
	return func() { stopRetryFor = old }
}

// SetOutputDestRaceHook sets the hook makeOutputDest calls at each step
// (a racing user's moment), until the test ends.
func SetOutputDestRaceHook(t interface{ Cleanup(func()) }, hook func(step string)) {
	old := raceHook
	raceHook = hook
	t.Cleanup(func() { raceHook = old })
}

// HoldWithin is Hold, given up when ctx ends.
func HoldWithin(ctx context.Context, m *Manager, id string) (release func(), err error) {
	return m.hold(ctx, id)
}

// LockForSweep takes the state dir's lock as a sweep does, until unlock.
func LockForSweep(ctx context.Context, m *Manager) (unlock func(), err error) {
	return m.lockStateForSweep(ctx)
}

// HoldsWaiting reports whether a hold is marked waiting for a sweep.
func HoldsWaiting(m *Manager) bool {
	return flock.Held(filepath.Join(m.stateDir, busyDir, sweepWaitLock))
}

// BusyTasks are the tasks held busy; call it with the sweep lock held.
var BusyTasks = (*Manager).busyTasks
