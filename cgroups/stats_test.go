package cgroups

import (
	"testing"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/task"
)

func TestFromMetrics(t *testing.T) {
	cases := []struct {
		name string
		in   any
		want task.Stats
	}{
		{"v1", &v1.Metrics{
			Memory:           &v1.MemoryStat{Usage: &v1.MemoryEntry{Usage: 1 << 20, Max: 5 << 20, Limit: 64 << 20}},
			CPU:              &v1.CPUStat{Usage: &v1.CPUUsage{Total: 2_500_000_000}},
			Pids:             &v1.PidsStat{Current: 7, Limit: 32},
			MemoryOomControl: &v1.MemoryOomControl{OomKill: 1},
		}, task.Stats{PeakMemoryBytes: 5 << 20, CPUUsageSeconds: 2.5, PidsPeak: 7, OOMKills: 1}},
		{"v2", &v2.Metrics{
			Memory:       &v2.MemoryStat{Usage: 1 << 20, MaxUsage: 6 << 20, UsageLimit: 64 << 20},
			CPU:          &v2.CPUStat{UsageUsec: 1_250_000},
			Pids:         &v2.PidsStat{Current: 3, Limit: 32},
			MemoryEvents: &v2.MemoryEvents{Oom: 2, OomKill: 2},
		}, task.Stats{PeakMemoryBytes: 6 << 20, CPUUsageSeconds: 1.25, PidsPeak: 3, OOMKills: 2}},
		{"v1 empty", &v1.Metrics{}, task.Stats{}},
		{"v2 empty", &v2.Metrics{}, task.Stats{}},
	}
	for _, c := range cases {
		got, err := FromMetrics(c.in)
		if err != nil || got != c.want {
			t.Errorf("%s: got %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
	if _, err := FromMetrics("not metrics"); !errdefs.IsNotImplemented(err) {
		t.Errorf("unknown metrics type: %v", err)
	}
}
