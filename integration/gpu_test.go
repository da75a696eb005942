package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/gpu"
	"github.com/nsn-run/nsn-run/gpu/gputest"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/runtime/docker"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/task"
)

// gpuManager is a Manager whose backend injects the stand-in GPUs (this
// host has no GPU): nvidia.com/gpu=0 is /dev/zero, =1 is /dev/full.
func gpuManager(t *testing.T) (*runtime.Manager, string) {
	t.Helper()
	state := t.TempDir()
	return gpuManagerAt(t, state, filepath.Join(state, "gpus"))
}

// gpuManagerAt is gpuManager over the state dir state, with its GPU
// allocations in allocDir.
func gpuManagerAt(t *testing.T, state, allocDir string) (*runtime.Manager, string) {
	t.Helper()
	c, addr := containerdClient(t)
	importBusybox(t, c, addr)
	specDir, _, err := standInGPUs(t)
	if err != nil {
		t.Fatal(err)
	}
	gpus, err := gpu.New(gpu.Options{SpecDirs: []string{specDir}, AllocDir: allocDir})
	if err != nil {
		t.Fatal(err)
	}
	b, err := containerd.New(context.Background(), containerd.Config{Address: addr, Namespace: testNamespace, LoggerBinary: nsnLogger(t), CDI: gpus})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	m, err := runtime.New(runtime.Config{Backend: b, StateDir: state, GPUs: gpus})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = m.CleanupOrphans(context.Background(), true) })
	return m, specDir
}

// gpuScript lists the stand-in GPUs the task sees and proves the node works:
// /dev/zero reads zeros, /dev/full refuses writes with ENOSPC.
const gpuScript = `ls /dev | grep nvidia-standin | tr '\n' ' '; echo;
[ -e /dev/nvidia-standin0 ] && echo "gpu0 reads $(head -c 4 /dev/nvidia-standin0 | od -An -tx1 | tr -d ' ')";
[ -e /dev/nvidia-standin1 ] && { echo x > /dev/nvidia-standin1 || echo "gpu1 refuses writes"; };
cat /usr/lib/libnvidia-standin.so 2>/dev/null; echo "env=$NVIDIA_STANDIN"`

