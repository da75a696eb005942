package docker

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// Stop implements runtime.Backend. The task is pid 1 of its own pid
// namespace: SIGKILL to it ends every process in the container, which is
// what `all` asks for.
func (b *Backend) Stop(ctx context.Context, id string, sig syscall.Signal, _ bool) error {
	name := strings.TrimPrefix(signalName(sig), "SIG")
	if _, err := b.client.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: name}); err != nil {
		if errdefs.IsConflict(err) { // not running
			return fmt.Errorf("task %s is not running: %w", id, errdefs.ErrNotFound)
		}
		if client.IsErrConnectionFailed(err) { // dockerd restarting: worth another try
			return fmt.Errorf("signal task %s: %w: %w", id, errdefs.ErrUnavailable, err)
		}
		return fmt.Errorf("signal task %s: %w", id, err)
	}
	return nil
}

func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGKILL:
		return "KILL"
	case syscall.SIGTERM:
		return "TERM"
	case syscall.SIGINT:
		return "INT"
	case syscall.SIGHUP:
		return "HUP"
	}
	return fmt.Sprint(int(sig))
}

// logDrainTimeout bounds how long Destroy waits for a log capture and an
// exit wait to end once their container is gone (dockerd ends both at
// once).
const logDrainTimeout = 30 * time.Second

// Destroy implements runtime.Backend: remove the container (killing it
// first) and its anonymous volumes, then wait until this process's log
// capture of it has ended, so that nothing writes into the task's state dir
// once Destroy returns (the Manager removes it next); the task's handle is
// closed. Idempotent.
func (b *Backend) Destroy(ctx context.Context, id string) error {
	h := b.tasks.Get(id)
	defer b.tasks.Remove(id)
	_, err := b.client.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	if h == nil {
		return nil
	}
	// Both end on their own once the container is gone: let them, so a
	// Wait still waiting gets the exit dockerd reports, and the capture
	// writes what it read. Closing the handle then cancels only what is
	// stuck.
	running := []<-chan struct{}{}
	if logs := h.LogStream(); logs != nil {
		running = append(running, logs)
	}
	if h.Watching() {
		running = append(running, h.Exited())
	}
	drain := time.NewTimer(logDrainTimeout)
	defer drain.Stop()
	for _, ch := range running {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-drain.C:
			return fmt.Errorf("%w: log capture or exit wait of task %s still running %s after its container was removed", errdefs.ErrUnavailable, id, logDrainTimeout)
		}
	}
	return nil
}
