package containerd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/contrib/apparmor"
	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/spec"
)

// Where the host's AppArmor is: the kernel's switch, its securityfs
// interface, and the parser that loads profiles.
const (
	appArmorEnabled = "/sys/module/apparmor/parameters/enabled"
	appArmorFS      = "/sys/kernel/security/apparmor"
	appArmorParser  = "/sbin/apparmor_parser"
)

// AppArmorProfile is the AppArmor profile tasks run under on this host:
// spec.DefaultAppArmorProfile where the kernel has AppArmor enabled, its
// securityfs is mounted and apparmor_parser is installed; empty
// elsewhere. The preview, the audit, Start and doctor all ask this, so
// they agree on one host. Unlike containerd's own test it does not look
// at the environment: a `container` variable in nsn-run's environment
// must not turn tasks' confinement off.
func AppArmorProfile() string {
	v, err := os.ReadFile(appArmorEnabled)
	if err != nil || !strings.HasPrefix(string(v), "Y") {
		return ""
	}
	if _, err := os.Stat(appArmorFS); err != nil {
		return ""
	}
	if _, err := os.Stat(appArmorParser); err != nil {
		return ""
	}
	return spec.DefaultAppArmorProfile
}

// loadAppArmorProfile loads containerd's default profile (contrib/apparmor,
// Docker's docker-default rules: no mount, no writes under /proc and /sys
// outside a task's own, no /sys/firmware or /sys/kernel/security, ptrace
// only among the task's own processes) under name, replacing whatever
// profile of that name is loaded (apparmor_parser -r): a stale or weaker
// one, or one in complain mode, does not stand in for it. The parser run
// is the one AppArmorProfile checked.
func loadAppArmorProfile(name string) error {
	if name == "" {
		return nil
	}
	text, err := apparmor.DumpDefaultProfile(name)
	if err != nil {
		return fmt.Errorf("%w: generate AppArmor profile %s: %w", errdefs.ErrFailedPrecondition, name, err)
	}
	dir, err := os.MkdirTemp("", "nsn-apparmor-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return err
	}
	if out, err := exec.Command(appArmorParser, "-Kr", path).CombinedOutput(); err != nil {
		return fmt.Errorf("%w: load AppArmor profile %s: %s: %w", errdefs.ErrFailedPrecondition, name, strings.TrimSpace(string(out)), err)
	}
	return nil
}
