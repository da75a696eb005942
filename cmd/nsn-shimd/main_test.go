package main

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
)

// TestGCDelayPluginHoldsTheCollector: the shim's plugins include the hold,
// and its init, which containerd's run calls after it has set the shim's
// collector to 40% (TestCopiesThisContainerd says when to check that
// again), turns the collector off until gcOffFor.
func TestGCDelayPluginHoldsTheCollector(t *testing.T) {
	found := false
	for _, r := range registry.Graph(func(*plugin.Registration) bool { return false }) {
		found = found || r.URI() == plugins.InternalPlugin.String()+".nsn-gc-delay"
	}
	if !found {
		t.Fatalf("no %s.nsn-gc-delay among the registered plugins: the shim would serve without the hold", plugins.InternalPlugin)
	}

	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	debug.SetGCPercent(40)
	debug.SetMemoryLimit(math.MaxInt64)
	if _, err := gcDelayPlugin.InitFn(nil); err != nil {
		t.Fatal(err)
	}
	p := debug.SetGCPercent(-1)
	limit := debug.SetMemoryLimit(-1)
	endGCHold()
	if p != -1 || limit != gcOffLimit {
		t.Fatalf("after the plugin's init: GC percent %d, memory limit %d; want -1 and %d", p, limit, gcOffLimit)
	}
	if p := debug.SetGCPercent(100); p != 40 {
		t.Fatalf("after the hold: GC percent %d; want containerd's 40 back", p)
	}
}
