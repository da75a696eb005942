// Package audit checks any OCI runtime spec against nsn-run's isolation
// policy, drawn from the CIS Docker Benchmark (section 5, container runtime)
// and the Kubernetes Pod Security Standards "restricted" profile. The runtime
// refuses to start a spec with findings; reviewers run the same rules with
// `nsn-run audit`. docs/audit-rules.md lists every rule.
package audit

import (
	"fmt"
	"path"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/spec"
)

// Finding is one violation: the rule broken, the spec path it concerns (in
// JSON field names, e.g. "process.noNewPrivileges"), and one line of text.
type Finding struct {
	Rule    string `json:"rule"`
	Path    string `json:"path"`
	Message string `json:"message"`
}

func (f Finding) String() string { return f.Rule + " " + f.Path + ": " + f.Message }

// Policy is what the auditor allows beyond the fixed rules.
type Policy struct {
	// HookPaths are the only executables a hook may run (CDI's NVIDIA
	// hooks, for example). Empty allows no hook at all.
	HookPaths []string
	// DevicePaths are container device paths allowed besides the default
	// character devices (for example the /dev/nvidia* nodes CDI injects).
	DevicePaths []string
	// BindSources are host paths, or directories of them, that may be bind
	// mounted read-only even though they sit under a sensitive directory
	// (for example driver libraries a CDI spec mounts from /usr/lib).
	BindSources []string
}

// Check returns every finding for s under the default policy.
func Check(s *specs.Spec) []Finding { return CheckWithPolicy(s, Policy{}) }

// CheckWithPolicy returns every finding for s, in rule order.
func CheckWithPolicy(s *specs.Spec, p Policy) []Finding {
	a := &auditor{policy: p}
	if s == nil {
		a.add("spec-present", "", "spec is empty")
		return a.findings
	}
	for _, r := range rules {
		r.check(a, s)
	}
	return a.findings
}

type auditor struct {
	policy   Policy
	findings []Finding
}

func (a *auditor) add(rule, path, format string, args ...any) {
	a.findings = append(a.findings, Finding{Rule: rule, Path: path, Message: fmt.Sprintf(format, args...)})
}

// Rule is one check and the benchmark items it comes from.
type Rule struct {
	ID      string
	Sources string // CIS Docker Benchmark / Pod Security Standards items
	Summary string
	check   func(a *auditor, s *specs.Spec)
}

// Rules returns the rule table, for documentation and `nsn-run audit --rules`.
func Rules() []Rule { return slices.Clone(rules) }

var rules = []Rule{
	{"process-present", "-", "the spec has a process and a Linux section", checkPresent},
	{"user-non-root", "CIS 5.23; PSS restricted runAsNonRoot", "process runs with non-zero uid, gid and supplementary groups", checkUser},
	{"no-new-privileges", "CIS 5.25; PSS restricted allowPrivilegeEscalation", "process.noNewPrivileges is true", checkNoNewPrivileges},
	{"capabilities-empty", "CIS 5.3, 5.4; PSS restricted capabilities", "all five capability sets are empty", checkCapabilities},
	{"seccomp-enforced", "CIS 5.21; PSS restricted seccompProfile", "seccomp present with a denying default action", checkSeccompPresent},
	{"seccomp-dangerous-syscalls", "CIS 5.21", "seccomp does not allow mount, namespace, keyring, bpf, io_uring or module syscalls", checkSeccompSyscalls},
	{"rootfs-readonly", "CIS 5.12", "root filesystem is read-only", checkRootReadonly},
	{"namespaces-private", "CIS 5.9, 5.15, 5.16, 5.20; PSS baseline host namespaces", "new pid, ipc, uts, mount and network namespaces, none joined by path", checkNamespaces},
	{"masked-paths", "PSS baseline procMount", "sensitive /proc and /sys paths are masked", checkMaskedPaths},
	{"readonly-paths", "PSS baseline procMount", "/proc/sys and friends are read-only", checkReadonlyPaths},
	{"memory-limit", "CIS 5.10", "memory limit set, with swap equal to it", checkMemory},
	{"cpu-limit", "CIS 5.11", "CPU quota and period set", checkCPU},
	{"pids-limit", "CIS 5.28", "pids limit set", checkPids},
	{"no-sysctls", "PSS baseline sysctls", "no sysctls", checkSysctls},
	{"host-mounts", "CIS 5.5, 5.31; PSS baseline hostPath", "no sensitive host path or runtime socket is bind-mounted", checkHostMounts},
	{"kernel-fs-readonly", "CIS 5.5", "sysfs and cgroupfs are mounted read-only", checkKernelFS},
	{"mount-propagation", "CIS 5.19", "no shared or slave mount propagation", checkPropagation},
	{"devices", "CIS 5.17; PSS baseline privileged", "no device beyond the defaults and the policy's, no allow-all device rule", checkDevices},
	{"hooks", "-", "hooks only from the allowlist, with no LD_* in their env", checkHooks},
}

