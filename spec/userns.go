package spec

import (
	"context"
	"maps"
	"os"
	"strconv"
	"sync"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// UserNSLimit is one of the per-user counts the kernel keeps in every user
// namespace (/proc/sys/user/Name), bounded in each task's own.
type UserNSLimit struct {
	Name  string
	Value int
}

// UserNSLimits bound each task in its own user namespace. The namespace is
// created by runc as host root, so the kernel charges what the task holds
// of each per-user count (inotify instances and watches, fanotify groups
// and marks, namespaces) first to the task's uid in its namespace, where
// the limit is unlimited, and then to host root in the initial namespace.
// Left alone, one task could spend host root's inotify instances (128 by
// default) and every host daemon running as root would get EMFILE. These
// keep each task far below root's budgets (root's 128 inotify instances
// hold 8 tasks' worth: doctor asks for more); nested namespaces of any kind
// are refused outright.
var UserNSLimits = []UserNSLimit{
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

// UserNSSysctlPrefix starts the linux.sysctl key of each UserNSLimit.
const UserNSSysctlPrefix = "user."

// hostUserNSSysctls are UserNSLimits as linux.sysctl entries, only those
// the running kernel has: runc refuses to create a task whose sysctl it
// cannot write, and an older kernel lacks the newer counts (fanotify's
// came in 5.13).
var hostUserNSSysctls = sync.OnceValue(func() map[string]string {
	m := make(map[string]string, len(UserNSLimits))
	for _, l := range UserNSLimits {
		if _, err := os.Stat("/proc/sys/user/" + l.Name); err == nil {
			m[UserNSSysctlPrefix+l.Name] = strconv.Itoa(l.Value)
		}
	}
	return m
})

// UserNSSysctls returns the linux.sysctl entries a task gets with
// Options.UserNSSysctls on this host: each UserNSLimit the kernel has, as
// "user.NAME": "VALUE". The map is the caller's.
func UserNSSysctls() map[string]string { return maps.Clone(hostUserNSSysctls()) }

// withUserNSLimits makes UserNSSysctls the task's only sysctls: runc (1.4
// and later) writes them in the task's user namespace as the namespace's
// root, after the namespaces exist and before anything of the task runs.
// Each one only bounds the task; none widens what it can tune.
func withUserNSLimits(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	s.Linux.Sysctl = UserNSSysctls()
	if len(s.Linux.Sysctl) == 0 {
		s.Linux.Sysctl = nil
	}
	return nil
}
