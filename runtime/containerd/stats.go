package containerd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/typeurl/v2"

	"github.com/nsn-run/nsn-run/cgroups"
	"github.com/nsn-run/nsn-run/stats"
)

// Stats implements runtime.Backend from the task's cgroup metrics. A runc
// task this Backend started has them read from this host's cgroup
// filesystem (cgroups.Read; the spec's cgroup path is /<namespace>/<id>,
// audited); the task's shim reports them through containerd for any other
// task, and where that read fails (a manager that does not see the host's
// cgroups, a task gone).
func (b *Backend) Stats(ctx context.Context, id string) (stats.Sample, error) {
	group := "/" + b.cfg.Namespace + "/" + id
	var s stats.Sample
	err := errNotRead
	if _, ok := b.hostStats.Load(id); ok {
		s, err = cgroups.Read(group)
	}
	if err != nil {
		if s, err = b.shimStats(ctx, id); err != nil {
			return s, err
		}
	}
	if s.Version == 2 {
		s = cgroups.AddV2Peaks(s, cgroups.V2Root, group)
	}
	s = cgroups.AddPidsEvents(s, cgroups.PidsRoot(), group)
	if !b.SamplesGPUUsage() {
		return s, nil
	}
	tk, err := b.loadTask(ctx, id)
	if err != nil {
		return s, err
	}
	procs, err := tk.Pids(b.ns(ctx))
	if err != nil {
		return s, fmt.Errorf("processes of task %s: %w", id, err)
	}
	pids := make([]uint32, len(procs))
	for i, p := range procs {
		pids[i] = p.Pid
	}
	u, err := b.cfg.GPUUsage.Usage(ctx, pids)
	if err != nil {
		return s, fmt.Errorf("GPU usage of task %s: %w", id, err)
	}
	return s.WithGPU(u), nil
}

// errNotRead marks stats Stats did not read in-process.
var errNotRead = errors.New("not read in-process")

// shimStats asks the task's shim for its cgroup metrics.
func (b *Backend) shimStats(ctx context.Context, id string) (stats.Sample, error) {
	tk, err := b.loadTask(ctx, id)
	if err != nil {
		return stats.Sample{}, err
	}
	m, err := tk.Metrics(b.ns(ctx))
	if err != nil {
		return stats.Sample{}, fmt.Errorf("metrics of task %s: %w", id, err)
	}
	data, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return stats.Sample{}, fmt.Errorf("decode metrics of task %s: %w", id, err)
	}
	at := time.Now()
	if m.Timestamp != nil {
		at = m.Timestamp.AsTime()
	}
	return cgroups.FromMetrics(data, at)
}

// SamplesGPUUsage implements runtime.GPUUsageSampling: Stats adds GPU usage
// (and the Manager can enforce a GPU memory limit) with a GPUUsage sampler.
func (b *Backend) SamplesGPUUsage() bool { return b.cfg.GPUUsage != nil }
