package audit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/idmap"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

const taskID = "a1"

// fakeCDI stands in for the CDI injector: GPU 0 adds a device node, a
// driver mount and a hook; any other name is unknown.
type fakeCDI struct{}

const fakeGPU = "nvidia.com/gpu=0"

// fakeNIC is a device of another kind the host's CDI specs define: the
// host's /dev/kmsg and a bind of a host directory.
const fakeNIC = "example.com/nic=kmsg"

// addNIC adds fakeNIC's edits to s.
func addNIC(s *specs.Spec) {
	var major, minor int64 = 1, 11
	s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{Path: "/dev/kmsg", Type: "c", Major: major, Minor: minor})
	s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "rwm"})
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/hostdir", Type: "bind", Source: "/srv/hostdir", Options: []string{"rw", "bind"}})
}

func (fakeCDI) InjectSpecOpt(names []string, shared bool) (oci.SpecOpts, error) {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		for _, n := range names {
			if n == fakeNIC {
				addNIC(s)
				continue
			}
			if n != fakeGPU {
				return fmt.Errorf("unresolvable CDI device %s", n)
			}
			var major int64 = 195
			s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{Path: "/dev/nvidia0", Type: "c", Major: 195, Minor: 0})
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &major, Minor: new(int64), Access: "rw"})
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/usr/lib/libcuda.so.1", Type: "bind", Source: "/usr/lib/x86_64-linux-gnu/libcuda.so.1", Options: []string{"ro", "nosuid", "nodev", "bind"}})
			if s.Hooks == nil {
				s.Hooks = &specs.Hooks{}
			}
			s.Hooks.CreateContainer = append(s.Hooks.CreateContainer, specs.Hook{Path: "/usr/bin/nvidia-cdi-hook", Args: []string{"nvidia-cdi-hook", "update-ldcache"}, Env: []string{"PATH=/usr/bin"}})
		}
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[audit.AnnotationGPUs] = strings.Join(names, ",")
		if shared {
			s.Annotations[audit.AnnotationGPUsShared] = "true"
		}
		return nil
	}, nil
}

// initBinary is where the tests' node keeps nsn-init.
const initBinary = "/usr/local/lib/nsn-run/nsn-init"

var policy = audit.Policy{CDI: fakeCDI{}, InitBinary: initBinary}

// generated is the spec nsn-run generates for a plain task (with GPU 0 when
// gpu is set), round-tripped through JSON as `nsn-run audit` reads it.
// Its user namespace's per-user limits are in linux.sysctl, as for runc
// 1.4 and later.
func generated(t *testing.T, gpu bool, init ...bool) *specs.Spec {
	t.Helper()
	return generatedWith(t, gpu, len(init) > 0 && init[0], true)
}

