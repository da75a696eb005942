package logs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/internal/procstat"
)

// FinishShimLogger completes the logs of a task that has exited, while its
// container is still in place: it tells the task's shim logger (named in
// dir/logger.pid by pid and start time) to read what its pipes still hold,
// and waits until the logger has written both streams' meta files. Only
// for a task known to have exited: a task still writing would lose what it
// writes next. An error leaves the logs to the usual end, EOF when the task
// is deleted.
func FinishShimLogger(ctx context.Context, dir string) error {
	if complete(dir) {
		return nil
	}
	pid, start, err := readLoggerPID(dir)
	if err != nil {
		return fmt.Errorf("finish logs: %w", err)
	}
	// Watching before the signal: no completion is missed.
	wake, stop, err := watchDir(dir)
	if err != nil {
		return fmt.Errorf("finish logs: %w", err)
	}
	defer stop()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, syscall.ESRCH) {
		return finished(dir)
	}
	if err != nil {
		return fmt.Errorf("finish logs: open logger %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	// The pidfd pins the process it was opened on. That process is the
	// task's logger if, read after the open, pid's start time is the one
	// the logger recorded (a process that reused the pid has another);
	// should the logger have exited in between, the signal fails (ESRCH).
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte(ShimLoggerCommand)) {
		return finished(dir)
	}
	if now, err := procstat.StartTime(pid); err != nil || now != start {
		return finished(dir)
	}
	if err := unix.PidfdSendSignal(pidfd, unix.SIGUSR1, nil, 0); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return finished(dir)
		}
		return fmt.Errorf("finish logs: signal logger %d: %w", pid, err)
	}
	if err := waitComplete(ctx, wake, dir); err != nil {
		return fmt.Errorf("finish logs: logger %d: %w", pid, err)
	}
	return nil
}

// watchDir wakes the returned channel for each file created or renamed
// into dir, through the process's shared inotify instance (dirWatcher),
// until stop.
func watchDir(dir string) (wake <-chan struct{}, stop func(), err error) {
	w, err := watcher()
	if err != nil {
		return nil, nil, err
	}
	return w.watch(dir)
}

// waitComplete waits until both meta files exist in dir, or ctx ends.
func waitComplete(ctx context.Context, wake <-chan struct{}, dir string) error {
	for !complete(dir) {
		select {
		case _, ok := <-wake:
			if !ok && !complete(dir) {
				return fmt.Errorf("watch %s ended (the directory was removed, or inotify failed): %w", dir, fs.ErrNotExist)
			}
			if !ok {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// WaitComplete waits until both streams' captures in dir have ended
// (their meta files written), or ctx ends.
func WaitComplete(ctx context.Context, dir string) error {
	if complete(dir) {
		return nil
	}
	wake, stop, err := watchDir(dir)
	if err != nil {
		return err
	}
	defer stop()
	return waitComplete(ctx, wake, dir)
}

// Complete reports whether both streams' captures in dir have ended.
func Complete(dir string) bool { return complete(dir) }

// complete reports whether both streams' captures have ended.
func complete(dir string) bool {
	for _, name := range []string{StdoutFile, StderrFile} {
		if _, err := os.Stat(filepath.Join(dir, name+metaSuffix)); err != nil {
			return false
		}
	}
	return true
}

// finished returns nil when the captures in dir are complete.
func finished(dir string) error {
	if complete(dir) {
		return nil
	}
	return fmt.Errorf("finish logs: the logger ended without completing the logs in %s: %w", dir, fs.ErrNotExist)
}

// readLoggerPID reads dir's LoggerPIDFile: the shim logger's pid and start
// time.
func readLoggerPID(dir string) (pid int, start string, err error) {
	raw, err := os.ReadFile(filepath.Join(dir, LoggerPIDFile))
	if err != nil {
		return 0, "", err
	}
	pidField, start, _ := strings.Cut(string(raw), " ")
	pid, err = strconv.Atoi(pidField)
	if err != nil || pid <= 1 || start == "" {
		return 0, "", fmt.Errorf("bad logger pid file %q", raw)
	}
	return pid, start, nil
}

// ShimLoggerPID is the pid of the running shim logger of the task whose
// state dir is dir (its LoggerPIDFile, checked against the process's
// start time, so a pid reused since is never returned).
func ShimLoggerPID(dir string) (int, error) {
	pid, start, err := readLoggerPID(dir)
	if err != nil {
		return 0, err
	}
	if now, err := procstat.StartTime(pid); err != nil || now != start {
		return 0, fmt.Errorf("shim logger %d of %s is gone: %w", pid, dir, fs.ErrNotExist)
	}
	return pid, nil
}
