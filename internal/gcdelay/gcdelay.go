// Package gcdelay holds off Go's garbage collector for a process's first
// moments, as the Go compiler does at its start (cmd/compile's
// AdjustStartingHeap). nsn-run's programs start often and do most of
// their work at once: the CLI runs a task and exits, the shim serves a
// task's create and start right after its own start. In both, the
// collections of the first second find little to free and take CPU from
// the task being started.
package gcdelay

import (
	"os"
	"runtime/debug"
	"sync"
	"time"
)

// Start turns the collector off for offFor, bounded by limit bytes of
// heap (where it collects again), and then sets it back as it was. If
// settled is not nil, it runs after that, in the timer's goroutine. The
// returned end does the same at once, if the timer has not yet. An
// operator's GOGC or GOMEMLIMIT wins: Start then changes nothing, settled
// never runs and end does nothing.
func Start(offFor time.Duration, limit int64, settled func()) (end func()) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	previousLimit := debug.SetMemoryLimit(limit)
	percent := debug.SetGCPercent(-1)
	var once sync.Once
	end = func() {
		once.Do(func() {
			debug.SetGCPercent(percent)
			debug.SetMemoryLimit(previousLimit)
			if settled != nil {
				settled()
			}
		})
	}
	time.AfterFunc(offFor, end)
	return end
}