// generatedWith is generated, with the per-user limits in the spec only
// if sysctls is set (spec.Options.UserNSSysctls).
func generatedWith(t *testing.T, gpu, init, sysctls bool) *specs.Spec {
	t.Helper()
	tk := task.Task{ID: taskID, Image: "busybox", Command: []string{"sh", "-c", "true"}, Env: []string{"A=1"}}
	r := grantedRange
	o := spec.Options{OutputDir: policy.OutputDir(taskID), UserNS: &r, UserNSSysctls: sysctls}
	if init {
		tk.Init, o.InitBinary = true, initBinary
	}
	if gpu {
		tk.GPUs = "device=0"
		o.GPUDevices, o.CDI = []string{fakeGPU}, fakeCDI{}
	}
	s, err := spec.Generate(context.Background(), tk, ocispec.ImageConfig{User: "1000:1000", WorkingDir: "/work"}, o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	out, findings, err := audit.DecodeSpec(b)
	if err != nil || len(findings) != 0 {
		t.Fatalf("decode own spec: %v %v", err, findings)
	}
	return out
}

func TestGeneratedSpecIsClean(t *testing.T) {
	for _, gpu := range []bool{false, true} {
		for _, sysctls := range []bool{false, true} {
			p := policy
			p.UserNSLimitsOutside = !sysctls // nsn-run sets them itself
			if f := audit.Check(context.Background(), generatedWith(t, gpu, false, sysctls), p); len(f) != 0 {
				t.Errorf("gpu=%v sysctls=%v: %v", gpu, sysctls, f)
			}
			if f := audit.Check(context.Background(), generatedWith(t, gpu, true, sysctls), p); len(f) != 0 {
				t.Errorf("gpu=%v sysctls=%v: findings on nsn-run's own spec with an init: %v", gpu, sysctls, f)
			}
		}
	}
}

// TestKnobsAreFree: the task's own knobs (id, command, env, working dir,
// user, limits, shim group) may take any valid value.
func TestKnobsAreFree(t *testing.T) {
	tk := task.Task{ID: "other-9", Image: "x", Command: []string{"/bin/app", "--flag"}, Env: []string{"X=1", "PATH=/opt"},
		WorkingDir: "/srv", User: "4242:4343",
		Limits: task.Limits{MemoryBytes: 300 * task.MiB, CPUs: 2.5, Pids: 77, OpenFiles: 4096, TmpBytes: 3 * task.MiB, TmpInodes: 99}}
	r := idmap.DefaultSpan.RangeAt(idmap.DefaultCount - 1)
	s, err := spec.Generate(context.Background(), tk, ocispec.ImageConfig{}, spec.Options{OutputDir: policy.OutputDir(tk.ID), OOMScoreAdj: 700, UserNS: &r, UserNSSysctls: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Annotations = map[string]string{audit.AnnotationShimGroup: "nsn-shared"}
	p := policy
	p.OOMScoreAdj = 700
	p.ShimGroup = "nsn-shared"
	if f := audit.Check(context.Background(), s, p); len(f) != 0 {
		t.Fatalf("findings: %v", f)
	}
	// The same spec under the default policy: neither the score nor the
	// shim group is the policy's.
	if f := audit.Check(context.Background(), s, policy); len(f) != 2 || f[0].Rule != audit.RuleProcessLimits || f[1].Rule != audit.RuleAnnotations {
		t.Fatalf("findings under another policy's score and group: %v", f)
	}
}

func i64(v int64) *int64 { return &v }

func seccompRule(s *specs.Spec, name string) *specs.LinuxSyscall {
	for i, r := range s.Linux.Seccomp.Syscalls {
		if slices.Contains(r.Names, name) && len(r.Args) > 0 {
			return &s.Linux.Seccomp.Syscalls[i]
		}
	}
	panic("no argument rule for " + name)
}

func mountAt(s *specs.Spec, dest string) *specs.Mount {
	for i := range s.Mounts {
		if s.Mounts[i].Destination == dest {
			return &s.Mounts[i]
		}
	}
	panic("no mount at " + dest)
}

type mutation struct {
	name   string
	rule   string
	gpu    bool // start from the spec with GPU 0
	init   bool // start from the spec of a task with --init
	policy *audit.Policy
	mutate func(*specs.Spec)
}

// mutations break the generated spec one way each; every one must give
// findings of exactly its rule. The names are the Tests of the rule table.
var mutations = []mutation{
	{name: "no-process", rule: audit.RuleShape, mutate: func(s *specs.Spec) { s.Process = nil }},
	{name: "bad-hostname", rule: audit.RuleShape, mutate: func(s *specs.Spec) { s.Hostname = "../x" }},
	{name: "memory-above-policy", rule: audit.RuleLimits, policy: &audit.Policy{Max: task.Limits{MemoryBytes: 256 * task.MiB}}, mutate: func(*specs.Spec) {}},
	{name: "cpus-above-policy", rule: audit.RuleLimits, policy: &audit.Policy{Max: task.Limits{CPUs: 0.5}}, mutate: func(*specs.Spec) {}},
	{name: "pids-out-of-bounds", rule: audit.RuleLimits, mutate: func(s *specs.Spec) { s.Linux.Resources.Pids.Limit = i64(-5) }},
	{name: "root-path-host-usr", rule: audit.RuleRoot, mutate: func(s *specs.Spec) { s.Root.Path = "/usr" }},
	{name: "root-writable", rule: audit.RuleRoot, mutate: func(s *specs.Spec) { s.Root.Readonly = false }},
	{name: "uid-0", rule: audit.RuleUser, mutate: func(s *specs.Spec) { s.Process.User.UID = 0 }},
	{name: "additional-gids", rule: audit.RuleUser, mutate: func(s *specs.Spec) { s.Process.User.AdditionalGids = append(s.Process.User.AdditionalGids, 4) }},
	{name: "cap-sys-admin", rule: audit.RuleCapabilities, mutate: func(s *specs.Spec) { s.Process.Capabilities.Bounding = []string{"CAP_SYS_ADMIN"} }},
	{name: "no-new-privileges-off", rule: audit.RuleNoNewPrivileges, mutate: func(s *specs.Spec) { s.Process.NoNewPrivileges = false }},
	{name: "seccomp-extra-syscall", rule: audit.RuleSeccomp, mutate: func(s *specs.Spec) {
		s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls, specs.LinuxSyscall{Names: []string{"keyctl"}, Action: specs.ActAllow})
	}},
	{name: "seccomp-clone-arg-index", rule: audit.RuleSeccomp, mutate: func(s *specs.Spec) { seccompRule(s, "clone").Args[0].Index = 1 }},
	{name: "seccomp-default-allow", rule: audit.RuleSeccomp, mutate: func(s *specs.Spec) { s.Linux.Seccomp.DefaultAction = specs.ActLog }},
	{name: "seccomp-flag-spec-allow", rule: audit.RuleSeccomp, mutate: func(s *specs.Spec) {
		s.Linux.Seccomp.Flags = []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagSpecAllow}
	}},
	{name: "seccomp-listener", rule: audit.RuleSeccomp, mutate: func(s *specs.Spec) { s.Linux.Seccomp.ListenerPath = "/run/agent.sock" }},
	{name: "seccomp-compat-arch", rule: audit.RuleSeccomp, mutate: func(s *specs.Spec) {
		s.Linux.Seccomp.Architectures = append(s.Linux.Seccomp.Architectures, specs.ArchX86, specs.ArchX32)
	}},
	{name: "seccomp-missing", rule: audit.RuleSeccomp, mutate: func(s *specs.Spec) { s.Linux.Seccomp = nil }},
	{name: "rlimit-core-raised", rule: audit.RuleProcessLimits, mutate: func(s *specs.Spec) { s.Process.Rlimits[1].Hard, s.Process.Rlimits[1].Soft = 1<<30, 1<<30 }},
	{name: "rlimit-missing", rule: audit.RuleProcessLimits, mutate: func(s *specs.Spec) { s.Process.Rlimits = slices.Delete(s.Process.Rlimits, 1, 2) }},
	{name: "oom-score-lowered", rule: audit.RuleProcessLimits, mutate: func(s *specs.Spec) { s.Process.OOMScoreAdj = new(int) }},
	{name: "apparmor-unconfined", rule: audit.RuleLSM, mutate: func(s *specs.Spec) { s.Process.ApparmorProfile = "unconfined" }},
	{name: "apparmor-missing", rule: audit.RuleLSM, policy: &audit.Policy{AppArmorProfile: spec.DefaultAppArmorProfile}, mutate: func(*specs.Spec) {}},
	{name: "apparmor-other-profile", rule: audit.RuleLSM, mutate: func(s *specs.Spec) { s.Process.ApparmorProfile = "docker-default" }},
	{name: "selinux-spc", rule: audit.RuleLSM, mutate: func(s *specs.Spec) { s.Process.SelinuxLabel = "system_u:system_r:spc_t:s0" }},
	{name: "sched-fifo", rule: audit.RuleScheduling, mutate: func(s *specs.Spec) { s.Process.Scheduler = &specs.Scheduler{Policy: specs.SchedFIFO, Priority: 99} }},
	{name: "terminal", rule: audit.RuleTerminal, mutate: func(s *specs.Spec) { s.Process.Terminal = true }},
	{name: "init-not-allowed", rule: audit.RuleProcess, init: true, policy: &audit.Policy{}, mutate: func(*specs.Spec) {}},
	{name: "init-other-binary", rule: audit.RuleMounts, init: true, mutate: func(s *specs.Spec) {
		for i := range s.Mounts {
			if s.Mounts[i].Destination == spec.InitPath {
				s.Mounts[i].Source = "/tmp/evil-init"
			}
		}
	}},
	{name: "init-writable", rule: audit.RuleMounts, init: true, mutate: func(s *specs.Spec) {
		for i := range s.Mounts {
			if s.Mounts[i].Destination == spec.InitPath {
				s.Mounts[i].Options = []string{"bind", "rw", "rprivate"}
			}
		}
	}},
	{name: "process-user-name", rule: audit.RuleProcess, mutate: func(s *specs.Spec) { s.Process.CommandLine = "cmd.exe" }},
	{name: "args-empty", rule: audit.RuleProcess, mutate: func(s *specs.Spec) { s.Process.Args = nil }},
	{name: "nvidia-visible-devices", rule: audit.RuleEnv, mutate: func(s *specs.Spec) {
		s.Process.Env = append(s.Process.Env, "NVIDIA_VISIBLE_DEVICES=all")
	}},
	{name: "host-network", rule: audit.RuleNamespaces, mutate: func(s *specs.Spec) {
		s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.NetworkNamespace })
	}},
	{name: "namespace-path", rule: audit.RuleNamespaces, mutate: func(s *specs.Spec) {
		for i := range s.Linux.Namespaces {
			if s.Linux.Namespaces[i].Type == specs.PIDNamespace {
				s.Linux.Namespaces[i].Path = "/proc/1/ns/pid"
			}
		}
	}},
	{name: "no-cgroup-namespace", rule: audit.RuleNamespaces, mutate: func(s *specs.Spec) {
		s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.CgroupNamespace })
	}},
	{name: "uid-map-host-root", rule: audit.RuleUserNamespace, mutate: func(s *specs.Spec) {
		s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 0, Size: 65536}}
	}},
	{name: "userns-range-outside-span", rule: audit.RuleUserNamespace, mutate: func(s *specs.Spec) {
		m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
		s.Linux.UIDMappings, s.Linux.GIDMappings = m, m
	}},
	{name: "userns-gid-differs", rule: audit.RuleUserNamespace, mutate: func(s *specs.Spec) {
		s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: idmap.DefaultBase, Size: 65536}}
	}},
	{name: "userns-missing", rule: audit.RuleUserNamespace, mutate: func(s *specs.Spec) {
		s.Linux.UIDMappings, s.Linux.GIDMappings = nil, nil
	}},
	{name: "userns-where-host-identity", rule: audit.RuleUserNamespace, policy: &audit.Policy{HostIdentity: true}, mutate: func(*specs.Spec) {}},
	{name: "userns-range-not-granted", rule: audit.RuleUserNamespace, policy: &audit.Policy{UserNS: &grantedRange}, mutate: func(s *specs.Spec) {
		m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: idmap.DefaultSpan.RangeAt(4).HostID, Size: 65536}}
		s.Linux.UIDMappings, s.Linux.GIDMappings = m, m
	}},
	{name: "userns-range-held-by-another-task", rule: audit.RuleUserNamespace, policy: &audit.Policy{RangeHolder: heldBy(idmap.Holder{StateDir: "/var/lib/nsn-run", Task: "victim"})}, mutate: func(*specs.Spec) {}},
	{name: "userns-range-of-another-state-dir", rule: audit.RuleUserNamespace, policy: &audit.Policy{RangeHolder: heldBy(idmap.Holder{StateDir: "/srv/agent-b", Task: taskID})}, mutate: func(*specs.Spec) {}},
	{name: "userns-range-of-another-namespace", rule: audit.RuleUserNamespace, policy: &audit.Policy{RangeHolder: heldBy(idmap.Holder{StateDir: "/var/lib/nsn-run", Task: taskID, Namespace: "tenant-b"})}, mutate: func(*specs.Spec) {}},
	{name: "userns-range-of-another-containerd", rule: audit.RuleUserNamespace, policy: &audit.Policy{Containerd: "uuid-a", RangeHolder: heldBy(idmap.Holder{StateDir: "/var/lib/nsn-run", Task: taskID, Namespace: spec.DefaultNamespace, Containerd: "uuid-b"})}, mutate: func(*specs.Spec) {}},
	{name: "userns-range-host-subordinate-ids", rule: audit.RuleUserNamespace, policy: &audit.Policy{CheckRange: func(task.IDRange) error {
		return errors.New("overlaps /etc/subuid entry rvtest:66584576:65536")
	}}, mutate: func(*specs.Spec) {}},
	{name: "devtmpfs", rule: audit.RuleMounts, mutate: func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/hostdev", Type: "devtmpfs", Source: "devtmpfs"})
	}},
	{name: "second-procfs", rule: audit.RuleMounts, mutate: func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/tmp/proc2", Type: "proc", Source: "proc"})
	}},
	{name: "sys-ro-rw", rule: audit.RuleMounts, mutate: func(s *specs.Spec) { m := mountAt(s, "/sys"); m.Options = append(m.Options, "rw") }},
	{name: "bind-host-tmp", rule: audit.RuleMounts, mutate: func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/mnt", Type: "bind", Source: "/tmp", Options: []string{"rbind", "ro"}})
	}},
	{name: "bind-tasks-dir", rule: audit.RuleMounts, mutate: func(s *specs.Spec) { mountAt(s, "/output").Source = "/var/lib/nsn-run/tasks" }},
	{name: "overlay-host-lower", rule: audit.RuleMounts, mutate: func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x", Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/etc"}})
	}},
	{name: "cgroup-mount", rule: audit.RuleMounts, mutate: func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup2", Source: "cgroup"})
	}},
	{name: "mounts-reordered", rule: audit.RuleMounts, mutate: func(s *specs.Spec) { slices.Reverse(s.Mounts) }},
	{name: "bind-symlink-parent", rule: audit.RuleMounts, policy: &audit.Policy{ResolveSource: func(p string) (string, error) {
		switch p {
		case policy.OutputDir(taskID), filepath.Dir(policy.OutputDir(taskID)), filepath.Dir(filepath.Dir(policy.OutputDir(taskID))):
			return "", os.ErrNotExist // not made yet: audited before run
		case "/var/lib/nsn-run/tasks":
			return "/srv/elsewhere", nil
		}
		return p, nil
	}}, mutate: func(*specs.Spec) {}},
	{name: "bind-symlink-source", rule: audit.RuleMounts, policy: &audit.Policy{ResolveSource: func(p string) (string, error) {
		if p == policy.OutputDir(taskID) {
			return "/etc", nil
		}
		return p, nil
	}}, mutate: func(*specs.Spec) {}},
	{name: "rootfs-shared", rule: audit.RuleMountPropagation, mutate: func(s *specs.Spec) { s.Linux.RootfsPropagation = "rshared" }},
	{name: "unmask-kcore", rule: audit.RuleMaskedPaths, mutate: func(s *specs.Spec) {
		s.Linux.MaskedPaths = slices.DeleteFunc(s.Linux.MaskedPaths, func(p string) bool { return p == "/proc/kcore" })
	}},
	{name: "device-alias-full", rule: audit.RuleDevices, mutate: func(s *specs.Spec) {
		s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{Path: "/dev/full", Type: "b", Major: 8, Minor: 0})
	}},
	{name: "device-cgroup-allow-all", rule: audit.RuleDevices, mutate: func(s *specs.Spec) { s.Linux.Resources.Devices[0].Allow = true }},
	{name: "device-cgroup-empty", rule: audit.RuleDevices, mutate: func(s *specs.Spec) { s.Linux.Resources.Devices = nil }},
	{name: "unified-memory", rule: audit.RuleResources, mutate: func(s *specs.Spec) { s.Linux.Resources.Unified = map[string]string{"memory.max": "max"} }},
	{name: "oom-killer-disabled", rule: audit.RuleResources, mutate: func(s *specs.Spec) { t := true; s.Linux.Resources.Memory.DisableOOMKiller = &t }},
	{name: "cpu-realtime", rule: audit.RuleResources, mutate: func(s *specs.Spec) { s.Linux.Resources.CPU.RealtimeRuntime = i64(950000) }},
	{name: "swap-unlimited", rule: audit.RuleResources, mutate: func(s *specs.Spec) { s.Linux.Resources.Memory.Swap = i64(-1) }},
	{name: "cgroups-path-host", rule: audit.RuleCgroups, mutate: func(s *specs.Spec) { s.Linux.CgroupsPath = "/system.slice" }},
	{name: "sysctl", rule: audit.RuleSysctls, mutate: func(s *specs.Spec) { s.Linux.Sysctl = map[string]string{"net.ipv4.ip_forward": "1"} }},
	{name: "sysctl-beside-limits", rule: audit.RuleSysctls, mutate: func(s *specs.Spec) { s.Linux.Sysctl["net.ipv4.ip_forward"] = "1" }},
	{name: "userns-limit-raised", rule: audit.RuleSysctls, mutate: func(s *specs.Spec) { s.Linux.Sysctl["user.max_inotify_instances"] = "128" }},
	{name: "userns-limit-dropped", rule: audit.RuleSysctls, mutate: func(s *specs.Spec) { delete(s.Linux.Sysctl, "user.max_user_namespaces") }},
	{name: "userns-limits-missing", rule: audit.RuleSysctls, mutate: func(s *specs.Spec) { s.Linux.Sysctl = nil }},
	{name: "userns-limit-alone", rule: audit.RuleSysctls, policy: &audit.Policy{UserNSLimitsOutside: true}, mutate: func(s *specs.Spec) {
		// One limit of the set, where the policy lets the runner set
		// them: the spec claims to carry them, so nsn-run would not set
		// the others.
		s.Linux.Sysctl = map[string]string{"user.max_inotify_instances": "16"}
	}},
	{name: "net-device", rule: audit.RuleNetDevices, mutate: func(s *specs.Spec) { s.Linux.NetDevices = map[string]specs.LinuxNetDevice{"eth0": {}} }},
	{name: "hook-added", rule: audit.RuleHooks, mutate: func(s *specs.Spec) {
		s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/usr/bin/nvidia-cdi-hook", Args: []string{"nvidia-cdi-hook", "create-symlinks"}}}}
	}},
	{name: "hook-args-changed", rule: audit.RuleHooks, gpu: true, mutate: func(s *specs.Spec) {
		s.Hooks.CreateContainer[0].Args = []string{"nvidia-cdi-hook", "update-ldcache", "--folder", "/host/lib"}
	}},
	{name: "shim-group-other", rule: audit.RuleAnnotations, mutate: func(s *specs.Spec) {
		s.Annotations = map[string]string{audit.AnnotationShimGroup: "othertask"}
	}},
	{name: "annotation-run-oci", rule: audit.RuleAnnotations, mutate: func(s *specs.Spec) {
		s.Annotations = map[string]string{"run.oci.keep_original_groups": "1"}
	}},
	{name: "annotation-unknown-gpu", rule: audit.RuleAnnotations, gpu: true, mutate: func(s *specs.Spec) {
		// GPU 0's edits stay, the annotation claims another device: the
		// edits are then no granted device's.
		s.Annotations[audit.AnnotationGPUs] = "nvidia.com/gpu=7"
	}},
	{name: "annotation-non-gpu-device", rule: audit.RuleAnnotations, mutate: func(s *specs.Spec) {
		// A device the host's CDI specs define, of another kind than a
		// GPU, with its edits, as the injector would add them (an
		// outside review passed this: the task then had the host's
		// /dev/kmsg and a writable host directory).
		addNIC(s)
		s.Annotations = map[string]string{audit.AnnotationGPUs: fakeNIC}
	}},
	{name: "personality", rule: audit.RuleLinuxOther, mutate: func(s *specs.Spec) { s.Linux.Personality = &specs.LinuxPersonality{Domain: specs.PerLinux32} }},
	{name: "domainname", rule: audit.RuleSpecOther, mutate: func(s *specs.Spec) { s.Domainname = "corp" }},
}

