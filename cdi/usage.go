package cdi

import (
	"fmt"
	"slices"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/containerd/errdefs"
)

// Usage is what a task's processes use of the node's GPUs.
type Usage struct {
	// MemoryBytes is the GPU memory its processes hold, summed over
	// devices, as NVML accounts it per compute process.
	MemoryBytes uint64
	// UtilizationPercent is the highest utilisation among the GPUs its
	// processes run on (NVML reports utilisation per GPU, not per process).
	UtilizationPercent uint32
}

// UsageOf sums the GPU memory held by the host processes pids on every GPU
// NVML sees (a task's processes can only reach the GPUs it was given). lib
// must be initialised.
func UsageOf(lib nvml.Interface, pids []uint32) (Usage, error) {
	n, r := lib.DeviceGetCount()
	if r != nvml.SUCCESS {
		return Usage{}, fmt.Errorf("%w: NVML device count: %s", errdefs.ErrUnavailable, lib.ErrorString(r))
	}
	var u Usage
	for i := range n {
		dev, r := lib.DeviceGetHandleByIndex(i)
		if r != nvml.SUCCESS {
			return Usage{}, fmt.Errorf("%w: NVML device %d: %s", errdefs.ErrUnavailable, i, lib.ErrorString(r))
		}
		procs, r := dev.GetComputeRunningProcesses()
		if r != nvml.SUCCESS {
			return Usage{}, fmt.Errorf("%w: NVML processes on device %d: %s", errdefs.ErrUnavailable, i, lib.ErrorString(r))
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
