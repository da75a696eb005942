// Package cditest writes a CDI spec of stand-in GPUs for tests on hosts
// without one: nvidia.com/gpu=0 (also named by UUID0) is the host's
// /dev/zero and nvidia.com/gpu=1 its /dev/full, at /dev/nvidia-standinN in
// the container, with a common driver-file mount and env var, as NVIDIA's
// generated specs have.
package cditest

import (
	"fmt"
	"os"
	"path/filepath"
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
	specDir = filepath.Join(base, "cdi")
	if err := os.MkdirAll(specDir, 0o755); err != nil {
		return "", "", err
	}
	driver = filepath.Join(base, "libnvidia-standin.so")
	if err := os.WriteFile(driver, []byte("driver\n"), 0o644); err != nil {
		return "", "", err
	}
	yaml := fmt.Sprintf(`cdiVersion: "0.6.0"
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - {path: /dev/nvidia-standin0, hostPath: /dev/zero}
- name: %q
  containerEdits:
    deviceNodes:
    - {path: /dev/nvidia-standin0, hostPath: /dev/zero}
- name: "1"
  containerEdits:
    deviceNodes:
    - {path: /dev/nvidia-standin1, hostPath: /dev/full}
- name: %q
  containerEdits:
    deviceNodes:
    - {path: /dev/nvidia-standin1, hostPath: /dev/full}
- name: all
  containerEdits:
    deviceNodes:
    - {path: /dev/nvidia-standin0, hostPath: /dev/zero}
    - {path: /dev/nvidia-standin1, hostPath: /dev/full}
containerEdits:
  env: [NVIDIA_STANDIN=1]
  mounts:
  - {hostPath: %q, containerPath: %q, options: [ro, nosuid, nodev, bind]}
`, UUID0, UUID1, driver, DriverContainerPath)
	return specDir, driver, os.WriteFile(filepath.Join(specDir, "nvidia-standin.yaml"), []byte(yaml), 0o644)
}
