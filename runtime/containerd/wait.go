package containerd

import (
	"context"
	"errors"
	"fmt"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"

	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/internal/taskhandle"
)

// oomResubscribe is how long watchOOM waits before subscribing again after
// the event stream broke (a containerd restart, say).
const oomResubscribe = time.Second

// watchOOM records containerd's /tasks/oom events for the namespace: one
// subscription shared by every task of this backend. ready is closed once
// the first subscription is in place, so no task starts before it.
func (b *Backend) watchOOM(ctx context.Context, ready chan struct{}) {
	first := true
	for ctx.Err() == nil {
		events, errs := b.client.EventService().Subscribe(ctx, `topic=="/tasks/oom"`)
		if first {
			close(ready)
			first = false
		}
	stream:
		for {
			select {
			case env := <-events:
				if env == nil || env.Namespace != b.cfg.Namespace {
					continue
				}
				ev, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					continue
				}
				if oom, ok := ev.(*apievents.TaskOOM); ok {
					// A task's handle, even before its wait: Wait
					// or Recover may subscribe later, and its
					// exit must still say OOM.
					b.tasks.AddOrGet(oom.ContainerID).SetOOMKilled()
				}
			case <-errs:
				break stream
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(oomResubscribe):
		}
	}
}

// watchExit subscribes to the task's exit under its handle's context: the
// wait outlives the call that registers it (Start registers it before the
// task starts, so no exit is missed) and ends with the handle.
func (b *Backend) watchExit(h *taskhandle.Handle, tk client.Task) error {
	err := h.WatchExit(func(ctx context.Context) (taskhandle.ExitFunc, error) {
		ch, err := tk.Wait(b.ns(ctx))
		if err != nil {
			return nil, err
		}
		return func() (runtime.ExitStatus, error) { return b.exit(ctx, h, ch) }, nil
	})
	if err != nil {
		return fmt.Errorf("wait on task %s: %w", h.ID(), err)
	}
	return nil
}

// exit reads the task's exit from its wait stream, subscribing again
// whenever the stream breaks.
func (b *Backend) exit(ctx context.Context, h *taskhandle.Handle, ch <-chan client.ExitStatus) (runtime.ExitStatus, error) {
	for {
		st := <-ch
		if st.Error() == nil {
			return exitStatus(h, st), nil
		}
		if ctx.Err() != nil {
			return runtime.ExitStatus{}, ctx.Err() // the handle closed
		}
		// The wait stream broke: containerd restarted or the connection
		// dropped. The shim and the task live on, and the shim keeps the
		// exit status: subscribe again once containerd answers.
		var err error
		if ch, err = b.rewait(ctx, h.ID()); err != nil {
			return runtime.ExitStatus{}, err
		}
	}
}

// exitStatus is the task's exit as containerd reported it, with the OOM
// kill its handle was told of.
func exitStatus(h *taskhandle.Handle, st client.ExitStatus) runtime.ExitStatus {
	return runtime.ExitStatus{Code: int(st.ExitCode()), ExitedAt: st.ExitTime(), OOMKilled: h.OOMKilled()}
}

// rewait subscribes to the exit of a task whose earlier wait broke, trying
// again every oomResubscribe for as long as containerd cannot be reached
// and the handle is open. It has no window of its own: until 2026-11-30 it
// gave up after two minutes, and a task whose containerd was down longer
// ran on with nobody enforcing its deadline. The waiter bounds it: at the
// deadline it kills the task, through its cgroup if containerd is still
// down (Stop), and stops waiting a while later (runtime's killWait).
func (b *Backend) rewait(ctx context.Context, id string) (<-chan client.ExitStatus, error) {
	for {
		pctx, cancel := context.WithTimeout(b.ns(ctx), pingTimeout)
		tk, err := b.loadTask(pctx, id)
		cancel()
		if errdefs.IsNotFound(err) {
			return nil, err // deleted meanwhile: nothing to wait for
		}
		if err == nil {
			ch, werr := tk.Wait(b.ns(ctx))
			if werr == nil {
				return ch, nil
			}
		}
		// containerd is down: retry after a pause, unless the handle
		// closes.
		b.reconnectNow()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(oomResubscribe):
		}
	}
}

// Wait implements runtime.Backend. Without a wait in place (another
// process started the task) it subscribes now; containerd answers at once
// for a task that already exited.
func (b *Backend) Wait(ctx context.Context, id string) (runtime.ExitStatus, error) {
	h := b.tasks.Get(id)
	if h == nil || !h.Watching() {
		tk, err := b.loadTask(ctx, id)
		if err != nil {
			return runtime.ExitStatus{}, err
		}
		h = b.tasks.AddOrGet(id)
		if err := b.watchExit(h, tk); err != nil {
			return runtime.ExitStatus{}, err
		}
	}
	st, err := h.Wait(ctx)
	if err != nil && !errors.Is(err, ctx.Err()) {
		return runtime.ExitStatus{}, fmt.Errorf("wait on task %s: %w", id, err)
	}
	return st, err
}

// Recover implements runtime.Backend: reattach the exit wait of a task
// started by an earlier manager process (or whose wait in this one failed).
func (b *Backend) Recover(ctx context.Context, h runtime.Handle) error {
	if err := h.CheckBackend(b.Name()); err != nil {
		return err
	}
	tk, err := b.loadTask(ctx, h.ID)
	if err != nil {
		return err
	}
	return b.watchExit(b.tasks.Rewatch(h.ID), tk)
}

var _ runtime.LogFinisher = (*Backend)(nil)

// FinishLogs implements runtime.LogFinisher: once this backend has seen the
// task exit (so nothing in its pid namespace writes any more), its shim
// logger drains the pipes and completes the logs, with the task still in
// place.
func (b *Backend) FinishLogs(ctx context.Context, id, stateDir string) error {
	h := b.tasks.Get(id)
	if h == nil || !h.HasExited() {
		return fmt.Errorf("finish the logs of task %s: its exit has not been seen: %w", id, errdefs.ErrFailedPrecondition)
	}
	return logs.FinishShimLogger(ctx, stateDir)
}
