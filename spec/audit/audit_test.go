package audit_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// goodSpec is the spec nsn-run generates for a plain task, round-tripped
// through JSON as `nsn-run audit` would read it.
func goodSpec(t *testing.T) *specs.Spec {
	t.Helper()
	s, err := spec.Generate(context.Background(),
		task.Task{ID: "a1", Image: "busybox", Command: []string{"true"}},
		ocispec.ImageConfig{}, spec.Options{OutputDir: "/var/lib/nsn-run/tasks/a1/output"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out specs.Spec
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func i64(v int64) *int64 { return &v }

func bindMount(src string, opts ...string) specs.Mount {
	return specs.Mount{Destination: "/mnt", Type: "bind", Source: src, Options: append([]string{"rbind"}, opts...)}
}

func removeNamespace(s *specs.Spec, typ specs.LinuxNamespaceType) {
	s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == typ })
}

func TestGeneratedSpecIsClean(t *testing.T) {
	if f := audit.Check(goodSpec(t)); len(f) != 0 {
		t.Fatalf("findings on nsn-run's own spec: %v", f)
	}
}

// TestEachRuleCatchesItsViolation breaks the good spec one way at a time and
// expects exactly the rule concerned to fire, at the path concerned.
func TestEachRuleCatchesItsViolation(t *testing.T) {
	cases := []struct {
		name     string
		rule     string
		path     string
		mutate   func(*specs.Spec)
		policy   audit.Policy
		moreThan bool // the breakage legitimately trips further rules
	}{
		{name: "no process", rule: "process-present", path: "process", mutate: func(s *specs.Spec) { s.Process = nil }},
		{name: "no root", rule: "process-present", path: "root", mutate: func(s *specs.Spec) { s.Root = nil }},
		{name: "uid 0", rule: "user-non-root", path: "process.user.uid", mutate: func(s *specs.Spec) { s.Process.User.UID = 0 }},
		{name: "gid 0", rule: "user-non-root", path: "process.user.gid", mutate: func(s *specs.Spec) { s.Process.User.GID = 0 }},
		{name: "group 0", rule: "user-non-root", path: "process.user.additionalGids", mutate: func(s *specs.Spec) { s.Process.User.AdditionalGids = []uint32{65534, 0} }},
		{name: "new privileges", rule: "no-new-privileges", path: "process.noNewPrivileges", mutate: func(s *specs.Spec) { s.Process.NoNewPrivileges = false }},
		{name: "CAP_SYS_ADMIN bounding", rule: "capabilities-empty", path: "process.capabilities.bounding", mutate: func(s *specs.Spec) {
			s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: []string{"CAP_SYS_ADMIN"}}
		}},
		{name: "ambient cap", rule: "capabilities-empty", path: "process.capabilities.ambient", mutate: func(s *specs.Spec) {
			s.Process.Capabilities = &specs.LinuxCapabilities{Ambient: []string{"CAP_NET_RAW"}}
		}},
		{name: "no seccomp", rule: "seccomp-enforced", path: "linux.seccomp", mutate: func(s *specs.Spec) { s.Linux.Seccomp = nil }},
		{name: "seccomp allow default", rule: "seccomp-enforced", path: "linux.seccomp.defaultAction", mutate: func(s *specs.Spec) { s.Linux.Seccomp.DefaultAction = specs.ActAllow }},
		{name: "seccomp log default", rule: "seccomp-enforced", path: "linux.seccomp.defaultAction", mutate: func(s *specs.Spec) { s.Linux.Seccomp.DefaultAction = specs.ActLog }},
		{name: "mount allowed", rule: "seccomp-dangerous-syscalls", mutate: allowSyscall("mount")},
		{name: "unshare allowed", rule: "seccomp-dangerous-syscalls", mutate: allowSyscall("unshare")},
		{name: "setns allowed", rule: "seccomp-dangerous-syscalls", mutate: allowSyscall("setns")},
		{name: "keyctl allowed", rule: "seccomp-dangerous-syscalls", mutate: allowSyscall("keyctl")},
		{name: "bpf allowed", rule: "seccomp-dangerous-syscalls", mutate: allowSyscall("bpf")},
		{name: "io_uring allowed", rule: "seccomp-dangerous-syscalls", mutate: allowSyscall("io_uring_setup")},
		{name: "clone3 allowed", rule: "seccomp-dangerous-syscalls", mutate: allowSyscall("clone3")},
		{name: "clone unfiltered", rule: "seccomp-dangerous-syscalls", mutate: allowSyscall("clone")},
		{name: "notify counts as allow", rule: "seccomp-dangerous-syscalls", mutate: func(s *specs.Spec) {
			s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls, specs.LinuxSyscall{Names: []string{"pivot_root"}, Action: specs.ActNotify})
		}},
		{name: "writable root", rule: "rootfs-readonly", path: "root.readonly", mutate: func(s *specs.Spec) { s.Root.Readonly = false }},
		{name: "host network", rule: "namespaces-private", path: "linux.namespaces", mutate: func(s *specs.Spec) { removeNamespace(s, specs.NetworkNamespace) }},
		{name: "host pid", rule: "namespaces-private", path: "linux.namespaces", mutate: func(s *specs.Spec) { removeNamespace(s, specs.PIDNamespace) }},
		{name: "host ipc", rule: "namespaces-private", path: "linux.namespaces", mutate: func(s *specs.Spec) { removeNamespace(s, specs.IPCNamespace) }},
		{name: "host uts", rule: "namespaces-private", path: "linux.namespaces", mutate: func(s *specs.Spec) { removeNamespace(s, specs.UTSNamespace) }},
		{name: "host mount ns", rule: "namespaces-private", path: "linux.namespaces", mutate: func(s *specs.Spec) { removeNamespace(s, specs.MountNamespace) }},
		{name: "joined netns", rule: "namespaces-private", mutate: func(s *specs.Spec) {
			for i := range s.Linux.Namespaces {
				if s.Linux.Namespaces[i].Type == specs.NetworkNamespace {
					s.Linux.Namespaces[i].Path = "/proc/1/ns/net"
				}
			}
		}},
		{name: "kcore unmasked", rule: "masked-paths", path: "linux.maskedPaths", mutate: func(s *specs.Spec) {
			s.Linux.MaskedPaths = slices.DeleteFunc(s.Linux.MaskedPaths, func(p string) bool { return p == "/proc/kcore" })
		}},
		{name: "proc/sys writable", rule: "readonly-paths", path: "linux.readonlyPaths", mutate: func(s *specs.Spec) { s.Linux.ReadonlyPaths = nil }},
		{name: "no memory limit", rule: "memory-limit", path: "linux.resources.memory.limit", mutate: func(s *specs.Spec) { s.Linux.Resources.Memory = nil }},
		{name: "swap allowed", rule: "memory-limit", path: "linux.resources.memory.swap", mutate: func(s *specs.Spec) { s.Linux.Resources.Memory.Swap = i64(-1) }},
		{name: "no cpu quota", rule: "cpu-limit", path: "linux.resources.cpu.quota", mutate: func(s *specs.Spec) { s.Linux.Resources.CPU.Quota = nil }},
		{name: "no pids limit", rule: "pids-limit", path: "linux.resources.pids.limit", mutate: func(s *specs.Spec) { s.Linux.Resources.Pids = nil }},
		{name: "zero pids limit", rule: "pids-limit", path: "linux.resources.pids.limit", mutate: func(s *specs.Spec) { s.Linux.Resources.Pids.Limit = i64(0) }},
		{name: "sysctl", rule: "no-sysctls", path: "linux.sysctl.net.ipv4.ip_forward", mutate: func(s *specs.Spec) { s.Linux.Sysctl = map[string]string{"net.ipv4.ip_forward": "1"} }},
		{name: "bind /", rule: "host-mounts", mutate: func(s *specs.Spec) { s.Mounts = append(s.Mounts, bindMount("/", "ro")) }},
		{name: "bind /etc", rule: "host-mounts", mutate: func(s *specs.Spec) { s.Mounts = append(s.Mounts, bindMount("/etc", "ro")) }},
		{name: "bind /etc/shadow", rule: "host-mounts", mutate: func(s *specs.Spec) { s.Mounts = append(s.Mounts, bindMount("/etc/shadow")) }},
		{name: "bind /var via dotdot", rule: "host-mounts", mutate: func(s *specs.Spec) { s.Mounts = append(s.Mounts, bindMount("/tmp/../var")) }},
		{name: "bind docker socket", rule: "host-mounts", mutate: func(s *specs.Spec) { s.Mounts = append(s.Mounts, bindMount("/srv/docker.sock")) }},
		{name: "bind containerd state", rule: "host-mounts", mutate: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, bindMount("/var/lib/containerd/io.containerd.content.v1.content"))
		}},
		{name: "bind /proc option only", rule: "host-mounts", mutate: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x", Source: "/proc", Options: []string{"bind"}})
		}},
		{name: "bind /usr writable", rule: "host-mounts", mutate: func(s *specs.Spec) { s.Mounts = append(s.Mounts, bindMount("/usr/lib/libcuda.so")) }},
		{name: "bind /usr ro not allowed", rule: "host-mounts", mutate: func(s *specs.Spec) { s.Mounts = append(s.Mounts, bindMount("/usr/lib/libcuda.so", "ro")) }},
		{name: "relative bind", rule: "host-mounts", mutate: func(s *specs.Spec) { s.Mounts = append(s.Mounts, bindMount("data")) }},
		{name: "writable sysfs", rule: "kernel-fs-readonly", mutate: func(s *specs.Spec) {
			for i := range s.Mounts {
				if s.Mounts[i].Type == "sysfs" {
					s.Mounts[i].Options = []string{"nosuid", "noexec", "nodev"}
				}
			}
		}},
		{name: "writable cgroupfs", rule: "kernel-fs-readonly", mutate: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup2", Source: "cgroup"})
		}},
		{name: "shared root propagation", rule: "mount-propagation", path: "linux.rootfsPropagation", mutate: func(s *specs.Spec) { s.Linux.RootfsPropagation = "rshared" }},
		{name: "shared mount", rule: "mount-propagation", mutate: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x", Type: "tmpfs", Source: "tmpfs", Options: []string{"shared"}})
		}},
		{name: "host disk device", rule: "devices", path: "linux.devices[0]", mutate: func(s *specs.Spec) {
			s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/sda", Type: "b", Major: 8}}
		}},
		{name: "allow all devices", rule: "devices", mutate: func(s *specs.Spec) {
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Access: "rwm"})
		}},
		{name: "hook not allowed", rule: "hooks", path: "hooks.createContainer[0].path", mutate: func(s *specs.Spec) {
			s.Hooks = &specs.Hooks{CreateContainer: []specs.Hook{{Path: "/tmp/evil"}}}
		}},
		{name: "hook with LD_PRELOAD", rule: "hooks", path: "hooks.createContainer[0].env", policy: audit.Policy{HookPaths: []string{"/usr/bin/nvidia-cdi-hook"}}, mutate: func(s *specs.Spec) {
			s.Hooks = &specs.Hooks{CreateContainer: []specs.Hook{{Path: "/usr/bin/nvidia-cdi-hook", Env: []string{"LD_PRELOAD=/x.so"}}}}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := goodSpec(t)
			c.mutate(s)
			findings := audit.CheckWithPolicy(s, c.policy)
			var hit bool
			for _, f := range findings {
				if f.Rule == c.rule && (c.path == "" || f.Path == c.path) {
					hit = true
				} else if !c.moreThan && f.Rule != c.rule {
					t.Errorf("unexpected extra finding: %s", f)
				}
				if f.Message == "" || strings.Contains(f.String(), "\n") {
					t.Errorf("finding %q is not one line with a message", f)
				}
			}
			if !hit {
				t.Errorf("want a %s finding at %q, got %v", c.rule, c.path, findings)
			}
		})
	}
}

