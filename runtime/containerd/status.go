package containerd

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/runtime"
)

// Inspect implements runtime.Backend.
func (b *Backend) Inspect(ctx context.Context, id string) (runtime.Status, error) {
	ctx = b.ns(ctx)
	c, err := b.client.LoadContainer(ctx, id)
	if err != nil {
		return runtime.Status{}, fmt.Errorf("task %s: %w", id, err)
	}
	info, err := c.Info(ctx, client.WithoutRefreshedMetadata)
	if err != nil {
		return runtime.Status{}, fmt.Errorf("task %s: %w", id, err)
	}
	return b.status(ctx, c, info)
}

func (b *Backend) status(ctx context.Context, c client.Container, info containers.Container) (runtime.Status, error) {
	st := runtime.Status{ID: info.ID, Image: info.Image, State: runtime.StateCreated, CreatedAt: info.CreatedAt, Labels: info.Labels}
	tk, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("task %s: %w", info.ID, err)
	}
	ts, err := tk.Status(ctx)
	if err != nil {
		return st, fmt.Errorf("task %s status: %w", info.ID, err)
	}
	st.Pid = tk.Pid()
	switch ts.Status {
	case client.Running:
		st.State = runtime.StateRunning
	case client.Stopped:
		st.State, st.ExitCode, st.ExitedAt = runtime.StateStopped, int(ts.ExitStatus), ts.ExitTime
	case client.Paused, client.Pausing:
		st.State = runtime.StatePaused
	case client.Created:
		st.State = runtime.StateCreated
	default:
		st.State = runtime.StateUnknown
	}
	return st, nil
}

// List implements runtime.Backend: every container with nsn-run's manager
// label in the namespace.
func (b *Backend) List(ctx context.Context) ([]runtime.Status, error) {
	ctx = b.ns(ctx)
	cs, err := b.client.Containers(ctx, fmt.Sprintf("labels.%q==%s", runtime.LabelManager, runtime.ManagerName))
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]runtime.Status, 0, len(cs))
	for _, c := range cs {
		info, err := c.Info(ctx, client.WithoutRefreshedMetadata)
		if errdefs.IsNotFound(err) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", c.ID(), err)
		}
		st, err := b.status(ctx, c, info)
		if err != nil && !errdefs.IsNotFound(err) {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}
