package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/nsn-run/nsn-run/cgroups"
	"github.com/nsn-run/nsn-run/internal/mountinfo"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/task"
	"golang.org/x/sys/unix"
)

// TestGCDuringSpawns: `nsn-run gc` (without --force), run back to back from
// another process over the same state dir, while 16 tasks start and finish
// through the library: none of them breaks, and nothing is left once they
// are done. Before spawns were marked in flight, every one of 12 such runs
// failed ("write task record: ... no such file or directory", "cannot
// start a container that has stopped").
func TestGCDuringSpawns(t *testing.T) {
	m, c := testManager(t)
	_, addr := containerdClient(t)
	nsnRun(t)
	global := []string{"--address", addr, "--namespace", testNamespace, "--state-dir", m.StateDir()}

	const spawns = 16
	var wg sync.WaitGroup
	var running atomic.Int32
	running.Store(spawns)
	errs := make(chan error, spawns)
	for range spawns {
		wg.Go(func() {
			defer running.Add(-1)
			res, err := m.Run(context.Background(), seedTask(uniqueID("gc"), "sh", "-c", "echo ok"), runtime.RunOptions{})
			if err == nil && (res.ExitCode != 0 || res.Stdout != "ok\n") {
				t.Errorf("task %s: exit %d stdout %q stderr %q", res.ID, res.ExitCode, res.Stdout, res.Stderr)
			}
			errs <- err
		})
	}
	sweeps := 0
	for running.Load() > 0 {
		if r := cli(t, global, "gc"); r.code != 0 {
			t.Errorf("gc: exit %d stderr %q", r.code, r.stderr)
		}
		sweeps++
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a task gc ran beside: %v", err)
		}
	}
	t.Logf("%d gc sweeps ran while %d tasks started and finished", sweeps, spawns)
	if sweeps < 2 {
		t.Errorf("only %d gc sweeps overlapped the spawns: the test proved nothing", sweeps)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
	if entries, _ := os.ReadDir(filepath.Join(m.StateDir(), "tasks")); len(entries) != 0 {
		t.Errorf("state dirs left: %v", entries)
	}
	// A finished task's marks go with it, gc or not.
	if left := taskMarks(m.StateDir()); len(left) != 0 {
		t.Errorf("marks left by finished tasks: %v", left)
	}
}

// TestRunsStartWhileGCLoops: CleanupOrphans in two loops without a pause
// (a node agent's gc timer gone wrong, or gc run by several processes at
// once) over the state dir tasks run in: every Run completes, its holds
// let in before the next sweep, and nothing is left. An outside review's
// loop kept every Run from starting for 120 s before a hold waiting for a
// sweep was marked (runtime's sweepWaitLock): flock(2) keeps no queue,
// and the next sweep took the lock back between two polls of the hold.
func TestRunsStartWhileGCLoops(t *testing.T) {
	m, c := testManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	var sweeps atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := m.CleanupOrphans(ctx, false); err != nil {
					if ctx.Err() == nil {
						t.Errorf("gc: %v", err)
					}
					return
				}
				sweeps.Add(1)
			}
		})
	}
	const runs = 3
	for i := range runs {
		before := sweeps.Load()
		res, err := m.Run(ctx, seedTask(uniqueID("gcloop"), "sh", "-c", "echo ok"), runtime.RunOptions{})
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("run %d of %d beside two gc loops (%d sweeps): %v", i+1, runs, sweeps.Load(), err)
		}
		if res.ExitCode != 0 || res.Stdout != "ok\n" {
			t.Errorf("task %s: exit %d stdout %q stderr %q", res.ID, res.ExitCode, res.Stdout, res.Stderr)
		}
		if sweeps.Load() == before {
			t.Errorf("run %d: no sweep ran beside it: the test proved nothing", i+1)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d sweeps ran while %d tasks ran", sweeps.Load(), runs)
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
	if left := taskMarks(m.StateDir()); len(left) != 0 {
		t.Errorf("marks left: %v", left)
	}
}

