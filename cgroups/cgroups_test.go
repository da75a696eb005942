package cgroups

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	"github.com/containerd/cgroups/v3/cgroup2"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/nsn-run/nsn-run/stats"
)

// loadFixture reads metrics in containerd's protobuf JSON form.
// testdata/v1-metrics.json was recorded from a running task on this
// project's cgroup v1 (hybrid) hosts; testdata/v2-metrics.json carries the
// fields containerd's cgroup2 metrics report on a unified host.
func loadFixture(t *testing.T, name string, m proto.Message) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func TestFromMetricsV1Fixture(t *testing.T) {
	var m v1.Metrics
	loadFixture(t, "v1-metrics.json", &m)
	at := time.Unix(1000, 0)
	s, err := FromMetrics(&m, at)
	if err != nil {
		t.Fatal(err)
	}
	u := m.GetMemory().GetUsage()
	want := stats.Sample{
		Time: at, Version: 1,
		MemoryCurrentBytes: u.GetUsage(), MemoryPeakBytes: u.GetMax(), MemoryLimitBytes: 64 << 20,
		CPUUsageSeconds:     float64(m.GetCPU().GetUsage().GetTotal()) / 1e9,
		CPUThrottledPeriods: m.GetCPU().GetThrottling().GetThrottledPeriods(),
		CPUThrottledSeconds: float64(m.GetCPU().GetThrottling().GetThrottledTime()) / 1e9,
		PidsCurrent:         m.GetPids().GetCurrent(), PidsLimit: 32,
	}
	if s != want {
		t.Errorf("sample\n got %+v\nwant %+v", s, want)
	}
	// The recording is of a live task: the figures must be plausible.
	if s.MemoryCurrentBytes == 0 || s.MemoryPeakBytes < s.MemoryCurrentBytes || s.CPUUsageSeconds <= 0 || s.PidsCurrent == 0 {
		t.Errorf("implausible recorded sample %+v", s)
	}
}

func TestFromMetricsV2Fixture(t *testing.T) {
	var m v2.Metrics
	loadFixture(t, "v2-metrics.json", &m)
	at := time.Unix(2000, 0)
	s, err := FromMetrics(&m, at)
	if err != nil {
		t.Fatal(err)
	}
	want := stats.Sample{
		Time: at, Version: 2,
		MemoryCurrentBytes: 35651584, MemoryPeakBytes: 41943040, MemoryLimitBytes: 67108864,
		CPUUsageSeconds: 2.013456, CPUThrottledPeriods: 38, CPUThrottledSeconds: 1.901234,
		PidsCurrent: 3, PidsLimit: 32, OOMKills: 1,
	}
	if s != want {
		t.Errorf("sample\n got %+v\nwant %+v", s, want)
	}
}

func TestFromMetricsEmptyAndUnknown(t *testing.T) {
	for _, m := range []any{&v1.Metrics{}, &v2.Metrics{}} {
		s, err := FromMetrics(m, time.Time{})
		if err != nil || s.MemoryCurrentBytes != 0 || s.CPUUsageSeconds != 0 {
			t.Errorf("%T: %+v %v", m, s, err)
		}
	}
	if _, err := FromMetrics("not metrics", time.Time{}); !errdefs.IsNotImplemented(err) {
		t.Errorf("unknown metrics type: %v", err)
	}
}

