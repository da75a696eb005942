// Package flock takes flock(2) locks that give up when a context ends.
package flock

import (
	"context"
	"errors"
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

// maxTries bounds how often Exclusive retries a lock file that another
// holder removed under it.
const maxTries = 16

// Exclusive takes an exclusive lock on path (creating it), waiting until
// ctx ends; unlock removes the file and releases the lock, so that a lock
// nobody holds leaves no file. A holder checks, once it has the lock, that
// path still names the file it locked (one removed meanwhile locks
// nothing) and tries again with the new one.
func Exclusive(ctx context.Context, path string) (unlock func(), err error) {
	for range maxTries {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, err
		}
		if err := Context(ctx, f, unix.LOCK_EX); err != nil {
			f.Close()
			return nil, err
		}
		held, herr := f.Stat()
		now, nerr := os.Stat(path)
		if herr == nil && nerr == nil && os.SameFile(held, now) {
			return func() {
				_ = os.Remove(path)
				_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
				f.Close()
			}, nil
		}
		f.Close()
	}
	return nil, errors.New("lock " + path + ": its file keeps being removed")
}
