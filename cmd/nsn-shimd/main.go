// Command nsn-shimd is containerd's runc v2 shim (containerd-shim-runc-v2,
// the same code, linked from the containerd module nsn-run builds with)
// with three changes. On containerd 2.3 and later nsn-run runs its runc tasks
// and shim group anchors with nsn-shim (cmd/nsn-shim: the program
// containerd runs, containerd.Config.ShimBinary), a small front that does
// the usual `start` and `delete` itself, the same way, and runs this
// program, from beside itself, as the shim that serves the tasks, and for
// every other action. Without them, or on older containerd, tasks keep
// containerd's own shim.
//
// First, how `start` decides that a shim group's running shim is gone.
// containerd's `start` for a grouped task finds the group's socket in
// use and dials it with a 100 ms timeout. Under CPU load the dial can time
// out although the shim is alive (11 of 1,000 such dials from new processes
// on a loaded 2-CPU host, docs/performance.md); `start` then removes the
// live shim's socket and starts a second shim for the group. That shim has
// no anchor: it exits when its own tasks end, racing tasks that joined it
// meanwhile ("ttrpc: closed", "connect: connection refused"), and two
// starts that both judged the shim dead race to bind ("bind: address
// already in use"). nsn-shimd asks first, patiently, and only a refused
// connection (nobody listens) or a missing socket counts as gone; then
// containerd's own start runs as before and starts a new shim.
//
// Second, `delete` (Stop) skips the `runc delete --force` exec that does
// nothing after a clean task delete (stop.go): a process start off every
// task's release.
//
// Third, the shim that serves tasks holds its garbage collector off for
// its first two seconds (gcDelayPlugin, below).
//
// Build it with -tags no_grpc (the Makefile's SHIMD_TAGS), as containerd
// builds its own runc shim: the tag leaves out the gRPC stubs of
// containerd's API packages, which a shim serving ttrpc never calls, and
// with them gRPC, net/http, TLS, and gRPC's request tracing, whose
// html/template keeps every exported method of the binary's types. A shim
// per task costs about 5 MiB less resident memory for it (20.9 MB against
// 12.0; internal/deps checks what it links).
package main

import (
	"context"
	"runtime/debug"
	"time"

	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task/plugin"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	"github.com/nsn-run/nsn-run/internal/gcdelay"
)

// The shim serves its task's create and start within its first moments,
// and its collections ran beside runc on the task's critical path: about
// 15 ms of the shim's 92 ms of CPU per trivial task (perf, 12 tasks,
// containerd 2.4.2) were the collector's, for a heap that the shim's
// start fills with what it keeps. containerd's RunShim sets the
// collector's target itself (40%) before it initialises the shim's
// plugins, so the hold comes as a plugin: from its init, the collector
// waits for gcOffFor, bounded by a memory limit of gcOffLimit; then one
// forced collection returns what the start no longer holds to the kernel,
// for the idle shim's memory, and containerd's target comes back. Only
// the shim that serves tasks loads plugins: a `start` or `delete` action
// is left as containerd runs it.
const (
	gcOffFor   = 2 * time.Second
	gcOffLimit = 32 << 20
)

// endGCHold ends the hold at once (gcdelay.Start's end): for tests.
var endGCHold = func() {}

var gcDelayPlugin = plugin.Registration{
	Type: plugins.InternalPlugin,
	ID:   "nsn-gc-delay",
	InitFn: func(*plugin.InitContext) (any, error) {
		endGCHold = gcdelay.Start(gcOffFor, gcOffLimit, debug.FreeOSMemory)
		return struct{}{}, nil
	},
}

func init() { registry.Register(&gcDelayPlugin) }

func main() {
	shim.RunShim(context.Background(), &nsnShim{Shim: manager.NewShimManager("io.containerd.runc.v2")})
}
