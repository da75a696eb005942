package audit

import (
	"slices"
	"strings"
)

// Rule ids. Each names a class of difference between a spec and what
// nsn-run would generate for its task.
const (
	RuleShape            = "spec-shape"
	RuleLimits           = "limits"
	RuleRoot             = "root"
	RuleUser             = "user"
	RuleCapabilities     = "capabilities"
	RuleNoNewPrivileges  = "no-new-privileges"
	RuleSeccomp          = "seccomp"
	RuleProcessLimits    = "process-limits"
	RuleLSM              = "lsm"
	RuleScheduling       = "scheduling"
	RuleTerminal         = "terminal"
	RuleProcess          = "process"
	RuleEnv              = "env"
	RuleNamespaces       = "namespaces"
	RuleUserNamespace    = "user-namespace"
	RuleMounts           = "mounts"
	RuleMountPropagation = "mount-propagation"
	RuleMaskedPaths      = "masked-paths"
	RuleDevices          = "devices"
	RuleResources        = "resources"
	RuleCgroups          = "cgroups"
	RuleSysctls          = "sysctls"
	RuleNetDevices       = "net-devices"
	RuleHooks            = "hooks"
	RuleAnnotations      = "annotations"
	RuleLinuxOther       = "linux-other"
	RuleSpecOther        = "spec-other"
)

// Rule is one class of finding, the benchmark items and advisories it comes
// from, and the unit tests (spec/audit TestMutations cases) whose spec
// breaks exactly this rule.
type Rule struct {
	ID      string
	Sources string
	Summary string
	// Paths are the spec fields the rule covers, without indices
	// ("linux.seccomp"); the longest match decides a difference's rule.
	Paths []string
	Tests []string
}

// TestNames are the full names of the unit tests that break the rule.
func (r Rule) TestNames() []string {
	names := make([]string, len(r.Tests))
	for i, n := range r.Tests {
		if r.ID == RuleJSONStrict {
			names[i] = "spec/audit TestDecodeStrict/" + n
		} else {
			names[i] = "spec/audit TestMutations/" + n
		}
	}
	return names
}

// Rules returns the rule table, for documentation and `nsn-run audit --rules`.
func Rules() []Rule { return slices.Clone(rules) }

