package main

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/process"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/runc"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	runcC "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
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
// missing, Stop does the rest of containerd's Stop without it; otherwise
// (a shim that died with its container, another runtime whose state lives
// elsewhere, any doubt) containerd's Stop runs as is.
func (p *nsnShim) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	bundle, ok := runcForgot(ctx, id)
	if !ok {
		return p.Shim.Stop(ctx, id)
	}
	return stopForgotten(ctx, bundle), nil
}

// runcRoot is where runc keeps its state when the bundle's options name no
// root: containerd's default. A variable for the tests.
var runcRoot = process.RuncRoot

// runcForgot returns the bundle containerd's Stop works on for id, and
// whether runc certainly has no state for the container: the bundle's
// runtime is runc, and its state dir (under the runc root the bundle's
// options name, in the namespace) does not exist. Any error reading that
// counts as "not certain".
func runcForgot(ctx context.Context, id string) (string, bool) {
	cwd, err := os.Getwd()
	if err != nil {
		return "", false
	}
	// The same bundle path containerd's Stop uses.
	bundle := filepath.Join(filepath.Dir(cwd), id)
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", false
	}
	// Another OCI runtime (options BinaryName) may keep no state dir
	// there at all: only runc's absence of state is known to be harmless.
	rt, err := runc.ReadRuntime(bundle)
	if err != nil && !errors.Is(err, fs.ErrNotExist) || rt != "" && filepath.Base(rt) != "runc" {
		return "", false
	}
	opts, err := runc.ReadOptions(bundle)
	if err != nil {
		return "", false
	}
	root := runcRoot
	if opts != nil && opts.Root != "" {
		root = opts.Root
	}
	_, err = os.Lstat(filepath.Join(root, ns, id))
	return bundle, errors.Is(err, fs.ErrNotExist)
}

// stopForgotten is containerd's Stop (2.4.2) after its runc delete: unmount
// the rootfs, and report the exit the shim recorded, else SIGKILL with the
// init pid. TestStopAsContainerd holds the two together, and
// TestStopCopiesThisContainerd fails when containerd's version changes.
func stopForgotten(ctx context.Context, bundle string) shim.StopStatus {
	fallbackExitedAt := time.Now()
	if err := mount.UnmountRecursive(filepath.Join(bundle, "rootfs"), 0); err != nil {
		log.G(ctx).WithError(err).Warn("failed to cleanup rootfs mount")
	}
	if exit, err := runc.ReadExitStatus(bundle); err == nil {
		return shim.StopStatus{ExitedAt: exit.Timestamp, ExitStatus: exit.Status, Pid: exit.Pid}
	} else if !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).Warn("failed to read recorded exit status")
	}
	pid, err := runcC.ReadPidFile(filepath.Join(bundle, process.InitPidFile))
	if err != nil {
		log.G(ctx).WithError(err).Warn("failed to read init pid file")
		pid = 0
	}
	return shim.StopStatus{ExitedAt: fallbackExitedAt, ExitStatus: 128 + int(unix.SIGKILL), Pid: pid}
}
