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
	pid, err := b.initPid(ctx, id)
	if err != nil {
		return sample, err
	}
	if pid == 0 {
		return sample, nil // not running: no forks refused now, no GPU memory held
	}
	// The Engine API does not report pids.events: read it from the
	// container's group (dockerd must be local, as /output requires).
	if dir, err := pidsGroup(hostProc, pid); err == nil {
		if n, ok := stats.PidsLimitHits(dir); ok {
			sample.PidsLimitHits = n
		}
	}
	if !b.SamplesGPUUsage() {
		return sample, nil
	}
	pids, err := pidsInCgroupOf(hostProc, pid)
	if err != nil {
		return sample, err
	}
	u, err := b.cfg.GPUUsage.Usage(ctx, pids)
	if err != nil {
		return sample, fmt.Errorf("GPU usage of task %s: %w", id, err)
	}
	return sample.WithGPU(u), nil
}

// initPid is the host pid of task id's init process; 0 when it is not
// running.
func (b *Backend) initPid(ctx context.Context, id string) (int, error) {
	res, err := b.client.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return 0, fmt.Errorf("task %s: %w", id, err)
	}
	if res.Container.State == nil {
		return 0, nil
	}
	return res.Container.State.Pid, nil
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

// SamplesGPUUsage implements runtime.GPUUsageSampling: Stats adds GPU usage
// (and the Manager can enforce a GPU memory limit) with a GPUUsage sampler.
func (b *Backend) SamplesGPUUsage() bool { return b.cfg.GPUUsage != nil }