// taskMarks are the lock files of tasks under stateDir (busy, spawning,
// waiting), without the state dir's own busy/.sweep-wait, which stays as
// sweep.lock does.
func taskMarks(stateDir string) []string {
	var left []string
	for _, dir := range []string{"busy", "spawning", "waiting"} {
		entries, _ := os.ReadDir(filepath.Join(stateDir, dir))
		for _, e := range entries {
			if dir != "busy" || e.Name() != ".sweep-wait" {
				left = append(left, dir+"/"+e.Name())
			}
		}
	}
	return left
}

// TestStateDirsShareANamespace: two Managers with state dirs of their own
// in one containerd namespace (two node agents, or an agent and an
// operator's CLI with another --state-dir). First the attack, on
// containers without the state-dir label (as nsn-run made them before it):
// the second Manager's plain gc removes the first's exited task before
// anyone waited on it, and its rm -f kills the first's running task. With
// the label, the
// second's gc (plain and forced), rm -f and kill leave the first's running
// and exited tasks alone, as they leave the lease of a spawn of the first's
// still in flight; the first then waits on its task (exit 3) and its own
// gc removes everything.
func TestStateDirsShareANamespace(t *testing.T) {
	ctx := context.Background()
	a, c := testManager(t)
	b, _ := testManager(t)
	nctx := namespaces.WithNamespace(ctx, testNamespace)
	exited := func(id string) {
		t.Helper()
		if _, err := a.Spawn(ctx, seedTask(id, "sh", "-c", "exit 3")); err != nil {
			t.Fatal(err)
		}
		ctr, err := c.LoadContainer(nctx, id)
		if err != nil {
			t.Fatal(err)
		}
		tk, err := ctr.Task(nctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := tk.Wait(nctx)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := tk.Status(nctx); err != nil || st.Status != client.Stopped {
			<-ch
		}
	}

	legacy, legacyBusy := uniqueID("legacy"), uniqueID("legacyb")
	exited(legacy)
	if _, err := a.Spawn(ctx, seedTask(legacyBusy, "sleep", "60")); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{legacy, legacyBusy} {
		// As an older nsn-run labelled them: without the state dir.
		if _, err := c.ContainerService().Update(nctx, containers.Container{ID: id, Labels: runtime.Labels(id, runtime.Owner{})}, "labels"); err != nil {
			t.Fatal(err)
		}
	}
	if removed, err := b.CleanupOrphans(ctx, false); err != nil || !slices.Contains(removed, "task "+legacy+" (stopped)") {
		t.Fatalf("b's gc of an unlabelled exited task of a's: removed %v, %v; want it removed (the attack)", removed, err)
	}
	if err := b.Remove(ctx, legacyBusy, true); err != nil {
		t.Fatalf("b's rm -f of an unlabelled running task of a's: %v; want it killed (the attack)", err)
	}
	for _, id := range []string{legacy, legacyBusy} {
		if _, err := c.LoadContainer(nctx, id); !errdefs.IsNotFound(err) {
			t.Fatalf("a's unlabelled task %s after b's gc and rm -f: %v; want it gone (the attack)", id, err)
		}
		_ = a.Cleanup(ctx, id)
	}

	busy, done, inFlight := uniqueID("busy"), uniqueID("done"), uniqueID("flight")
	if _, err := a.Spawn(ctx, seedTask(busy, "sleep", "60")); err != nil {
		t.Fatal(err)
	}
	exited(done)
	// A spawn of a's in flight holds a lease for its snapshot before its
	// container exists.
	lease, err := c.LeasesService().Create(nctx, leases.WithRandomID(), leases.WithLabels(runtime.Labels(inFlight, a.Owner())))
	if err != nil {
		t.Fatal(err)
	}
	for _, force := range []bool{false, true} {
		if removed, err := b.CleanupOrphans(ctx, force); err != nil || mentions(removed, busy, done, inFlight, lease.ID) {
			t.Errorf("b's gc (force %v): removed %v, %v", force, removed, err)
		}
	}
	for _, id := range []string{busy, done} {
		if err := b.Remove(ctx, id, true); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("b's rm -f %s: %v; want a refusal", id, err)
		}
		if err := b.Kill(ctx, id, syscall.SIGKILL, true); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("b's kill %s: %v; want a refusal", id, err)
		}
	}
	if sts, err := b.List(ctx); err != nil || len(sts) != 0 {
		t.Errorf("b lists %+v, %v", sts, err)
	}
	if st, err := a.Inspect(ctx, busy); err != nil || st.State != runtime.StateRunning {
		t.Errorf("a's busy task after b's calls: %+v, %v", st, err)
	}
	if res, err := a.Wait(ctx, done); err != nil || res.ExitCode != 3 {
		t.Errorf("a's wait on its exited task: %+v, %v; want exit 3", res, err)
	}
	removed, err := a.CleanupOrphans(ctx, true)
	if err != nil || !slices.Contains(removed, "lease "+lease.ID) || !slices.Contains(removed, fmt.Sprintf("task %s (running)", busy)) {
		t.Errorf("a's gc --force: removed %v, %v; want its task and its spawn's lease", removed, err)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
}

