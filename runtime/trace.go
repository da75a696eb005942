package runtime

import (
	"context"
	"time"
)

// PhaseObserver receives how long each phase of a task's life took; the
// benchmark uses it to show where the time goes.
type PhaseObserver func(phase string, took time.Duration)

type phaseKey struct{}

// WithPhaseObserver returns a context whose spawns, waits and cleanups
// report their phases to obs.
func WithPhaseObserver(ctx context.Context, obs PhaseObserver) context.Context {
	return context.WithValue(ctx, phaseKey{}, obs)
}

// ObservePhase reports that phase began at start and ends now, if ctx
// carries an observer. Use as: defer ObservePhase(ctx, "name", time.Now()).
func ObservePhase(ctx context.Context, phase string, start time.Time) {
	if obs, ok := ctx.Value(phaseKey{}).(PhaseObserver); ok {
		obs(phase, time.Since(start))
	}
}

// Stopwatch reports consecutive phases: each Lap ends one phase and starts
// the next.
type Stopwatch struct {
	ctx   context.Context
	start time.Time
}

// NewStopwatch starts timing phases for ctx's observer (a no-op without one).
func NewStopwatch(ctx context.Context) *Stopwatch { return &Stopwatch{ctx: ctx, start: time.Now()} }

// Lap reports the phase that just ended and starts the next.
func (s *Stopwatch) Lap(phase string) {
	ObservePhase(s.ctx, phase, s.start)
	s.start = time.Now()
}
