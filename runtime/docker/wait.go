package docker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/internal/taskhandle"
)

// watchExit subscribes to the container's exit under its handle's context:
// the wait outlives the call that registers it and ends with the handle.
func (b *Backend) watchExit(h *taskhandle.Handle, cond container.WaitCondition) error {
	return h.WatchExit(func(ctx context.Context) (taskhandle.ExitFunc, error) {
		res := b.client.ContainerWait(ctx, h.ID(), client.ContainerWaitOptions{Condition: cond})
		return func() (runtime.ExitStatus, error) { return b.exit(ctx, h.ID(), res) }, nil
	})
}

// exit reads the container's exit from its wait, and what dockerd knows of
// how it ended: its OOM kill and its time.
func (b *Backend) exit(ctx context.Context, id string, res client.ContainerWaitResult) (runtime.ExitStatus, error) {
	var st runtime.ExitStatus
	select {
	case r := <-res.Result:
		if r.Error != nil && r.Error.Message != "" {
			return st, fmt.Errorf("wait on container %s: %s", id, r.Error.Message)
		}
		st.Code = int(r.StatusCode)
	case err := <-res.Error:
		return st, fmt.Errorf("wait on container %s: %w", id, err)
	}
	info, err := b.client.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err == nil && info.Container.State != nil {
		st.OOMKilled = info.Container.State.OOMKilled
		if at, err := time.Parse(time.RFC3339Nano, info.Container.State.FinishedAt); err == nil {
			st.ExitedAt = at
		}
	}
	return st, nil
}

// Wait implements runtime.Backend. Once the container has exited, its logs
// are complete in the task's state dir: from this process's capture, or
// read again from the logs API if another process started the task.
func (b *Backend) Wait(ctx context.Context, id string) (runtime.ExitStatus, error) {
	h := b.tasks.Get(id)
	if h == nil || !h.Watching() {
		if _, err := b.client.ContainerInspect(ctx, id, client.ContainerInspectOptions{}); err != nil {
			return runtime.ExitStatus{}, fmt.Errorf("task %s: %w", id, err)
		}
		h = b.tasks.AddOrGet(id)
		if err := b.watchExit(h, container.WaitConditionNotRunning); err != nil {
			return runtime.ExitStatus{}, fmt.Errorf("wait on container %s: %w", id, err)
		}
	}
	st, err := h.Wait(ctx)
	if errors.Is(err, taskhandle.ErrClosed) {
		return runtime.ExitStatus{}, fmt.Errorf("wait on container %s: %w", id, err)
	}
	if err != nil {
		return runtime.ExitStatus{}, err
	}
	if err := b.finishLogs(ctx, h); err != nil {
		return runtime.ExitStatus{}, err
	}
	return st, nil
}

// Recover implements runtime.Backend.
func (b *Backend) Recover(ctx context.Context, h runtime.Handle) error {
	if err := h.CheckBackend(b.Name()); err != nil {
		return err
	}
	if _, err := b.client.ContainerInspect(ctx, h.ID, client.ContainerInspectOptions{}); err != nil {
		return fmt.Errorf("task %s: %w", h.ID, err)
	}
	if err := b.watchExit(b.tasks.Rewatch(h.ID), container.WaitConditionNotRunning); err != nil {
		return fmt.Errorf("wait on container %s: %w", h.ID, err)
	}
	return nil
}