func TestAddV2Peaks(t *testing.T) {
	root := t.TempDir()
	group := filepath.Join(root, "nsn", "job")
	if err := os.MkdirAll(group, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(group, "memory.peak"), []byte("41943040\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(group, "pids.peak"), []byte("32\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := AddV2Peaks(stats.Sample{MemoryPeakBytes: 1 << 20, PidsCurrent: 3}, root, "/nsn/job")
	if got.MemoryPeakBytes != 41943040 || got.PidsPeak != 32 {
		t.Errorf("peaks %d %d, want the kernel's 40 MiB and 32", got.MemoryPeakBytes, got.PidsPeak)
	}
	// A kernel without the files (or a group already gone) keeps the sample.
	same := AddV2Peaks(stats.Sample{MemoryPeakBytes: 7, PidsPeak: 2}, root, "/nsn/other")
	if same.MemoryPeakBytes != 7 || same.PidsPeak != 2 {
		t.Errorf("missing files changed the sample: %+v", same)
	}
	var p stats.Peaks
	p.Add(got)
	if p.Stats().PidsPeak != 32 {
		t.Errorf("Peaks ignored the kernel's pids peak: %+v", p.Stats())
	}
}

func TestAddPidsEvents(t *testing.T) {
	root := t.TempDir()
	group := filepath.Join(root, "nsn", "job")
	if err := os.MkdirAll(group, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(group, "pids.events"), []byte("max 17\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := AddPidsEvents(stats.Sample{PidsCurrent: 3}, root, "/nsn/job")
	if got.PidsLimitHits != 17 {
		t.Errorf("pids limit hits %d, want 17", got.PidsLimitHits)
	}
	if same := AddPidsEvents(stats.Sample{PidsLimitHits: 2}, root, "/nsn/gone"); same.PidsLimitHits != 2 {
		t.Errorf("a missing file changed the sample: %+v", same)
	}
	var p stats.Peaks
	p.Add(got)
	p.Add(stats.Sample{}) // a later sample of a group already gone
	if p.Stats().PidsLimitHits != 17 {
		t.Errorf("Peaks lost the hits: %+v", p.Stats())
	}
}

// TestRead: a cgroup made here with a memory and a pids limit reads back
// with them, in the host's cgroup version; a group that does not exist is
// ErrNotFound.
func TestRead(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("making a cgroup needs root")
	}
	group := fmt.Sprintf("/nsn-run-test-%d", os.Getpid())
	const memory, pids = 64 << 20, 77
	wantVersion := 1
	if Mode() == "unified" {
		wantVersion = 2
		m, err := cgroup2.NewManager(V2Root, group, &cgroup2.Resources{
			Memory: &cgroup2.Memory{Max: ptr(int64(memory))}, Pids: &cgroup2.Pids{Max: pids}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Delete() })
	} else {
		cg, err := cgroup1.New(cgroup1.StaticPath(group), &specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: ptr(int64(memory))}, Pids: &specs.LinuxPids{Limit: ptr(int64(pids))}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cg.Delete() })
	}
	s, err := Read(group)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version != wantVersion || s.MemoryLimitBytes != memory || s.PidsLimit != pids || s.Time.IsZero() {
		t.Errorf("read %+v; want version %d, memory limit %d, pids limit %d", s, wantVersion, memory, pids)
	}
	if _, err := Read(group + "-missing"); !errdefs.IsNotFound(err) {
		t.Errorf("a missing group: %v, want ErrNotFound", err)
	}
	if wantVersion == 1 {
		// runc removes a v1 group controller by controller: a group
		// without its memory controller is one being deleted, not one
		// that uses no memory.
		if err := os.Remove(filepath.Join("/sys/fs/cgroup/memory", group)); err != nil {
			t.Fatal(err)
		}
		if s, err := Read(group); !errdefs.IsNotFound(err) {
			t.Errorf("a group half removed: %+v, %v; want ErrNotFound", s, err)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestPopulated(t *testing.T) {
	root := t.TempDir()
	for group, procs := range map[string]string{"/nsn/busy": "4242\n4243\n", "/nsn/empty": ""} {
		dir := filepath.Join(root, group)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(procs), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for group, want := range map[string]bool{"/nsn/busy": true, "/nsn/empty": false, "/nsn/absent": false, "nsn/busy": true} {
		got, err := Populated(root, group)
		if err != nil || got != want {
			t.Errorf("Populated(%s) = %v, %v; want %v", group, got, err, want)
		}
	}
}
