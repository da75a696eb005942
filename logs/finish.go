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
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// FinishShimLogger completes the logs of a task that has exited, while its
// container is still in place: it tells the task's shim logger (its pid in
// dir/logger.pid) to read what its pipes still hold, and waits until the
// logger has written both streams' meta files and exited. Only for a task
// known to have exited: a task still writing would lose what it writes
// next. An error leaves the logs to the usual end, EOF when the task is
// deleted.
func FinishShimLogger(ctx context.Context, dir string) error {
	if complete(dir) {
		return nil
	}
	raw, err := os.ReadFile(filepath.Join(dir, LoggerPIDFile))
	if err != nil {
		return fmt.Errorf("finish logs: %w", err)
	}
	pid, err := strconv.Atoi(string(raw))
	if err != nil || pid <= 1 {
		return fmt.Errorf("finish logs: bad logger pid %q", raw)
	}
	pidfd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, syscall.ESRCH) {
		return finished(dir)
	}
	if err != nil {
		return fmt.Errorf("finish logs: open logger %d: %w", pid, err)
	}
	proc := os.NewFile(uintptr(pidfd), "logger")
	defer proc.Close()
	// The pidfd pins the process: once it is open, a check that pid
	// is still a logger holds for what the signal reaches (a logger
	// that exited since makes the signal fail with ESRCH).
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte(ShimLoggerCommand)) {
		return finished(dir)
	}
	if err := unix.PidfdSendSignal(pidfd, unix.SIGUSR1, nil, 0); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return finished(dir)
		}
		return fmt.Errorf("finish logs: signal logger %d: %w", pid, err)
	}
	if err := waitExit(ctx, proc); err != nil {
		return fmt.Errorf("finish logs: logger %d: %w", pid, err)
	}
	return finished(dir)
}

// waitExit waits until the process behind pidfd exits (a pidfd polls
// readable then), or ctx ends.
func waitExit(ctx context.Context, pidfd *os.File) error {
	rc, err := pidfd.SyscallConn()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = pidfd.SetReadDeadline(time.Now()) })
	defer stop()
	polled := false
	err = rc.Read(func(uintptr) bool {
		// The first call only asks the poller to wait for readable.
		done := polled
		polled = true
		return done
	})
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

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
