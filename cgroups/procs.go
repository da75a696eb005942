package cgroups

import (
	"fmt"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
)

// PidsInCgroupOf lists, as host pids, every process in the cgroup of
// process pid and below it (its pids controller's group on cgroup v1). A
// backend whose API does not list a container's host pids (the Docker Engine
// API) finds them from the container's init process this way; NVML accounts
// GPU memory by host pid.
func PidsInCgroupOf(pid int) ([]uint32, error) {
	if cgroups.Mode() == cgroups.Unified {
		group, err := cgroup2.PidGroupPath(pid)
		if err != nil {
			return nil, fmt.Errorf("cgroup of pid %d: %w", pid, err)
		}
		m, err := cgroup2.Load(group)
		if err != nil {
			return nil, fmt.Errorf("cgroup %s: %w", group, err)
		}
		procs, err := m.Procs(true)
		if err != nil {
			return nil, fmt.Errorf("processes of cgroup %s: %w", group, err)
		}
		out := make([]uint32, len(procs))
		for i, p := range procs {
			out[i] = uint32(p)
		}
		return out, nil
	}
	path := cgroup1.PidPath(pid)
	pids, err := path(cgroup1.Pids)
	if err != nil {
		return nil, fmt.Errorf("pids cgroup of pid %d: %w", pid, err)
	}
	c, err := cgroup1.Load(cgroup1.StaticPath(pids), cgroup1.WithHierarchy(cgroup1.SingleSubsystem(cgroup1.Default, cgroup1.Pids)))
	if err != nil {
		return nil, fmt.Errorf("pids cgroup %s: %w", pids, err)
	}
	procs, err := c.Processes(cgroup1.Pids, true)
	if err != nil {
		return nil, fmt.Errorf("processes of pids cgroup %s: %w", pids, err)
	}
	out := make([]uint32, len(procs))
	for i, p := range procs {
		out[i] = uint32(p.Pid)
	}
	return out, nil
}
