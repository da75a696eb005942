package taskhandle

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/runtime"
)

// ended reports whether ch is closed, without waiting.
func ended(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestExitRecordedOnce(t *testing.T) {
	h := New("t")
	defer h.Close()
	if h.HasExited() {
		t.Error("HasExited before any exit")
	}
	first := runtime.ExitStatus{Code: 3, ExitedAt: time.Unix(100, 0)}
	if !h.Exit(first, nil) {
		t.Fatal("the first exit was not recorded")
	}
	if h.Exit(runtime.ExitStatus{Code: 9}, errors.New("later")) {
		t.Error("a second exit was recorded")
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			st, err := h.Wait(context.Background())
			if err != nil || st != first {
				t.Errorf("Wait = %+v, %v; want the first exit %+v", st, err, first)
			}
		})
	}
	wg.Wait()
	if !ended(h.Exited()) {
		t.Error("Exited is open after the exit was recorded")
	}
	if !h.HasExited() {
		t.Error("HasExited is false after the exit was recorded")
	}
}

func TestHasExitedIgnoresErrors(t *testing.T) {
	h := New("t")
	defer h.Close()
	h.Exit(runtime.ExitStatus{}, errors.New("wait stream broke"))
	if h.HasExited() {
		t.Error("HasExited is true for an exit recorded as an error: the process may still run")
	}
}

func TestWaitHonoursContext(t *testing.T) {
	h := New("t")
	defer h.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait on a cancelled context = %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if _, err := h.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait past the deadline = %v", err)
	}
	if ended(h.Exited()) {
		t.Error("a Wait that gave up recorded an exit")
	}
}