// TestDockerStateDirsShareADaemon: the same on dockerd, whose containers
// always carried their task's state dir: a second Manager's forced gc,
// rm -f and kill leave the first's running task alone.
func TestDockerStateDirsShareADaemon(t *testing.T) {
	ctx := context.Background()
	a, b := dockerManager(t), dockerManager(t)
	id := uniqueID("dbusy")
	if _, err := a.Spawn(ctx, task.Task{ID: id, Image: "busybox:latest", Command: []string{"sleep", "60"}}); err != nil {
		t.Fatal(err)
	}
	if removed, err := b.CleanupOrphans(ctx, true); err != nil || mentions(removed, id) {
		t.Errorf("b's gc --force: removed %v, %v", removed, err)
	}
	if err := b.Remove(ctx, id, true); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("b's rm -f: %v; want a refusal", err)
	}
	if err := b.Kill(ctx, id, syscall.SIGKILL, true); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("b's kill: %v; want a refusal", err)
	}
	if st, err := a.Inspect(ctx, id); err != nil || st.State != runtime.StateRunning {
		t.Errorf("a's task after b's calls: %+v, %v", st, err)
	}
	if err := a.Remove(ctx, id, true); err != nil {
		t.Errorf("a's rm -f: %v", err)
	}
	if l := dockerLeftovers(t); l != "" {
		t.Errorf("left behind: %s", l)
	}
}

