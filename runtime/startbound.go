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
