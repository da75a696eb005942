// Package stats is the backend-neutral reading of a task's resources: one
// Sample type that every backend reports (from containerd's cgroup metrics,
// from the Engine API's stats), the CPU percent between two samples, and the
// peaks of a series for the task's Result. Plain data: no cgroup library,
// no daemon client, no cgo, so the Manager and both backends share it
// without linking each other's dependencies.
package stats

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nsn-run/nsn-run/task"
)

// Sample is one reading of a task's cgroup.
type Sample struct {
	Time    time.Time `json:"time"`
	Version int       `json:"cgroup_version"` // 1 or 2

	MemoryCurrentBytes uint64 `json:"memory_current_bytes"`
	// MemoryPeakBytes is the kernel's own high-water mark (v1
	// max_usage_in_bytes, v2 memory.peak); 0 where the kernel keeps none.
	MemoryPeakBytes  uint64 `json:"memory_peak_bytes"`
	MemoryLimitBytes uint64 `json:"memory_limit_bytes"`

	CPUUsageSeconds     float64 `json:"cpu_usage_seconds"`
	CPUThrottledPeriods uint64  `json:"cpu_throttled_periods"`
	CPUThrottledSeconds float64 `json:"cpu_throttled_seconds"`
	// CPUPercent is the CPU used since the previous sample, in percent of
	// one CPU (200 = two CPUs busy); 0 for a first sample.
	CPUPercent float64 `json:"cpu_percent"`

	PidsCurrent uint64 `json:"pids_current"`
	// PidsPeak is the kernel's pids high-water mark: on cgroup v2 read from
	// pids.peak (cgroups.AddV2Peaks; containerd's metrics do not carry
	// it); v1 keeps none, so there it is 0 and Peaks falls back to the
	// highest sampled PidsCurrent.
	PidsPeak  uint64 `json:"pids_peak"`
	PidsLimit uint64 `json:"pids_limit"`
	// PidsLimitHits counts the forks and clones the pids limit refused
	// (the "max" count of the group's pids.events): a task that hit it
	// lost processes or threads it tried to start.
	PidsLimitHits uint64 `json:"pids_limit_hits"`

	OOMKills uint64 `json:"oom_kills"`

	// GPUMemoryBytes and GPUUtilizationPercent come from a GPU usage
	// sampler (NVML), not the cgroup, for tasks with GPUs on backends
	// given one.
	GPUMemoryBytes        uint64 `json:"gpu_memory_bytes,omitempty"`
	GPUUtilizationPercent uint32 `json:"gpu_utilization_percent,omitempty"`
}

// WithCPUPercent returns s with CPUPercent computed against an earlier
// sample of the same task: CPU seconds used per wall second, in percent.
func (s Sample) WithCPUPercent(prev Sample) Sample {
	wall := s.Time.Sub(prev.Time).Seconds()
	used := s.CPUUsageSeconds - prev.CPUUsageSeconds
	if prev.Time.IsZero() || wall <= 0 || used < 0 {
		s.CPUPercent = 0
		return s
	}
	s.CPUPercent = used / wall * 100
	return s
}

// WithGPU returns s with a GPU usage reading of the task's processes.
func (s Sample) WithGPU(u GPUUsage) Sample {
	s.GPUMemoryBytes, s.GPUUtilizationPercent = u.MemoryBytes, u.UtilizationPercent
	return s
}

// GPUUsage is what a task's processes use of the node's GPUs.
type GPUUsage struct {
	// MemoryBytes is the GPU memory its processes hold, summed over
	// devices, as NVML accounts it per compute process.
	MemoryBytes uint64
	// UtilizationPercent is the highest utilisation among the GPUs its
	// processes run on (NVML reports utilisation per GPU, not per process).
	UtilizationPercent uint32
}

// Peaks keeps the high-water marks of a task's samples. Where the kernel
// keeps its own peak (memory; pids on v2) that wins; where it does not
// (pids on v1) the highest sampled value stands in, and is only as good as
// the sampling interval.
type Peaks struct {
	memory, pids, pidsHits, oomKills, gpuMemory uint64
	cpuSeconds                                  float64
}

// Add folds a sample into the peaks.
func (p *Peaks) Add(s Sample) {
	p.memory = max(p.memory, s.MemoryPeakBytes, s.MemoryCurrentBytes)
	p.pids = max(p.pids, s.PidsPeak, s.PidsCurrent)
	p.pidsHits = max(p.pidsHits, s.PidsLimitHits)
	p.oomKills = max(p.oomKills, s.OOMKills)
	p.cpuSeconds = max(p.cpuSeconds, s.CPUUsageSeconds)
	p.gpuMemory = max(p.gpuMemory, s.GPUMemoryBytes)
}

// Stats are the peaks as the Result reports them.
func (p *Peaks) Stats() task.Stats {
	return task.Stats{PeakMemoryBytes: p.memory, CPUUsageSeconds: p.cpuSeconds, PidsPeak: p.pids, PidsLimitHits: p.pidsHits, OOMKills: p.oomKills, PeakGPUMemoryBytes: p.gpuMemory}
}

// PidsLimitHits reads the "max" count of pids.events in the cgroup
// directory dir (v1's pids hierarchy or v2): how many forks and clones the
// group's pids limit refused. ok is false where the file is missing (the
// group is gone, or the kernel is too old).
func PidsLimitHits(dir string) (hits uint64, ok bool) {
	b, err := os.ReadFile(filepath.Join(dir, "pids.events"))
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, found := strings.CutPrefix(line, "max "); found {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}
