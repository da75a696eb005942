package containerd

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/typeurl/v2"

	"github.com/nsn-run/nsn-run/cgroups"
	"github.com/nsn-run/nsn-run/stats"
)

// Stats implements runtime.Backend from the task's cgroup metrics.
func (b *Backend) Stats(ctx context.Context, id string) (stats.Sample, error) {
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
	s, err := cgroups.FromMetrics(data, at)
	if err != nil {
		return s, err
	}
	// The spec's cgroup path is /<namespace>/<id> (containerd's default).
	group := "/" + b.cfg.Namespace + "/" + id
	if s.Version == 2 {
		s = cgroups.AddV2Peaks(s, cgroups.V2Root, group)
	}
	s = cgroups.AddPidsEvents(s, cgroups.PidsRoot(), group)
	if b.cfg.GPUUsage == nil {
		return s, nil
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
