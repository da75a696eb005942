package docker

import (
	"context"
	"errors"
	"fmt"
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
	_, cerr := stdcopy.StdCopy(stdout, stderr, rc)
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
	return b.copyLogs(ctx, id, stateDir, false)
}