func checkPresent(a *auditor, s *specs.Spec) {
	if s.Process == nil {
		a.add("process-present", "process", "spec has no process")
	}
	if s.Linux == nil {
		a.add("process-present", "linux", "spec has no linux section")
	}
	if s.Root == nil {
		a.add("process-present", "root", "spec has no root")
	}
}

func checkUser(a *auditor, s *specs.Spec) {
	if s.Process == nil {
		return
	}
	u := s.Process.User
	if u.UID == 0 {
		a.add("user-non-root", "process.user.uid", "process runs as uid 0 (root)")
	}
	if u.GID == 0 {
		a.add("user-non-root", "process.user.gid", "process runs with gid 0 (root group)")
	}
	if slices.Contains(u.AdditionalGids, 0) {
		a.add("user-non-root", "process.user.additionalGids", "process is in supplementary group 0 (root)")
	}
}

func checkNoNewPrivileges(a *auditor, s *specs.Spec) {
	if s.Process != nil && !s.Process.NoNewPrivileges {
		a.add("no-new-privileges", "process.noNewPrivileges", "no_new_privileges is off: setuid binaries and file capabilities can raise privilege")
	}
}

func checkCapabilities(a *auditor, s *specs.Spec) {
	if s.Process == nil || s.Process.Capabilities == nil {
		// runc gives no capabilities when the object is absent.
		return
	}
	c := s.Process.Capabilities
	for _, set := range []struct {
		name string
		caps []string
	}{
		{"bounding", c.Bounding}, {"effective", c.Effective}, {"inheritable", c.Inheritable},
		{"permitted", c.Permitted}, {"ambient", c.Ambient},
	} {
		if len(set.caps) > 0 {
			a.add("capabilities-empty", "process.capabilities."+set.name, "capabilities granted: %s", strings.Join(set.caps, ","))
		}
	}
}

// permissive are the seccomp actions that let a syscall through.
var permissive = map[specs.LinuxSeccompAction]bool{
	specs.ActAllow:  true,
	specs.ActLog:    true,
	specs.ActNotify: true, // decided by a user-space agent: not a denial
	specs.ActTrace:  true, // decided by a tracer: not a denial
}

func checkSeccompPresent(a *auditor, s *specs.Spec) {
	if s.Linux == nil {
		return
	}
	sc := s.Linux.Seccomp
	if sc == nil {
		a.add("seccomp-enforced", "linux.seccomp", "no seccomp profile: every syscall is allowed")
		return
	}
	if permissive[sc.DefaultAction] {
		a.add("seccomp-enforced", "linux.seccomp.defaultAction", "default action %s lets unlisted syscalls through", sc.DefaultAction)
	}
}

// forbiddenSyscalls must never be allowed, with or without argument filters:
// they mount, enter or create namespaces, reach the kernel keyring, load BPF
// or kernel modules, or use io_uring (which bypasses seccomp for its ops).
var forbiddenSyscalls = []string{
	"mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree",
	"fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
	"unshare", "setns",
	"keyctl", "add_key", "request_key",
	"bpf",
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	"init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
	"open_by_handle_at", "clone3",
}

// cloneNamespaceFlags are the clone(2) flags that create namespaces; clone
// may be allowed only with an argument filter that rejects all of them.
const cloneNamespaceFlags = 0x7E020000 // CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET

func checkSeccompSyscalls(a *auditor, s *specs.Spec) {
	if s.Linux == nil || s.Linux.Seccomp == nil {
		return
	}
	for i, rule := range s.Linux.Seccomp.Syscalls {
		if !permissive[rule.Action] {
			continue
		}
		p := fmt.Sprintf("linux.seccomp.syscalls[%d]", i)
		for _, name := range rule.Names {
			switch {
			case slices.Contains(forbiddenSyscalls, name):
				a.add("seccomp-dangerous-syscalls", p, "%s is allowed (%s)", name, rule.Action)
			case name == "clone" && !cloneFiltered(rule.Args):
				a.add("seccomp-dangerous-syscalls", p, "clone is allowed without a filter on namespace flags")
			}
		}
	}
}

