package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	cerrdefs "github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/task"
)

// daemonAtLeast reports whether the containerd under test is major.minor
// or later.
func daemonAtLeast(t *testing.T, c *client.Client, major, minor int) bool {
	t.Helper()
	v, err := c.Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.SplitN(strings.TrimPrefix(v.Version, "v"), ".", 3)
	maj, _ := strconv.Atoi(parts[0])
	var mnr int
	if len(parts) > 1 {
		mnr, _ = strconv.Atoi(parts[1])
	}
	return maj > major || maj == major && mnr >= minor
}

// TestTasksRunWithNsnShim: with ShimBinary, a task of the runc runtime
// runs in a shim of its own that is nsn-shim on containerd 2.3 and later
// (whose delete skips the runc exec that would do nothing, cmd/nsn-shim
// TestStopAsContainerd), containerd's own shim on older ones; its
// removal leaves nothing, its shim gone.
func TestTasksRunWithNsnShim(t *testing.T) {
	m, c := testManager(t)
	ctx := context.Background()
	id := uniqueID("shimexe")
	if _, err := m.Spawn(ctx, task.Task{ID: id, Image: "busybox:latest", Command: []string{"sleep", "300"}}); err != nil {
		t.Fatal(err)
	}
	st, err := m.Inspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	shim := ppid(t, int(st.Pid))
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", shim))
	if err != nil {
		t.Fatal(err)
	}
	// nsn-shim, the front containerd runs, starts nsn-shimd as the shim.
	want, err := filepath.EvalSymlinks(nsnShimd(t)) // exe is the resolved path
	if err != nil {
		t.Fatal(err)
	}
	if daemonAtLeast(t, c, 2, 3) && exe != want {
		t.Errorf("the task's shim runs %s, want %s", exe, want)
	} else if !daemonAtLeast(t, c, 2, 3) && !strings.HasSuffix(exe, "/containerd-shim-runc-v2") {
		t.Errorf("the task's shim runs %s, want containerd's containerd-shim-runc-v2 (nsn-shim needs containerd 2.3+)", exe)
	}
	if err := m.Remove(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
	if err := waitExit(shim, time.Minute); err != nil {
		t.Errorf("the task's shim: %v", err)
	}
}

// TestUnsafeShimBinary: containerd runs nsn-shim as root, so New refuses
// one that is not root's where containerd would run it (2.3 and later);
// on an older containerd, which never runs it, it stops nothing.
func TestUnsafeShimBinary(t *testing.T) {
	c, addr := containerdClient(t)
	unsafe := filepath.Join(t.TempDir(), "nsn-shim")
	if err := os.WriteFile(unsafe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(unsafe, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	b, err := containerd.New(context.Background(), containerd.Config{Address: addr, Namespace: testNamespace, LoggerBinary: nsnLogger(t), ShimBinary: unsafe})
	if err == nil {
		b.Close()
	}
	if daemonAtLeast(t, c, 2, 3) {
		if !cerrdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "not owned by root") {
			t.Errorf("New with a shim binary nobody owns: %v, want an invalid-argument error saying so", err)
		}
	} else if err != nil {
		t.Errorf("New on containerd before 2.3, which never runs nsn-shim: %v", err)
	}
}

// waitExit waits for process pid to exit (its pidfd turns readable), at
// most limit: a shim exits just after containerd has seen its connection
// close.
func waitExit(pid int, limit time.Duration) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pidfd of %d: %w", pid, err)
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(limit.Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for %d: %w", pid, err)
		}
		if n == 0 {
			return fmt.Errorf("process %d still runs after %s", pid, limit)
		}
		return nil
	}
}

// skipBeforeContainerd2 skips a shim group test on containerd 1.x, where
// TestShimGroupRefusedOnContainerd1 runs instead.
func skipBeforeContainerd2(t *testing.T) {
	t.Helper()
	if c, _ := containerdClient(t); !daemonAtLeast(t, c, 2, 0) {
		t.Skip("shim groups need containerd 2.x: TestShimGroupRefusedOnContainerd1")
	}
}

// groupedManager is a test Manager whose backend runs tasks in a shim
// group of the given size.
func groupedManager(t *testing.T, size int) (*runtime.Manager, *containerd.Backend, *client.Client) {
	t.Helper()
	c, addr := containerdClient(t)
	importBusybox(t, c, addr)
	b, err := containerd.New(context.Background(), containerd.Config{Address: addr, Namespace: testNamespace,
		LoggerBinary: nsnLogger(t), InitBinary: nsnInit(t), ShimGroup: "test", ShimGroupSize: size, ShimBinary: nsnShim(t)})
	if err != nil {
		t.Fatal(err)
	}
	m, err := runtime.New(runtime.Config{Backend: b, StateDir: t.TempDir()})
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = m.CleanupOrphans(context.Background(), true)
		_ = m.Close()
	})
	return m, b, c
}

