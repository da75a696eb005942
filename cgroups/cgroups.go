// Package cgroups turns a task's cgroup metrics, cgroup v1 or v2, as
// containerd reports them or as it reads them itself (Read, with
// containerd's library), into nsn-run's one stats.Sample, adds the peaks only the
// host's cgroup v2 files hold, and says the host's cgroup layout. It links
// containerd's cgroups library; the backend-neutral Sample and the peaks of
// a series live in package stats, which the Docker backend uses without it.
// It also keeps the node's one cgroup for every task's logger process
// (ConfineLogger).
package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	"github.com/containerd/cgroups/v3/cgroup2"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/stats"
)

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
func FromMetrics(m any, at time.Time) (stats.Sample, error) {
	switch m := m.(type) {
	case *v1.Metrics:
		s := stats.Sample{Time: at, Version: 1}
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
		return stats.Sample{
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
		return stats.Sample{}, fmt.Errorf("%w: metrics of type %T are not cgroup v1 or v2 metrics", errdefs.ErrNotImplemented, m)
	}
}

// Read takes the metrics of cgroup group ("/nsn/ID") from this host's
// cgroup filesystem with containerd's cgroups library, as the runc shim's
// Stats does (v2 where the hierarchy is unified, v1 otherwise), without a
// round trip through containerd and the shim. A group that does not exist
// here, before or after the read (the library reads a file that went
// away as zero), is an ErrNotFound.
func Read(group string) (stats.Sample, error) {
	group = filepath.Clean("/" + group)
	at := time.Now()
	if cgroups.Mode() != cgroups.Unified {
		return readV1(group, at)
	}
	dir := filepath.Join(V2Root, group)
	if _, err := os.Stat(dir); err != nil {
		return stats.Sample{}, fmt.Errorf("%w: cgroup %s: %w", errdefs.ErrNotFound, group, err)
	}
	cg, err := cgroup2.Load(group)
	if err != nil {
		return stats.Sample{}, fmt.Errorf("load cgroup %s: %w", group, err)
	}
	// What FromMetrics reads, not the io, rdma and hugetlb files.
	m, err := cg.StatFiltered(cgroup2.StatPids | cgroup2.StatCPU | cgroup2.StatMemory | cgroup2.StatMemoryEvents)
	if err != nil {
		return stats.Sample{}, fmt.Errorf("read cgroup %s: %w", group, err)
	}
	// A v2 group goes in one rmdir.
	if _, err := os.Stat(dir); err != nil {
		return stats.Sample{}, fmt.Errorf("%w: cgroup %s went away while read: %w", errdefs.ErrNotFound, group, err)
	}
	return FromMetrics(m, at)
}

// v1Read are the v1 controllers FromMetrics reads.
var v1Read = []cgroup1.Name{cgroup1.Memory, cgroup1.Cpuacct, cgroup1.Pids}

// readV1 is Read on a v1 host. runc removes a v1 group controller by
// controller, and the library skips (and reads as zero) one that is gone:
// a group that lacks any controller FromMetrics reads, after the read, is
// being deleted.
func readV1(group string, at time.Time) (stats.Sample, error) {
	subsystems, err := v1Hierarchy()
	if err != nil {
		return stats.Sample{}, fmt.Errorf("cgroup v1 controllers: %w", err)
	}
	hierarchy := func() ([]cgroup1.Subsystem, error) { return subsystems, nil }
	cg, err := cgroup1.Load(cgroup1.StaticPath(group), cgroup1.WithHierarchy(hierarchy))
	if errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return stats.Sample{}, fmt.Errorf("%w: cgroup %s: %w", errdefs.ErrNotFound, group, err)
	}
	if err != nil {
		return stats.Sample{}, fmt.Errorf("load cgroup %s: %w", group, err)
	}
	m, err := cg.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return stats.Sample{}, fmt.Errorf("read cgroup %s: %w", group, err)
	}
	for _, s := range subsystems {
		p, ok := s.(interface{ Path(string) string })
		if !ok || !slices.Contains(v1Read, s.Name()) {
			continue
		}
		if _, err := os.Lstat(p.Path(group)); err != nil {
			return stats.Sample{}, fmt.Errorf("%w: cgroup %s: no %s controller after the read: %w", errdefs.ErrNotFound, group, s.Name(), err)
		}
	}
	return FromMetrics(m, at)
}

// v1Subsystems caches the host's cgroup v1 controllers once found (the
// library otherwise reads the mount table on every load); a failure is
// not cached.
var (
	v1Mu         sync.Mutex
	v1Subsystems []cgroup1.Subsystem
)

func v1Hierarchy() ([]cgroup1.Subsystem, error) {
	v1Mu.Lock()
	defer v1Mu.Unlock()
	if v1Subsystems != nil {
		return v1Subsystems, nil
	}
	subsystems, err := cgroup1.Default()
	if err != nil {
		return nil, err
	}
	v1Subsystems = subsystems
	return subsystems, nil
}

// V2Root is where the unified hierarchy is mounted.
const V2Root = "/sys/fs/cgroup"

// V1PidsRoot is where the cgroup v1 pids hierarchy is mounted.
const V1PidsRoot = "/sys/fs/cgroup/pids"

