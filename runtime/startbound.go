package runtime

import (
	"context"
	"errors"
	"time"
)

// StartBound bounds a backend's start: the calls it makes to its daemon
// run under contexts it hands out (Within, Until), each also ended by the
// caller's. Expired then says whether a failed start ran out of such a
// bound while its caller still waited: the daemon did not answer in time.
// A backend's rollback can tell that apart from an ordinary failure even
// after its own deferred cancels ran, which end its contexts with
// context.Canceled, not a deadline.
type StartBound struct {
	caller, cur context.Context
}

// NewStartBound starts bounding a start made on the caller's ctx.
func NewStartBound(ctx context.Context) *StartBound { return &StartBound{caller: ctx, cur: ctx} }

// Within returns parent bounded by d, and makes it the bound Expired
// looks at.
func (s *StartBound) Within(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, d)
	s.cur = ctx
	return ctx, cancel
}

// Until returns parent bounded by deadline, and makes it the bound
// Expired looks at.
func (s *StartBound) Until(parent context.Context, deadline time.Time) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithDeadline(parent, deadline)
	s.cur = ctx
	return ctx, cancel
}

// Lift lifts the bound for what follows (a first unpack, whose time grows
// with the image): Expired is false until the next Within or Until.
func (s *StartBound) Lift() { s.cur = s.caller }

// Expired reports whether the current bound ran out while the caller
// still waited.
func (s *StartBound) Expired() bool {
	return s.caller.Err() == nil && errors.Is(s.cur.Err(), context.DeadlineExceeded)
}

// CallerEnded reports whether the caller's context has ended.
func (s *StartBound) CallerEnded() bool { return s.caller.Err() != nil }

// AnswerGrace is how long a call that makes something in the daemon may
// still answer once the start's caller has given up (Answered).
const AnswerGrace = time.Second

// Answered runs call, which makes something in the daemon (a lease, a
// snapshot, a container, a task), under ctx (one of this bound's
// contexts, or one derived from it), so that the daemon's answer is read
// even when the caller gives up meanwhile: a create cut in flight may
// still be made, after the rollback looked for it (an outside review's
// cancelled starts left containerd leases and containers, and dockerd
// containers, so, which held the task's id and its image until gc). Once
// the caller has ended (cancelled, or at its own deadline), the daemon
// has AnswerGrace more to answer. When ctx ends with the caller still
// waiting (the start's bound on the daemon ran out: it does not answer),
// the call ends at once with that deadline, as before; what a late
// answer makes, gc removes. A call ctx had ended before is not made. Safe
// to call from several goroutines of one start.
func (s *StartBound) Answered(ctx context.Context, call func(context.Context) error) error {
	return answeredWithin(ctx, s.caller, AnswerGrace, call)
}

// answeredWithin is Answered for a caller's context and a grace of its
// own.
func answeredWithin(ctx, caller context.Context, grace time.Duration, call func(context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cctx := context.WithoutCancel(ctx)
	if d, ok := ctx.Deadline(); ok {
		// The start's bound is a deadline the call keeps (the daemon
		// sees it, and the call ends with DeadlineExceeded); the
		// caller's own comes with the grace.
		if cd, ok := caller.Deadline(); ok && !cd.After(d) {
			d = d.Add(grace)
		}
		var cancelDeadline context.CancelFunc
		cctx, cancelDeadline = context.WithDeadline(cctx, d)
		defer cancelDeadline()
	}
	cctx, cancel := context.WithCancel(cctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		switch {
		case caller.Err() != nil:
			time.AfterFunc(grace, cancel)
		case !errors.Is(ctx.Err(), context.DeadlineExceeded):
			cancel() // the start's bound was cancelled, not run out
		}
	})
	defer stop()
	err := call(cctx)
	if d, ok := ctx.Deadline(); ok && err != nil && !time.Now().Before(d) {
		// The call ended at the deadline it shares with ctx, whose own
		// timer may not have fired yet: wait for it (it is due), so that
		// Expired reads the bound as run out from here on.
		<-ctx.Done()
	}
	return err
}