var rules = []Rule{
	{RuleJSONStrict, "runtime-spec config; Go and runc match keys case-insensitively and keep the last duplicate, crun and youki do not",
		"every key is a runtime-spec field, spelled exactly, once per object", nil,
		[]string{"json-unknown-field", "json-case-variant", "json-duplicate-key"}},
	{RuleShape, "-", "the spec has a process, linux and root, and its hostname is a task id", []string{"hostname"},
		[]string{"no-process", "bad-hostname"}},
	{RuleLimits, "CIS 5.10, 5.11, 5.28; the operator's Policy.Max", "memory, CPU, pids, open files and /tmp within the task's bounds and the policy's maxima", nil,
		[]string{"memory-above-policy", "cpus-above-policy", "pids-out-of-bounds"}},
	{RuleRoot, "CIS 5.12", "root is the bundle's rootfs, read-only", []string{"root"},
		[]string{"root-path-host-usr", "root-writable"}},
	{RuleUser, "CIS 5.23; PSS restricted runAsNonRoot", "process user non-root, only its own group, umask 022", []string{"process.user"},
		[]string{"uid-0", "additional-gids"}},
	{RuleCapabilities, "CIS 5.3, 5.4; PSS restricted capabilities", "all five capability sets empty", []string{"process.capabilities"},
		[]string{"cap-sys-admin"}},
	{RuleNoNewPrivileges, "CIS 5.25; PSS restricted allowPrivilegeEscalation", "process.noNewPrivileges true", []string{"process.noNewPrivileges"},
		[]string{"no-new-privileges-off"}},
	{RuleSeccomp, "CIS 5.21; PSS restricted seccompProfile; the compat-ABI socketcall bypass", "exactly nsn-run's profile: no more syscalls, argument conditions, default action, flags, listener or architectures",
		[]string{"linux.seccomp"},
		[]string{"seccomp-extra-syscall", "seccomp-clone-arg-index", "seccomp-default-allow", "seccomp-flag-spec-allow", "seccomp-listener", "seccomp-compat-arch", "seccomp-missing"}},
	{RuleProcessLimits, "CIS 5.18 (ulimits); host OOM order", "rlimits as generated (NOFILE, CORE 0, RTPRIO 0, NICE 0, MEMLOCK, MSGQUEUE, SIGPENDING); oomScoreAdj the policy's",
		[]string{"process.rlimits", "process.oomScoreAdj"},
		[]string{"rlimit-core-raised", "rlimit-missing", "oom-score-lowered"}},
	{RuleLSM, "CIS 5.1, 5.2", "AppArmor profile exactly the policy's (nsn-run-default where the host has AppArmor), SELinux labels as generated (never unconfined or spc_t)",
		[]string{"process.apparmorProfile", "process.selinuxLabel", "linux.mountLabel"},
		[]string{"apparmor-unconfined", "apparmor-missing", "apparmor-other-profile", "selinux-spc"}},
	{RuleScheduling, "host scheduling fairness", "no scheduler policy, I/O priority or CPU affinity of the task's own",
		[]string{"process.scheduler", "process.ioPriority", "process.execCPUAffinity"},
		[]string{"sched-fifo"}},
	{RuleTerminal, "runc terminal handling (console socket)", "no terminal", []string{"process.terminal", "process.consoleSize"},
		[]string{"terminal"}},
	{RuleProcess, "-", "valid command, env and working dir; nsn-init as pid 1 only where the policy names it; no other process field", []string{"process"},
		[]string{"process-user-name", "args-empty", "init-not-allowed"}},
	{RuleEnv, "CVE-2025-23266 class: GPU selection outside CDI", "NVIDIA device-selection variables only as the granted devices' CDI edits set them", []string{"process.env"},
		[]string{"nvidia-visible-devices"}},
	{RuleNamespaces, "CIS 5.9, 5.15, 5.16, 5.20; PSS baseline host namespaces", "new pid, ipc, uts, mount, network and cgroup namespaces, none joined by path",
		[]string{"linux.namespaces"},
		[]string{"host-network", "namespace-path", "no-cgroup-namespace"}},
	{RuleUserNamespace, "runc: id mappings decide host identity; Kubernetes hostUsers: false", "the task's own user namespace: uids and gids map to one host range of the policy's span (never host 0), the one the task was granted, which no other live task on the node holds and the host gives no one else (subordinate ids, accounts); none where the policy has tasks share host ids",
		[]string{"linux.uidMappings", "linux.gidMappings"},
		[]string{"uid-map-host-root", "userns-range-outside-span", "userns-gid-differs", "userns-missing", "userns-where-host-identity", "userns-range-not-granted", "userns-range-held-by-another-task", "userns-range-of-another-state-dir", "userns-range-of-another-namespace", "userns-range-of-another-containerd", "userns-range-host-subordinate-ids"}},
	{RuleMounts, "CIS 5.5, 5.31; PSS baseline hostPath; runc evaluates options in order", "exactly the generated mounts: the task's output dir, the granted GPUs' CDI mounts and (with --init) the policy's nsn-init, read-only, are the only host paths",
		[]string{"mounts"},
		[]string{"devtmpfs", "second-procfs", "sys-ro-rw", "bind-host-tmp", "bind-tasks-dir", "overlay-host-lower", "cgroup-mount", "mounts-reordered", "bind-symlink-source", "bind-symlink-parent", "init-other-binary", "init-writable"}},
	{RuleMountPropagation, "CIS 5.19", "root propagation rprivate", []string{"linux.rootfsPropagation"},
		[]string{"rootfs-shared"}},
	{RuleMaskedPaths, "PSS baseline procMount", "at least the generated masked and read-only paths", []string{"linux.maskedPaths", "linux.readonlyPaths"},
		[]string{"unmask-kcore"}},
	{RuleDevices, "CIS 5.17; PSS baseline privileged; runc allows every linux.devices entry in the device cgroup", "only the granted GPUs' device nodes; the device cgroup as generated (deny-all first)",
		[]string{"linux.devices", "linux.resources.devices"},
		[]string{"device-alias-full", "device-cgroup-allow-all", "device-cgroup-empty"}},
	{RuleResources, "CIS 5.10, 5.11, 5.28", "cgroup resources exactly as generated: no unified keys, OOM killer on, no realtime, swap = memory",
		[]string{"linux.resources"},
		[]string{"unified-memory", "oom-killer-disabled", "cpu-realtime", "swap-unlimited"}},
	{RuleCgroups, "CIS 5.24", "cgroups path /NAMESPACE/ID", []string{"linux.cgroupsPath"},
		[]string{"cgroups-path-host"}},
	{RuleSysctls, "PSS baseline sysctls", "no sysctls but the user namespace's per-user limits, all of them at nsn-run's values (spec.UserNSLimits); none only where the policy lets the runner set them (runc before 1.4)", []string{"linux.sysctl"},
		[]string{"sysctl", "sysctl-beside-limits", "userns-limit-raised", "userns-limit-dropped", "userns-limits-missing", "userns-limit-alone"}},
	{RuleNetDevices, "CIS 5.9 (network isolation)", "no network devices moved in", []string{"linux.netDevices"},
		[]string{"net-device"}},
	{RuleHooks, "hooks run on the host as root; CVE-2025-23266", "exactly the hooks of the granted GPUs' CDI edits", []string{"hooks"},
		[]string{"hook-added", "hook-args-changed"}},
	{RuleAnnotations, "crun's run.oci.* and other runtime annotations change isolation", "only the annotations nsn-run writes: GPU annotations that name GPUs (nvidia.com/gpu, never another CDI kind) the CDI specs know, the operator's own shim group",
		[]string{"annotations"},
		[]string{"annotation-run-oci", "annotation-unknown-gpu", "annotation-non-gpu-device", "shim-group-other"}},
	{RuleLinuxOther, "-", "no other linux field (personality, intelRdt, timeOffsets, ...)", []string{"linux"},
		[]string{"personality"}},
	{RuleSpecOther, "-", "no other top-level field (domainname, vm, windows, ...)", nil,
		[]string{"domainname"}},
}

// RuleFor returns the rule a difference at shape (a path without indices)
// falls under: the rule with the longest matching path.
func RuleFor(shape string) string {
	best, bestLen := RuleSpecOther, -1
	for _, r := range rules {
		for _, p := range r.Paths {
			if (shape == p || strings.HasPrefix(shape, p+".") || strings.HasPrefix(shape, p+"[")) && len(p) > bestLen {
				best, bestLen = r.ID, len(p)
			}
		}
	}
	return best
}
