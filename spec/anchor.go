package spec

import (
	"fmt"
	"path/filepath"

	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// Limits of the anchor container: an idle nsn-init needs a few pages and
// the Go runtime's threads (pids.max counts threads; 4 was too few to
// start it).
const (
	anchorMemoryBytes = 16 << 20
	anchorPids        = 16
	anchorUID         = 65534
)

// AnchorOpts are the spec options of a shim group's anchor container: an
// idle process (nsn-init --pause) whose only job is to keep its group's
// runc shim running between tasks. It runs no task code, and still gets a
// task's confinement: an empty read-only root with nsn-init bound into
// /dev, every namespace but the user's (and its own network namespace),
// no capabilities, no new privileges, nobody's ids, the tasks' seccomp
// filter and AppArmor profile, masked /proc and /sys paths, and tight
// memory and pids limits.
func AnchorOpts(hostname, initBinary, appArmorProfile string) ([]oci.SpecOpts, error) {
	if !filepath.IsAbs(initBinary) || filepath.Clean(initBinary) != initBinary {
		return nil, fmt.Errorf("%w: a shim group's anchor runs nsn-init, and no nsn-init binary (an absolute, clean path) is configured", errdefs.ErrFailedPrecondition)
	}
	return []oci.SpecOpts{
		oci.WithRootFSPath(RootfsPath),
		oci.WithRootFSReadonly(),
		withRootfsPropagation("rprivate"),
		oci.WithHostname(hostname),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.CgroupNamespace}),
		oci.WithProcessArgs(InitPath, "--pause"),
		oci.WithEnv([]string{"GOMAXPROCS=1"}),
		oci.WithProcessCwd("/"),
		oci.WithUIDGID(anchorUID, anchorUID),
		oci.WithNoNewPrivileges,
		withAppArmorProfile(appArmorProfile),
		oci.WithDefaultUnixDevices,
		withoutConsole,
		oci.WithMounts([]specs.Mount{initMount(initBinary)}),
		withMaskedPaths(requiredMaskedPaths),
		withReadonlyPaths(requiredReadonlyPaths),
		oci.WithMemoryLimit(anchorMemoryBytes),
		oci.WithMemorySwap(anchorMemoryBytes),
		oci.WithPidsLimit(anchorPids),
		withNoCapabilities,
		withSeccompProfile,
		withoutSysctls,
	}, nil
}
