// Package gputest writes a CDI spec of stand-in GPUs for tests on hosts
// without one: nvidia.com/gpu=0 (also named by UUID0) is the host's
// /dev/zero and nvidia.com/gpu=1 its /dev/full, at /dev/nvidia-standinN in
// the container, with a common driver-file mount and env var, as NVIDIA's
// generated specs have.
package gputest

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// UUID0 and UUID1 are the UUID names of stand-in GPUs 0 and 1.
const (
	UUID0 = "GPU-11111111-1111-1111-1111-111111111111"
	UUID1 = "GPU-22222222-2222-2222-2222-222222222222"
)

// DriverContainerPath is where the stand-in driver file is mounted.
const DriverContainerPath = "/usr/lib/libnvidia-standin.so"

// WriteStandInSpec writes the spec under base/cdi and the driver file under
// base, and returns the spec dir and the driver file's host path.
func WriteStandInSpec(base string) (specDir, driver string, err error) {
	return WriteStandInSpecAt(base, false)
}

// HostNodes are the stand-in GPU nodes CreateHostNodes makes: GPU 0 is
// /dev/zero (c 1:5), GPU 1 /dev/full (c 1:7).
var HostNodes = []struct {
	Path         string
	Major, Minor uint32
}{{"/dev/nvidia-standin0", 1, 5}, {"/dev/nvidia-standin1", 1, 7}}

// CreateHostNodes makes HostNodes on the host (root only), for specs whose
// device nodes have the same path on the host and in the task, as the
// NVIDIA toolkit's do: inside a user namespace runc cannot create device
// nodes and bind-mounts the host's node from the same path. The returned
// func removes them.
func CreateHostNodes() (remove func(), err error) {
	for _, n := range HostNodes {
		_ = os.Remove(n.Path)
		if err := unix.Mknod(n.Path, unix.S_IFCHR|0o666, int(unix.Mkdev(n.Major, n.Minor))); err != nil {
			return nil, fmt.Errorf("create stand-in GPU node %s: %w", n.Path, err)
		}
		if err := os.Chmod(n.Path, 0o666); err != nil {
			return nil, err
		}
	}
	return func() {
		for _, n := range HostNodes {
			_ = os.Remove(n.Path)
		}
	}, nil
}

// WriteStandInSpecAt is WriteStandInSpec, with each node's hostPath its own
// path (CreateHostNodes) when hostNodes is set, else /dev/zero and
// /dev/full.
func WriteStandInSpecAt(base string, hostNodes bool) (specDir, driver string, err error) {
	specDir = filepath.Join(base, "cdi")
	if err := os.MkdirAll(specDir, 0o755); err != nil {
		return "", "", err
	}
	// The driver file is bind-mounted by runc inside the task's user
	// namespace, as a host's /usr/lib is: its directories must be
	// searchable by others (a test's temp dirs are 0700).
	for _, d := range []string{base, filepath.Dir(base)} {
		if err := os.Chmod(d, 0o755); err != nil {
			return "", "", err
		}
	}
	driver = filepath.Join(base, "libnvidia-standin.so")
	if err := os.WriteFile(driver, []byte("driver\n"), 0o644); err != nil {
		return "", "", err
	}
	zero, full := "/dev/zero", "/dev/full"
	if hostNodes {
		zero, full = HostNodes[0].Path, HostNodes[1].Path
	}
	yaml := fmt.Sprintf(`cdiVersion: "0.6.0"
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - {path: /dev/nvidia-standin0, hostPath: %[5]s}
- name: %[1]q
  containerEdits:
    deviceNodes:
    - {path: /dev/nvidia-standin0, hostPath: %[5]s}
- name: "1"
  containerEdits:
    deviceNodes:
    - {path: /dev/nvidia-standin1, hostPath: %[6]s}
- name: %[2]q
  containerEdits:
    deviceNodes:
    - {path: /dev/nvidia-standin1, hostPath: %[6]s}
- name: all
  containerEdits:
    deviceNodes:
    - {path: /dev/nvidia-standin0, hostPath: %[5]s}
    - {path: /dev/nvidia-standin1, hostPath: %[6]s}
containerEdits:
  env: [NVIDIA_STANDIN=1]
  mounts:
  - {hostPath: %[3]q, containerPath: %[4]q, options: [ro, nosuid, nodev, bind]}
`, UUID0, UUID1, driver, DriverContainerPath, zero, full)
	return specDir, driver, os.WriteFile(filepath.Join(specDir, "nvidia-standin.yaml"), []byte(yaml), 0o644)
}
