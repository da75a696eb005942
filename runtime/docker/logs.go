package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"

	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/internal/taskhandle"
)

// captureLogs follows the container's logs from the logs API into the
// task's capped log files, as the log stream of its handle: while this
// process lives, or until the handle closes.
func (b *Backend) captureLogs(h *taskhandle.Handle, stateDir string) {
	h.StreamLogs(func(ctx context.Context) {
		_ = b.copyLogs(ctx, h.ID(), stateDir, true)
	})
}

// copyLogs reads the container's stdout and stderr, demultiplexed, into
// the task's capped log files.
func (b *Backend) copyLogs(ctx context.Context, id, stateDir string, follow bool) error {
	rc, err := b.client.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Follow: follow})
	if err != nil {
		return fmt.Errorf("logs of container %s: %w", id, err)
	}
	defer rc.Close()
	stdout, err := logs.Create(filepath.Join(stateDir, logs.StdoutFile), b.cfg.LogLimits)
	if err != nil {
		return err
	}
	stderr, err := logs.Create(filepath.Join(stateDir, logs.StderrFile), b.cfg.LogLimits)
	if err != nil {
		_, _ = stdout.Close()
		return err
	}
	out, errOut := &countingWriter{w: stdout}, &countingWriter{w: stderr}
	_, cerr := stdcopy.StdCopy(out, errOut, rc)
	if follow && cerr == nil {
		cerr = b.copyMissed(ctx, id, out, errOut)
	}
	_, oerr := stdout.Close()
	_, eerr := stderr.Close()
	return errors.Join(cerr, oerr, eerr)
}

// logRereadMax bounds the log a follow may have delivered for copyMissed
// to read it again. dockerd keeps one file of jsonLogMax (16 MiB) of a
// container's log, each line stored with a few dozen bytes of framing, and
// truncates it when full: below 512 KiB delivered even a log of 2-byte
// lines (about 32 bytes stored each) has not reached it, so nothing of the
// start was dropped and the bytes the follow delivered are the re-read's
// first. (Where the re-read holds less of a stream than the follow
// delivered, nothing is appended either.)
const logRereadMax = 512 << 10

// copyMissed appends what a follow of the container's log ended without.
// dockerd ends a follow once the container has stopped, and it can end
// before the container's last, unterminated line reached it: a sixteenth
// review's `printf AB` task reported empty output in 6 runs of 8 (a line
// with a newline was never lost). Once the container has stopped, its
// log is read again, whole, and each stream's bytes past those the follow
// delivered are appended.
func (b *Backend) copyMissed(ctx context.Context, id string, out, errOut *countingWriter) error {
	if out.n+errOut.n > logRereadMax {
		return nil
	}
	info, err := b.client.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil || info.Container.State == nil || info.Container.State.Running {
		return nil // not stopped: the follow ended for another reason
	}
	rc, err := b.client.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return fmt.Errorf("logs of container %s: %w", id, err)
	}
	defer rc.Close()
	var moreOut, moreErr bytes.Buffer
	reOut, reErr := &skipWriter{w: &moreOut, skip: out.n}, &skipWriter{w: &moreErr, skip: errOut.n}
	if _, err := stdcopy.StdCopy(reOut, reErr, rc); err != nil {
		return fmt.Errorf("logs of container %s: %w", id, err)
	}
	if reOut.skip > 0 || reErr.skip > 0 {
		return nil // less than the follow delivered: dockerd dropped the start
	}
	if _, err := out.w.Write(moreOut.Bytes()); err != nil {
		return err
	}
	_, err = errOut.w.Write(moreErr.Bytes())
	return err
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// skipWriter drops the first skip bytes written to it and passes the rest.
type skipWriter struct {
	w    io.Writer
	skip int64
}

func (s *skipWriter) Write(p []byte) (int, error) {
	if drop := min(s.skip, int64(len(p))); drop > 0 {
		s.skip -= drop
		if _, err := s.w.Write(p[drop:]); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return s.w.Write(p)
}

// finishLogs makes the logs of an exited task complete in its state dir: it
// waits for the handle's log capture to end, or, without one, reads them
// again from the logs API.
func (b *Backend) finishLogs(ctx context.Context, h *taskhandle.Handle) error {
	id := h.ID()
	if stream := h.LogStream(); stream != nil {
		select {
		case <-stream:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	info, err := b.client.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return fmt.Errorf("task %s: %w", id, err)
	}
	stateDir := info.Container.Config.Labels[runtime.LabelStateDir]
	if stateDir == "" {
		return fmt.Errorf("container %s has no %s label", id, runtime.LabelStateDir)
	}
	return b.copyLogs(ctx, id, stateDir, false)
}