// cloneFiltered reports whether args restrict clone's flags so that no
// namespace flag can be set: a masked-equal test of the flags argument (arg 0
// on most architectures, arg 1 on s390) against zero covering every
// namespace bit.
func cloneFiltered(args []specs.LinuxSeccompArg) bool {
	for _, arg := range args {
		// Value is the mask, ValueTwo what the masked flags must equal.
		if arg.Op == specs.OpMaskedEqual && arg.ValueTwo == 0 && arg.Index <= 1 &&
			arg.Value&cloneNamespaceFlags == cloneNamespaceFlags {
			return true
		}
	}
	return false
}

func checkRootReadonly(a *auditor, s *specs.Spec) {
	if s.Root != nil && !s.Root.Readonly {
		a.add("rootfs-readonly", "root.readonly", "root filesystem is writable")
	}
}

func checkNamespaces(a *auditor, s *specs.Spec) {
	if s.Linux == nil {
		return
	}
	have := map[specs.LinuxNamespaceType]bool{}
	for i, ns := range s.Linux.Namespaces {
		have[ns.Type] = true
		if ns.Path != "" {
			a.add("namespaces-private", fmt.Sprintf("linux.namespaces[%d].path", i), "%s namespace joins an existing one at %s", ns.Type, ns.Path)
		}
	}
	for _, want := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace, specs.NetworkNamespace} {
		if !have[want] {
			a.add("namespaces-private", "linux.namespaces", "no new %s namespace: the host's is shared", want)
		}
	}
}

func checkMaskedPaths(a *auditor, s *specs.Spec) {
	if s.Linux == nil {
		return
	}
	for _, p := range spec.RequiredMaskedPaths() {
		if !slices.Contains(s.Linux.MaskedPaths, p) {
			a.add("masked-paths", "linux.maskedPaths", "%s is not masked", p)
		}
	}
}

func checkReadonlyPaths(a *auditor, s *specs.Spec) {
	if s.Linux == nil {
		return
	}
	for _, p := range spec.RequiredReadonlyPaths() {
		if !slices.Contains(s.Linux.ReadonlyPaths, p) {
			a.add("readonly-paths", "linux.readonlyPaths", "%s is not read-only", p)
		}
	}
}

func resources(s *specs.Spec) *specs.LinuxResources {
	if s.Linux == nil || s.Linux.Resources == nil {
		return &specs.LinuxResources{}
	}
	return s.Linux.Resources
}

func checkMemory(a *auditor, s *specs.Spec) {
	m := resources(s).Memory
	if m == nil || m.Limit == nil || *m.Limit <= 0 {
		a.add("memory-limit", "linux.resources.memory.limit", "no memory limit")
		return
	}
	if m.Swap == nil || *m.Swap != *m.Limit {
		a.add("memory-limit", "linux.resources.memory.swap", "memory+swap is not equal to the memory limit: the task can swap")
	}
}

func checkCPU(a *auditor, s *specs.Spec) {
	c := resources(s).CPU
	if c == nil || c.Quota == nil || *c.Quota <= 0 || c.Period == nil || *c.Period == 0 {
		a.add("cpu-limit", "linux.resources.cpu.quota", "no CPU quota")
	}
}

func checkPids(a *auditor, s *specs.Spec) {
	p := resources(s).Pids
	if p == nil || p.Limit == nil || *p.Limit <= 0 {
		a.add("pids-limit", "linux.resources.pids.limit", "no pids limit: a fork bomb can exhaust the host's pids")
	}
}

func checkSysctls(a *auditor, s *specs.Spec) {
	if s.Linux == nil {
		return
	}
	keys := make([]string, 0, len(s.Linux.Sysctl))
	for k := range s.Linux.Sysctl {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		a.add("no-sysctls", "linux.sysctl."+k, "sysctl %s is set", k)
	}
}

// sensitiveHostDirs may never be bind-mounted, nor anything inside them, nor
// any of their ancestors (binding "/" exposes all of them).
var sensitiveHostDirs = []string{
	"/boot", "/dev", "/etc", "/home", "/proc", "/root", "/run", "/sys", "/var/run",
	"/var/lib/containerd", "/var/lib/docker", "/var/lib/kubelet", "/var/lib/nsn-run/containerd",
	"/var/log",
}

