package runtime

import (
	"context"
	"errors"
	"fmt"
	goruntime "runtime"
	"sync"
	"time"
)

// finishLogsWait bounds how long a Run in the background-release mode waits
// for the backend to complete a task's logs before it falls back to
// releasing the task first.
const finishLogsWait = 5 * time.Second

// backgroundReleaseWait bounds one background release: a daemon that
// hangs cannot hold Close (nor the task's busy lock) forever; what it
// left, gc removes.
const backgroundReleaseWait = 2 * time.Minute

// maxBackgroundReleases bounds the releases in flight per Manager: past it,
// Run releases its task itself before it returns, so that a busy node's
// releases cannot pile up behind its new tasks (back-pressure), and memory
// stays bounded.
var maxBackgroundReleases = max(2*goruntime.NumCPU(), 4)

// backgroundReleases tracks the task releases a Manager runs after Run has
// returned (Config.ReleaseInBackground).
type backgroundReleases struct {
	enabled bool
	mu      sync.Mutex
	running map[string]chan struct{}
	failed  []error
}

func newBackgroundReleases(enabled bool) *backgroundReleases {
	return &backgroundReleases{enabled: enabled, running: map[string]chan struct{}{}}
}

// await waits until no release of task id is in flight, or ctx ends.
func (r *backgroundReleases) await(ctx context.Context, id string) error {
	r.mu.Lock()
	done := r.running[id]
	r.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the release of task %s: %w", id, ctx.Err())
	}
}

var errTooManyReleases = errors.New("too many releases in flight")

// releaseLater releases task id (Cleanup) in the background. The release
// holds the task busy from before this returns (the caller still holds it
// too), so no sweep takes the task in between; should this process die,
// the lock goes with it and gc finds what is left.
func (m *Manager) releaseLater(id string) error {
	r := m.releases
	done := make(chan struct{})
	r.mu.Lock()
	if len(r.running) >= maxBackgroundReleases {
		r.mu.Unlock()
		return errTooManyReleases
	}
	r.running[id] = done
	r.mu.Unlock()
	// Not the caller's context: the release must not give up on the
	// hold (a sweep in another process holds the state dir a moment).
	unhold, err := m.hold(context.Background(), id)
	if err != nil {
		r.mu.Lock()
		delete(r.running, id)
		r.mu.Unlock()
		close(done)
		return err
	}
	go func() {
		// A context of its own: the caller's ends when Run returns,
		// and its phase observer expects no calls after that.
		ctx, cancel := context.WithTimeout(context.Background(), backgroundReleaseWait)
		err := m.cleanup(ctx, id)
		cancel()
		unhold()
		r.mu.Lock()
		delete(r.running, id)
		if err != nil {
			r.failed = append(r.failed, fmt.Errorf("background release: %w", err))
		}
		r.mu.Unlock()
		close(done)
	}()
	return nil
}

// Drain waits until every release running in the background
// (Config.ReleaseInBackground) has finished, or ctx ends, and returns the
// errors of those that failed since the last Drain (what they left, gc
// removes). Once it returns nil, the tasks Run returned have left nothing
// behind.
func (m *Manager) Drain(ctx context.Context) error {
	// The releases in flight now: ones that later Runs start do not keep
	// a busy Manager's Drain from returning.
	r := m.releases
	r.mu.Lock()
	pending := make([]chan struct{}, 0, len(r.running))
	for _, ch := range r.running {
		pending = append(pending, ch)
	}
	r.mu.Unlock()
	for _, done := range pending {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("wait for background releases: %w", ctx.Err())
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	err := errors.Join(r.failed...)
	r.failed = nil
	return err
}
