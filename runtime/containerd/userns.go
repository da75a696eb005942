package containerd

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// A task's user namespace is created by runc as host root, so the kernel
// charges what the task holds of each per-user count (inotify instances and
// watches, fanotify groups and marks, namespaces) first to the task's uid in
// its namespace, where the limit is unlimited, and then to host root in the
// initial namespace. Left alone, one task could spend host root's inotify
// instances (128 by default) and every host daemon running as root would
// get EMFILE. userNSLimits bound each task in its own namespace, far below
// root's budgets (root's 128 inotify instances hold 8 tasks' worth: doctor
// asks for more); nested namespaces of any kind are refused outright.
var userNSLimits = []struct {
	name  string
	value int
}{
	{"max_inotify_instances", 16},
	{"max_inotify_watches", 8192},
	{"max_fanotify_groups", 16},
	{"max_fanotify_marks", 8192},
	{"max_user_namespaces", 0},
	{"max_mnt_namespaces", 0},
	{"max_net_namespaces", 0},
	{"max_ipc_namespaces", 0},
	{"max_pid_namespaces", 0},
	{"max_uts_namespaces", 0},
	{"max_cgroup_namespaces", 0},
	{"max_time_namespaces", 0},
}

// UserNSLimits lists the per-task limits set in each task's user namespace
// (/proc/sys/user/NAME), for doctor and the docs.
func UserNSLimits() map[string]int {
	out := make(map[string]int, len(userNSLimits))
	for _, l := range userNSLimits {
		out[l.name] = l.value
	}
	return out
}

// limitUserNS sets userNSLimits in the user namespace of the created (not
// yet started) task whose init is pid: a helper enters that namespace as
// its root, which may set the namespace's own limits, and writes them.
// Nothing of the task runs before they are in place. A limit the kernel
// does not have (an older kernel) is skipped; any other failure refuses
// the task.
func limitUserNS(ctx context.Context, pid uint32) error {
	var script strings.Builder
	script.WriteString("set -e\n")
	for _, l := range userNSLimits {
		p := "/proc/sys/user/" + l.name
		fmt.Fprintf(&script, "if [ -e %s ]; then echo %d > %s; fi\n", p, l.value, p)
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