// anchors lists the anchor containers in the test namespace, with the pid
// of each one's shim.
func anchors(t *testing.T, c *client.Client) map[string]int {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)
	cs, err := c.Containers(ctx, `labels."nsn.anchor-owner"`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, ctr := range cs {
		out[ctr.ID()] = 0
		if tk, err := ctr.Task(ctx, nil); err == nil {
			if st, err := tk.Status(ctx); err == nil && st.Status == client.Running {
				out[ctr.ID()] = ppid(t, int(tk.Pid()))
			}
		}
	}
	return out
}

func ppid(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	n, _ := strconv.Atoi(fields[1])
	return n
}

// TestShimGroupRefusedOnContainerd1: the feature is limited to the
// versions where it holds.
func TestShimGroupRefusedOnContainerd1(t *testing.T) {
	c, addr := containerdClient(t)
	if daemonAtLeast(t, c, 2, 0) {
		t.Skip("containerd 2.x runs shim groups: TestShimGroupSharesOneShim")
	}
	_, err := containerd.New(context.Background(), containerd.Config{Address: addr, Namespace: testNamespace,
		LoggerBinary: nsnLogger(t), InitBinary: nsnInit(t), ShimGroup: "test", ShimBinary: nsnShim(t)})
	if !cerrdefs.IsNotImplemented(err) || !strings.Contains(err.Error(), "containerd 2.3 or later") {
		t.Errorf("New with a shim group on containerd 1.x = %v, want a not-implemented error", err)
	}
}

// TestShimGroupNeedsShimBinary: a shim group runs its tasks with nsn-shim
// only; without it (or with a relative or missing path) New refuses.
func TestShimGroupNeedsShimBinary(t *testing.T) {
	_, addr := containerdClient(t)
	for name, shim := range map[string]string{"none": "", "relative": "bin/nsn-shim", "missing": "/nonexistent/nsn-shim"} {
		b, err := containerd.New(context.Background(), containerd.Config{Address: addr, Namespace: testNamespace,
			LoggerBinary: nsnLogger(t), InitBinary: nsnInit(t), ShimGroup: "test", ShimBinary: shim})
		if err == nil {
			b.Close()
		}
		if !cerrdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "shim") {
			t.Errorf("%s shim binary: %v, want an invalid-argument error naming it", name, err)
		}
	}
}