func TestGPUsThroughCDI(t *testing.T) {
	m, _ := gpuManager(t)
	c, _ := containerdClient(t)
	ctx := context.Background()
	cases := []struct {
		gpus string
		want []string // lines the task prints
	}{
		{"device=1", []string{"nvidia-standin1 ", "gpu1 refuses writes", "driver", "env=1"}},
		{"all", []string{"nvidia-standin0 nvidia-standin1 ", "gpu0 reads 00000000", "gpu1 refuses writes", "driver", "env=1"}},
		{gputest.UUID0, []string{"nvidia-standin0 ", "gpu0 reads 00000000", "driver", "env=1"}},
		{"", []string{"", "env="}},
	}
	for _, tc := range cases {
		t.Run("gpus="+tc.gpus, func(t *testing.T) {
			tk := seedTask(uniqueID("gpu"), "sh", "-c", gpuScript)
			tk.GPUs = tc.gpus
			res, err := m.Run(ctx, tk, runtime.RunOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Split(strings.TrimSuffix(res.Stdout, "\n"), "\n")
			if !slices.Equal(got, tc.want) {
				t.Errorf("task saw %q (stderr %q), want %q", got, res.Stderr, tc.want)
			}
		})
	}
	_, err := m.Run(ctx, seedTask(uniqueID("gpu"), "true"), runtime.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bad := seedTask(uniqueID("gpu"), "true")
	bad.GPUs = "device=7"
	if _, err := m.Run(ctx, bad, runtime.RunOptions{}); !errdefs.IsNotFound(err) {
		t.Errorf("unknown GPU: %v", err)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
}

// TestGPUExclusive: a running task's GPU is not given to a second task
// until the first is cleaned up.
func TestGPUExclusive(t *testing.T) {
	m, _ := gpuManager(t)
	ctx := context.Background()
	first := seedTask(uniqueID("gpu"), "sleep", "60")
	first.GPUs = "1"
	if _, err := m.Spawn(ctx, first); err != nil {
		t.Fatal(err)
	}
	second := seedTask(uniqueID("gpu"), "true")
	second.GPUs = "2"
	if _, err := m.Spawn(ctx, second); !errdefs.IsResourceExhausted(err) {
		t.Errorf("2 GPUs while one is taken: %v", err)
	}
	third := seedTask(uniqueID("gpu"), "sh", "-c", "ls /dev | grep -c nvidia-standin")
	third.GPUs = "1"
	res, err := m.Run(ctx, third, runtime.RunOptions{})
	if err != nil || res.Stdout != "1\n" {
		t.Fatalf("the other GPU: %+v %v", res, err)
	}
	if err := m.Remove(ctx, first.ID, true); err != nil {
		t.Fatal(err)
	}
	second.ID = uniqueID("gpu")
	if _, err := m.Run(ctx, second, runtime.RunOptions{}); err != nil {
		t.Errorf("2 GPUs after the first task is gone: %v", err)
	}
}

// TestGPUStateDirsShareTheNode: GPU grants are node-wide, whatever the
// state dir: two Managers of two state dirs on one node must not give one
// GPU to two tasks. With each state dir keeping its own allocations (the
// layout before 2026-11-30, AllocDir inside the state dir), a second state
// dir's task got the GPU a first state dir's running task held, and both
// saw it; with one allocation dir for the node (gpu.DefaultAllocDir, here a
// test's own) the second is refused.
func TestGPUStateDirsShareTheNode(t *testing.T) {
	ctx := context.Background()
	holdsGPU0 := func(t *testing.T, first, second *runtime.Manager) error {
		t.Helper()
		holder := seedTask(uniqueID("gpu"), "sleep", "60")
		holder.GPUs = "device=0"
		if _, err := first.Spawn(ctx, holder); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = first.Remove(ctx, holder.ID, true) }()
		other := seedTask(uniqueID("gpu"), "sh", "-c", "ls /dev | grep nvidia-standin")
		other.GPUs = "device=0"
		res, err := second.Run(ctx, other, runtime.RunOptions{})
		if err == nil && res.Stdout != "nvidia-standin0\n" {
			t.Fatalf("the second state dir's task: %+v", res)
		}
		return err
	}
	a, b := t.TempDir(), t.TempDir()
	first, _ := gpuManagerAt(t, a, filepath.Join(a, "gpus"))
	second, _ := gpuManagerAt(t, b, filepath.Join(b, "gpus"))
	if err := holdsGPU0(t, first, second); err != nil {
		t.Fatalf("bypass (allocations per state dir): the second task was refused: %v", err)
	}
	t.Log("bypass (allocations per state dir): the second state dir's task got nvidia-standin0 while the first's held it")

	node := t.TempDir()
	c, d := t.TempDir(), t.TempDir()
	first, _ = gpuManagerAt(t, c, node)
	second, _ = gpuManagerAt(t, d, node)
	if err := holdsGPU0(t, first, second); !errdefs.IsResourceExhausted(err) {
		t.Errorf("one allocation dir for the node: the second state dir's task: %v; want resource exhausted", err)
	} else {
		t.Logf("one allocation dir for the node: %v", err)
	}
}

// TestGPUShared: two running tasks that opt in share a GPU and both see it;
// a task that does not opt in is refused it until both are gone.
func TestGPUShared(t *testing.T) {
	m, _ := gpuManager(t)
	ctx := context.Background()
	var sharers []string
	for range 2 {
		tk := seedTask(uniqueID("gpu"), "sleep", "60")
		tk.GPUs, tk.GPUShared = "device=1", true
		if _, err := m.Spawn(ctx, tk); err != nil {
			t.Fatal(err)
		}
		sharers = append(sharers, tk.ID)
	}
	probe := seedTask(uniqueID("gpu"), "sh", "-c", "echo x > /dev/nvidia-standin1 || echo refuses")
	probe.GPUs, probe.GPUShared = "device=1", true
	res, err := m.Run(ctx, probe, runtime.RunOptions{})
	if err != nil || !strings.Contains(res.Stderr+res.Stdout, "refuses") {
		t.Fatalf("a third sharer of GPU 1: %+v %v", res, err)
	}
	alone := seedTask(uniqueID("gpu"), "true")
	alone.GPUs = "device=1"
	if _, err := m.Spawn(ctx, alone); !errdefs.IsResourceExhausted(err) {
		t.Errorf("GPU 1 exclusively while shared: %v", err)
	}
	for _, id := range sharers {
		if err := m.Remove(ctx, id, true); err != nil {
			t.Fatal(err)
		}
	}
	alone.ID = uniqueID("gpu")
	if res, err := m.Run(ctx, alone, runtime.RunOptions{}); err != nil || res.ExitCode != 0 {
		t.Errorf("GPU 1 exclusively once the sharers are gone: %+v %v", res, err)
	}
}

// TestCLISpecGPU: `nsn-run spec --gpus GPU-<uuid>` shows exactly that
// device; `run --gpus 7` is refused with exit 125 and leaves nothing.
func TestCLISpecGPU(t *testing.T) {
	g := cliEnv(t)
	c, _ := containerdClient(t)
	specDir, _, err := standInGPUs(t)
	if err != nil {
		t.Fatal(err)
	}
	g = append(g, "--cdi-spec-dir", specDir)
	r := cli(t, g, "spec", "--gpus", gputest.UUID0, "busybox", "--", "true")
	if r.code != 0 {
		t.Fatalf("spec: exit %d stderr %q", r.code, r.stderr)
	}
	var s specs.Spec
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Linux.Devices) != 1 || s.Linux.Devices[0].Path != "/dev/nvidia-standin0" {
		t.Errorf("devices %+v, want exactly /dev/nvidia-standin0", s.Linux.Devices)
	}
	// The auditor lets exactly the granted GPU's edits through: the spec
	// as printed passes; with the other GPU's node slipped in, it fails.
	audit := slices.Concat(g, []string{"audit", "-"})
	if a := runCLI(t, []byte(r.stdout), audit...); a.code != 0 {
		t.Errorf("audit of the GPU spec: exit %d: %s%s", a.code, a.stdout, a.stderr)
	}
	extra := s.Linux.Devices[0]
	extra.Path = "/dev/nvidia-standin1"
	s.Linux.Devices = append(s.Linux.Devices, extra)
	tampered, err := json.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	if a := runCLI(t, tampered, audit...); a.code != 1 || !strings.Contains(a.stdout, "/dev/nvidia-standin1") {
		t.Errorf("audit of a spec with an ungranted GPU node: exit %d: %s%s", a.code, a.stdout, a.stderr)
	}
	// gpu ls: each GPU once with its aliases, and who holds it.
	holder := uniqueID("gpuls")
	if r := cli(t, g, "run", "-d", "--id", holder, "--gpus", "device=1", "busybox", "--", "sleep", "60"); r.code != 0 {
		t.Fatalf("run -d --gpus device=1: exit %d %s", r.code, r.stderr)
	}
	want := "GPU  NAMES                                     HELD BY\n" +
		"0    " + gputest.UUID0 + "  -\n" +
		"1    " + gputest.UUID1 + "  " + holder + "\n"
	if r := cli(t, g, "gpu", "ls"); r.code != 0 || r.stdout != want {
		t.Errorf("gpu ls: exit %d\n%s\nwant\n%s%s", r.code, r.stdout, want, r.stderr)
	}
	if r := cli(t, g, "rm", "-f", holder); r.code != 0 {
		t.Fatalf("rm -f: exit %d %s", r.code, r.stderr)
	}
	if r := cli(t, g, "gpu", "ls", "--json"); r.code != 0 || strings.Contains(r.stdout, holder) || !strings.Contains(r.stdout, `"nodes": "/dev/nvidia-standin1"`) {
		t.Errorf("gpu ls --json after rm: exit %d %s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli(t, g, "run", "--gpus", "device=7", "busybox", "--", "true"); r.code != 125 || !strings.Contains(r.stderr, "GPU 7 not found") {
		t.Errorf("run --gpus device=7: exit %d stderr %q", r.code, r.stderr)
	}
	if r := cli(t, g, "run", "--gpus", "7", "busybox", "--", "true"); r.code != 125 || !strings.Contains(r.stderr, "7 GPUs asked for") {
		t.Errorf("run --gpus 7: exit %d stderr %q", r.code, r.stderr)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}

}

// TestDockerGPURefusedWithoutCDI: dockerd 20.10 (API 1.41) cannot take CDI
// device requests; a GPU task is refused, not handed to the legacy NVIDIA
// hook, nothing is left and its GPU is free again.
func TestDockerGPURefusedWithoutCDI(t *testing.T) {
	c := dockerClient(t)
	loadDockerImages(t, c)
	specDir, _, err := standInGPUs(t)
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	gpus, err := gpu.New(gpu.Options{SpecDirs: []string{specDir}, AllocDir: filepath.Join(state, "gpus")})
	if err != nil {
		t.Fatal(err)
	}
	b, err := docker.New(context.Background(), docker.Config{Host: os.Getenv(envDockerHost), CDI: gpus})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !strings.HasPrefix(c.ClientVersion(), "1.4") || c.ClientVersion() >= "1.44" {
		t.Skipf("dockerd speaks API %s: this test is about daemons without CDI", c.ClientVersion())
	}
	m, err := runtime.New(runtime.Config{Backend: b, StateDir: state, GPUs: gpus})
	if err != nil {
		t.Fatal(err)
	}
	tk := seedTask(uniqueID("dgpu"), "true")
	tk.GPUs = "device=1"
	_, err = m.Run(context.Background(), tk, runtime.RunOptions{})
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "CDI device requests need 1.44") {
		t.Errorf("GPU task on dockerd without CDI: %v", err)
	}
	if names, err := gpus.Allocate("probe", task.GPURequest{IDs: []string{"1"}}); err != nil || len(names) != 1 {
		t.Errorf("GPU 1 not free after the refusal: %v %v", names, err)
	}
	if l := dockerLeftovers(t); l != "" {
		t.Errorf("left behind: %s", l)
	}
}

// standInGPUs writes the stand-in CDI spec with its GPU nodes at the same
// path on the host as in the task (gputest.CreateHostNodes), as NVIDIA's
// specs have them: inside a task's user namespace runc bind-mounts device
// nodes from the host's same path.
func standInGPUs(t *testing.T) (specDir, driver string, err error) {
	t.Helper()
	needRoot(t)
	remove, err := gputest.CreateHostNodes()
	if err != nil {
		return "", "", err
	}
	t.Cleanup(remove)
	return gputest.WriteStandInSpecAt(t.TempDir(), true)
}

// TestAuditGPUHeldByAnotherTask: a spec naming a GPU another task holds
// alone is a finding, as `nsn-run spec` and Start refuse it (a
// twenty-first review passed one through the audit). The attack first:
// run with runc directly while the holder runs, the spec gives its task
// the holder's GPU too.
func TestAuditGPUHeldByAnotherTask(t *testing.T) {
	g := cliEnv(t)
	specDir, _, err := standInGPUs(t)
	if err != nil {
		t.Fatal(err)
	}
	// User namespaces off: the spec's host id range, which the holder
	// would take, is no part of this (its own check is
	// TestAuditRangeOfALiveTask).
	g = append(g, "--cdi-spec-dir", specDir, "--user-namespaces", "off")
	// Shown while GPU 0 was free.
	r := cli(t, g, "spec", "--id", uniqueID("intruder"), "--gpus", "device=0", "busybox", "--", "sh", "-c", "ls /dev | grep nvidia-standin")
	if r.code != 0 {
		t.Fatalf("spec: exit %d stderr %q", r.code, r.stderr)
	}
	intruder := []byte(r.stdout)
	holder := uniqueID("holder")
	if r := cli(t, g, "run", "-d", "--id", holder, "--gpus", "device=0", "busybox", "--", "sleep", "120"); r.code != 0 {
		t.Fatalf("run -d --gpus device=0: exit %d %s", r.code, r.stderr)
	}
	t.Cleanup(func() { cli(t, g, "rm", "-f", holder) })

	var s specs.Spec
	if err := json.Unmarshal(intruder, &s); err != nil {
		t.Fatal(err)
	}
	b := newBundle(t, "true")
	run := s
	run.Process = ptrTo(*s.Process)
	run.Process.ApparmorProfile = ""
	run.Linux = ptrTo(*s.Linux)
	run.Linux.Sysctl = nil // runc before 1.4 refuses user.* sysctls
	run.Mounts = slices.Clone(s.Mounts)
	for i := range run.Mounts {
		if run.Mounts[i].Destination == spec.OutputPath {
			run.Mounts[i].Source = b.outDir // the intruder's state was never made
		}
	}
	// The CDI edits bind the driver's library: its mount point, which
	// the image would have, in the bundle's read-only root.
	lib := filepath.Join(b.dir, spec.RootfsPath, "usr", "lib", "libnvidia-standin.so")
	if err := os.MkdirAll(filepath.Dir(lib), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lib, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := b.run(t, &run)
	if err != nil || out != "nvidia-standin0\n" {
		t.Fatalf("bypass: want the held GPU in the intruder's task: %v\n%s%s", err, out, errOut)
	}
	t.Logf("bypass: the intruder's task saw %s while task %s held GPU 0", strings.TrimSpace(out), holder)

	want := "is allocated to task " + holder
	if a := runCLI(t, intruder, slices.Concat([]string{"audit"}, g, []string{"-"})...); a.code != 1 || !strings.Contains(a.stdout, want) {
		t.Errorf("audit of a spec naming the held GPU: exit %d: %s%s; want a finding %q", a.code, a.stdout, a.stderr, want)
	}
	if r := cli(t, g, "rm", "-f", holder); r.code != 0 {
		t.Fatalf("rm -f: exit %d %s", r.code, r.stderr)
	}
	if a := runCLI(t, intruder, slices.Concat([]string{"audit"}, g, []string{"-"})...); a.code != 0 {
		t.Errorf("audit of the same spec once the GPU is free: exit %d: %s%s", a.code, a.stdout, a.stderr)
	}
}
