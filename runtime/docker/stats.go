package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/nsn-run/nsn-run/stats"
)

// Stats implements runtime.Backend from one stats sample of the Engine API,
// which reports cgroup v1 and v2 in one shape.
func (b *Backend) Stats(ctx context.Context, id string) (stats.Sample, error) {
	res, err := b.client.ContainerStats(ctx, id, client.ContainerStatsOptions{})
	if err != nil {
		return stats.Sample{}, fmt.Errorf("stats of task %s: %w", id, err)
	}
	defer res.Body.Close()
	var s container.StatsResponse
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&s); err != nil {
		return stats.Sample{}, fmt.Errorf("decode stats of task %s: %w", id, err)
	}
	sample := sampleFromStats(s)
	if b.cfg.GPUUsage == nil {
		return sample, nil
	}
	pids, err := b.hostPids(ctx, id)
	if err != nil {
		return sample, err
	}
	u, err := b.cfg.GPUUsage.Usage(ctx, pids)
	if err != nil {
		return sample, fmt.Errorf("GPU usage of task %s: %w", id, err)
	}
	return sample.WithGPU(u), nil
}

// hostPids lists the host pids of task id's processes: those in the cgroup
// of its init process.
func (b *Backend) hostPids(ctx context.Context, id string) ([]uint32, error) {
	res, err := b.client.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return nil, fmt.Errorf("task %s: %w", id, err)
	}
	if res.Container.State == nil || res.Container.State.Pid == 0 {
		return nil, nil // not running: no processes hold GPU memory
	}
	return pidsInCgroupOf(hostProc, res.Container.State.Pid)
}

// sampleFromStats maps the Engine API's stats to a Sample. A stopped
// container reports zeros; its peaks come from earlier samples.
func sampleFromStats(s container.StatsResponse) stats.Sample {
	version := 1
	if _, ok := s.MemoryStats.Stats["anon"]; ok { // a cgroup v2 memory.stat key
		version = 2
	}
	return stats.Sample{
		Time:                s.Read,
		Version:             version,
		MemoryCurrentBytes:  s.MemoryStats.Usage,
		MemoryPeakBytes:     s.MemoryStats.MaxUsage,
		MemoryLimitBytes:    s.MemoryStats.Limit,
		CPUUsageSeconds:     float64(s.CPUStats.CPUUsage.TotalUsage) / 1e9,
		CPUThrottledPeriods: s.CPUStats.ThrottlingData.ThrottledPeriods,
		CPUThrottledSeconds: float64(s.CPUStats.ThrottlingData.ThrottledTime) / 1e9,
		PidsCurrent:         s.PidsStats.Current,
		PidsLimit:           s.PidsStats.Limit,
		OOMKills:            s.MemoryStats.Stats["oom_kill"],
	}
}