// AddPidsEvents fills in how many forks the group's pids limit refused:
// the "max" count of pids.events (v1 and v2 alike), which containerd's
// metrics do not carry. root is V2Root or V1PidsRoot (a fixture dir in
// tests), group the cgroup path ("/nsn/ID"). A missing file is skipped.
func AddPidsEvents(s stats.Sample, root, group string) stats.Sample {
	if n, ok := stats.PidsLimitHits(filepath.Join(root, filepath.Clean("/"+group))); ok {
		s.PidsLimitHits = max(s.PidsLimitHits, n)
	}
	return s
}

// PidsRoot is the mount of the hierarchy that holds pids.events on this
// host: the unified one, or v1's pids controller.
func PidsRoot() string {
	if Mode() == "unified" {
		return V2Root
	}
	return V1PidsRoot
}

// AddV2Peaks fills in the kernel's own high-water marks of a cgroup v2
// group (memory.peak, Linux 5.19+; pids.peak, Linux 6.1+), which
// containerd's metrics do not carry: with them a peak is exact, not as good
// as the sampling interval. root is V2Root (a fixture dir in tests), group
// the cgroup path ("/nsn/ID"). Files the kernel lacks are skipped.
func AddV2Peaks(s stats.Sample, root, group string) stats.Sample {
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

// Populated reports whether the cgroup group ("/nsn/ID") of the hierarchy
// at root (PidsRoot(), or a fixture dir in tests) has processes in it. A
// group that does not exist has none.
func Populated(root, group string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(root, filepath.Clean("/"+group), "cgroup.procs"))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return len(strings.TrimSpace(string(b))) > 0, nil
}

// Kill sends SIGKILL to every process in the cgroup group ("/nsn/ID"),
// without a runtime: what a deadline falls back to when the daemon that
// would signal the task cannot be reached. On cgroup v2 it writes
// cgroup.kill (Linux 5.14+; the library freezes and signals each process
// on older kernels); on v1 it freezes the group in the freezer hierarchy,
// signals each of its processes and thaws it, as runc's kill --all does: a
// frozen process can neither exit nor fork, so no pid read from the group
// can be reused by a process outside it before it is signalled. A group
// that does not exist, or has no process left to kill, is an ErrNotFound:
// the task had exited.
func Kill(group string) error {
	group = filepath.Clean("/" + group)
	if cgroups.Mode() == cgroups.Unified {
		if busy, err := Populated(V2Root, group); err != nil || !busy {
			return fmt.Errorf("%w: cgroup %s has no process (%v)", errdefs.ErrNotFound, group, err)
		}
		cg, err := cgroup2.Load(group)
		if err != nil {
			return fmt.Errorf("load cgroup %s: %w", group, err)
		}
		if err := cg.Kill(); err != nil {
			return fmt.Errorf("kill cgroup %s: %w", group, err)
		}
		return nil
	}
	dir, err := v1FreezerDir(group)
	if err != nil {
		return err
	}
	if busy, err := Populated(strings.TrimSuffix(dir, group), group); err != nil || !busy {
		return fmt.Errorf("%w: cgroup %s has no process (%v)", errdefs.ErrNotFound, group, err)
	}
	// The library waits for FROZEN without end, and a group can stay
	// FREEZING (a process in an uninterruptible wait): the kill goes
	// after freezeWait either way, a reused pid then only a remote risk.
	state := filepath.Join(dir, "freezer.state")
	_ = os.WriteFile(state, []byte("FROZEN"), 0)
	for deadline := time.Now().Add(freezeWait); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if b, err := os.ReadFile(state); err != nil || strings.TrimSpace(string(b)) == "FROZEN" {
			break
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	for _, f := range strings.Fields(string(b)) {
		pid, perr := strconv.Atoi(f)
		if perr != nil {
			continue
		}
		if kerr := unix.Kill(pid, unix.SIGKILL); kerr != nil && !errors.Is(kerr, unix.ESRCH) {
			err = errors.Join(err, fmt.Errorf("kill pid %d: %w", pid, kerr))
		}
	}
	if terr := os.WriteFile(state, []byte("THAWED"), 0); terr != nil && !errors.Is(terr, fs.ErrNotExist) {
		err = errors.Join(err, fmt.Errorf("thaw: %w", terr))
	}
	if err != nil {
		return fmt.Errorf("kill cgroup %s: %w", group, err)
	}
	return nil
}

// freezeWait bounds how long Kill waits for a v1 group to freeze.
const freezeWait = time.Second

// v1FreezerDir is group's directory in the v1 freezer hierarchy.
func v1FreezerDir(group string) (string, error) {
	subsystems, err := v1Hierarchy()
	if err != nil {
		return "", fmt.Errorf("cgroup v1 controllers: %w", err)
	}
	for _, s := range subsystems {
		if p, ok := s.(interface{ Path(string) string }); ok && s.Name() == cgroup1.Freezer {
			return p.Path(group), nil
		}
	}
	return "", fmt.Errorf("kill cgroup %s: %w", group, cgroup1.ErrFreezerNotSupported)
}
