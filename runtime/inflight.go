package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/task"
)

// spawningDir holds a lock file per spawn in flight, under the state dir:
// a spawn holds its file's flock from before its state dir exists until it
// has started or rolled back, so every process over the same state dir (a
// node agent, `nsn-run gc`) can tell a spawn in flight (its state dir,
// container, lease, snapshot, grants all look orphaned until it is done)
// from one that died (the kernel drops a dead process's flock).
const spawningDir = "spawning"

// lockSpawn marks task id's spawn as in flight until the returned func is
// called. A second spawn of the same id in flight is ErrAlreadyExists.
func (m *Manager) lockSpawn(id string) (unlock func(), err error) {
	dir := filepath.Join(m.stateDir, spawningDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("mark spawn in flight: %w", err)
	}
	path := filepath.Join(dir, id)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("mark spawn in flight: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("task %s is being spawned already: %w", id, errdefs.ErrAlreadyExists)
		}
		return nil, fmt.Errorf("mark spawn in flight: %w", err)
	}
	return func() {
		// Removed while still locked: a sweeper that opened the file
		// before sees the lock, one after finds no file.
		_ = removeIfSame(path, f)
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// spawnsInFlight returns the ids of spawns in flight over this state dir,
// and removes the lock files of spawns that died.
func (m *Manager) spawnsInFlight() (map[string]bool, error) {
	dir := filepath.Join(m.stateDir, spawningDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read spawns in flight: %w", err)
	}
	inflight := map[string]bool{}
	for _, e := range entries {
		id := e.Name()
		if task.ValidateID(id) != nil {
			continue
		}
		path := filepath.Join(dir, id)
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // finished meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("read spawns in flight: %w", err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case errors.Is(err, unix.EWOULDBLOCK):
			inflight[id] = true
		case err == nil:
			// Nobody holds it: that spawn's process died. Remove the
			// file, unless it is already another spawn's new one.
			_ = removeIfSame(path, f)
			_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		default:
			f.Close()
			return nil, fmt.Errorf("read spawns in flight: %w", err)
		}
		f.Close()
	}
	return inflight, nil
}

// removeIfSame removes path if it still names f's file.
func removeIfSame(path string, f *os.File) error {
	held, err := f.Stat()
	if err != nil {
		return err
	}
	now, err := os.Stat(path)
	if err != nil || !os.SameFile(held, now) {
		return err
	}
	return os.Remove(path)
}
