package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/stats"
	"github.com/nsn-run/nsn-run/task"
)

func probeTask(id string, limits task.Limits, args ...string) task.Task {
	return task.Task{ID: id, Image: probeRef, Command: append([]string{"nsn-probe"}, args...), Limits: limits}
}

// TestOOMKill: 32 MiB limit, 200 MiB allocated: oom_killed, 137.
func TestOOMKill(t *testing.T) {
	m, c := testManager(t)
	res, err := m.Run(context.Background(), probeTask(uniqueID("oom"), task.Limits{MemoryBytes: 32 * task.MiB}, "alloc", "200"), runtime.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != task.ReasonOOMKilled || res.ExitCode != 137 || res.Stats.OOMKills < 1 {
		t.Errorf("result = reason %s exit %d oom_kills %d stdout %q; want oom_killed 137", res.Reason, res.ExitCode, res.Stats.OOMKills, res.Stdout)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
}

// TestKilledBy137IsNotOOM: a task that kills itself with SIGKILL exits 137
// but was not OOM-killed; the reason must say so.
func TestKilledBy137IsNotOOM(t *testing.T) {
	m, _ := testManager(t)
	res, err := m.Run(context.Background(), seedTask(uniqueID("k9"), "sh", "-c", "sh -c 'kill -KILL $$'; exit $?"), runtime.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 137 || res.Reason != task.ReasonExited || res.Stats.OOMKills != 0 {
		t.Errorf("result = reason %s exit %d oom_kills %d; want exited 137", res.Reason, res.ExitCode, res.Stats.OOMKills)
	}
}

// hostProcs returns the host pids of the task's processes, once at least
// min of them exist (a bounded poll on an observable condition).
func hostProcs(t *testing.T, c *client.Client, id string, min int) []uint32 {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)
	ctr, err := c.LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := ctr.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		infos, err := tk.Pids(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(infos) >= min {
			pids := make([]uint32, len(infos))
			for i, p := range infos {
				pids[i] = p.Pid
			}
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s has %d processes after 30s, want %d", id, len(infos), min)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procCgroup is the cgroup membership of a host process, "" if it is gone.
func procCgroup(pid uint32) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	return string(b)
}

// TestTimeoutKillsWholeTree: 2 s with 1 s grace on a shell that ignores
// SIGTERM and has a background child that ignores it too: timed_out, 124,
// and no process of the task left on the host.
func TestTimeoutKillsWholeTree(t *testing.T) {
	m, c := testManager(t)
	id := uniqueID("tree")
	tk := seedTask(id, "sh", "-c", `trap "" TERM; (trap "" TERM; sleep 300) & sleep 300`)
	tk.Limits.Timeout = 2 * time.Second
	tk.Limits.Grace = time.Second
	if _, err := m.Spawn(context.Background(), tk); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Cleanup(context.Background(), id) })
	// busybox sh execs the last command of the script and of the subshell,
	// so the tree is two sleeps, both ignoring SIGTERM (SIG_IGN survives
	// exec), one the child of the other's shell.
	pids := hostProcs(t, c, id, 2)
	for _, pid := range pids {
		if !strings.Contains(procCgroup(pid), id) {
			t.Fatalf("pid %d is not in the task's cgroup: %q", pid, procCgroup(pid))
		}
	}
	res, err := m.Wait(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != task.ReasonTimedOut || res.ExitCode != 124 {
		t.Errorf("result = reason %s exit %d; want timed_out 124", res.Reason, res.ExitCode)
	}
	for _, pid := range pids {
		if cg := procCgroup(pid); strings.Contains(cg, id) {
			t.Errorf("process %d of the task is still on the host", pid)
		}
	}
	if err := m.Cleanup(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}

// TestForkBomb: under --pids 32 the bomb hits the limit, the host can still
// fork, and pids_peak <= 32.
func TestForkBomb(t *testing.T) {
	m, _ := testManager(t)
	id := uniqueID("bomb")
	// The subshell forks until the limit stops it (a failed fork ends a
	// busybox shell); its sleepers stay, and the main shell lives on.
	tk := seedTask(id, "sh", "-c", `(for i in $(seq 200); do sleep 300 & done); echo survived; sleep 300`)
	tk.Limits.Pids = 32
	if _, err := m.Spawn(context.Background(), tk); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Cleanup(context.Background(), id) })
	waited := make(chan task.Result, 1)
	go func() {
		res, err := m.Wait(context.Background(), id)
		if err != nil {
			t.Error(err)
		}
		waited <- res
	}()
	samples, err := m.Monitor(context.Background(), id, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	atLimit := 0
	for s := range samples {
		if s.PidsCurrent > 32 {
			t.Errorf("pids current %d above the limit", s.PidsCurrent)
		}
		if s.PidsCurrent >= 30 {
			atLimit++
		}
		if atLimit == 5 { // at the limit for a few samples: Wait has sampled it too
			break
		}
	}
	if atLimit < 5 {
		t.Fatal("the task ended before reaching its pids limit")
	}
	if out, err := exec.Command("/bin/sh", "-c", "echo host-forks").Output(); err != nil || string(out) != "host-forks\n" {
		t.Errorf("host cannot fork: %v", err)
	}
	if err := m.Kill(context.Background(), id, syscall.SIGKILL, true); err != nil {
		t.Fatal(err)
	}
	res := <-waited
	if err := m.CollectOutput(context.Background(), id, "", &res); err != nil {
		t.Fatal(err)
	}
	if res.Stats.PidsPeak > 32 || res.Stats.PidsPeak < 30 {
		t.Errorf("pids_peak = %d, want at the limit of 32", res.Stats.PidsPeak)
	}
	if res.Stats.PidsLimitHits == 0 {
		t.Error("pids_limit_hits = 0: the Result does not say that forks failed")
	}
	if res.Stdout != "survived\n" || !strings.Contains(res.Stderr, "can't fork") {
		t.Errorf("stdout %q stderr %q: want the fork to fail and the task to survive it", res.Stdout, res.Stderr)
	}
	if err := m.Cleanup(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}

// TestCPUQuota: a busy loop for 4 s under --cpus 0.5 is throttled, and the
// Result's cpu_usage_seconds counts at least what the loop itself got. The
// bounds come from the run's own times, not a fixed figure: a loaded host
// may give the loop less than its quota. They are the quota plus half the
// rest of a CPU: on this machine the loop gets 0.50 of its wall time, in
// CI's cgroup v2 VM 0.57 to 0.66 (ten runs; QEMU without KVM, whose guest
// marks its TSC unstable and keeps time by the emulated HPET, so the CPU
// time the quota charges and the periods it refills in drift apart),
// without a quota 1.0. The old fixed band, 1 to 3 CPU seconds, failed
// there once.
// TestEscapeCPUQuota holds the quota itself to the period's slack.
func TestCPUQuota(t *testing.T) {
	m, _ := testManager(t)
	res, err := m.Run(context.Background(), probeTask(uniqueID("cpu"), task.Limits{CPUs: 0.5}, "spin", "4"), runtime.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var secs int
	var own, wall float64
	if _, err := fmt.Sscanf(res.Stdout, "spun %d s cpu=%g wall=%g", &secs, &own, &wall); err != nil || res.ExitCode != 0 {
		t.Fatalf("exit %d stdout %q: %v", res.ExitCode, res.Stdout, err)
	}
	const throttled = 0.75 // of the wall time, and one 100 ms period of slack
	allowed := throttled*float64(res.DurationMS)/1000 + 0.1
	if got := res.Stats.CPUUsageSeconds; got > allowed || got < own-0.01 {
		t.Errorf("cpu_usage_seconds %.3f; want at least the loop's own %.3f and at most %.3f (%.2f of %d ms + 0.1)", got, own, allowed, throttled, res.DurationMS)
	}
	if own > throttled*wall+0.1 || own <= 0 {
		t.Errorf("the loop got %.3f CPU seconds in %.3f s; want (0, %.3f]", own, wall, throttled*wall+0.1)
	}
	t.Logf("cpu_usage_seconds %.3f, the loop's own %.3f in %.3f s (%.2f), task %d ms", res.Stats.CPUUsageSeconds, own, wall, own/wall, res.DurationMS)
}

// TestPeakMemory: a 40 MiB allocation is reported between 30 MiB and the
// limit.
func TestPeakMemory(t *testing.T) {
	m, _ := testManager(t)
	res, err := m.Run(context.Background(), probeTask(uniqueID("mem"), task.Limits{MemoryBytes: 256 * task.MiB}, "alloc", "40"), runtime.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || res.Stats.PeakMemoryBytes < 30<<20 || res.Stats.PeakMemoryBytes > 256<<20 {
		t.Errorf("exit %d peak_memory_bytes %d; want 30 MiB..256 MiB", res.ExitCode, res.Stats.PeakMemoryBytes)
	}
}

// TestCPUTimeLimit: a task over its CPU-time limit is killed:
// cpu_time_exceeded, 124.
func TestCPUTimeLimit(t *testing.T) {
	m, _ := testManager(t)
	res, err := m.Run(context.Background(), probeTask(uniqueID("cput"), task.Limits{CPUTime: time.Second}, "spin", "60"), runtime.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != task.ReasonCPUTimeExceeded || res.ExitCode != 124 || res.Stats.CPUUsageSeconds < 1 {
		t.Errorf("result = reason %s exit %d cpu %.2f; want cpu_time_exceeded 124", res.Reason, res.ExitCode, res.Stats.CPUUsageSeconds)
	}
}

// TestCLIStats: `nsn-run stats --json ID` on a running detached task prints
// current memory, CPU and pids.
func TestCLIStats(t *testing.T) {
	g := cliEnv(t)
	id := uniqueID("stats")
	if r := cli(t, g, "run", "-d", "--id", id, "busybox", "--", "sleep", "60"); r.code != 0 {
		t.Fatalf("run -d: %d %q", r.code, r.stderr)
	}
	defer func() {
		// A failed rm leaves the task's output tmpfs mounted: say why.
		if r := cli(t, g, "rm", "-f", id); r.code != 0 {
			t.Errorf("rm -f: exit %d: %s", r.code, r.stderr)
		}
	}()
	r := cli(t, g, "stats", "--json", "--interval", "200ms", id)
	if r.code != 0 {
		t.Fatalf("stats: exit %d stderr %q", r.code, r.stderr)
	}
	var s stats.Sample
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("stats --json: %v: %q", err, r.stdout)
	}
	if s.MemoryCurrentBytes == 0 || s.MemoryLimitBytes != 512<<20 || s.PidsCurrent < 1 || s.PidsLimit != 1024 || s.Version == 0 || s.CPUUsageSeconds <= 0 {
		t.Errorf("sample = %+v", s)
	}
	for _, key := range []string{`"memory_current_bytes"`, `"cpu_usage_seconds"`, `"cpu_percent"`, `"pids_current"`} {
		if !strings.Contains(r.stdout, key) {
			t.Errorf("stats JSON lacks %s", key)
		}
	}
	if r := cli(t, g, "stats", "nosuchtask"); r.code != 125 {
		t.Errorf("stats of a missing task: exit %d", r.code)
	}
}
