package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/internal/flock"
	"github.com/nsn-run/nsn-run/task"
)

// busyDir holds a lock file per task under the state dir. A process that
// is spawning a task, waiting on it or running it from start to cleanup
// holds a shared flock on the task's file, so every process over the same
// state dir (a node agent, `nsn-run gc`) can tell a task someone is
// working on (until it is done, what it made can look orphaned: a state
// dir without a container, a stopped container not yet waited on) from
// one that was left (the kernel drops a dead process's flock).
const busyDir = "busy"

// sweepLock is the state dir's lock between sweeps and new holds: a sweep
// (CleanupOrphans) holds it exclusively from its first look to its last
// removal, and hold takes it shared while it registers a task busy. So a
// task is either busy before a sweep looks, and kept, or registers after
// the sweep is done: a sweep never removes what a spawn that began during
// it made, nor frees its grants.
const sweepLock = "sweep.lock" // in the state dir itself, never removed

// spawningDir holds a lock file per spawn in flight, held exclusively by
// the spawning process: even a forced sweep leaves a spawn alone (what it
// made before it is done would look orphaned, and removing half of it
// leaves a running task without its record or id range).
const spawningDir = "spawning"

// waitingDir holds a lock file per task that serialises its waiters
// across processes: one enforces the deadline and records the Result, the
// others then read it.
const waitingDir = "waiting"

// sweepWaitLock, in busyDir, marks the holds waiting for a sweep to end:
// each takes it shared while it waits for the sweep lock, and a sweep
// begins only once nobody holds it (taking it exclusively for an
// instant), so the holds that waited for one sweep are in before the
// next. flock(2) keeps no queue: without the mark, sweeps in a row
// (CleanupOrphans in a loop, from any number of processes) took the sweep
// lock again between two polls of a waiting hold, and an outside review's
// loop kept every Run from starting for 120 s. Like sweepLock, it is never
// removed: removed by its last holder, as the tasks' marks are, it was
// removed under the next waiter often enough in a tight gc loop that a
// hold or a sweep gave up retrying ("its lock file keeps being removed",
// a second review: 3-8 failed Runs in 10 s of 16 runners beside 1-8 gc
// loops). Its name is no task id, so heldTasks (and every earlier nsn-run)
// passes over it, and a state dir gains no entry of its own.
const sweepWaitLock = ".sweep-wait"

// lockStateForHold takes the state dir's sweep lock shared, for a hold.
// Where a sweep has it, the hold marks itself waiting (sweepWaitLock)
// until it is in.
func (m *Manager) lockStateForHold(ctx context.Context) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(m.stateDir, sweepLock), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	unlock = func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	if err == nil {
		return unlock, nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		f.Close()
		return nil, err
	}
	waiting, err := m.lockSweepWait(ctx, unix.LOCK_SH)
	if err != nil {
		f.Close()
		return nil, err
	}
	defer waiting()
	if err := flock.Context(ctx, f, unix.LOCK_SH); err != nil {
		f.Close()
		return nil, err
	}
	return unlock, nil
}

// lockStateForSweep takes the state dir's sweep lock exclusively, for a
// sweep, once the holds that waited for an earlier sweep are in.
func (m *Manager) lockStateForSweep(ctx context.Context) (unlock func(), err error) {
	turn, err := m.lockSweepWait(ctx, unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	turn()
	return flock.Path(ctx, filepath.Join(m.stateDir, sweepLock), unix.LOCK_EX)
}

// lockSweepWait takes how on sweepWaitLock (made if missing).
func (m *Manager) lockSweepWait(ctx context.Context, how int) (unlock func(), err error) {
	dir := filepath.Join(m.stateDir, busyDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return flock.Path(ctx, filepath.Join(dir, sweepWaitLock), how)
}

// hold marks task id as being worked on by this process until the
// returned func is called. Holds nest: several in one process, or in
// several processes, are fine.
func (m *Manager) hold(ctx context.Context, id string) (release func(), err error) {
	return m.lockTask(ctx, busyDir, id, unix.LOCK_SH, true)
}

// holdSpawn marks task id's spawn in flight until release: exclusive, so
// a second spawn of the id waits, and every sweep, forced or not, skips it.
func (m *Manager) holdSpawn(ctx context.Context, id string) (release func(), err error) {
	return m.lockTask(ctx, spawningDir, id, unix.LOCK_EX, true)
}

// lockWaiter serialises task id's waiters across processes. A waiter can
// wait here for as long as the task runs (a supervisor is the first), so
// ctx ending ends the wait.
func (m *Manager) lockWaiter(ctx context.Context, id string) (release func(), err error) {
	return m.lockTask(ctx, waitingDir, id, unix.LOCK_EX, false)
}

// lockTask takes how (LOCK_SH or LOCK_EX) on dir/id under the state dir,
// waiting until ctx ends; registered ones take the sweep lock shared
// meanwhile, so no sweep is between its look and its removals while the
// lock appears.
func (m *Manager) lockTask(ctx context.Context, sub, id string, how int, registered bool) (release func(), err error) {
	if err := task.ValidateID(id); err != nil {
		return nil, err
	}
	if registered {
		unlock, err := m.lockStateForHold(ctx)
		if err != nil {
			return nil, fmt.Errorf("mark task %s busy: %w", id, err)
		}
		defer unlock()
	}
	dir := filepath.Join(m.stateDir, sub)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("mark task %s busy: %w", id, err)
	}
	// A sweeper that found the file unheld removes it while it holds its
	// exclusive lock: Mark then takes the new one.
	release, err = flock.Mark(ctx, filepath.Join(dir, id), how)
	if err != nil && sub == waitingDir && ctx.Err() != nil {
		return nil, fmt.Errorf("wait on task %s: gave up while another waiter (its supervisor, or another wait on it, in this process or another) has it: %w", id, err)
	}
	if err != nil {
		return nil, fmt.Errorf("mark task %s busy: %w", id, err)
	}
	return release, nil
}

// busyTasks returns the ids of the tasks some process holds over this
// state dir, and removes the lock files nobody holds. Call it with the
// sweep lock held exclusively.
func (m *Manager) busyTasks() (map[string]bool, error) { return m.heldTasks(busyDir) }

// spawningTasks are the spawns in flight (the same, of spawningDir).
func (m *Manager) spawningTasks() (map[string]bool, error) { return m.heldTasks(spawningDir) }

// heldTasks returns the ids whose lock file under sub some process holds,
// and removes the unheld ones. Call it with the sweep lock held
// exclusively.
func (m *Manager) heldTasks(sub string) (map[string]bool, error) {
	dir := filepath.Join(m.stateDir, sub)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read busy tasks: %w", err)
	}
	busy := map[string]bool{}
	for _, e := range entries {
		id := e.Name()
		if task.ValidateID(id) != nil {
			continue
		}
		path := filepath.Join(dir, id)
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("read busy tasks: %w", err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case errors.Is(err, unix.EWOULDBLOCK):
			busy[id] = true
		case err == nil:
			// Nobody holds it: its holders are done or dead.
			if same, _ := flock.SameFile(path, f); same {
				_ = os.Remove(path)
			}
			_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		default:
			f.Close()
			return nil, fmt.Errorf("read busy tasks: %w", err)
		}
		f.Close()
	}
	return busy, nil
}

// spawning reports whether task id's spawn is in flight in some process.
func (m *Manager) spawning(id string) bool {
	f, err := os.Open(filepath.Join(m.stateDir, spawningDir, id))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}
