package stats

import (
	"testing"
	"time"

	"github.com/nsn-run/nsn-run/task"
)

func TestCPUPercent(t *testing.T) {
	t0 := time.Unix(100, 0)
	prev := Sample{Time: t0, CPUUsageSeconds: 10}
	cases := []struct {
		name string
		cur  Sample
		prev Sample
		want float64
	}{
		{"half a CPU", Sample{Time: t0.Add(2 * time.Second), CPUUsageSeconds: 11}, prev, 50},
		{"two CPUs", Sample{Time: t0.Add(time.Second), CPUUsageSeconds: 12}, prev, 200},
		{"idle", Sample{Time: t0.Add(time.Second), CPUUsageSeconds: 10}, prev, 0},
		{"first sample", Sample{Time: t0, CPUUsageSeconds: 10}, Sample{}, 0},
		{"counter reset", Sample{Time: t0.Add(time.Second), CPUUsageSeconds: 1}, prev, 0},
		{"same instant", Sample{Time: t0, CPUUsageSeconds: 11}, prev, 0},
	}
	for _, c := range cases {
		if got := c.cur.WithCPUPercent(c.prev).CPUPercent; got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestPeaks(t *testing.T) {
	var p Peaks
	p.Add(Sample{MemoryCurrentBytes: 10, MemoryPeakBytes: 50, PidsCurrent: 4, CPUUsageSeconds: 1})
	p.Add(Sample{MemoryCurrentBytes: 60, PidsCurrent: 9, CPUUsageSeconds: 2, OOMKills: 1})
	p.Add(Sample{MemoryCurrentBytes: 5, MemoryPeakBytes: 55, PidsCurrent: 2, CPUUsageSeconds: 3})
	want := task.Stats{PeakMemoryBytes: 60, CPUUsageSeconds: 3, PidsPeak: 9, OOMKills: 1}
	if got := p.Stats(); got != want {
		t.Errorf("peaks %+v, want %+v", got, want)
	}
}

func TestWithGPU(t *testing.T) {
	s := Sample{MemoryCurrentBytes: 1}.WithGPU(GPUUsage{MemoryBytes: 3 << 30, UtilizationPercent: 40})
	if s.GPUMemoryBytes != 3<<30 || s.GPUUtilizationPercent != 40 || s.MemoryCurrentBytes != 1 {
		t.Errorf("sample %+v", s)
	}
	var p Peaks
	p.Add(s)
	p.Add(Sample{}.WithGPU(GPUUsage{MemoryBytes: 1 << 30}))
	if got := p.Stats().PeakGPUMemoryBytes; got != 3<<30 {
		t.Errorf("peak GPU memory %d, want the 3 GiB sampled first", got)
	}
}
