package runtime

import (
	"context"
	"errors"
	"testing"
	"time"
)

type leaseKey struct{}

// TestAnsweredCall: a create whose caller gives up meanwhile (cancelled,
// or at its own deadline) still gets its answer (its context stays alive
// for the grace, and ends after it), keeps the context's values (the
// namespace, the lease), and is cut at once when the start's own bound on
// the daemon ends with the caller still waiting, at that bound's deadline
// (DeadlineExceeded, as before); a call whose context had ended is not
// made.
func TestAnsweredCall(t *testing.T) {
	// guard bounds each wait below: none should come near it.
	const guard = 10 * time.Second
	t.Run("caller gives up", func(t *testing.T) {
		caller, cancelCaller := context.WithCancel(context.WithValue(context.Background(), leaseKey{}, "lease-1"))
		bounded, cancelBound := context.WithTimeout(caller, time.Hour)
		defer cancelBound()
		err := answeredWithin(bounded, caller, time.Hour, func(ctx context.Context) error {
			if ctx.Value(leaseKey{}) != "lease-1" {
				t.Error("the call's context lost the caller's values")
			}
			cancelCaller()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
				return nil // answered, the caller gone
			}
		})
		if err != nil {
			t.Errorf("a call whose caller gave up was cut: %v; want its answer", err)
		}
	})
	t.Run("grace ends", func(t *testing.T) {
		caller, cancelCaller := context.WithCancel(context.Background())
		err := answeredWithin(caller, caller, time.Millisecond, func(ctx context.Context) error {
			cancelCaller()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(guard):
				return errors.New("still running past the grace")
			}
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("after the grace: %v; want the call cut", err)
		}
	})
	t.Run("caller's deadline", func(t *testing.T) {
		caller, cancelCaller := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancelCaller()
		bounded, cancelBound := context.WithTimeout(caller, time.Hour)
		defer cancelBound()
		err := answeredWithin(bounded, caller, time.Hour, func(ctx context.Context) error {
			<-caller.Done()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
				return nil
			}
		})
		if err != nil {
			t.Errorf("a call whose caller's deadline passed was cut: %v; want its answer", err)
		}
	})
	t.Run("daemon bound runs out", func(t *testing.T) {
		caller, cancelCaller := context.WithCancel(context.Background())
		defer cancelCaller()
		bounded, cancelBound := context.WithTimeout(caller, time.Millisecond)
		defer cancelBound()
		err := answeredWithin(bounded, caller, time.Hour, func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				t.Error("the call's context has no deadline: containerd is not told the bound")
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(guard):
				return errors.New("still running past the start's bound")
			}
		})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the start's bound ran out, the caller waiting: %v; want the call cut at its deadline", err)
		}
		// The bound reads as run out as soon as the call returns (a
		// rollback that asked at once found it not yet expired, 1 run in
		// 8 of TestDockerStartUnanswered/create, and did not say the
		// daemon had not answered).
		if !errors.Is(bounded.Err(), context.DeadlineExceeded) {
			t.Errorf("the call returned %v at the bound's deadline, but the bound is not expired yet (%v)", err, bounded.Err())
		}
	})
	t.Run("daemon bound cancelled", func(t *testing.T) {
		caller, cancelCaller := context.WithCancel(context.Background())
		defer cancelCaller()
		bounded, cancelBound := context.WithCancel(caller)
		err := answeredWithin(bounded, caller, time.Hour, func(ctx context.Context) error {
			cancelBound()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(guard):
				return errors.New("still running past the start's bound")
			}
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the start's bound ended, the caller waiting: %v; want the call cut at once", err)
		}
	})
	t.Run("ended before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		called := false
		err := answeredWithin(ctx, ctx, time.Hour, func(context.Context) error { called = true; return nil })
		if called || !errors.Is(err, context.Canceled) {
			t.Errorf("a call whose context had ended: made %v, %v", called, err)
		}
	})
}
