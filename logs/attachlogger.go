package logs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/moby/moby/api/pkg/stdcopy"
	"golang.org/x/sys/unix"
)

// AttachLoggerCommand is the (hidden) subcommand of nsn-logger and nsn-run
// that captures a Docker container's attach stream in a process of its
// own: `BINARY attach-logger CONFIG`, the stream on fd 3 and the task's
// capture lock on fd 4. A capture in the manager's process ends with that
// process: an outside review killed a detached task's supervisor, and the
// logs were then read again from dockerd's copy, which keeps 16 MiB
// stored and had lost the start (384,618 of 1,000,003 bytes,
// `truncated: false`).
const AttachLoggerCommand = "attach-logger"

// The descriptors an attach logger is given.
const (
	attachStreamFD = 3
	attachLockFD   = 4
)

// AttachLoggerArgs returns the arguments that follow the binary in an
// attach logger's command line, for the task whose state dir is dir.
func AttachLoggerArgs(dir string, lim Limits) []string {
	return []string{AttachLoggerCommand, loggerConfig(dir, lim)}
}

// RunAttachLogger is the attach logger process: it demultiplexes the
// attach stream on fd 3 (Docker's stdcopy framing) into dir's capped
// stdout and stderr files until the stream ends (the container's stdio
// closed), writes their meta files, and exits, holding fd 4 (the task's
// capture lock, taken by the backend) until then. Terminal and
// termination signals are ignored: the capture ends with the stream.
func RunAttachLogger(config string) error {
	dir, lim, err := parseLoggerConfig(config)
	if err != nil {
		return fmt.Errorf("attach logger config: %w", err)
	}
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	// Nothing but its own descriptors: a caller's inherited ones (a
	// shell's `flock 9`) would stay open, and held, for the task's whole
	// life (an outside review's lock stayed held after the supervisor
	// that passed it on was killed).
	if err := closeInherited(attachLockFD + 1); err != nil {
		return fmt.Errorf("attach logger: close inherited descriptors: %w", err)
	}
	lock := os.NewFile(attachLockFD, "capture lock")
	defer lock.Close()
	stream := os.NewFile(attachStreamFD, "attach stream")
	defer stream.Close()
	return CaptureMultiplexed(dir, lim, stream)
}

// CaptureMultiplexed captures a Docker multiplexed stream (stdcopy: an
// attach stream, or the logs API's) into dir's capped stdout and stderr
// files until it ends, and completes them.
func CaptureMultiplexed(dir string, lim Limits, stream io.Reader) error {
	stdout, err := Create(filepath.Join(dir, StdoutFile), lim)
	if err != nil {
		return err
	}
	stderr, err := Create(filepath.Join(dir, StderrFile), lim)
	if err != nil {
		_, _ = stdout.Close()
		return err
	}
	if _, err := stdcopy.StdCopy(stdout, stderr, stream); err != nil {
		// Cut off (the capturing process's Backend closed, the stream
		// broke): not complete, so that a later reader takes the logs
		// from dockerd's copy rather than this part of them (the first
		// run of TestDockerLogsOutliveTheirProcess read 0 of 1,000,003
		// bytes from a capture its Backend's Close had cut off).
		return errors.Join(err, stdout.Abandon(), stderr.Abandon())
	}
	_, oerr := stdout.Close()
	_, eerr := stderr.Close()
	return errors.Join(oerr, eerr)
}

// closeInherited closes this process's descriptors from `from` on that
// were inherited: those without close-on-exec. Go opens every descriptor
// of its own (the runtime's poller among them) close-on-exec, so they stay.
func closeInherited(from int) error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < from {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err == nil && flags&unix.FD_CLOEXEC == 0 {
			_ = unix.Close(fd)
		}
	}
	return nil
}