// grantedRange is the host id range generated specs map.
var grantedRange = idmap.DefaultSpan.RangeAt(3)

// heldBy is a RangeHolder that says h holds every range.
func heldBy(h idmap.Holder) func(task.IDRange) (idmap.Holder, bool, error) {
	return func(task.IDRange) (idmap.Holder, bool, error) { return h, true, nil }
}

// TestRangeHolder: a spec's host id range passes where no task on the node
// holds it (a spec shown before its task starts) and where its own task,
// of the policy's state dir, holds it; a holder that cannot be read is a
// finding. The mutations userns-range-* are the ranges that fail.
func TestRangeHolder(t *testing.T) {
	s := generated(t, false)
	for name, holder := range map[string]func(task.IDRange) (idmap.Holder, bool, error){
		"no one":   func(task.IDRange) (idmap.Holder, bool, error) { return idmap.Holder{}, false, nil },
		"its task": heldBy(idmap.Holder{StateDir: "/var/lib/nsn-run/", Task: taskID, Namespace: spec.DefaultNamespace}),
		"unreadable": func(task.IDRange) (idmap.Holder, bool, error) {
			return idmap.Holder{}, false, errors.New("permission denied")
		},
	} {
		p := policy
		p.RangeHolder = holder
		p.UserNS = &grantedRange
		findings := audit.Check(context.Background(), s, p)
		switch {
		case name == "unreadable" && (len(findings) != 1 || findings[0].Rule != audit.RuleUserNamespace || !strings.Contains(findings[0].Message, "permission denied")):
			t.Errorf("range holder %s: %v; want one user-namespace finding naming the error", name, findings)
		case name != "unreadable" && len(findings) != 0:
			t.Errorf("range held by %s: %v; want no findings", name, findings)
		}
	}
}

