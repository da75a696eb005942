// Package nvmlusage samples what a task's processes use of the node's GPUs
// with NVIDIA's NVML. It is the GPU usage sampler the CLI wires into either
// backend (runtime.GPUUsageSampler); the backends know only that interface,
// so linking them does not link NVML or need cgo.
package nvmlusage

import (
	"context"
	"fmt"
	"slices"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/stats"
)

// Sampler sums the GPU memory NVML accounts to a set of host processes.
type Sampler struct {
	lib nvml.Interface
}

// New samples with lib, which must be initialised (a fake in tests).
func New(lib nvml.Interface) *Sampler { return &Sampler{lib: lib} }

// Open loads the host's NVML (libnvidia-ml.so.1, from the driver) and
// initialises it. Without a driver it fails with errdefs.ErrUnavailable;
// Close shuts NVML down again.
func Open() (*Sampler, error) {
	lib := nvml.New()
	if r := lib.Init(); r != nvml.SUCCESS {
		return nil, fmt.Errorf("%w: NVML: %s (is the NVIDIA driver installed?)", errdefs.ErrUnavailable, lib.ErrorString(r))
	}
	return New(lib), nil
}

// Close shuts down the NVML that Open initialised.
func (s *Sampler) Close() error {
	if r := s.lib.Shutdown(); r != nvml.SUCCESS {
		return fmt.Errorf("NVML shutdown: %s", s.lib.ErrorString(r))
	}
	return nil
}

// Usage sums the GPU memory held by the host processes pids on every GPU
// NVML sees (a task's processes can only reach the GPUs it was given), and
// takes the highest utilisation of the GPUs they use. NVML's calls take no
// context: ctx only stops a sample that has not begun.
func (s *Sampler) Usage(ctx context.Context, pids []uint32) (stats.GPUUsage, error) {
	if err := ctx.Err(); err != nil {
		return stats.GPUUsage{}, err
	}
	lib := s.lib
	n, r := lib.DeviceGetCount()
	if r != nvml.SUCCESS {
		return stats.GPUUsage{}, fmt.Errorf("%w: NVML device count: %s", errdefs.ErrUnavailable, lib.ErrorString(r))
	}
	var u stats.GPUUsage
	for i := range n {
		dev, r := lib.DeviceGetHandleByIndex(i)
		if r != nvml.SUCCESS {
			return stats.GPUUsage{}, fmt.Errorf("%w: NVML device %d: %s", errdefs.ErrUnavailable, i, lib.ErrorString(r))
		}
		procs, r := dev.GetComputeRunningProcesses()
		if r != nvml.SUCCESS {
			return stats.GPUUsage{}, fmt.Errorf("%w: NVML processes on device %d: %s", errdefs.ErrUnavailable, i, lib.ErrorString(r))
		}
		used := false
		for _, p := range procs {
			if slices.Contains(pids, p.Pid) {
				u.MemoryBytes += p.UsedGpuMemory
				used = true
			}
		}
		if used {
			if util, r := dev.GetUtilizationRates(); r == nvml.SUCCESS {
				u.UtilizationPercent = max(u.UtilizationPercent, util.Gpu)
			}
		}
	}
	return u, nil
}
