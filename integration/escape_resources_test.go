package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// The resource controls below bound what a task takes from the host
// beside its limits: each test runs the bypass with runc directly first,
// then nsn-run's spec, then checks that the audit and Start refuse it.

// cgroupUnified reports whether the host's cgroups are v2 (unified).
func cgroupUnified(t *testing.T) bool {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		t.Fatal(err)
	}
	return st.Type == unix.CGROUP2_SUPER_MAGIC
}

// TestEscapeNPROC: RLIMIT_NPROC counts a uid's processes, and a task with
// a user namespace of its own has a uid of its own, so nsn-run sets it to
// the pids limit + 1: a second bound on the task's processes behind the
// pids cgroup's. Where the cgroup's limit does not bind (stood in for by
// the spec with it raised to 4096: a host without the pids controller, or
// processes out of the task's cgroup), a task without the rlimit, run with
// runc directly, forks 200 processes against its limit of 16; with the
// rlimit its uid stops at 17 processes; nsn-run's spec as generated stops
// at the cgroup's 16 first (so pids.events counts the refusals). The audit
// and Start refuse the spec without the rlimit.
func TestEscapeNPROC(t *testing.T) {
	const pids = 16
	b := newBundleWithHelper(t, "exec /bin/forkhold", "forkhold")
	b.limits = task.Limits{Pids: pids}
	b.withUserNS(t)
	forked := func(s *specs.Spec) (int, string) {
		t.Helper()
		out, _, err := hold(t, b, s, "forked=", func() error { return nil })
		var n int
		if i := strings.Index(out, "forked="); err != nil || i < 0 {
			t.Fatalf("runc run: %v\n%s", err, out)
		} else if _, err := fmt.Sscanf(out[i:], "forked=%d", &n); err != nil {
			t.Fatalf("%q: %v", out, err)
		}
		return n, strings.TrimSpace(out)
	}
	noCgroupLimit := func(s *specs.Spec) {
		raised := int64(4096)
		s.Linux.Resources.Pids.Limit = &raised
	}
	withoutNPROC := func(s *specs.Spec) {
		s.Process.Rlimits = slices.DeleteFunc(s.Process.Rlimits, func(r specs.POSIXRlimit) bool { return r.Type == "RLIMIT_NPROC" })
	}
	n, out := forked(b.mutated(t, func(s *specs.Spec) { noCgroupLimit(s); withoutNPROC(s) }))
	if n <= pids+1 {
		t.Fatalf("bypass: without the cgroup's limit and the rlimit the task printed %q; want more than %d processes", out, pids+1)
	}
	t.Logf("bypass: without the cgroup's limit and RLIMIT_NPROC the task printed %q (its pids limit is %d)", out, pids)

	if n, out := forked(b.mutated(t, noCgroupLimit)); n != pids || !strings.Contains(out, "EAGAIN") {
		t.Errorf("RLIMIT_NPROC alone: the task printed %q; want %d children (its uid at %d processes), then EAGAIN", out, pids, pids+1)
	} else {
		t.Logf("RLIMIT_NPROC alone (the cgroup's limit raised): %q", out)
	}
	if n, out := forked(b.spec); n != pids-1 || !strings.Contains(out, "EAGAIN") {
		t.Errorf("nsn-run's spec: the task printed %q; want the cgroup's limit first: %d children, then EAGAIN", out, pids-1)
	} else {
		t.Logf("nsn-run's spec: %q", out)
	}
	refused(t, b, audit.RuleUserNamespace, withoutNPROC)
}

// TestEscapeMemoryLimit: the task's memory limit (with swap = memory, no
// swap) is what stops it from taking the node's memory. Run with runc
// directly without it, a task with a limit of 32 MiB fills a 64 MiB buffer
// and ends well; nsn-run's spec has the kernel kill it (exit 137). The
// audit and Start refuse the spec without the limit.
func TestEscapeMemoryLimit(t *testing.T) {
	allocPastLimit(t, "without the memory limit", func(s *specs.Spec) { s.Linux.Resources.Memory = nil })
}

