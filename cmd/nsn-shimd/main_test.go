package main

import (
	"math"
	"runtime/debug"
	"testing"
)

// TestGCDelayPluginHoldsTheCollector: the plugin's init, which containerd's
// run calls after it has set the shim's collector to 40%, turns the
// collector off (gcdelay restores it after gcOffFor).
func TestGCDelayPluginHoldsTheCollector(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	debug.SetGCPercent(40)
	t.Cleanup(func() { debug.SetGCPercent(100); debug.SetMemoryLimit(math.MaxInt64) })
	if _, err := gcDelayPlugin.InitFn(nil); err != nil {
		t.Fatal(err)
	}
	p := debug.SetGCPercent(100)
	limit := debug.SetMemoryLimit(-1)
	if p != -1 || limit != gcOffLimit {
		t.Fatalf("after the plugin's init: GC percent %d, memory limit %d; want -1 and %d", p, limit, gcOffLimit)
	}
}
