package integration

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"

	"github.com/nsn-run/nsn-run/gpu/nvmlusage"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/runtime/docker"
	"github.com/nsn-run/nsn-run/stats"
	"github.com/nsn-run/nsn-run/task"
)

// GPU memory the fake NVML reports: each process of the task's (told apart
// by its unusual sleep argument), and a stranger on the same GPU (this test
// process) that must never be counted.
const (
	gpuPerTaskProcess = 100 << 20
	gpuStranger       = 1 << 30
)

// taskSleepArgs mark the task's processes on the host.
var taskSleepArgs = []string{"6061", "6062"}

// hostNVML is a fake NVML with one GPU whose compute processes are the
// host's processes running `sleep 6061` or `sleep 6062` (the task's), and
// this test process. It finds them in the host's /proc, so it knows nothing
// of containers: mapping a task to its processes is the backend's job.
func hostNVML() nvml.Interface {
	dev := &mock.Device{
		GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) {
			procs := []nvml.ProcessInfo{{Pid: uint32(os.Getpid()), UsedGpuMemory: gpuStranger}}
			entries, _ := os.ReadDir("/proc")
			for _, e := range entries {
				pid, err := strconv.Atoi(e.Name())
				if err != nil {
					continue
				}
				cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
				for _, arg := range taskSleepArgs {
					if bytes.Equal(cmdline, []byte("sleep\x00"+arg+"\x00")) {
						procs = append(procs, nvml.ProcessInfo{Pid: uint32(pid), UsedGpuMemory: gpuPerTaskProcess})
					}
				}
			}
			return procs, nvml.SUCCESS
		},
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 42}, nvml.SUCCESS },
	}
	return &mock.Interface{
		DeviceGetCountFunc:         func() (int, nvml.Return) { return 1, nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(int) (nvml.Device, nvml.Return) { return dev, nvml.SUCCESS },
		ErrorStringFunc:            func(nvml.Return) string { return "error" },
	}
}

// TestGPUStatsByHostPid, on both backends: a task's GPU memory is what NVML
// accounts to its own processes (a tree of two), never a stranger's on the
// same GPU; over --gpu-memory the task is killed as gpu_memory_exceeded.
func TestGPUStatsByHostPid(t *testing.T) {
	managers := map[string]func(t *testing.T) *runtime.Manager{
		"containerd": func(t *testing.T) *runtime.Manager {
			c, addr := containerdClient(t)
			importBusybox(t, c, addr)
			b, err := containerd.New(context.Background(), containerd.Config{Address: addr, Namespace: testNamespace, LoggerBinary: nsnLogger(t), GPUUsage: nvmlusage.New(hostNVML())})
			if err != nil {
				t.Fatal(err)
			}
			return gpuStatsManager(t, b)
		},
		"docker": func(t *testing.T) *runtime.Manager {
			loadDockerImages(t, dockerClient(t))
			b, err := docker.New(context.Background(), docker.Config{Host: os.Getenv(envDockerHost), GPUUsage: nvmlusage.New(hostNVML())})
			if err != nil {
				t.Fatal(err)
			}
			return gpuStatsManager(t, b)
		},
	}
	for name, newManager := range managers {
		t.Run(name, func(t *testing.T) {
			m := newManager(t)
			ctx := context.Background()
			tree := "sleep " + taskSleepArgs[0] + " & exec sleep " + taskSleepArgs[1]
			tk := seedTask(uniqueID("gpustats"), "sh", "-c", tree)
			if _, err := m.Spawn(ctx, tk); err != nil {
				t.Fatal(err)
			}
			// Watch samples until both processes hold GPU memory: the
			// second starts a moment after the first.
			watch, cancel := context.WithTimeout(ctx, time.Minute)
			samples, err := m.Monitor(watch, tk.ID, 20*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			var last stats.Sample
			for last = range samples {
				if last.GPUMemoryBytes >= 2*gpuPerTaskProcess {
					break
				}
			}
			cancel()
			if last.GPUMemoryBytes != 2*gpuPerTaskProcess || last.GPUUtilizationPercent != 42 {
				t.Errorf("GPU memory %d at %d%%, want %d (the task's two processes, not the stranger's) at the GPU's 42%%",
					last.GPUMemoryBytes, last.GPUUtilizationPercent, 2*gpuPerTaskProcess)
			}
			if err := m.Remove(ctx, tk.ID, true); err != nil {
				t.Fatal(err)
			}

			limited := seedTask(uniqueID("gpustats"), "sh", "-c", tree)
			limited.Limits.GPUMemoryBytes = 150 << 20
			res, err := m.Run(ctx, limited, runtime.RunOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Reason != task.ReasonGPUMemoryExceeded || res.ExitCode != 137 || res.Stats.PeakGPUMemoryBytes <= 150<<20 {
				t.Errorf("over --gpu-memory: reason %s exit %d peak GPU memory %d; want gpu_memory_exceeded, 137, over 150 MiB", res.Reason, res.ExitCode, res.Stats.PeakGPUMemoryBytes)
			}
		})
	}
}

func gpuStatsManager(t *testing.T, b interface {
	runtime.Backend
	Close() error
}) *runtime.Manager {
	t.Helper()
	t.Cleanup(func() { _ = b.Close() })
	m, err := runtime.New(runtime.Config{Backend: b, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = m.CleanupOrphans(context.Background(), true) })
	return m
}
