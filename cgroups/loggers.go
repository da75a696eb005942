package cgroups

import (
	"fmt"
	"math"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/errdefs"
	"github.com/nsn-run/nsn-run/task"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// LoggersGroup is the node's cgroup for tasks' logger processes (nsn-logger
// shim-logger and attach-logger): one for every task of every nsn-run on
// the host, so that what all loggers together copy costs the host at most
// its CPU quota. A logger runs outside its task's cgroup (the shim starts
// it before that cgroup exists, and an OOM kill of the task must not take
// its logs), and an outside review's task limited to 0.2 CPU that flooded
// stdout cost its logger about as much CPU again, unbounded by anything.
const LoggersGroup = "/nsn-run-loggers"

// DefaultLoggerCPUs is the loggers' quota when a backend sets none.
const DefaultLoggerCPUs = 0.5

// LoggerCPUs is the loggers' quota a backend configured with cpus uses:
// DefaultLoggerCPUs for zero; otherwise a number of CPUs in the range a
// task's --cpus takes (task.MinCPUs to task.MaxCPUs). Outside it the
// kernel refuses the quota at every task's start (an outside review: 0.001
// and 1e9 passed node.Open, and then every start failed with "write
// cpu.cfs_quota_us: invalid argument"), so it is refused here, once.
func LoggerCPUs(cpus float64) (float64, error) {
	if cpus == 0 {
		return DefaultLoggerCPUs, nil
	}
	if !(cpus >= task.MinCPUs && cpus <= task.MaxCPUs) {
		return 0, fmt.Errorf("%w: logger CPUs %v: must be between %v and %v", errdefs.ErrInvalidArgument, cpus, task.MinCPUs, task.MaxCPUs)
	}
	return cpus, nil
}

// cfsPeriod is the CFS period of the loggers' quota, the kernel's default.
const cfsPeriod uint64 = 100000

// ConfineLogger moves process pid into LoggersGroup (cgroup v1: its cpu
// hierarchy; v2: the unified one), creating it if missing, and sets the
// group's CPU quota to cpus. The quota is node-wide: the last call's
// value holds for every logger in it.
func ConfineLogger(pid int, cpus float64) error {
	if pid <= 1 {
		return fmt.Errorf("confine logger: %w: bad pid %d", errdefs.ErrInvalidArgument, pid)
	}
	if _, err := LoggerCPUs(cpus); err != nil || cpus == 0 {
		return fmt.Errorf("confine logger %d: %w: bad CPU quota %v", pid, errdefs.ErrInvalidArgument, cpus)
	}
	quota := int64(math.Ceil(cpus * float64(cfsPeriod)))
	period := cfsPeriod
	switch cgroups.Mode() {
	case cgroups.Unified:
		res := &cgroup2.Resources{CPU: &cgroup2.CPU{Max: cgroup2.NewCPUMax(&quota, &period)}}
		m, err := cgroup2.NewManager(V2Root, LoggersGroup, res)
		if err != nil {
			return fmt.Errorf("confine logger %d: cgroup %s: %w", pid, LoggersGroup, err)
		}
		if err := m.AddProc(uint64(pid)); err != nil {
			return fmt.Errorf("confine logger %d: move into %s: %w", pid, LoggersGroup, err)
		}
		return nil
	case cgroups.Legacy, cgroups.Hybrid:
		res := &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &quota, Period: &period}}
		cg, err := cgroup1.New(cgroup1.StaticPath(LoggersGroup), res, cgroup1.WithHierarchy(cgroup1.SingleSubsystem(cgroup1.Default, cgroup1.Cpu)))
		if err != nil {
			return fmt.Errorf("confine logger %d: cgroup %s: %w", pid, LoggersGroup, err)
		}
		if err := cg.AddProc(uint64(pid)); err != nil {
			return fmt.Errorf("confine logger %d: move into %s: %w", pid, LoggersGroup, err)
		}
		return nil
	}
	return fmt.Errorf("confine logger %d: %w: no cgroup filesystem", pid, errdefs.ErrFailedPrecondition)
}