func TestMutations(t *testing.T) {
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			s := generated(t, m.gpu, m.init)
			m.mutate(s)
			p := policy
			if m.policy != nil {
				p = *m.policy
				p.CDI = policy.CDI
			}
			findings := audit.Check(context.Background(), s, p)
			if len(findings) == 0 {
				t.Fatalf("no finding; want rule %s", m.rule)
			}
			wantOnly := []string{m.rule}
			switch m.name {
			case "annotation-unknown-gpu", "annotation-non-gpu-device":
				// The edits of a device nobody was granted show too.
				wantOnly = append(wantOnly, audit.RuleDevices, audit.RuleMounts, audit.RuleHooks)
			case "init-not-allowed":
				// The init's mount shows too: nothing else may bind it.
				wantOnly = append(wantOnly, audit.RuleMounts)
			case "userns-where-host-identity":
				// The namespace's limits show too: no sysctl is allowed
				// without a user namespace.
				wantOnly = append(wantOnly, audit.RuleSysctls)
			case "uid-0":
				// /tmp and /dev/shm belong to the task's user: root's
				// are not the stand-in user's either.
				wantOnly = append(wantOnly, audit.RuleMounts)
			}
			for _, f := range findings {
				if !slices.Contains(wantOnly, f.Rule) {
					t.Errorf("finding of another rule: %s", f)
				}
			}
			at := slices.IndexFunc(findings, func(f audit.Finding) bool { return f.Rule == m.rule })
			if at < 0 {
				t.Fatalf("no finding of rule %s: %v", m.rule, findings)
			}
			t.Log(findings[at])
		})
	}
}

