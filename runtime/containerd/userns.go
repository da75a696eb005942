package containerd

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/spec"
)

// limitUserNS sets spec.UserNSLimits in the user namespace of the created
// (not yet started) task whose init is pid, for a runtime that cannot set
// them from the spec (runc before 1.4 refuses user.* sysctls): a helper
// enters that namespace as its root, which may set the namespace's own
// limits, and writes them. Nothing of the task runs before they are in
// place. A limit the kernel does not have (an older kernel) is skipped;
// any other failure refuses the task.
func limitUserNS(ctx context.Context, pid uint32) error {
	var script strings.Builder
	script.WriteString("set -e\n")
	for _, l := range spec.UserNSLimits {
		p := "/proc/sys/user/" + l.Name
		fmt.Fprintf(&script, "if [ -e %s ]; then echo %d > %s; fi\n", p, l.Value, p)
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return fmt.Errorf("%w: nsenter (util-linux) is needed to bound a task's per-user kernel counts in its user namespace: %w", errdefs.ErrFailedPrecondition, err)
	}
	cmd := exec.CommandContext(ctx, nsenter, "--user", "--target", strconv.FormatUint(uint64(pid), 10), "--", "/bin/sh", "-c", script.String())
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("bound the per-user counts in task pid %d's user namespace: %w: %s", pid, err, strings.TrimSpace(string(out)))
	}
	return nil
}