// allocPastLimit runs, with runc directly, a task limited to 32 MiB that
// fills a 64 MiB buffer: with bypass applied to nsn-run's spec it must end
// well, with nsn-run's spec be OOM-killed (137); then the audit and Start
// must refuse bypass.
func allocPastLimit(t *testing.T, what string, bypass func(*specs.Spec)) {
	t.Helper()
	b := newBundle(t, "dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null && echo allocated")
	b.limits = task.Limits{MemoryBytes: 32 * task.MiB}
	b.withUserNS(t)
	if out, errOut, err := b.run(t, b.mutated(t, bypass)); err != nil || out != "allocated\n" {
		t.Fatalf("bypass: want 64 MiB allocated %s: %v\n%s%s", what, err, out, errOut)
	}
	t.Logf("bypass: %s the task held a 64 MiB buffer against its 32 MiB limit", what)
	out, errOut, err := b.run(t, b.spec)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 137 || out != "" {
		t.Errorf("nsn-run's spec: %v; want the task OOM-killed (137)\n%s%s", err, out, errOut)
	} else {
		t.Logf("nsn-run's spec: the kernel killed the task: %v", err)
	}
	refused(t, b, audit.RuleResources, bypass)
}

// TestEscapeSwap: a task's memory limit with swap = memory (no swap at
// all) stops it at the limit; with swap left open it runs past the limit
// in the host's swap, which every other process on the node shares. Run
// with runc directly with swap unlimited, a task with a limit of 32 MiB
// fills a 64 MiB buffer (half of it swapped out) and ends well; nsn-run's
// spec has the kernel kill it (exit 137). The audit and Start refuse the
// open swap. Only on a host with swap (the cgroup v2 VM turns a swap file
// on; this build machine has none).
func TestEscapeSwap(t *testing.T) {
	swaps, err := os.ReadFile("/proc/swaps")
	if err != nil {
		t.Fatal(err)
	}
	if len(strings.Split(strings.TrimSpace(string(swaps)), "\n")) < 2 {
		t.Skip("this host has no swap: a task cannot run past its memory limit in it (the cgroup v2 VM runs this test with a swap file)")
	}
	allocPastLimit(t, "with swap unlimited (half of it in swap)", func(s *specs.Spec) {
		unlimited := int64(-1)
		s.Linux.Resources.Memory.Swap = &unlimited
	})
}

// TestEscapeOOMKillerDisabled: a cgroup v1 memory cgroup with its OOM
// killer disabled stops a task that reaches its limit instead of killing
// it: the task sleeps, holding all its memory and processes, until
// something else ends it, and no OOM kill is counted, so its Result could
// say timeout but never oom_killed. Run with runc directly, a task that
// allocates 128 MiB against its 32 is still there, its cgroup under_oom,
// with no kill counted; nsn-run's spec has the kernel kill it (exit 137).
// The audit and Start refuse the spec with the OOM killer off.
func TestEscapeOOMKillerDisabled(t *testing.T) {
	if cgroupUnified(t) {
		t.Skip("cgroup v2 has no switch for a cgroup's OOM killer: runc ignores disableOOMKiller there")
	}
	// The memory is touched in user space (awk doubling a string to 128
	// MiB): a fault there waits at the limit when the killer is off,
	// where dd's read into its buffer, a fault in the kernel, would only
	// come back short (CI saw dd end well once so).
	b := newBundle(t, `awk 'BEGIN { s = "x"; for (i = 0; i < 27; i++) s = s s; print length(s) }' && echo allocated`)
	b.limits = task.Limits{MemoryBytes: 32 * task.MiB}
	b.withUserNS(t)
	disabled := func(s *specs.Spec) {
		off := true
		s.Linux.Resources.Memory.DisableOOMKiller = &off
	}
	// The bypass, ended before nsn-run's spec runs: both name the same
	// cgroup, and runc leaves a setting the spec does not name as it is.
	func() {
		r := b.start(t, b.mutated(t, disabled))
		defer r.stop()
		control := filepath.Join("/sys/fs/cgroup/memory", b.spec.Linux.CgroupsPath, "memory.oom_control")
		var oom string
		deadline := time.After(30 * time.Second)
		for !strings.Contains(oom, "under_oom 1") {
			select {
			case err := <-r.exited:
				r.exited <- err // for stop's wait
				t.Fatalf("bypass: the task ended (%v) instead of waiting at its limit: %s", err, r.out.String())
			case <-deadline:
				t.Fatalf("bypass: the cgroup was never under OOM: %q", oom)
			case <-time.After(20 * time.Millisecond):
			}
			raw, err := os.ReadFile(control)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			oom = string(raw)
		}
		if !strings.Contains(oom, "oom_kill_disable 1") || !strings.Contains(oom, "oom_kill 0") {
			t.Fatalf("bypass: %s: %q; want the killer off and no kill", control, oom)
		}
		t.Logf("bypass: the task waits at its limit, not killed: %s", strings.ReplaceAll(strings.TrimSpace(oom), "\n", ", "))
	}()

	stdout, stderr, err := b.run(t, b.spec)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 137 || strings.Contains(stdout, "allocated") {
		t.Errorf("nsn-run's spec: %v; want the task OOM-killed (137)\n%s%s", err, stdout, stderr)
	} else {
		t.Logf("nsn-run's spec: the kernel killed the task: %v", err)
	}
	refused(t, b, audit.RuleResources, disabled)
}

