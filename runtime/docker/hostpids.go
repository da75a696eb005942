package docker

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nsn-run/nsn-run/internal/mountinfo"
)

// hostProc is the host's /proc: the Engine API gives a container's init
// process as a host pid, and its cgroup is read from there.
const hostProc = "/proc"

// pidsInCgroupOf lists, as host pids, every process in the cgroup of
// process pid and below it: its group in the pids hierarchy where the pids
// controller is cgroup v1 (legacy and hybrid hosts), else its cgroup v2
// group. The Engine API does not list a container's host pids, and NVML
// accounts GPU memory by host pid. proc is the host's /proc (a fixture in
// tests); the mount points come from proc/self/mountinfo.
//
// It reads the cgroup files itself, as containerd's cgroups library would:
// that library is the containerd backend's, and the Docker backend links
// none of it for this one lookup.
func pidsInCgroupOf(proc string, pid int) ([]uint32, error) {
	dir, err := pidsGroup(proc, pid)
	if err != nil {
		return nil, err
	}
	return procsBelow(dir)
}

// pidsGroup is the directory of process pid's group in the hierarchy that
// holds its pids controller (v1's pids hierarchy, else cgroup v2).
func pidsGroup(proc string, pid int) (string, error) {
	b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return "", fmt.Errorf("cgroup of pid %d: %w", pid, err)
	}
	var v1Path, v2Path string
	var v1, v2 bool
	for line := range strings.Lines(string(b)) {
		// hierarchy-ID:controller-list:cgroup-path
		id, rest, ok := strings.Cut(strings.TrimRight(line, "\n"), ":")
		if !ok {
			continue
		}
		controllers, path, ok := strings.Cut(rest, ":")
		switch {
		case !ok:
		case id == "0" && controllers == "":
			v2Path, v2 = path, true
		case slices.Contains(strings.Split(controllers, ","), "pids"):
			v1Path, v1 = path, true
		}
	}
	mounts, err := mountinfo.Read(filepath.Join(proc, "self", "mountinfo"))
	if err != nil {
		return "", err
	}
	switch {
	case v1:
		m, ok := cgroupMount(mounts, "cgroup", "pids")
		if !ok {
			return "", fmt.Errorf("pids cgroup of pid %d: the pids hierarchy is not mounted", pid)
		}
		return groupDir(m, v1Path), nil
	case v2:
		m, ok := cgroupMount(mounts, "cgroup2", "")
		if !ok {
			return "", fmt.Errorf("cgroup of pid %d: cgroup2 is not mounted", pid)
		}
		return groupDir(m, v2Path), nil
	}
	return "", fmt.Errorf("cgroup of pid %d: neither a pids nor a cgroup v2 group in %s", pid, filepath.Join(proc, strconv.Itoa(pid), "cgroup"))
}

// procsBelow reads cgroup.procs in dir and every group below it. A group
// removed while it is read (its processes exited) is skipped; dir itself
// missing is an error.
func procsBelow(dir string) ([]uint32, error) {
	var pids []uint32
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path != dir && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			if path != dir && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		for f := range bytes.FieldsSeq(b) {
			n, err := strconv.ParseUint(string(f), 10, 32)
			if err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(path, "cgroup.procs"), err)
			}
			pids = append(pids, uint32(n))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("processes of cgroup %s: %w", dir, err)
	}
	return pids, nil
}

// cgroupMount finds the first mount of fstype ("cgroup", "cgroup2") that
// has the super option option (any, if empty).
func cgroupMount(mounts []mountinfo.Mount, fstype, option string) (mountinfo.Mount, bool) {
	for _, m := range mounts {
		if m.FSType == fstype && (option == "" || slices.Contains(m.SuperOptions, option)) {
			return m, true
		}
	}
	return mountinfo.Mount{}, false
}

// groupDir is the directory of a group path (as /proc/PID/cgroup names it)
// under the hierarchy's mount m: relative to the mount's root, where the
// mount shows only part of the hierarchy.
func groupDir(m mountinfo.Mount, path string) string {
	if m.Root != "/" {
		if rel, ok := strings.CutPrefix(path, m.Root); ok {
			path = rel
		}
	}
	return filepath.Join(m.MountPoint, filepath.Clean("/"+path))
}
