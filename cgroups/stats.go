// Package cgroups turns the cgroup metrics containerd reports for a task,
// cgroup v1 or v2, into nsn-run's one Sample type, and keeps the peaks of a
// series of samples for the task's Result.
package cgroups

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"

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
	// pids.peak by AddV2Peaks (containerd's metrics do not carry it); v1
	// keeps none, so there it is 0 and Peaks falls back to the highest
	// sampled PidsCurrent.
	PidsPeak  uint64 `json:"pids_peak"`
	PidsLimit uint64 `json:"pids_limit"`

	OOMKills uint64 `json:"oom_kills"`

	// GPUMemoryBytes and GPUUtilizationPercent come from NVML, not the
	// cgroup, for tasks with GPUs on backends that sample them.
	GPUMemoryBytes        uint64 `json:"gpu_memory_bytes,omitempty"`
	GPUUtilizationPercent uint32 `json:"gpu_utilization_percent,omitempty"`
}

// Mode reports the host's cgroup layout (containerd/cgroups' detection):
// "legacy" (v1), "hybrid" (v1 controllers, v2 mounted beside) or "unified".
func Mode() string {
	switch cgroups.Mode() {
	case cgroups.Legacy:
		return "legacy"
	case cgroups.Hybrid:
		return "hybrid"
	case cgroups.Unified:
		return "unified"
	}
	return "unavailable"
}

// FromMetrics decodes a task's metrics (the value containerd's
// Task.Metrics returns, after typeurl.UnmarshalAny) taken at time at.
//
// cgroup v1: memory peak is memory.max_usage_in_bytes, OOM kills are
// memory.oom_control's oom_kill (Linux 4.13+), CPU is cpuacct.usage in ns.
// cgroup v2: memory peak is memory.peak (Linux 5.19+), OOM kills are
// memory.events' oom_kill, CPU is cpu.stat's usage_usec.
func FromMetrics(m any, at time.Time) (Sample, error) {
	switch m := m.(type) {
	case *v1.Metrics:
		s := Sample{Time: at, Version: 1}
		if u := m.GetMemory().GetUsage(); u != nil {
			s.MemoryCurrentBytes, s.MemoryPeakBytes, s.MemoryLimitBytes = u.GetUsage(), u.GetMax(), u.GetLimit()
		}
		s.CPUUsageSeconds = float64(m.GetCPU().GetUsage().GetTotal()) / 1e9
		if th := m.GetCPU().GetThrottling(); th != nil {
			s.CPUThrottledPeriods, s.CPUThrottledSeconds = th.GetThrottledPeriods(), float64(th.GetThrottledTime())/1e9
		}
		s.PidsCurrent, s.PidsLimit = m.GetPids().GetCurrent(), m.GetPids().GetLimit()
		s.OOMKills = m.GetMemoryOomControl().GetOomKill()
		return s, nil
	case *v2.Metrics:
		mem := m.GetMemory()
		cpu := m.GetCPU()
		return Sample{
			Time:                at,
			Version:             2,
			MemoryCurrentBytes:  mem.GetUsage(),
			MemoryPeakBytes:     mem.GetMaxUsage(),
			MemoryLimitBytes:    mem.GetUsageLimit(),
			CPUUsageSeconds:     float64(cpu.GetUsageUsec()) / 1e6,
			CPUThrottledPeriods: cpu.GetNrThrottled(),
			CPUThrottledSeconds: float64(cpu.GetThrottledUsec()) / 1e6,
			PidsCurrent:         m.GetPids().GetCurrent(),
			PidsLimit:           m.GetPids().GetLimit(),
			OOMKills:            m.GetMemoryEvents().GetOomKill(),
		}, nil
	default:
		return Sample{}, fmt.Errorf("%w: metrics of type %T are not cgroup v1 or v2 metrics", errdefs.ErrNotImplemented, m)
	}
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

// Peaks keeps the high-water marks of a task's samples. Where the kernel
// keeps its own peak (memory; pids on v2) that wins; where it does not
// (pids on v1) the highest sampled value stands in, and is only as good as
// the sampling interval.
type Peaks struct {
	memory, pids, oomKills, gpuMemory uint64
	cpuSeconds                        float64
}

// Add folds a sample into the peaks.
func (p *Peaks) Add(s Sample) {
	p.memory = max(p.memory, s.MemoryPeakBytes, s.MemoryCurrentBytes)
	p.pids = max(p.pids, s.PidsPeak, s.PidsCurrent)
	p.oomKills = max(p.oomKills, s.OOMKills)
	p.cpuSeconds = max(p.cpuSeconds, s.CPUUsageSeconds)
	p.gpuMemory = max(p.gpuMemory, s.GPUMemoryBytes)
}

// Stats are the peaks as the Result reports them.
func (p *Peaks) Stats() task.Stats {
	return task.Stats{PeakMemoryBytes: p.memory, CPUUsageSeconds: p.cpuSeconds, PidsPeak: p.pids, OOMKills: p.oomKills, PeakGPUMemoryBytes: p.gpuMemory}
}

// V2Root is where the unified hierarchy is mounted.
const V2Root = "/sys/fs/cgroup"

// AddV2Peaks fills in the kernel's own high-water marks of a cgroup v2
// group (memory.peak, Linux 5.19+; pids.peak, Linux 6.1+), which
// containerd's metrics do not carry: with them a peak is exact, not as good
// as the sampling interval. root is V2Root (a fixture dir in tests), group
// the cgroup path ("/nsn/ID"). Files the kernel lacks are skipped.
func AddV2Peaks(s Sample, root, group string) Sample {
	read := func(name string) (uint64, bool) {
		b, err := os.ReadFile(filepath.Join(root, filepath.Clean("/"+group), name))
		if err != nil {
			return 0, false
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		return n, err == nil
	}
	if n, ok := read("memory.peak"); ok {
		s.MemoryPeakBytes = max(s.MemoryPeakBytes, n)
	}
	if n, ok := read("pids.peak"); ok {
		s.PidsPeak = max(s.PidsPeak, n)
	}
	return s
}