// TestWatchExit: the subscription runs once, under the handle's context,
// and what its ExitFunc returns is the exit; a failed subscription is tried
// again by the next call.
func TestWatchExit(t *testing.T) {
	h := New("t")
	defer h.Close()
	if err := h.WatchExit(func(context.Context) (ExitFunc, error) { return nil, errdefs.ErrNotFound }); !errdefs.IsNotFound(err) {
		t.Fatalf("failed subscription: %v", err)
	}
	if h.Watching() {
		t.Fatal("watching after a failed subscription")
	}
	release := make(chan struct{})
	var subscribed atomic.Int32
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			err := h.WatchExit(func(ctx context.Context) (ExitFunc, error) {
				subscribed.Add(1)
				if ctx.Err() != nil {
					t.Error("subscribed under a done context")
				}
				return func() (runtime.ExitStatus, error) {
					<-release
					return runtime.ExitStatus{Code: 7, OOMKilled: true}, nil
				}, nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := subscribed.Load(); n != 1 {
		t.Errorf("subscribed %d times; want once", n)
	}
	if !h.Watching() || ended(h.Exited()) {
		t.Fatal("the exit wait is not in place, or an exit came before the task's")
	}
	close(release)
	st, err := h.Wait(context.Background())
	if err != nil || st.Code != 7 || !st.OOMKilled {
		t.Errorf("Wait = %+v, %v", st, err)
	}
}

// TestCloseEndsGoroutines: Close cancels the exit wait and the log stream
// and returns only once both goroutines have returned; a Wait still
// waiting gets ErrClosed, not the context's error.
func TestCloseEndsGoroutines(t *testing.T) {
	h := New("t")
	waitEnded, logsEnded := make(chan struct{}), make(chan struct{})
	err := h.WatchExit(func(ctx context.Context) (ExitFunc, error) {
		return func() (runtime.ExitStatus, error) {
			defer close(waitEnded)
			<-ctx.Done()
			return runtime.ExitStatus{}, ctx.Err()
		}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	h.StreamLogs(func(ctx context.Context) {
		defer close(logsEnded)
		<-ctx.Done()
	})
	logs := h.LogStream()
	if logs == nil || ended(logs) {
		t.Fatal("no log stream running")
	}
	waited := make(chan error, 1)
	go func() {
		_, err := h.Wait(context.Background())
		waited <- err
	}()
	h.Close()
	if !ended(waitEnded) || !ended(logsEnded) || !ended(logs) {
		t.Errorf("Close returned with goroutines running: exit wait ended %v, log stream ended %v", ended(waitEnded), ended(logsEnded))
	}
	if err := <-waited; !errors.Is(err, ErrClosed) || !errdefs.IsUnavailable(err) {
		t.Errorf("Wait across Close = %v; want ErrClosed", err)
	}
	h.Close() // twice: harmless
}

// TestCloseDuringSubscribe: a subscription in flight holds the handle's
// lock; Close cancels it first, so it returns, and nothing is left running.
func TestCloseDuringSubscribe(t *testing.T) {
	h := New("t")
	in := make(chan struct{})
	res := make(chan error, 1)
	go func() {
		res <- h.WatchExit(func(ctx context.Context) (ExitFunc, error) {
			close(in)
			<-ctx.Done()
			return nil, ctx.Err()
		})
	}()
	<-in
	h.Close()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Errorf("WatchExit cancelled by Close = %v", err)
	}
	if err := h.WatchExit(func(context.Context) (ExitFunc, error) {
		t.Error("subscribed on a closed handle")
		return nil, nil
	}); !errors.Is(err, ErrClosed) {
		t.Errorf("WatchExit on a closed handle = %v", err)
	}
	h.StreamLogs(func(context.Context) { t.Error("log stream on a closed handle") })
	if h.LogStream() != nil {
		t.Error("a closed handle has a log stream")
	}
}

func TestCloseKeepsRecordedExit(t *testing.T) {
	h := New("t")
	h.Exit(runtime.ExitStatus{Code: 137}, nil)
	h.Close()
	if st, err := h.Wait(context.Background()); err != nil || st.Code != 137 {
		t.Errorf("Wait after Close = %+v, %v; want the exit recorded before", st, err)
	}
}

// TestExitFuncErrorWhileOpen: a wait that fails on its own (the daemon
// gone) is the task's exit, error and all.
func TestExitFuncErrorWhileOpen(t *testing.T) {
	h := New("t")
	defer h.Close()
	broken := errors.New("stream broke")
	if err := h.WatchExit(func(context.Context) (ExitFunc, error) {
		return func() (runtime.ExitStatus, error) { return runtime.ExitStatus{}, broken }, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Wait(context.Background()); !errors.Is(err, broken) {
		t.Errorf("Wait = %v; want the wait's own error", err)
	}
}

func TestOOMFlag(t *testing.T) {
	h := New("t")
	defer h.Close()
	if h.OOMKilled() {
		t.Error("a new handle is OOM killed")
	}
	h.SetOOMKilled()
	if !h.OOMKilled() {
		t.Error("the OOM flag did not stick")
	}
}

func TestSet(t *testing.T) {
	s := NewSet()
	if s.Get("a") != nil {
		t.Fatal("an empty set has a handle")
	}
	a := s.AddOrGet("a")
	if s.AddOrGet("a") != a || s.Get("a") != a || a.ID() != "a" {
		t.Fatal("AddOrGet did not keep the handle")
	}
	// Add replaces, and closes what it replaces.
	logsEnded := make(chan struct{})
	a.StreamLogs(func(ctx context.Context) {
		defer close(logsEnded)
		<-ctx.Done()
	})
	a2 := s.Add("a")
	if a2 == a || s.Get("a") != a2 || !ended(logsEnded) {
		t.Error("Add did not replace and close the earlier handle")
	}
	// Remove closes.
	s.Remove("a")
	if s.Get("a") != nil || !ended(a2.Exited()) {
		t.Error("Remove left the handle in the set, or open")
	}
	s.Remove("a") // nothing there: harmless

	// Close closes every handle, together, and keeps none added later.
	var running []chan struct{}
	for _, id := range []string{"x", "y", "z"} {
		h := s.Add(id)
		done := make(chan struct{})
		running = append(running, done)
		if err := h.WatchExit(func(ctx context.Context) (ExitFunc, error) {
			return func() (runtime.ExitStatus, error) {
				defer close(done)
				<-ctx.Done()
				return runtime.ExitStatus{}, ctx.Err()
			}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	for i, done := range running {
		if !ended(done) {
			t.Errorf("goroutine %d runs after the set's Close", i)
		}
	}
	for _, id := range []string{"x", "y", "z"} {
		if s.Get(id) != nil {
			t.Errorf("%s still in the closed set", id)
		}
	}
	for _, h := range []*Handle{s.Add("late"), s.AddOrGet("later")} {
		if s.Get(h.ID()) != nil {
			t.Errorf("a closed set kept %s", h.ID())
		}
		if err := h.WatchExit(func(context.Context) (ExitFunc, error) { return nil, nil }); !errors.Is(err, ErrClosed) {
			t.Errorf("handle %s of a closed set is open: %v", h.ID(), err)
		}
	}
}
