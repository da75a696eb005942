package gcdelay

import (
	"math"
	"runtime/debug"
	"testing"
	"time"
)

// unlimited is the memory limit of a process whose GOMEMLIMIT is unset.
const unlimited = math.MaxInt64

// gcPercent reads the collector's target without changing it.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func memoryLimit() int64 { return debug.SetMemoryLimit(-1) }

// withSettings clears the operator's variables (the runtime read them at
// the test binary's start: the settings themselves are set here) and sets
// the collector's target and memory limit as a test expects them.
func withSettings(t *testing.T, percent int, limit int64) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	debug.SetGCPercent(percent)
	debug.SetMemoryLimit(limit)
	t.Cleanup(func() { debug.SetGCPercent(100); debug.SetMemoryLimit(unlimited) })
}

func TestStartHoldsTheCollectorUntilEnd(t *testing.T) {
	withSettings(t, 40, 1<<40)
	var during [][2]int64
	end := Start(time.Hour, 32<<20, func() { during = append(during, [2]int64{int64(gcPercent()), memoryLimit()}) })
	if p, l := gcPercent(), memoryLimit(); p != -1 || l != 32<<20 {
		t.Fatalf("during the hold: GC percent %d, memory limit %d; want -1 and %d", p, l, 32<<20)
	}
	end()
	end()
	if p, l := gcPercent(), memoryLimit(); p != 40 || l != 1<<40 {
		t.Fatalf("after end: GC percent %d, memory limit %d; want the 40 and %d of before", p, l, int64(1)<<40)
	}
	if len(during) != 1 || during[0] != [2]int64{-1, 32 << 20} {
		t.Fatalf("last ran %d times, with GC percent and memory limit %v; want once, still in the hold (-1, %d)", len(during), during, 32<<20)
	}
}

func TestStartEndsItsHoldByItself(t *testing.T) {
	withSettings(t, 100, unlimited)
	last := make(chan [2]int64)
	end := Start(time.Millisecond, 32<<20, func() { last <- [2]int64{int64(gcPercent()), memoryLimit()} })
	select {
	case got := <-last:
		if got != [2]int64{-1, 32 << 20} {
			t.Fatalf("last saw GC percent %d and memory limit %d; want the hold's -1 and %d", got[0], got[1], 32<<20)
		}
	case <-time.After(time.Minute):
		t.Fatal("the hold did not end within a minute of its 1 ms")
	}
	end() // returns once the timer's end has restored the settings
	if p, l := gcPercent(), memoryLimit(); p != 100 || l != unlimited {
		t.Fatalf("after the timer's end: GC percent %d, memory limit %d; want 100 and unlimited", p, l)
	}
}

func TestOperatorSettingsWin(t *testing.T) {
	for _, env := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Run(env, func(t *testing.T) {
			withSettings(t, 100, unlimited)
			t.Setenv(env, "200")
			end := Start(time.Hour, 32<<20, func() { t.Error("last ran although the operator set " + env) })
			if p, l := gcPercent(), memoryLimit(); p != 100 || l != unlimited {
				t.Fatalf("with %s set: GC percent %d, memory limit %d; want them untouched", env, p, l)
			}
			end()
		})
	}
}