func allowSyscall(name string) func(*specs.Spec) {
	return func(s *specs.Spec) {
		s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls, specs.LinuxSyscall{Names: []string{name}, Action: specs.ActAllow})
	}
}

func TestPolicyAllowsWhatItNames(t *testing.T) {
	s := goodSpec(t)
	s.Hooks = &specs.Hooks{CreateContainer: []specs.Hook{{Path: "/usr/bin/nvidia-cdi-hook", Env: []string{"PATH=/usr/bin"}}}}
	s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/nvidia0", Type: "c", Major: 195}}
	s.Mounts = append(s.Mounts, bindMount("/usr/lib/x86_64-linux-gnu/libcuda.so.1", "ro", "nosuid", "nodev"))
	p := audit.Policy{
		HookPaths:   []string{"/usr/bin/nvidia-cdi-hook"},
		DevicePaths: []string{"/dev/nvidia0"},
		BindSources: []string{"/usr/lib/x86_64-linux-gnu"},
	}
	if f := audit.CheckWithPolicy(s, p); len(f) != 0 {
		t.Fatalf("policy-allowed GPU edits gave findings: %v", f)
	}
	if f := audit.Check(s); len(f) != 3 {
		t.Fatalf("without the policy want 3 findings (hook, device, bind), got %v", f)
	}
}

