package containerd

import (
	"fmt"

	"github.com/containerd/containerd/v2/contrib/apparmor"
	hostapparmor "github.com/containerd/containerd/v2/pkg/apparmor"
	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/spec"
)

// AppArmorProfile is the AppArmor profile tasks run under on this host:
// spec.DefaultAppArmorProfile where the kernel has AppArmor enabled and
// apparmor_parser is installed (containerd's own test, which runc shares),
// empty elsewhere. The preview, the audit and Start all ask this, so they
// agree on one host.
func AppArmorProfile() string {
	if hostapparmor.HostSupports() {
		return spec.DefaultAppArmorProfile
	}
	return ""
}

// loadAppArmorProfile loads containerd's default profile (contrib/apparmor,
// Docker's docker-default rules: no mount, no writes under /proc and /sys
// outside a task's own, no /sys/firmware or /sys/kernel/security, ptrace
// only among the task's own processes) under name, unless a profile of
// that name is loaded already. An operator who edits the loaded profile
// keeps the edits.
func loadAppArmorProfile(name string) error {
	if name == "" {
		return nil
	}
	if err := apparmor.LoadDefaultProfile(name); err != nil {
		return fmt.Errorf("%w: load AppArmor profile %s: %w", errdefs.ErrFailedPrecondition, name, err)
	}
	return nil
}
