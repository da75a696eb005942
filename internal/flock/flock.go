// Package flock takes flock(2) locks that give up when a context ends.
package flock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// maxPoll bounds the pause between two tries of a lock another process
// holds.
const maxPoll = 50 * time.Millisecond

// Context takes how (unix.LOCK_SH or unix.LOCK_EX) on f, waiting while
// another holds it, until ctx ends (ctx.Err()). A free lock is taken even
// when ctx has ended. It tries without blocking and polls: a blocking
// flock cannot be interrupted (Go restarts the call after a signal), so a
// waiter given up on (`nsn-run wait` interrupted while a supervisor waits
// on the task) would stay blocked, and take the lock later behind its
// caller's back.
func Context(ctx context.Context, f *os.File, how int) error {
	pause := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return err
		}
		timer := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
		pause = min(2*pause, maxPoll)
	}
}

// Path opens (creating it, mode 0600) and locks path (how, as Context),
// waiting until ctx ends; unlock releases and closes it.
func Path(ctx context.Context, path string, how int) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := Context(ctx, f, how); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// maxTries bounds how often Mark retries a lock file that another holder
// removed under it.
const maxTries = 16

// Exclusive is Mark exclusive: one holder at a time, whose unlock
// removes the file.
func Exclusive(ctx context.Context, path string) (unlock func(), err error) {
	return Mark(ctx, path, unix.LOCK_EX)
}

// ErrKeptRemoved is Mark's error where path's file kept being removed
// under it (maxTries times).
var ErrKeptRemoved = errors.New("its lock file keeps being removed")

// Mark takes how (unix.LOCK_SH or unix.LOCK_EX) on path (creating it),
// waiting until ctx ends, as a mark others can test: several holders of a
// shared mark are fine. A holder checks, once it has the lock, that path
// still names the file it locked (a remover holds it exclusively, so one
// removed meanwhile marks nothing) and tries again with the new one.
// unlock removes the file where no other holder has it, so that a mark
// nobody holds leaves no file.
func Mark(ctx context.Context, path string, how int) (unlock func(), err error) {
	for range maxTries {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, err
		}
		if err := Context(ctx, f, how); err != nil {
			f.Close()
			return nil, err
		}
		if same, err := SameFile(path, f); err == nil && same {
			return func() { unmark(path, f) }, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("lock %s: %w", path, ErrKeptRemoved)
}

// unmark releases a lock Mark took, and removes its file when nobody else
// holds it: with the file locked exclusively, whoever opened it meanwhile
// finds it removed once they have the lock (sameFile) and takes a new one.
// Another holder keeps the file; the last one removes it.
func unmark(path string, f *os.File) {
	// A failed conversion may drop this holder's own lock first (flock(2):
	// not atomic): it is being released anyway.
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
		if same, _ := SameFile(path, f); same {
			_ = os.Remove(path)
		}
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	f.Close()
}

// Held reports whether some holder has a lock on path's file.
func Held(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

// SameFile reports whether path still names f's file.
func SameFile(path string, f *os.File) (bool, error) {
	held, err := f.Stat()
	if err != nil {
		return false, err
	}
	now, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	return os.SameFile(held, now), nil
}
