// Package taskhandle holds what a backend keeps for each task in this
// process: the exit wait, the OOM flag, the log stream, and the goroutines
// that fill them, which all end with the handle's Close (Nomad's task
// handle in its store). Both backends build on it, so they record an exit
// the same way and stop their goroutines the same way.
package taskhandle

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/runtime"
)

// ErrClosed is the exit a Wait gets from a handle closed before the task's
// exit was recorded: this process no longer watches the task, which may
// still run in its daemon (a later backend can wait on it again).
var ErrClosed = fmt.Errorf("task handle closed: %w", errdefs.ErrUnavailable)

// ExitFunc blocks until the exit a subscription was made for, or until the
// context it was made under ends, and returns that exit.
type ExitFunc func() (runtime.ExitStatus, error)

// Handle is one task's state in this process.
type Handle struct {
	id string
	// ctx is the context every goroutine of the handle runs under: the
	// lifetime of the handle, not of a call, so Close can end them all.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	watching bool          // an exit wait is in place
	logs     chan struct{} // closed when the log stream ends; nil without one
	exited   chan struct{} // closed once the exit is recorded
	status   runtime.ExitStatus
	err      error

	oom atomic.Bool
}

// New returns an open handle for task id.
func New(id string) *Handle {
	ctx, cancel := context.WithCancel(context.Background())
	return &Handle{id: id, ctx: ctx, cancel: cancel, exited: make(chan struct{})}
}

// ID is the task's id.
func (h *Handle) ID() string { return h.id }

// WatchExit puts the task's exit wait in place, once per handle. subscribe
// runs now, under the handle's context, and must have subscribed to the
// exit when it returns: a task started after WatchExit returns cannot exit
// unseen. The ExitFunc it returns then runs in a goroutine of the handle,
// and what it returns is the task's exit, unless one was recorded first.
// When a wait is already in place WatchExit does nothing; when subscribe
// fails, the next call tries again. On a closed handle it returns
// ErrClosed.
func (h *Handle) WatchExit(subscribe func(ctx context.Context) (ExitFunc, error)) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return ErrClosed
	case h.watching:
		return nil
	}
	// Under the lock, so two callers do not both subscribe; Close cancels
	// the context before it takes the lock, so a subscription in flight
	// does not hold it up.
	wait, err := subscribe(h.ctx)
	if err != nil {
		return err
	}
	h.watching = true
	h.wg.Go(func() {
		st, err := wait()
		if err != nil && h.ctx.Err() != nil {
			// The wait ended because the handle closed, not because
			// the task exited.
			st, err = runtime.ExitStatus{}, ErrClosed
		}
		h.Exit(st, err)
	})
	return nil
}

// Watching reports whether an exit wait is in place (WatchExit succeeded).
func (h *Handle) Watching() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.watching
}

// Exit records how the task ended. Only the first exit recorded counts, so
// every Wait sees the same one; Exit reports whether this one did.
func (h *Handle) Exit(st runtime.ExitStatus, err error) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.exitLocked(st, err)
}

func (h *Handle) exitLocked(st runtime.ExitStatus, err error) bool {
	select {
	case <-h.exited:
		return false
	default:
	}
	h.status, h.err = st, err
	close(h.exited)
	return true
}

// HasExited reports whether the task's exit itself was recorded (not an
// error in its place): its process is known to be gone.
func (h *Handle) HasExited() bool {
	select {
	case <-h.exited:
	default:
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err == nil
}

// Exited is closed once the task's exit is recorded.
func (h *Handle) Exited() <-chan struct{} { return h.exited }

// Wait blocks until the task's exit is recorded, or ctx ends.
func (h *Handle) Wait(ctx context.Context) (runtime.ExitStatus, error) {
	select {
	case <-h.exited:
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.status, h.err
	case <-ctx.Done():
		return runtime.ExitStatus{}, ctx.Err()
	}
}

// SetOOMKilled records that the kernel's OOM killer killed a process of
// the task.
func (h *Handle) SetOOMKilled() { h.oom.Store(true) }

// OOMKilled reports whether SetOOMKilled was called.
func (h *Handle) OOMKilled() bool { return h.oom.Load() }

// StreamLogs runs capture, the task's log stream, in a goroutine of the
// handle; LogStream is closed when it returns. Only the first stream of a
// handle runs, and none on a closed handle: it reports whether capture
// runs.
func (h *Handle) StreamLogs(capture func(ctx context.Context)) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.logs != nil {
		return false
	}
	done := make(chan struct{})
	h.logs = done
	h.wg.Go(func() {
		defer close(done)
		capture(h.ctx)
	})
	return true
}