// TestWeakenedFiveWays is the acceptance case at the package level:
// a copy weakened five ways gets a finding for each of the five.
func TestWeakenedFiveWays(t *testing.T) {
	s := goodSpec(t)
	s.Root.Readonly = false
	s.Process.NoNewPrivileges = false
	s.Process.Capabilities.Bounding = []string{"CAP_SYS_ADMIN"}
	s.Process.Capabilities.Effective = []string{"CAP_SYS_ADMIN"}
	removeNamespace(s, specs.NetworkNamespace)
	s.Mounts = append(s.Mounts, bindMount("/"))
	rules := map[string]bool{}
	for _, f := range audit.Check(s) {
		rules[f.Rule] = true
	}
	for _, want := range []string{"rootfs-readonly", "no-new-privileges", "capabilities-empty", "namespaces-private", "host-mounts"} {
		if !rules[want] {
			t.Errorf("no %s finding", want)
		}
	}
}

func TestNilSpec(t *testing.T) {
	if f := audit.Check(nil); len(f) != 1 {
		t.Fatalf("nil spec: %v", f)
	}
}

func TestRulesAreDocumented(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range audit.Rules() {
		if r.ID == "" || r.Summary == "" || r.Sources == "" {
			t.Errorf("rule %+v lacks an id, summary or sources", r)
		}
		if seen[r.ID] {
			t.Errorf("rule %s listed twice", r.ID)
		}
		seen[r.ID] = true
	}
}