// TestShimGroupSharesOneShim: tasks run in the group's one shim, which the
// anchor keeps running between them (a task after a task joins the same
// shim); past the group's size a task gets its own shim; Close removes
// the anchor, and nothing is left.
func TestShimGroupSharesOneShim(t *testing.T) {
	skipBeforeContainerd2(t)
	m, b, c := groupedManager(t, 2)
	ctx := context.Background()
	shimOf := func(id string) int {
		st, err := m.Inspect(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return ppid(t, int(st.Pid))
	}
	sleeper := func(id string) task.Task {
		return task.Task{ID: id, Image: "busybox:latest", Command: []string{"sleep", "300"}}
	}
	var ids []string
	for i := range 3 {
		id := uniqueID(fmt.Sprintf("grp%d", i))
		if _, err := m.Spawn(ctx, sleeper(id)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	as := anchors(t, c)
	if len(as) != 1 {
		t.Fatalf("anchors %v, want one running", as)
	}
	var anchorShim int
	for _, shim := range as {
		anchorShim = shim
	}
	if anchorShim == 0 {
		t.Fatalf("anchor not running: %v", as)
	}
	checkAnchorConfined(t, c)
	// The group's shim is nsn-shimd, started by nsn-shim, whose start
	// joins a running group shim that is slow to answer instead of
	// starting a second one.
	want, err := filepath.EvalSymlinks(nsnShimd(t)) // exe is the resolved path
	if err != nil {
		t.Fatal(err)
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", anchorShim)); err != nil || exe != want {
		t.Errorf("the group's shim runs %q (%v), want %s", exe, err, want)
	}
	if s0, s1, s2 := shimOf(ids[0]), shimOf(ids[1]), shimOf(ids[2]); s0 != anchorShim || s1 != anchorShim || s2 == anchorShim {
		t.Errorf("shims %d %d %d, anchor's %d: want the first two in the anchor's shim, the third (past size 2) in its own", s0, s1, s2, anchorShim)
	}
	for _, id := range ids {
		if err := m.Remove(ctx, id, true); err != nil {
			t.Fatal(err)
		}
	}
	// With no task left the anchor keeps the shim: the next task joins it.
	res, err := m.Run(ctx, task.Task{ID: uniqueID("grpnext"), Image: "busybox:latest", Command: []string{"sh", "-c", "echo $PPID"}}, runtime.RunOptions{})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("run after the group emptied: %+v, %v", res, err)
	}
	if as := anchors(t, c); len(as) != 1 || as[firstKey(as)] != anchorShim {
		t.Errorf("anchors after the group emptied: %v, want the same one in shim %d", as, anchorShim)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind after Close: %s", l)
	}
	if err := procGone(anchorShim); err != nil {
		t.Error(err)
	}
}

func firstKey(m map[string]int) string {
	for k := range m {
		return k
	}
	return ""
}

// procGone reports an error if process pid still runs (a zombie counts
// as gone).
func procGone(pid int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); fields[0] == "Z" {
		return nil
	}
	return fmt.Errorf("process %d (the group's shim) still runs after Close", pid)
}

// TestShimGroupRecovers: a shim crash takes its group's tasks (their
// Results say so) and the next task starts a new anchor and shim; gc
// removes an anchor whose owner process is gone, and the group again
// starts a new one.
func TestShimGroupRecovers(t *testing.T) {
	skipBeforeContainerd2(t)
	m, _, c := groupedManager(t, 8)
	ctx := context.Background()
	victim := uniqueID("grpvictim")
	if _, err := m.Spawn(ctx, task.Task{ID: victim, Image: "busybox:latest", Command: []string{"sleep", "300"}}); err != nil {
		t.Fatal(err)
	}
	as := anchors(t, c)
	shim := as[firstKey(as)]
	if len(as) != 1 || shim == 0 {
		t.Fatalf("anchors %v, want one running", as)
	}
	// The shim dies: its task with it.
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if res, err := m.Wait(ctx, victim); err == nil && res.Reason == task.ReasonExited && res.ExitCode == 0 {
		t.Errorf("task of a crashed shim: %+v, want an error or a failure", res)
	}
	_ = m.Cleanup(ctx, victim)
	run := func(name string) {
		t.Helper()
		res, err := m.Run(ctx, task.Task{ID: uniqueID(name), Image: "busybox:latest", Command: []string{"echo", "ok"}}, runtime.RunOptions{})
		if err != nil || res.Stdout != "ok\n" {
			t.Fatalf("%s: %q, %v", name, res.Stdout, err)
		}
	}
	run("grpafter")
	// The dead anchor may linger until containerd has cleaned up after
	// its shim (Close removes it); one runs, in a new shim.
	live := running(anchors(t, c))
	if len(live) != 1 || live[firstKey(live)] == shim {
		t.Fatalf("running anchors after the crash: %v, want a new one (the old shim was %d)", live, shim)
	}

	// An anchor whose owner is gone (here: its label says so) is gc's.
	nctx := namespaces.WithNamespace(ctx, testNamespace)
	anchor, err := c.LoadContainer(nctx, firstKey(live))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anchor.SetLabels(nctx, map[string]string{"nsn.anchor-owner": "1-0"}); err != nil {
		t.Fatal(err)
	}
	removed, err := m.CleanupOrphans(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(removed, "anchor "+anchor.ID()) {
		t.Errorf("gc removed %v, want the orphaned anchor %s", removed, anchor.ID())
	}
	if as := anchors(t, c); as[anchor.ID()] != 0 || len(running(as)) != 0 {
		t.Errorf("anchors after gc: %v, want none running, %s gone", as, anchor.ID())
	}
	run("grpaftergc")
	if live := running(anchors(t, c)); len(live) != 1 {
		t.Errorf("running anchors after gc and a task: %v, want a new one", live)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind after Close: %s", l)
	}
}

// running keeps the anchors that run.
func running(as map[string]int) map[string]int {
	out := map[string]int{}
	for id, shim := range as {
		if shim != 0 {
			out[id] = shim
		}
	}
	return out
}

// checkAnchorConfined reads the running anchor's process from /proc: nobody,
// no capabilities, no new privileges, seccomp filtering, and a network
// namespace not the host's.
func checkAnchorConfined(t *testing.T, c *client.Client) {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)
	cs, err := c.Containers(ctx, `labels."nsn.anchor-owner"`)
	if err != nil || len(cs) != 1 {
		t.Fatalf("anchors %d, %v", len(cs), err)
	}
	tk, err := cs[0].Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := int(tk.Pid())
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"Uid": "65534", "CapEff": "0000000000000000", "CapBnd": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"}
	for line := range strings.SplitSeq(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		fields := strings.Fields(v)
		if w, ok := want[k]; ok && len(fields) > 0 {
			if fields[0] != w {
				t.Errorf("anchor %s: %s, want %s", k, fields[0], w)
			}
			delete(want, k)
		}
	}
	if len(want) != 0 {
		t.Errorf("anchor status lacks %v", want)
	}
	anchorNet, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		t.Fatal(err)
	}
	if hostNet, _ := os.Readlink("/proc/self/ns/net"); anchorNet == hostNet {
		t.Errorf("anchor shares the host's network namespace %s", hostNet)
	}
}
