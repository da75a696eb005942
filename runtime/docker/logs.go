package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/internal/flock"
	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/internal/taskhandle"
)

// attachLogs attaches to the container's stdout and stderr; done before
// its start, the stream then carries everything the container writes, as
// written. dockerd's own log (its local driver) keeps one file of
// jsonLogMax and truncates it when full, and a follow of the logs API
// ended there: a seventeenth review's seq 1 600000 kept 3,205,894 of
// 4,088,895 bytes, stdout_truncated false. The log API is read only for a
// task another process started (finishLogs).
func (b *Backend) attachLogs(ctx context.Context, id string) (client.HijackedResponse, error) {
	res, err := b.client.ContainerAttach(ctx, id, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		return client.HijackedResponse{}, fmt.Errorf("attach to container %s: %w", id, err)
	}
	return res.HijackedResponse, nil
}

// captureLockFile, in a task's state dir, is locked by the process that
// captures the task's logs for as long as it does: another process that
// wants them complete (a `logs -f`, a `wait`) waits for it, and takes
// them from dockerd's copy only where no capture holds it and none
// completed. An outside review's `logs -f` of a detached task had
// rewritten the supervisor's whole capture of 1,000,003 bytes with
// dockerd's copy (384,618), `truncated: false`.
const captureLockFile = "capture.lock"

// lockCapture takes the capture lock of the task whose state dir is
// stateDir, waiting while another process holds it, until ctx ends.
func lockCapture(ctx context.Context, stateDir string) (unlock func(), err error) {
	unlock, err = flock.Path(ctx, filepath.Join(stateDir, captureLockFile), unix.LOCK_EX)
	if err != nil {
		return nil, fmt.Errorf("lock the log capture in %s: %w", stateDir, err)
	}
	return unlock, nil
}

// captureAttached copies the attached stream into the task's capped log
// files, as the log stream of its handle: until the container's stdout
// and stderr close, or the handle closes. It owns att and the capture
// lock (unlock).
func (b *Backend) captureAttached(h *taskhandle.Handle, att client.HijackedResponse, stateDir string, unlock func()) {
	if !h.StreamLogs(func(ctx context.Context) {
		defer unlock()
		stop := context.AfterFunc(ctx, att.Close)
		defer stop()
		defer att.Close()
		_ = b.writeLogs(stateDir, func(stdout, stderr io.Writer) error {
			_, err := stdcopy.StdCopy(stdout, stderr, att.Reader)
			return err
		})
	}) {
		att.Close()
		unlock()
	}
}

// copyLogs reads the container's whole log from the logs API,
// demultiplexed, into the task's capped log files: the logs of a task
// another process started, once it has stopped. dockerd ends a follow of
// the logs when the container stops, at times before the last,
// unterminated line reached it (a sixteenth review: printf AB gave an
// empty stdout in 6 runs of 8); a read of the stopped container's log has
// it.
func (b *Backend) copyLogs(ctx context.Context, id, stateDir string) error {
	rc, err := b.client.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return fmt.Errorf("logs of container %s: %w", id, err)
	}
	defer rc.Close()
	return b.writeLogs(stateDir, func(stdout, stderr io.Writer) error {
		_, err := stdcopy.StdCopy(stdout, stderr, rc)
		return err
	})
}

// writeLogs runs copyInto with the task's capped stdout and stderr files.
func (b *Backend) writeLogs(stateDir string, copyInto func(stdout, stderr io.Writer) error) error {
	stdout, err := logs.Create(filepath.Join(stateDir, logs.StdoutFile), b.cfg.LogLimits)
	if err != nil {
		return err
	}
	stderr, err := logs.Create(filepath.Join(stateDir, logs.StderrFile), b.cfg.LogLimits)
	if err != nil {
		_, _ = stdout.Close()
		return err
	}
	cerr := copyInto(stdout, stderr)
	_, oerr := stdout.Close()
	_, eerr := stderr.Close()
	return errors.Join(cerr, oerr, eerr)
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
	unlock, err := lockCapture(ctx, stateDir)
	if err != nil {
		return err
	}
	defer unlock()
	if logs.Complete(stateDir) {
		return nil // the capture of the process that started it
	}
	return b.copyLogs(ctx, id, stateDir)
}