// TestRuleTable: every rule names tests, every named test exists, and every
// mutation belongs to the rule that names it.
func TestRuleTable(t *testing.T) {
	byName := map[string]mutation{}
	for _, m := range mutations {
		byName[m.name] = m
	}
	strict := map[string]bool{"json-unknown-field": true, "json-case-variant": true, "json-duplicate-key": true}
	named := map[string]bool{}
	for _, r := range audit.Rules() {
		if len(r.Tests) == 0 || r.Summary == "" || r.Sources == "" {
			t.Errorf("rule %s lacks tests, summary or sources", r.ID)
		}
		for _, name := range r.Tests {
			named[name] = true
			if strict[name] {
				continue
			}
			m, ok := byName[name]
			if !ok {
				t.Errorf("rule %s names test %s, which does not exist", r.ID, name)
			} else if m.rule != r.ID {
				t.Errorf("rule %s names test %s, which breaks rule %s", r.ID, name, m.rule)
			}
		}
	}
	for _, m := range mutations {
		if !named[m.name] {
			t.Errorf("mutation %s is not named by its rule %s", m.name, m.rule)
		}
	}
}

func TestRuleFor(t *testing.T) {
	for shape, want := range map[string]string{
		"linux.seccomp.syscalls[].args[].index": audit.RuleSeccomp,
		"linux.resources.devices[].allow":       audit.RuleDevices,
		"linux.resources.memory.limit":          audit.RuleResources,
		"linux.devices[]":                       audit.RuleDevices,
		"process.user.uid":                      audit.RuleUser,
		"process.oomScoreAdj":                   audit.RuleProcessLimits,
		"process.commandLine":                   audit.RuleProcess,
		"linux.personality":                     audit.RuleLinuxOther,
		"vm":                                    audit.RuleSpecOther,
		"processes":                             audit.RuleSpecOther,
	} {
		if got := audit.RuleFor(shape); got != want {
			t.Errorf("RuleFor(%s) = %s, want %s", shape, got, want)
		}
	}
}