// LogStream is closed when the log stream StreamLogs started has ended;
// nil when none was started.
func (h *Handle) LogStream() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.logs
}

// Close ends the handle: a Wait still waiting returns ErrClosed, and the
// handle's goroutines are cancelled; Close returns once they all have
// ended. The task itself is left as it is. Closing twice is harmless.
func (h *Handle) Close() {
	// Cancel first: a subscription in flight (WatchExit holds the lock
	// through it) then returns, and the lock is free.
	h.cancel()
	h.mu.Lock()
	h.closed = true
	h.exitLocked(runtime.ExitStatus{}, ErrClosed)
	h.mu.Unlock()
	h.wg.Wait()
}

// Set is the handles of one backend, by task id.
type Set struct {
	mu      sync.Mutex
	handles map[string]*Handle
	closed  bool
}

// NewSet returns an empty set.
func NewSet() *Set { return &Set{handles: map[string]*Handle{}} }

// Get returns task id's handle, or nil.
func (s *Set) Get(id string) *Handle {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handles[id]
}

// Add puts a new handle for task id in the set and returns it. A handle
// the set held for id (one of an earlier task of that id) is closed. On a
// closed set the handle returned is closed too, and not kept.
func (s *Set) Add(id string) *Handle {
	h := New(id)
	s.mu.Lock()
	old := s.handles[id]
	if s.closed {
		s.mu.Unlock()
		h.Close()
		return h
	}
	s.handles[id] = h
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return h
}

// AddOrGet returns task id's handle, adding a new one if the set has none.
// On a closed set the handle returned is closed, and not kept.
func (s *Set) AddOrGet(id string) *Handle {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.handles[id]; h != nil {
		return h
	}
	h := New(id)
	if s.closed {
		h.Close() // holds no goroutine yet: returns at once
		return h
	}
	s.handles[id] = h
	return h
}

// Rewatch returns the handle a new exit wait for task id goes on (Recover):
// the one the set holds, unless that one's wait failed (it ended in an
// error of its own, not in the task's exit: the daemon unreachable for
// too long), which is replaced by a new one with its OOM flag. Without a
// handle for id it adds one.
func (s *Set) Rewatch(id string) *Handle {
	s.mu.Lock()
	old := s.handles[id]
	s.mu.Unlock()
	if old == nil || !old.failed() {
		return s.AddOrGet(id)
	}
	h := s.Add(id)
	if old.OOMKilled() {
		h.SetOOMKilled()
	}
	return h
}

// failed reports whether the handle's exit wait ended in an error.
func (h *Handle) failed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.exited:
		return h.err != nil
	default:
		return false
	}
}

// Remove takes task id's handle out of the set and closes it; without one
// it does nothing.
func (s *Set) Remove(id string) {
	s.mu.Lock()
	h := s.handles[id]
	delete(s.handles, id)
	s.mu.Unlock()
	if h != nil {
		h.Close()
	}
}

// Close closes every handle of the set and keeps none added later. Their
// goroutines are cancelled together, and Close returns once all have
// ended.
func (s *Set) Close() {
	s.mu.Lock()
	s.closed = true
	all := s.handles
	s.handles = map[string]*Handle{}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range all {
		wg.Go(h.Close)
	}
	wg.Wait()
}
