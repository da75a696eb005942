package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"

	nsncgroups "github.com/nsn-run/nsn-run/cgroups"
	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/task"
)

// loggerCPUs is the loggers' quota these tests set: small against what an
// unconfined logger of a flooding task takes.
const loggerCPUs = 0.02

// TestLoggerCPUConfined: a task's logger runs outside the task's cgroup
// (the shim starts it before that cgroup exists, and an OOM kill of the
// task must not take its logs), so a task flooding stdout makes the host
// spend CPU that no limit of the task's bounds. The attack first: the
// logger of a task running `yes` moved out of the loggers' cgroup (as it
// ran before the control) takes more than twice the loggers' quota in a
// second. The control: the backend put it in cgroups.LoggersGroup when
// the task was created, and there the same logger gets at most the
// quota, whatever the task writes.
func TestLoggerCPUConfined(t *testing.T) {
	m, _ := testManagerBackend(t, func(b *containerd.Config) { b.LoggerCPUs = loggerCPUs }, func(*runtime.Config) {})
	ctx := context.Background()
	id := uniqueID("flood")
	if _, err := m.Spawn(ctx, task.Task{ID: id, Image: busyboxRef, Command: []string{"yes"}}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Remove(context.Background(), id, true) }()
	pid, err := logs.ShimLoggerPID(filepath.Join(m.StateDir(), "tasks", id))
	if err != nil {
		t.Fatal(err)
	}
	if g := cpuCgroupOf(t, pid); g != nsncgroups.LoggersGroup {
		t.Fatalf("the task's logger is in cgroup %q, want %s", g, nsncgroups.LoggersGroup)
	}
	// A second of the logger's CPU: the measurement's window.
	const window = time.Second
	allowed := loggerCPUs*window.Seconds() + 0.05 // and some of a period
	moveToRootCPUCgroup(t, pid)
	unconfined := loggerCPU(t, pid, window)
	if unconfined <= 2*allowed {
		t.Fatalf("without the control: the flooding task's logger took %.2f CPU s in %v, want more than %.2f", unconfined, window, 2*allowed)
	}
	t.Logf("without the control: the logger took %.2f CPU s in %v", unconfined, window)
	if err := nsncgroups.ConfineLogger(pid, loggerCPUs); err != nil {
		t.Fatal(err)
	}
	confined := loggerCPU(t, pid, window)
	if confined > allowed {
		t.Errorf("in %s at %.2f CPUs: the logger took %.2f CPU s in %v, want at most %.2f", nsncgroups.LoggersGroup, loggerCPUs, confined, window, allowed)
	}
	t.Logf("in %s: the logger took %.2f CPU s in %v", nsncgroups.LoggersGroup, confined, window)
	floodLogged(t, m, id)
}

// TestDockerLoggerConfined: the Docker backend's attach logger is in
// cgroups.LoggersGroup too, and the flood's logs are the task's.
func TestDockerLoggerConfined(t *testing.T) {
	m := dockerManager(t)
	ctx := context.Background()
	id := uniqueID("flood")
	if _, err := m.Spawn(ctx, task.Task{ID: id, Image: busyboxRef, Command: []string{"yes"}}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Remove(context.Background(), id, true) }()
	config := logs.AttachLoggerArgs(filepath.Join(m.StateDir(), "tasks", id), logs.DefaultLimits)[1]
	pid := 0
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if raw, err := os.ReadFile(p); err == nil && strings.Contains(string(raw), logs.AttachLoggerCommand+"\x00"+config) {
			pid, _ = strconv.Atoi(filepath.Base(filepath.Dir(p)))
		}
	}
	if pid == 0 {
		t.Fatalf("no attach logger of %s running", id)
	}
	if g := cpuCgroupOf(t, pid); g != nsncgroups.LoggersGroup {
		t.Errorf("the task's attach logger is in cgroup %q, want %s", g, nsncgroups.LoggersGroup)
	}
	floodLogged(t, m, id)
}

// floodLogged ends task id, a `yes`, and checks its logs: confined, not
// lost.
func floodLogged(t *testing.T, m *runtime.Manager, id string) {
	t.Helper()
	ctx := context.Background()
	if err := m.Kill(ctx, id, syscall.SIGKILL, true); err != nil {
		t.Fatal(err)
	}
	res, err := m.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.CollectOutput(ctx, id, "", &res); err != nil || !strings.HasPrefix(res.Stdout, "y\ny\n") {
		t.Errorf("the flood's logs: %v, stdout starts %q", err, res.Stdout[:min(len(res.Stdout), 8)])
	}
}

// cpuCgroupOf is process pid's cgroup in the cpu controller's hierarchy
// (v1) or the unified one (v2).
func cpuCgroupOf(t *testing.T, pid int) string {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(raw)) {
		f := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(f) != 3 {
			continue
		}
		if cgroups.Mode() == cgroups.Unified && f[0] == "0" {
			return f[2]
		}
		for _, c := range strings.Split(f[1], ",") {
			if c == "cpu" {
				return f[2]
			}
		}
	}
	t.Fatalf("no cpu cgroup for %d in %q", pid, raw)
	return ""
}

// moveToRootCPUCgroup moves pid to the root of the cpu hierarchy (v1) or
// the unified one (v2): out of every quota.
func moveToRootCPUCgroup(t *testing.T, pid int) {
	t.Helper()
	procs := "/sys/fs/cgroup/cpu/cgroup.procs"
	if cgroups.Mode() == cgroups.Unified {
		procs = "/sys/fs/cgroup/cgroup.procs"
	}
	if err := os.WriteFile(procs, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// loggerCPU is the CPU time (user and system) process pid takes in the
// window from now.
func loggerCPU(t *testing.T, pid int, window time.Duration) float64 {
	t.Helper()
	before := processCPU(t, pid)
	time.Sleep(window) // the measurement's window, not a wait for an event
	return processCPU(t, pid) - before
}

// processCPU is pid's utime + stime in seconds (/proc/PID/stat, in clock
// ticks of 1/100 s).
func processCPU(t *testing.T, pid int) float64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command's closing parenthesis: utime and stime
	// are the 12th and 13th.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("stat of %d: %q", pid, raw)
	}
	return (utime + stime) / 100
}