func TestDecodeStrict(t *testing.T) {
	good, err := json.Marshal(generated(t, false))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, from, to string
	}{
		{"json-unknown-field", `"noNewPrivileges":true`, `"noNewPrivileges":true,"noNewPrivilegez":false`},
		{"json-case-variant", `"noNewPrivileges":true`, `"NoNewPrivileges":true`},
		{"json-duplicate-key", `"noNewPrivileges":true`, `"noNewPrivileges":true,"noNewPrivileges":false`},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := []byte(strings.Replace(string(good), c.from, c.to, 1))
			if string(b) == string(good) {
				t.Fatal("mutation did not apply")
			}
			_, findings, err := audit.DecodeSpec(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(findings) != 1 || findings[0].Rule != audit.RuleJSONStrict || !strings.HasPrefix(findings[0].Path, "process.") {
				t.Fatalf("findings = %v", findings)
			}
			t.Log(findings[0])
		})
	}
	// Annotations are a map: any key is fine there.
	b := []byte(strings.Replace(string(good), `"hostname":`, `"annotations":{"Any-Key":"v"},"hostname":`, 1))
	if _, findings, err := audit.DecodeSpec(b); err != nil || len(findings) != 0 {
		t.Errorf("map keys: %v %v", findings, err)
	}
	if _, _, err := audit.DecodeSpec([]byte(`{"process": [`)); err == nil {
		t.Error("truncated JSON decoded")
	}
	if _, _, err := audit.DecodeSpec([]byte(`{} {}`)); err == nil {
		t.Error("two documents decoded")
	}
}