// TestEscapeCPURealtime: realtime scheduling (SCHED_FIFO) runs a process
// ahead of every normal process on its CPU. Three controls keep a task
// from it: no CAP_SYS_NICE, RLIMIT_RTPRIO 0, and, on a kernel with
// realtime group scheduling (cgroup v1 cpu.rt_runtime_us), no realtime
// time for the task's cgroup, which the kernel checks whatever the task's
// capabilities. With CAP_SYS_NICE given (the capabilities control
// bypassed; shared host ids, where it counts on the host), run with runc
// directly, a spec giving the task's cgroup realtime time lets the task
// take SCHED_FIFO; nsn-run's cgroup, with none, refuses it (EPERM) even
// then. The audit and Start refuse the realtime time.
func TestEscapeCPURealtime(t *testing.T) {
	if cgroupUnified(t) {
		t.Skip("cgroup v2 has no realtime time per cgroup for runc to write")
	}
	if _, err := os.Stat("/sys/fs/cgroup/cpu/cpu.rt_runtime_us"); err != nil {
		t.Skipf("this kernel has no realtime group scheduling (%v): a cgroup cannot be given realtime time", err)
	}
	// Shared host ids (user namespaces off, or dockerd): in a user
	// namespace of its own the task's capabilities are not the host's.
	b := newBundleWithHelper(t, "exec /bin/rtsched", "rtsched")
	// A cgroup's realtime time comes out of its parent's: give the
	// task's parent some, as a host that runs realtime work would have.
	parent := filepath.Join("/sys/fs/cgroup/cpu", filepath.Dir(b.spec.Linux.CgroupsPath))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	runtimeFile := filepath.Join(parent, "cpu.rt_runtime_us")
	was, err := os.ReadFile(runtimeFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(runtimeFile, []byte("100000"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The parent's time goes back once the task's cgroup, which
		// holds some of it, is gone.
		if err := os.Remove(filepath.Join("/sys/fs/cgroup/cpu", b.spec.Linux.CgroupsPath)); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("remove the task's cgroup: %v", err)
		}
		// A removed cgroup's share is the parent's again only once the
		// kernel has freed it, a moment after the rmdir.
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := os.WriteFile(runtimeFile, bytes.TrimSpace(was), 0o644)
			if err == nil {
				return
			}
			if !errors.Is(err, unix.EINVAL) || time.Now().After(deadline) {
				t.Errorf("restore %s: %v", runtimeFile, err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	// CAP_SYS_NICE, not a raised RLIMIT_RTPRIO: raising that needs
	// CAP_SYS_RESOURCE, which a sandboxed host's root may not have.
	sysNice := func(s *specs.Spec) {
		c := s.Process.Capabilities
		if c == nil {
			c = &specs.LinuxCapabilities{}
			s.Process.Capabilities = c
		}
		for _, set := range []*[]string{&c.Bounding, &c.Effective, &c.Permitted, &c.Inheritable, &c.Ambient} {
			*set = append(*set, "CAP_SYS_NICE")
		}
	}
	realtime := func(s *specs.Spec) {
		period, runtime := uint64(1000000), int64(50000)
		s.Linux.Resources.CPU.RealtimePeriod, s.Linux.Resources.CPU.RealtimeRuntime = &period, &runtime
	}
	out, errOut, err := b.run(t, b.mutated(t, func(s *specs.Spec) { sysNice(s); realtime(s) }))
	if err != nil || out != "policy=SCHED_FIFO\n" {
		t.Fatalf("bypass: want the task SCHED_FIFO: %v\n%s%s", err, out, errOut)
	}
	t.Logf("bypass: with CAP_SYS_NICE and realtime time in its cgroup the task printed %q", strings.TrimSpace(out))
	for name, s := range map[string]*specs.Spec{"CAP_SYS_NICE, nsn-run's cgroup": b.mutated(t, sysNice), "nsn-run's spec": b.spec} {
		out, errOut, _ := b.run(t, s)
		if out != "sched_setscheduler: Operation not permitted\n" {
			t.Errorf("%s: the task printed %q; want EPERM\n%s", name, out, errOut)
		} else {
			t.Logf("%s: %q", name, strings.TrimSpace(out))
		}
	}
	refused(t, b, audit.RuleResources, realtime)
}

// TestEscapeMsgQueue: POSIX message queue bytes count against
// RLIMIT_MSGQUEUE per user, and a task in a user namespace of its own
// charges them to the namespace's creator too: host root, for runc's
// tasks, up to root's own limit (819200 bytes by default, about nine
// default-sized queues). Run with runc directly, nsn-run's spec without
// its RLIMIT_MSGQUEUE (runc then leaves the task root's) lets the task
// open queues until root has no bytes left: host root's own mq_open fails
// with EMFILE while the task holds them. nsn-run's spec (0: no queues at
// all) refuses the first, and root's works; the audit finds the limit
// gone, and Start refuses the spec.
func TestEscapeMsgQueue(t *testing.T) {
	escapePerUserLimit(t, perUserLimit{
		rlimit: "RLIMIT_MSGQUEUE", helper: "mqhold", marker: "queues", hostCall: "mq_open",
		bypassAbove: 0, want: "queues=0 errno=EMFILE\n",
	})
}

// TestEscapeTmpSize: /tmp is a tmpfs sized in bytes and inodes
// (--tmp-size, --tmp-files; 64 MiB and 16,384 by default), so a task's
// scratch space is bounded apart from its memory. Run with runc directly,
// nsn-run's spec with size= and nr_inodes= dropped from /tmp (the kernel's
// default is half the host's memory) lets the task write 96 MiB there and
// make 20,000 files; nsn-run's spec stops it at 64 MiB and 16,384 inodes
// (ENOSPC; the directory and the root take one each). The audit finds the sizes gone, and
// Start refuses the spec.
func TestEscapeTmpSize(t *testing.T) {
	const script = `dd if=/dev/zero of=/tmp/fill bs=1M count=96 2>/dev/null; echo mib=$(( $(stat -c %s /tmp/fill) >> 20 )); rm /tmp/fill
mkdir /tmp/d; i=0; while [ $i -lt 20000 ] && true > /tmp/d/$i 2>/dev/null; do i=$((i+1)); done; echo files=$i`
	b := newBundle(t, script)
	mutate := func(s *specs.Spec) {
		for i := range s.Mounts {
			if s.Mounts[i].Destination == spec.TmpPath {
				s.Mounts[i].Options = slices.DeleteFunc(s.Mounts[i].Options, func(o string) bool {
					return strings.HasPrefix(o, "size=") || strings.HasPrefix(o, "nr_inodes=")
				})
			}
		}
	}
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	if err != nil || out != "mib=96\nfiles=20000\n" {
		t.Fatalf("bypass: want 96 MiB and 20,000 files in /tmp: %v\n%s%s", err, out, errOut)
	}
	t.Logf("bypass: %q", out)
	out, errOut, err = b.run(t, b.spec)
	want := fmt.Sprintf("mib=%d\nfiles=%d\n", task.Defaults.TmpBytes>>20, task.Defaults.TmpInodes-2)
	if err != nil || out != want {
		t.Errorf("nsn-run's spec: %v: the task printed %q, want %q\n%s", err, out, want, errOut)
	}
	t.Logf("nsn-run's spec: %q", out)
	refused(t, b, audit.RuleMounts, mutate)
}

// TestEscapeCPUQuota: a task's CPU time is bounded by a CFS quota
// (--cpus), so a job cannot take the node's CPUs from the others. Run with
// runc directly, nsn-run's spec for --cpus 0.25 with its quota dropped
// lets the task's two spinners take more than twice what the quota allows
// in the time they run (on this machine's two CPUs, about 2 CPU seconds a
// second); nsn-run's spec holds them to a quarter of it. The audit finds
// the quota gone, and Start refuses the spec. Both bounds scale with the
// wall time the spinners ran, read inside the container: on a loaded host
// (the cgroup v2 VM under emulation) `sleep 1` may take longer, and the
// quota is 0.25 CPU seconds per wall second, not per `sleep 1`.
func TestEscapeCPUQuota(t *testing.T) {
	// times' second line: the children's user and system CPU time (into a
	// file: in a pipeline times would run in a subshell, with no children).
	// /proc/uptime before the spinners start and after they are reaped.
	const script = `read t0 _ < /proc/uptime; (while :; do :; done) & a=$!; (while :; do :; done) & b=$!; sleep 1; kill $a $b; wait; read t1 _ < /proc/uptime; times > /tmp/times; awk -v t0=$t0 -v t1=$t1 'NR==2{split($1,u,/[ms]/); print "cpu=" u[1]*60+u[2] " wall=" t1-t0}' /tmp/times`
	const quota = 0.25
	b := newBundleLimits(t, script, task.Limits{CPUs: quota})
	mutate := func(s *specs.Spec) { s.Linux.Resources.CPU.Quota = nil }
	type usage struct{ cpu, wall float64 }
	measure := func(s *specs.Spec) (usage, string, error) {
		out, errOut, err := b.run(t, s)
		var u usage
		if _, scanErr := fmt.Sscanf(out, "cpu=%g wall=%g", &u.cpu, &u.wall); err == nil && scanErr != nil {
			err = fmt.Errorf("no cpu= wall= line: %w", scanErr)
		}
		return u, out + errOut, err
	}
	// The quota's share of the wall time, and one 100 ms period of slack
	// (the kernel throttles a group at its next accounting point, not at
	// the exact nanosecond its quota runs out).
	allowed := func(u usage) float64 { return quota*u.wall + 0.1 }
	u, out, err := measure(b.mutated(t, mutate))
	if err != nil || u.cpu < 2*allowed(u) {
		t.Fatalf("bypass: want more than %.2f CPU seconds in %.2f s: %.2f (%v)\n%s", 2*allowed(u), u.wall, u.cpu, err, out)
	}
	t.Logf("bypass: the spinners took %.2f CPU seconds in %.2f s", u.cpu, u.wall)
	u, out, err = measure(b.spec)
	if err != nil || u.cpu > allowed(u) {
		t.Errorf("nsn-run's spec: want at most %.2f CPU seconds in %.2f s: %.2f (%v)\n%s", allowed(u), u.wall, u.cpu, err, out)
	}
	t.Logf("nsn-run's spec: the spinners took %.2f CPU seconds in %.2f s", u.cpu, u.wall)
	refused(t, b, audit.RuleResources, mutate)
}
