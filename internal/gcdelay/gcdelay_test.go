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

func unsetOperatorSettings(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
}

func TestStartHoldsTheCollectorUntilEnd(t *testing.T) {
	unsetOperatorSettings(t)
	debug.SetGCPercent(40)
	t.Cleanup(func() { debug.SetGCPercent(100); debug.SetMemoryLimit(unlimited) })
	settled := 0
	end := Start(time.Hour, 32<<20, func() { settled++ })
	if p, l := gcPercent(), memoryLimit(); p != -1 || l != 32<<20 {
		t.Fatalf("during the hold: GC percent %d, memory limit %d; want -1 and %d", p, l, 32<<20)
	}
	end()
	end()
	if p, l := gcPercent(), memoryLimit(); p != 40 || l != unlimited {
		t.Fatalf("after end: GC percent %d, memory limit %d; want the 40 and the unlimited of before", p, l)
	}
	if settled != 1 {
		t.Fatalf("settled ran %d times; want once", settled)
	}
}

func TestStartEndsItsHoldByItself(t *testing.T) {
	unsetOperatorSettings(t)
	t.Cleanup(func() { debug.SetGCPercent(100); debug.SetMemoryLimit(unlimited) })
	debug.SetGCPercent(100)
	settled := make(chan [2]int64)
	Start(time.Millisecond, 32<<20, func() { settled <- [2]int64{int64(gcPercent()), memoryLimit()} })
	select {
	case got := <-settled:
		if got[0] != 100 || got[1] != unlimited {
			t.Fatalf("settled saw GC percent %d and memory limit %d; want 100 and unlimited", got[0], got[1])
		}
	case <-time.After(time.Minute):
		t.Fatal("the hold did not end within a minute of its 1 ms")
	}
}

func TestOperatorSettingsWin(t *testing.T) {
	for _, env := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Run(env, func(t *testing.T) {
			unsetOperatorSettings(t)
			t.Setenv(env, "200")
			debug.SetGCPercent(100)
			end := Start(time.Hour, 32<<20, func() { t.Error("settled ran although the operator set " + env) })
			if p, l := gcPercent(), memoryLimit(); p != 100 || l != unlimited {
				t.Fatalf("with %s set: GC percent %d, memory limit %d; want them untouched", env, p, l)
			}
			end()
		})
	}
}
