package main

import (
	"context"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/log"

	"github.com/nsn-run/nsn-run/internal/shimfront"
)

// Stop is the shim's `delete` action. containerd runs it after every shim
// disconnect, a clean one too: after each task's delete, once the task's
// connection closes (cleanupAfterDeadShim, containerd 2.4.2), and that
// task's release waits for it. containerd's Stop always execs `runc delete
// --force`. After a clean delete runc keeps no state for the container (the
// shim's own delete ran `runc delete`), and runc's forced delete of a
// container it does not know removes the absent state dir and succeeds
// (TestRuncForgetsUnknownContainer): a process start (~24 ms on a loaded
// 2-CPU host) that does nothing, on every task's release. So when the
// bundle's runtime is runc and runc's state dir for the container is
// missing (shimfront.RuncForgot), Stop does the rest of containerd's Stop
// without it; otherwise (a shim that died with its container, another
// runtime whose state lives elsewhere, any doubt) containerd's Stop runs
// as is. nsn-shim (the front) does the same without starting nsn-shimd;
// nsn-shimd's Stop runs where the front hands a delete over.
func (p *nsnShim) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	bundle, ok := runcForgot(ctx, id)
	if !ok {
		return p.Shim.Stop(ctx, id)
	}
	unmount := func(target string) error { return mount.UnmountRecursive(target, 0) }
	s := shimfront.StopForgotten(bundle, unmount, func(msg string, err error) { log.G(ctx).WithError(err).Warn(msg) })
	return shim.StopStatus{Pid: s.Pid, ExitStatus: s.ExitStatus, ExitedAt: s.ExitedAt}, nil
}

// runcRoot is where runc keeps its state when the bundle's options name no
// root: containerd's default. A variable for the tests.
var runcRoot = shimfront.RuncRoot

// runcForgot returns the bundle containerd's Stop works on for id (beside
// the working directory), and whether runc certainly has no state for the
// container there.
func runcForgot(ctx context.Context, id string) (string, bool) {
	cwd, err := os.Getwd()
	if err != nil {
		return "", false
	}
	bundle := filepath.Join(filepath.Dir(cwd), id)
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", false
	}
	return bundle, shimfront.RuncForgot(bundle, ns, id, runcRoot)
}