// TestGCRemovesLeakedCgroups: a create given up on midway can leave the
// task's cgroup, /NAMESPACE/ID in every hierarchy, with no container and
// no runc state to delete it (an outside review interrupted run during the
// create 12 times: 23 cgroups left, and gc --force removed none). Such
// cgroups, made here as the interrupted creates left them, are removed by
// gc; a live task's, and an empty one whose id has runc state in the
// shim's root (another containerd's task with a namespace of the same
// name), stay.
func TestGCRemovesLeakedCgroups(t *testing.T) {
	ctx := context.Background()
	m, _ := testManager(t)
	live := uniqueID("live")
	if _, err := m.Spawn(ctx, seedTask(live, "sleep", "60")); err != nil {
		t.Fatal(err)
	}
	hierarchies := []string{"/sys/fs/cgroup"}
	if cgroups.Mode() != "unified" {
		hierarchies = hierarchies[:0]
		entries, err := os.ReadDir("/sys/fs/cgroup")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", e.Name(), testNamespace, live)); err == nil {
				hierarchies = append(hierarchies, filepath.Join("/sys/fs/cgroup", e.Name()))
			}
		}
	}
	if len(hierarchies) == 0 {
		t.Fatalf("no hierarchy holds the live task's cgroup /%s/%s", testNamespace, live)
	}
	leaked, held := uniqueID("leaked"), uniqueID("held")
	for _, h := range hierarchies {
		for _, id := range []string{leaked, held} {
			if err := os.MkdirAll(filepath.Join(h, testNamespace, id), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	runcState := filepath.Join("/run/containerd/runc", testNamespace, held)
	if err := os.MkdirAll(runcState, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.Remove(runcState)
		for _, h := range hierarchies {
			_ = os.Remove(filepath.Join(h, testNamespace, held))
		}
	})
	removed, err := m.CleanupOrphans(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(removed, "cgroup /"+testNamespace+"/"+leaked) {
		t.Errorf("gc removed %v; want the leaked cgroup", removed)
	}
	for _, h := range hierarchies {
		for id, want := range map[string]bool{leaked: false, held: true, live: true} {
			if _, err := os.Stat(filepath.Join(h, testNamespace, id)); (err == nil) != want {
				t.Errorf("%s after gc: %v; want present %v", filepath.Join(h, testNamespace, id), err, want)
			}
		}
	}
	if err := m.Remove(ctx, live, true); err != nil {
		t.Fatal(err)
	}
}

// mentions reports whether any of gc's lines names one of ids (other
// lines are what other tests left in the namespace, such as a cgroup).
func mentions(removed []string, ids ...string) bool {
	for _, r := range removed {
		for _, id := range ids {
			if strings.Contains(r, id) {
				return true
			}
		}
	}
	return false
}

// TestGCDetachesLeakedIDMappedMounts: containerd's idmapped mounts of image
// layers (/tmp/ovl-idmappedN) live for the few milliseconds an idmapped
// overlay takes to mount; one whose shim was killed midway outlives it and
// pins the image's snapshot (an outside review left 4 by interrupting run
// during the create). gc detaches one that an earlier gc saw at least a
// minute before (the record's time is moved back here rather than waited
// for), and leaves one it sees for the first time, which may be a mount in
// progress. It leaves a mount at such a path that is not idmapped, and one
// that was recorded but has another mount stacked on it since (a review
// stacked a mount there and had gc detach the newer one): the path's
// topmost mount is not the one seen.
func TestGCDetachesLeakedIDMappedMounts(t *testing.T) {
	ctx := context.Background()
	probe := t.TempDir()
	m, _ := testManagerBackend(t, func(c *containerd.Config) { c.ProbeDir = probe }, func(*runtime.Config) {})
	userns := userNamespaceFD(t)
	mountAt := func(idmapped bool) string {
		t.Helper()
		dir, err := os.MkdirTemp(os.TempDir(), "ovl-idmapped")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			for unix.Unmount(dir, unix.MNT_DETACH) == nil {
			}
			_ = os.Remove(dir)
		})
		if !idmapped {
			if err := unix.Mount(t.TempDir(), dir, "", unix.MS_BIND, ""); err != nil {
				t.Fatal(err)
			}
			return dir
		}
		idmappedMount(t, t.TempDir(), dir, userns)
		return dir
	}
	mounted := func(dir string) int {
		mounts, err := mountinfo.Read(mountinfo.Self)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, mt := range mounts {
			if mt.MountPoint == dir {
				n++
			}
		}
		return n
	}
	old, plain, stacked := mountAt(true), mountAt(false), mountAt(true)
	if removed, err := m.CleanupOrphans(ctx, false); err != nil || mentions(removed, old) {
		t.Fatalf("first gc: removed %v, %v; want the mounts only recorded", removed, err)
	}
	// As if that gc had run two minutes ago.
	seenPath := filepath.Join(probe, "idmapped-layer-mounts.json")
	data, err := os.ReadFile(seenPath)
	if err != nil {
		t.Fatal(err)
	}
	var seen map[string]int64
	if err := json.Unmarshal(data, &seen); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 {
		t.Errorf("the first gc recorded %v; want the two idmapped mounts only", seen)
	}
	for k := range seen {
		seen[k] -= 120
	}
	if data, err = json.Marshal(seen); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seenPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(t.TempDir(), stacked, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	fresh := mountAt(true)
	removed, err := m.CleanupOrphans(ctx, false)
	if err != nil || !mentions(removed, old) || mentions(removed, fresh) || mentions(removed, plain) || mentions(removed, stacked) {
		t.Errorf("second gc: removed %v, %v; want %s and not %s, %s or %s", removed, err, old, fresh, plain, stacked)
	}
	for dir, want := range map[string]int{old: 0, fresh: 1, plain: 1, stacked: 2} {
		if n := mounted(dir); n != want {
			t.Errorf("after the second gc: %d mounts at %s, want %d", n, dir, want)
		}
	}
}

// userNamespaceFD opens the user namespace of a child made for the test
// (container ids 0..65535 onto host 100000..): what an idmapped mount maps
// its owners through.
func userNamespaceFD(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "3600")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}},
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	return fd
}

