package logs

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nsn-run/nsn-run/internal/procstat"
)

// ShimLoggerCommand is the (hidden) nsn-run subcommand the containerd shim
// runs as the task's logger.
const ShimLoggerCommand = "shim-logger"

// ShimLoggerArgs returns the query arguments for containerd's binary://
// log URI (cio.BinaryIO). The shim turns each query key into an argument
// followed by its value, in map order; a single key keeps the order fixed, so
// the shim always runs `BINARY shim-logger CONFIG`.
func ShimLoggerArgs(dir string, lim Limits) map[string]string {
	return map[string]string{ShimLoggerCommand: loggerConfig(dir, lim)}
}

// The descriptors the runc shim hands its logger binary.
const (
	shimStdoutFD = 3
	shimStderrFD = 4
	shimReadyFD  = 5
)

// LoggerPIDFile, in the task's state directory, names the running shim
// logger: its pid and start time, for FinishShimLogger.
const LoggerPIDFile = "logger.pid"

// RunShimLogger is the logger process containerd's runc shim starts for a
// task: the task's stdout on fd 3, stderr on fd 4, and fd 5 to close once
// ready. It captures both streams into dir until EOF. SIGTERM does not end
// a capture: the shim closes the pipes and then sends SIGTERM when the task
// is deleted, and what is still in the pipes must reach the files.
//
// SIGUSR1 (FinishShimLogger) ends the capture early: the task has exited,
// so nothing writes to the pipes any more (the shim holds their write ends
// until the task is deleted, so no EOF comes); the logger reads what the
// pipes still buffer and completes both files. The manager then has
// complete logs without waiting for the task's release. The logger itself
// stays until the shim's SIGTERM at the task's delete, as it would
// without SIGUSR1: a shim that signals its logger by pid then never
// reaches a process that reused it.
func RunShimLogger(config string) error {
	dir, lim, err := parseLoggerConfig(config)
	if err != nil {
		return fmt.Errorf("shim logger config: %w", err)
	}
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	// SIGTERM is kept, not acted on, from the start: after a finish it
	// ends the logger, and the shim's may come at any moment after the
	// meta files are written, which is when FinishShimLogger returns and
	// the task's release may begin. Ignored until the logger got to wait
	// for it, one that came in between was lost, and the logger lived on
	// until the shim's 12 s kill (a fresh-clone CI run: the test's logger
	// never exited). Before the pid file exists: a SIGUSR1 never finds
	// the default action (which would end the logger with the logs
	// incomplete).
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	finish := make(chan os.Signal, 1)
	signal.Notify(finish, syscall.SIGUSR1)

	streams := []struct {
		fd   uintptr
		name string
	}{{shimStdoutFD, StdoutFile}, {shimStderrFD, StderrFile}}
	writers := make([]*Writer, len(streams))
	for i, s := range streams {
		if writers[i], err = Create(filepath.Join(dir, s.name), lim); err != nil {
			return err
		}
	}
	// Non-blocking pipes go through Go's poller, so a read deadline can
	// wake a reader when SIGUSR1 asks for the end.
	var draining atomic.Bool
	pipes := make([]*os.File, len(streams))
	for i, s := range streams {
		if err := syscall.SetNonblock(int(s.fd), true); err != nil {
			return fmt.Errorf("%s pipe: %w", s.name, err)
		}
		pipes[i] = os.NewFile(s.fd, s.name)
	}
	if err := writePID(filepath.Join(dir, LoggerPIDFile)); err != nil {
		return err
	}
	if err := os.NewFile(shimReadyFD, "ready").Close(); err != nil {
		return fmt.Errorf("signal readiness: %w", err)
	}
	go func() {
		<-finish
		draining.Store(true)
		for _, p := range pipes {
			_ = p.SetReadDeadline(time.Now())
		}
	}()

	var wg sync.WaitGroup
	errs := make([]error, len(streams))
	for i := range streams {
		wg.Go(func() {
			defer pipes[i].Close()
			_, errs[i] = writers[i].CopyFrom(drainingReader{pipes[i], &draining})
		})
	}
	wg.Wait()
	if draining.Load() {
		// Complete: now wait for the shim's SIGTERM (or take the one
		// that came already).
		<-term
	}
	return errors.Join(errs...)
}

// parseLoggerConfig reads a logger's config (ShimLoggerArgs,
// AttachLoggerArgs): the task's state dir and the capture's limits.
func parseLoggerConfig(config string) (dir string, lim Limits, err error) {
	v, err := url.ParseQuery(config)
	if err != nil {
		return "", lim, err
	}
	dir = v.Get("dir")
	if !filepath.IsAbs(dir) {
		return "", lim, fmt.Errorf("dir %q is not absolute", dir)
	}
	if lim.HeadBytes, err = strconv.ParseInt(v.Get("head"), 10, 64); err != nil {
		return "", lim, fmt.Errorf("head: %w", err)
	}
	if lim.TailBytes, err = strconv.ParseInt(v.Get("tail"), 10, 64); err != nil {
		return "", lim, fmt.Errorf("tail: %w", err)
	}
	return dir, lim, nil
}

// loggerConfig is the config parseLoggerConfig reads.
func loggerConfig(dir string, lim Limits) string {
	v := url.Values{}
	v.Set("dir", dir)
	v.Set("head", strconv.FormatInt(lim.HeadBytes, 10))
	v.Set("tail", strconv.FormatInt(lim.TailBytes, 10))
	return v.Encode()
}

// drainingReader reads a pipe until EOF, or, once draining is set and its
// deadline has woken it, until the pipe is empty: everything written
// before the writer went away.
type drainingReader struct {
	pipe     *os.File
	draining *atomic.Bool
}

func (r drainingReader) Read(p []byte) (int, error) {
	n, err := r.pipe.Read(p)
	if !errors.Is(err, os.ErrDeadlineExceeded) || !r.draining.Load() {
		return n, err
	}
	// Past the deadline the poller refuses reads; Control reads the
	// descriptor directly, without waiting.
	rc, err := r.pipe.SyscallConn()
	if err != nil {
		return 0, err
	}
	var rerr error
	if err := rc.Control(func(fd uintptr) { n, rerr = syscall.Read(int(fd), p) }); err != nil {
		return 0, err
	}
	switch {
	case n > 0:
		return n, nil
	case rerr == nil, errors.Is(rerr, syscall.EAGAIN):
		return 0, io.EOF
	default:
		return 0, rerr
	}
}

// writePID writes this process's pid and start time to path, whole or not
// at all.
func writePID(path string) error {
	start, err := procstat.StartTime(os.Getpid())
	if err != nil {
		return fmt.Errorf("logger pid file: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d %s", os.Getpid(), start), 0o600); err != nil {
		return fmt.Errorf("logger pid file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("logger pid file: %w", err)
	}
	return nil
}