func TestCompare(t *testing.T) {
	type doc struct {
		A []map[string]any `json:"a"`
		B []string         `json:"b"`
		C map[string]any   `json:"c,omitempty"`
	}
	got := doc{A: []map[string]any{{"k": "x", "v": 1}, {"k": "y", "v": 2}}, B: []string{"ro", "rw"}, C: map[string]any{"n": nil}}
	want := doc{A: []map[string]any{{"k": "y", "v": 2}, {"k": "z", "v": 3}}, B: []string{"ro"}}
	diffs, err := audit.Compare(got, want, audit.CompareOptions{KeyedLists: map[string]string{"a": "k"}})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, d := range diffs {
		lines = append(lines, d.Path+" "+d.Shape+" "+d.Message())
	}
	wantLines := []string{
		`a[x] a[] not allowed: nsn-run generates nothing here, the spec has {"k":"x","v":1}`,
		`a[z] a[] missing: nsn-run generates {"k":"z","v":3}`,
		`b b is ["ro","rw"], nsn-run generates ["ro"]`,
		`c c not allowed: nsn-run generates nothing here, the spec has {"n":null}`,
	}
	if !slices.Equal(lines, wantLines) {
		t.Errorf("diffs:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(wantLines, "\n"))
	}
	if _, err := audit.Compare(func() {}, 1, audit.CompareOptions{}); err == nil || errors.Is(err, nil) {
		t.Error("an unmarshalable value compared")
	}

	// The same document on both sides: no difference but a keyed
	// list's key twice, which a generated document must not have either.
	same := doc{A: []map[string]any{{"k": "x", "v": 1}, {"k": "y", "v": 2}}, B: []string{"ro"}}
	if diffs, err := audit.Compare(same, same, audit.CompareOptions{KeyedLists: map[string]string{"a": "k"}}); err != nil || len(diffs) != 0 {
		t.Errorf("a document against itself: %v %v", diffs, err)
	}
	twice := doc{A: []map[string]any{{"k": "x", "v": 1}, {"k": "x", "v": 2}}, C: map[string]any{"l": []any{map[string]any{"k": "y"}, map[string]any{"k": "y"}}}}
	diffs, err = audit.Compare(twice, twice, audit.CompareOptions{KeyedLists: map[string]string{"a": "k", "c.l": "k"}})
	lines = nil
	for _, d := range diffs {
		lines = append(lines, d.Path+" "+d.Shape+" "+d.Message())
	}
	wantLines = []string{
		`a[x] a[] not allowed: nsn-run generates nothing here, the spec has {"k":"x","v":2}`,
		`c.l[y] c.l[] not allowed: nsn-run generates nothing here, the spec has {"k":"y"}`,
	}
	if err != nil || !slices.Equal(lines, wantLines) {
		t.Errorf("a document with keys twice against itself: %v\n%s\nwant:\n%s", err, strings.Join(lines, "\n"), strings.Join(wantLines, "\n"))
	}
}

// TestRulesDocumented: docs/security-model.md lists every rule with the
// tests that break it.
func TestRulesDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "security-model.md"))
	if err != nil {
		t.Fatal(err)
	}
	// Other tables have rows named like some rules (user, seccomp): the
	// rule table's row is the one that names its tests.
	rows := map[string]string{}
	for line := range strings.Lines(string(doc)) {
		if cells := strings.Split(line, "|"); len(cells) > 4 {
			rows[strings.TrimSpace(cells[1])] += line
		}
	}
	for _, r := range audit.Rules() {
		row, ok := rows[r.ID]
		if !ok {
			t.Errorf("rule %s has no row in docs/security-model.md", r.ID)
			continue
		}
		for _, name := range r.Tests {
			if !strings.Contains(row, name) {
				t.Errorf("the row of rule %s does not name its test %s", r.ID, name)
			}
		}
	}
}

