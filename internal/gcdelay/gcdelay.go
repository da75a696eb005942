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

// Start turns the collector off for offFor, bounded by a memory limit of
// limit bytes (all the Go runtime's memory, not the heap alone: past it,
// the runtime collects again), and then sets both back as they were. If
// last is not nil, it runs at the end of the hold, before the settings
// come back: a forced collection there (debug.FreeOSMemory) is the only
// one, where after the restore it would follow the one the restored
// target starts at once. The hold ends in the timer's goroutine; the
// returned end ends it at once if the timer has not yet, and returns when
// it has ended. An operator's GOGC or GOMEMLIMIT wins: Start then changes
// nothing, last never runs and end does nothing.
func Start(offFor time.Duration, limit int64, last func()) (end func()) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	previousLimit := debug.SetMemoryLimit(limit)
	percent := debug.SetGCPercent(-1)
	var once sync.Once
	end = func() {
		once.Do(func() {
			if last != nil {
				last()
			}
			debug.SetGCPercent(percent)
			debug.SetMemoryLimit(previousLimit)
		})
	}
	time.AfterFunc(offFor, end)
	return end
}
