// Package cgroups turns the cgroup metrics containerd reports for a task,
// cgroup v1 or v2, into nsn-run's one Stats type.
package cgroups

import (
	"fmt"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/task"
)

// FromMetrics decodes a task's metrics (the value containerd's
// Task.Metrics returns, after typeurl.UnmarshalAny) into Stats.
//
// cgroup v1: peak memory is memory.max_usage_in_bytes, OOM kills come from
// memory.oom_control's oom_kill, and v1 has no pids peak, so PidsPeak is the
// current count (the Monitor keeps the peak of its samples).
// cgroup v2: peak memory is memory.peak where the kernel has it, OOM kills
// are memory.events' oom_kill.
func FromMetrics(m any) (task.Stats, error) {
	switch m := m.(type) {
	case *v1.Metrics:
		var s task.Stats
		if mem := m.GetMemory(); mem != nil && mem.GetUsage() != nil {
			s.PeakMemoryBytes = mem.GetUsage().GetMax()
		}
		if cpu := m.GetCPU(); cpu != nil && cpu.GetUsage() != nil {
			s.CPUUsageSeconds = float64(cpu.GetUsage().GetTotal()) / 1e9
		}
		s.PidsPeak = m.GetPids().GetCurrent()
		s.OOMKills = m.GetMemoryOomControl().GetOomKill()
		return s, nil
	case *v2.Metrics:
		return task.Stats{
			PeakMemoryBytes: m.GetMemory().GetMaxUsage(),
			CPUUsageSeconds: float64(m.GetCPU().GetUsageUsec()) / 1e6,
			PidsPeak:        m.GetPids().GetCurrent(),
			OOMKills:        m.GetMemoryEvents().GetOomKill(),
		}, nil
	default:
		return task.Stats{}, fmt.Errorf("%w: metrics of type %T are not cgroup v1 or v2 metrics", errdefs.ErrNotImplemented, m)
	}
}