// idmappedMount mounts a copy of src's mount at dst with its owners
// mapped through the user namespace userns, as containerd mounts an
// image layer for an idmapped overlay.
func idmappedMount(t *testing.T, src, dst string, userns int) {
	t.Helper()
	tree, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns)}
	err = unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr)
	need(t, err == nil, "idmapped mounts of %s: %v", src, err)
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		t.Fatal(err)
	}
}

// TestCLIStateDirsInMountNamespaces: two agents, each in a mount namespace
// of its own with its own directory at the same state-dir path (the CLI's
// default /var/lib/nsn-run, say), share one containerd namespace. An
// outside review ran gc --force in the second: it took the first's running
// task for its own and killed it, as it still does for a container
// labelled with the path alone (made before the state dir's id: the
// attack). Labelled with the state dir's id, the task is the first's, and
// the second's gc --force passes over it.
func TestCLIStateDirsInMountNamespaces(t *testing.T) {
	g := cliEnv(t)
	stateDir := g[slices.Index(g, "--state-dir")+1]
	other := t.TempDir()
	c, _ := containerdClient(t)
	nctx := namespaces.WithNamespace(context.Background(), testNamespace)
	gcElsewhere := func() cliResult {
		t.Helper()
		script := `mount --bind "$2" "$1" && exec "$0" gc --force --address "$3" --namespace "$4" --state-dir "$1"`
		cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script,
			nsnRun(t), stateDir, other, g[slices.Index(g, "--address")+1], testNamespace)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err != nil {
			t.Fatalf("gc --force in another mount namespace: %v: %s", err, stderr.String())
		}
		return cliResult{stdout: stdout.String(), stderr: stderr.String()}
	}

	legacy := uniqueID("mntns")
	if r := cli(t, g, "run", "-d", "--id", legacy, "busybox", "--", "sleep", "60"); r.code != 0 {
		t.Fatalf("run -d: exit %d stderr %q", r.code, r.stderr)
	}
	t.Cleanup(func() { cli(t, g, "rm", "-f", legacy) })
	pathOnly := runtime.Labels(legacy, runtime.Owner{StateDir: stateDir})
	if _, err := c.ContainerService().Update(nctx, containers.Container{ID: legacy, Labels: pathOnly}, "labels"); err != nil {
		t.Fatal(err)
	}
	if r := gcElsewhere(); !strings.Contains(r.stdout, "removed task "+legacy+" (running)") {
		t.Fatalf("the other mount namespace's gc --force: stdout %q; want the path-labelled task removed (the attack)", r.stdout)
	}

	id := uniqueID("mntns")
	if r := cli(t, g, "run", "-d", "--id", id, "busybox", "--", "sleep", "60"); r.code != 0 {
		t.Fatalf("run -d: exit %d stderr %q", r.code, r.stderr)
	}
	t.Cleanup(func() { cli(t, g, "rm", "-f", id) })
	if r := gcElsewhere(); strings.Contains(r.stdout, id) {
		t.Errorf("the other mount namespace's gc --force: stdout %q; want the task left alone", r.stdout)
	}
	if st := psStates(t, g)[id]; st != "running" {
		t.Errorf("the task after the other's gc --force: %q, want running", st)
	}
}

