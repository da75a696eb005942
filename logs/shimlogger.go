package logs

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// ShimLoggerCommand is the (hidden) nsn-run subcommand the containerd shim
// runs as the task's logger.
const ShimLoggerCommand = "shim-logger"

// ShimLoggerArgs returns the query arguments for containerd's binary://
// log URI (cio.BinaryIO). The shim turns each query key into an argument
// followed by its value, in map order; a single key keeps the order fixed, so
// the shim always runs `BINARY shim-logger CONFIG`.
func ShimLoggerArgs(dir string, lim Limits) map[string]string {
	v := url.Values{}
	v.Set("dir", dir)
	v.Set("head", strconv.FormatInt(lim.HeadBytes, 10))
	v.Set("tail", strconv.FormatInt(lim.TailBytes, 10))
	return map[string]string{ShimLoggerCommand: v.Encode()}
}

// The descriptors the runc shim hands its logger binary.
const (
	shimStdoutFD = 3
	shimStderrFD = 4
	shimReadyFD  = 5
)

// RunShimLogger is the logger process containerd's runc shim starts for a
// task: the task's stdout on fd 3, stderr on fd 4, and fd 5 to close once
// ready. It captures both streams into dir until EOF. It ignores SIGTERM:
// the shim closes the pipes and then sends SIGTERM when the task is deleted,
// and what is still in the pipes must reach the files.
func RunShimLogger(config string) error {
	v, err := url.ParseQuery(config)
	if err != nil {
		return fmt.Errorf("shim logger config: %w", err)
	}
	dir := v.Get("dir")
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("shim logger config: dir %q is not absolute", dir)
	}
	var lim Limits
	if lim.HeadBytes, err = strconv.ParseInt(v.Get("head"), 10, 64); err != nil {
		return fmt.Errorf("shim logger config: head: %w", err)
	}
	if lim.TailBytes, err = strconv.ParseInt(v.Get("tail"), 10, 64); err != nil {
		return fmt.Errorf("shim logger config: tail: %w", err)
	}
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)

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
	if err := os.NewFile(shimReadyFD, "ready").Close(); err != nil {
		return fmt.Errorf("signal readiness: %w", err)
	}

	var wg sync.WaitGroup
	errs := make([]error, len(streams))
	for i, s := range streams {
		wg.Go(func() {
			pipe := os.NewFile(s.fd, s.name)
			defer pipe.Close()
			_, errs[i] = writers[i].CopyFrom(pipe)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