// TestTaskExists: a spec under the id of a task in the state dir is that
// task's own running spec or a finding, whatever its user namespace (a
// twentieth review passed another command under an ended task's id with
// user namespaces off, where no range is held).
func TestTaskExists(t *testing.T) {
	s := generated(t, false)
	other := generated(t, false)
	other.Process.Args = []string{"sh", "-c", "echo forged > /output/answer"}
	exists := func(id string) (bool, error) { return id == taskID, nil }
	live := func(spec *specs.Spec, running bool) func(string) (audit.TaskState, bool, error) {
		return func(string) (audit.TaskState, bool, error) {
			return audit.TaskState{Spec: spec, Running: running}, true, nil
		}
	}
	for _, c := range []struct {
		name     string
		spec     *specs.Spec
		taskSpec func(string) (audit.TaskState, bool, error)
		want     string // "" no finding
	}{
		{"its own running spec", s, live(s, true), ""},
		{"another command under its id", other, live(s, true), "this is not its spec"},
		{"its own spec, stopped", s, live(s, false), "not running"},
		{"no container", s, func(string) (audit.TaskState, bool, error) { return audit.TaskState{}, false, nil }, "no container"},
		{"no live spec to read (a Docker request)", s, nil, "its spec is its container's"},
	} {
		p := policy
		p.UserNS = &grantedRange
		p.TaskExists = exists
		p.TaskSpec = c.taskSpec
		findings := audit.Check(context.Background(), c.spec, p)
		var got string
		for _, f := range findings {
			if f.Rule == audit.RuleMounts {
				got = f.Message
			}
		}
		switch {
		case c.want == "" && len(findings) != 0:
			t.Errorf("%s: %v; want no findings", c.name, findings)
		case c.want != "" && !strings.Contains(got, c.want):
			t.Errorf("%s: %v; want a mounts finding %q", c.name, findings, c.want)
		}
	}
	// A task of another id in the state dir is no one's concern here.
	p := policy
	p.UserNS = &grantedRange
	p.TaskExists = func(string) (bool, error) { return false, nil }
	if findings := audit.Check(context.Background(), other, p); len(findings) != 0 {
		t.Errorf("no task of its id in the state dir: %v; want no findings", findings)
	}
}
