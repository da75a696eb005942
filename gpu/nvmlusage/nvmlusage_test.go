package nvmlusage

import (
	"context"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/stats"
)

// fakeNVML has two GPUs: GPU 0 runs the task's pids 100 and 101 and a
// stranger's 200; GPU 1 runs only the stranger.
func fakeNVML() *mock.Interface {
	devs := []*mock.Device{
		{
			GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) {
				return []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: 1 << 30}, {Pid: 101, UsedGpuMemory: 512 << 20}, {Pid: 200, UsedGpuMemory: 8 << 30}}, nvml.SUCCESS
			},
			GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 73}, nvml.SUCCESS },
		},
		{
			GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) {
				return []nvml.ProcessInfo{{Pid: 200, UsedGpuMemory: 4 << 30}}, nvml.SUCCESS
			},
			GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 99}, nvml.SUCCESS },
		},
	}
	return &mock.Interface{
		DeviceGetCountFunc:         func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) { return devs[i], nvml.SUCCESS },
		ErrorStringFunc:            func(r nvml.Return) string { return "error" },
	}
}

func TestUsage(t *testing.T) {
	ctx := context.Background()
	u, err := New(fakeNVML()).Usage(ctx, []uint32{100, 101, 102})
	if err != nil {
		t.Fatal(err)
	}
	if u.MemoryBytes != 1<<30+512<<20 || u.UtilizationPercent != 73 {
		t.Errorf("usage %+v: want the task's 1.5 GiB on GPU 0 and GPU 0's 73%%, nothing of the stranger's", u)
	}
	none, err := New(fakeNVML()).Usage(ctx, []uint32{999})
	if err != nil || none != (stats.GPUUsage{}) {
		t.Errorf("a task on no GPU: %+v %v", none, err)
	}
	broken := fakeNVML()
	broken.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	if _, err := New(broken).Usage(ctx, []uint32{100}); !errdefs.IsUnavailable(err) {
		t.Errorf("NVML failure: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := New(fakeNVML()).Usage(cancelled, []uint32{100}); err == nil {
		t.Error("a sample with its context ended went ahead")
	}
}
