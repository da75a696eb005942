package docker

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/nsn-run/nsn-run/runtime"
)

// Inspect implements runtime.Backend.
func (b *Backend) Inspect(ctx context.Context, id string) (runtime.Status, error) {
	info, err := b.client.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return runtime.Status{}, fmt.Errorf("task %s: %w", id, err)
	}
	c := info.Container
	if c.Config == nil || c.Config.Labels[runtime.LabelManager] != runtime.ManagerName {
		return runtime.Status{}, fmt.Errorf("task %s: %w", id, errdefs.ErrNotFound)
	}
	st := runtime.Status{ID: id, Image: c.Config.Image, State: runtime.StateUnknown, Labels: c.Config.Labels}
	if name := c.Config.Labels[runtime.LabelImage]; name != "" {
		st.Image = name // the container names its image by ID (RequestOptions.ImageID)
	}
	if at, err := time.Parse(time.RFC3339Nano, c.Created); err == nil {
		st.CreatedAt = at
	}
	if s := c.State; s != nil {
		st.Pid = uint32(s.Pid)
		switch {
		case s.Running && s.Paused:
			st.State = runtime.StatePaused
		case s.Running:
			st.State = runtime.StateRunning
		case s.Status == container.StateCreated:
			st.State = runtime.StateCreated
		default:
			st.State, st.ExitCode = runtime.StateStopped, s.ExitCode
			if at, err := time.Parse(time.RFC3339Nano, s.FinishedAt); err == nil {
				st.ExitedAt = at
			}
		}
	}
	return st, nil
}

// List implements runtime.Backend: containers with nsn-run's label.
func (b *Backend) List(ctx context.Context) ([]runtime.Status, error) {
	res, err := b.client.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", runtime.LabelManager+"="+runtime.ManagerName),
	})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]runtime.Status, 0, len(res.Items))
	for _, c := range res.Items {
		st, err := b.Inspect(ctx, c.Labels[runtime.LabelTaskID])
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}