// systemDirs hold the host's programs and libraries: never writable, and
// readable only where the policy allows (GPU driver files).
var systemDirs = []string{"/bin", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/sbin", "/usr"}

func isBind(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// within reports whether p is dir or lies inside it.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

func checkHostMounts(a *auditor, s *specs.Spec) {
	for i, m := range s.Mounts {
		if !isBind(m) {
			continue
		}
		at := fmt.Sprintf("mounts[%d].source", i)
		src := path.Clean(m.Source)
		if !path.IsAbs(src) {
			a.add("host-mounts", at, "bind source %q is not an absolute path", m.Source)
			continue
		}
		switch {
		case strings.HasSuffix(src, ".sock"):
			a.add("host-mounts", at, "%s looks like a runtime socket", src)
		case slices.ContainsFunc(sensitiveHostDirs, func(d string) bool { return within(src, d) || within(d, src) }):
			a.add("host-mounts", at, "%s exposes a sensitive host directory", src)
		case slices.ContainsFunc(systemDirs, func(d string) bool { return within(d, src) }):
			a.add("host-mounts", at, "%s contains host system directories", src)
		case slices.ContainsFunc(systemDirs, func(d string) bool { return within(src, d) }):
			if !slices.Contains(m.Options, "ro") {
				a.add("host-mounts", at, "%s is a host system path mounted writable", src)
			} else if !slices.ContainsFunc(a.policy.BindSources, func(d string) bool { return within(src, d) }) {
				a.add("host-mounts", at, "%s is a host system path not in the policy's allowed bind sources", src)
			}
		}
	}
}

func checkKernelFS(a *auditor, s *specs.Spec) {
	for i, m := range s.Mounts {
		if (m.Type == "sysfs" || m.Type == "cgroup" || m.Type == "cgroup2") && !slices.Contains(m.Options, "ro") {
			a.add("kernel-fs-readonly", fmt.Sprintf("mounts[%d].options", i), "%s at %s is writable", m.Type, m.Destination)
		}
	}
}

var sharedPropagation = []string{"shared", "rshared", "slave", "rslave"}

func checkPropagation(a *auditor, s *specs.Spec) {
	if s.Linux != nil && slices.Contains(sharedPropagation, s.Linux.RootfsPropagation) {
		a.add("mount-propagation", "linux.rootfsPropagation", "root propagation %s lets mounts cross between host and container", s.Linux.RootfsPropagation)
	}
	for i, m := range s.Mounts {
		for _, o := range m.Options {
			if slices.Contains(sharedPropagation, o) {
				a.add("mount-propagation", fmt.Sprintf("mounts[%d].options", i), "mount %s has %s propagation", m.Destination, o)
			}
		}
	}
}

// defaultDevices are the character devices every container gets.
var defaultDevices = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/console"}

func checkDevices(a *auditor, s *specs.Spec) {
	if s.Linux == nil {
		return
	}
	for i, d := range s.Linux.Devices {
		if !slices.Contains(defaultDevices, d.Path) && !slices.Contains(a.policy.DevicePaths, d.Path) {
			a.add("devices", fmt.Sprintf("linux.devices[%d]", i), "device %s (%s %d:%d) is not allowed", d.Path, d.Type, d.Major, d.Minor)
		}
	}
	for i, r := range resources(s).Devices {
		if r.Allow && (r.Type == "" || r.Type == "a") && r.Major == nil && r.Minor == nil {
			a.add("devices", fmt.Sprintf("linux.resources.devices[%d]", i), "device cgroup allows every device (%s)", r.Access)
		}
	}
}

func checkHooks(a *auditor, s *specs.Spec) {
	if s.Hooks == nil {
		return
	}
	for _, stage := range []struct {
		name  string
		hooks []specs.Hook
	}{
		{"prestart", s.Hooks.Prestart}, //nolint:staticcheck // deprecated but still run by runc
		{"createRuntime", s.Hooks.CreateRuntime},
		{"createContainer", s.Hooks.CreateContainer},
		{"startContainer", s.Hooks.StartContainer},
		{"poststart", s.Hooks.Poststart},
		{"poststop", s.Hooks.Poststop},
	} {
		for i, h := range stage.hooks {
			at := fmt.Sprintf("hooks.%s[%d]", stage.name, i)
			if !slices.Contains(a.policy.HookPaths, h.Path) {
				a.add("hooks", at+".path", "hook %s is not in the allowlist", h.Path)
			}
			for _, kv := range h.Env {
				if strings.HasPrefix(kv, "LD_") {
					key, _, _ := strings.Cut(kv, "=")
					a.add("hooks", at+".env", "hook env sets %s, which would load code into a host process", key)
				}
			}
		}
	}
}