// TestGCEndsIdleShims: a shim of this containerd and namespace whose id
// names no container and under which nothing but task loggers runs serves
// nothing, whether containerd removed its bundle (its working directory)
// or not: a create given up on midway leaves one (an outside review: about
// 16 MB per leak, with its logger, that no gc removed), and so, now and
// then, do two deletes at once (TestConcurrentDestroy left one here) and
// a manager killed during a task's delete (TestBackgroundReleaseKilled,
// its bundle still there). gc ends it. A shim whose id names a container,
// or with another process under it, is left alone, as is containerd's run
// of the shim binary's delete action (an outside review: it has a shim's
// flags and works in the bundle of a task that may be gone). The shims here are
// stand-ins with a shim's arguments, each in a bundle named after its id.
func TestGCEndsIdleShims(t *testing.T) {
	ctx := context.Background()
	m, c := testManager(t)
	_, addr := containerdClient(t)
	dir := t.TempDir()
	idle, busy := filepath.Join(dir, "idle-shim"), filepath.Join(dir, "busy-shim")
	if err := os.WriteFile(idle, []byte("#!/bin/sh\necho started\nread x\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(busy, []byte("#!/bin/sh\nsleep 600 &\necho started\nread x\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	type shim struct {
		id     string
		pid    int
		exited chan struct{}
	}
	start := func(script string, removeBundle bool, action ...string) shim {
		t.Helper()
		id := uniqueID("shim")
		bundle := filepath.Join(dir, id)
		if err := os.Mkdir(bundle, 0o700); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(script, append([]string{"-namespace", testNamespace, "-id", id, "-address", addr}, action...)...)
		cmd.Dir = bundle
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its sleep goes with it
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Once it says so, its sleep (if any) runs under it.
		if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "started\n" {
			t.Fatalf("stand-in shim: %q, %v", line, err)
		}
		s := shim{id: id, pid: cmd.Process.Pid, exited: make(chan struct{})}
		go func() { _ = cmd.Wait(); close(s.exited) }()
		t.Cleanup(func() {
			stdin.Close()
			_ = syscall.Kill(-s.pid, syscall.SIGKILL)
			_ = cmd.Process.Kill()
			<-s.exited
			_ = os.RemoveAll(bundle)
		})
		if removeBundle {
			// As containerd removes a bundle: renamed to ".ID" first.
			hidden := filepath.Join(dir, "."+id)
			if err := os.Rename(bundle, hidden); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(hidden); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	leaked, withBundle, withChild, withContainer := start(idle, true), start(idle, false), start(busy, true), start(idle, false)
	// containerd's run of the shim binary's delete action, in the bundle
	// of a task whose container is gone: not a shim serving anything.
	deleting := start(idle, false, "-bundle", "BUNDLE", "delete")
	nctx := namespaces.WithNamespace(ctx, testNamespace)
	if _, err := c.NewContainer(nctx, withContainer.id, client.WithSpec(&oci.Spec{Version: "1.2.0"}), client.WithRuntime(task.DefaultRuntime, nil)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.ContainerService().Delete(nctx, withContainer.id) })
	removed, err := m.CleanupOrphans(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []shim{leaked, withBundle} {
		if !slices.Contains(removed, fmt.Sprintf("shim %s (pid %d)", s.id, s.pid)) {
			t.Errorf("gc removed %v; want the idle shim %s among them", removed, s.id)
		}
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			t.Errorf("the idle shim %d still runs after gc", s.pid)
		}
	}
	if mentions(removed, withChild.id, withContainer.id, deleting.id) {
		t.Errorf("gc removed %v; want none of %s (a process under it), %s (its container), %s (the delete action)", removed, withChild.id, withContainer.id, deleting.id)
	}
	for _, s := range []shim{withChild, withContainer, deleting} {
		select {
		case <-s.exited:
			t.Errorf("gc ended %s, which has a process under it, its container, or is the shim's delete action", s.id)
		default:
		}
	}
}
