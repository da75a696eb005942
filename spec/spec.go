// Package spec turns a Task and its image config into the hardened OCI
// runtime spec the task runs with. It is pure: no daemon calls, no host
// reads, the same input gives byte-identical JSON. The result is a list of
// containerd oci.SpecOpts so a backend can hand it to containerd's
// WithNewSpec, and reviewers can see every option by name.
package spec

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/task"
)

// Paths inside the container that the spec creates.
const (
	OutputPath = "/output"
	TmpPath    = "/tmp"
	// RootfsPath is the bundle-relative root; containerd's shim mounts the
	// snapshot there.
	RootfsPath = "rootfs"
	// DefaultNamespace is the containerd namespace nsn-run works in; it is
	// also the first element of every task's cgroup path.
	DefaultNamespace = "nsn"
	cfsPeriod        = 100000 // microseconds: the kernel's default CFS period
	defaultUmask     = 0o022

	// DefaultOOMScoreAdj makes every task the host OOM killer's first
	// choice: an untrusted job dies before any host daemon. Without it a
	// task inherits its shim's score, containerd's plus one (-998 under
	// Debian's containerd.service), so host daemons would die first.
	DefaultOOMScoreAdj = 1000
	// MinOOMScoreAdj is the lowest score an operator may give tasks: still
	// well above every host daemon (which run at 0 or below).
	MinOOMScoreAdj = 500
	// MaxOOMScoreAdj is the kernel's maximum.
	MaxOOMScoreAdj = 1000
	// DefaultAppArmorProfile is the name nsn-run loads containerd's
	// default AppArmor profile (contrib/apparmor, the same rules as
	// Docker's docker-default) under, and runs tasks with where the host
	// supports AppArmor. A name of nsn-run's own, so that an operator's
	// edits to containerd's or Docker's profiles do not reach tasks.
	DefaultAppArmorProfile = "nsn-run-default"

	// MemlockBytes is RLIMIT_MEMLOCK: the distribution default, enough for
	// a few locked pages, not for pinning memory the cgroup cannot reclaim.
	MemlockBytes = 64 << 10
	// MsgqueueBytes is RLIMIT_MSGQUEUE: no POSIX message queues. The
	// kernel charges a task's queue bytes to the creator of its user
	// namespace too, host root, whose own limit is 819200: a task allowed
	// that much took every other task's and root's queues (seen here). Jobs
	// do not use mq_open; System V queues and /dev/shm are unaffected.
	MsgqueueBytes = 0
	// SigpendingSignals is RLIMIT_SIGPENDING: queued signals. Also charged
	// to host root (96364 on this machine's kind): at 4096 a task, 24 tasks
	// left root none; at 256, some 370 would.
	SigpendingSignals = 256
)

// DeviceInjector injects CDI devices that were already granted to a task
// (the gpu package implements it over its private spec cache). It must be
// pure: the same names give the same edits, so the auditor can rebuild a
// task's spec and compare. Allocation happens before, elsewhere.
type DeviceInjector interface {
	// InjectSpecOpt returns the option that adds exactly the CDI edits of
	// these fully qualified device names (nvidia.com/gpu=0) and records
	// them in the spec's annotations; shared marks them as shared.
	InjectSpecOpt(names []string, shared bool) (oci.SpecOpts, error)
}

// GPUKind is the CDI device kind of NVIDIA GPUs: the only kind a task is
// granted devices of.
const GPUKind = "nvidia.com/gpu"

// CheckGPUDevice refuses a CDI device name that is not a GPU's
// (GPUKind=NAME). The CDI specs on a host name other devices too (IMEX
// channels, NICs, another vendor's), each with device nodes, host mounts
// and hooks of its own; nsn-run grants tasks GPUs only, so a spec, or an
// annotation the auditor replays, naming any other device is refused.
func CheckGPUDevice(name string) error {
	kind, id, ok := strings.Cut(name, "=")
	if !ok || kind != GPUKind || id == "" {
		return fmt.Errorf("%w: CDI device %q is not a GPU (%s=NAME): tasks are granted GPUs only", errdefs.ErrInvalidArgument, name, GPUKind)
	}
	return nil
}

// Options carry what the spec needs from the host side of the task.
type Options struct {
	// OutputDir is the host directory bind-mounted read-write at /output.
	// It must be an absolute, clean path; it is the only host path mounted.
	OutputDir string
	// GPUDevices are the CDI devices granted to the task (allocation
	// happened before); a task that asks for GPUs must have them.
	GPUDevices []string
	// CDI injects GPUDevices; required when there are any.
	CDI DeviceInjector
	// OOMScoreAdj is the task's process.oomScoreAdj; 0 means
	// DefaultOOMScoreAdj. An operator may set MinOOMScoreAdj..MaxOOMScoreAdj.
	OOMScoreAdj int
	// UserNS, if set, runs the task in its own user namespace: container
	// uids and gids 0..Size-1 are host ids HostID.. (the range the Manager
	// granted it). The process user inside is unchanged.
	UserNS *task.IDRange
	// InitBinary is the host path of nsn-init (cmd/nsn-init), bound
	// read-only at InitPath to run as pid 1 of a task that asks for an
	// init (Task.Init); such a task is refused without one.
	InitBinary string
	// AppArmorProfile is the AppArmor profile the task runs under
	// (process.apparmorProfile): DefaultAppArmorProfile where the host
	// supports AppArmor, empty where it does not (runc refuses a profile
	// on a host without AppArmor). Loading it is the backend's job.
	AppArmorProfile string
	// UserNSSysctls, with UserNS, puts UserNSLimits in linux.sysctl
	// (UserNSSysctls): runc 1.4 and later sets them in the task's user
	// namespace before anything of the task runs. Without it the spec
	// has no sysctls and the backend sets the limits itself between
	// create and start (older runc refuses user.* sysctls).
	UserNSSysctls bool
}

// checkUserNS refuses a range that reaches host root or does not hold the
// task's own ids.
func checkUserNS(r *task.IDRange, uid, gid uint32) error {
	switch {
	case r == nil:
		return CheckSharedIdentity(uid, gid)
	case r.Size != task.IDRangeSize:
		return fmt.Errorf("%w: user namespace range %s: must map %d ids", errdefs.ErrInvalidArgument, r, task.IDRangeSize)
	case r.Contains(0) || uint64(r.HostID)+uint64(r.Size) > 1<<32-1:
		return fmt.Errorf("%w: user namespace range %s reaches host id 0 or the end of the id space", errdefs.ErrInvalidArgument, r)
	case uid >= r.Size || gid >= r.Size:
		return fmt.Errorf("%w: user %d:%d is outside the task's %d ids", errdefs.ErrInvalidArgument, uid, gid, r.Size)
	}
	return nil
}

// oomScoreAdj returns the score o asks for, or an error for one out of range.
func (o Options) oomScoreAdj() (int, error) { return OOMScoreAdj(o.OOMScoreAdj) }

// OOMScoreAdj returns the oom_score_adj a task gets when the operator asks
// for score: DefaultOOMScoreAdj for 0, score itself within
// MinOOMScoreAdj..MaxOOMScoreAdj, an ErrInvalidArgument otherwise. Both
// backends take the score through it, so they accept the same values.
func OOMScoreAdj(score int) (int, error) {
	if score == 0 {
		return DefaultOOMScoreAdj, nil
	}
	if score < MinOOMScoreAdj || score > MaxOOMScoreAdj {
		return 0, fmt.Errorf("%w: oom score adj %d: must be %d..%d (tasks die before host daemons)",
			errdefs.ErrInvalidArgument, score, MinOOMScoreAdj, MaxOOMScoreAdj)
	}
	return score, nil
}

// Opts returns the ordered list of spec options for t, run on top of
// containerd's default Linux spec (oci.GenerateSpec / client.WithNewSpec).
// t is completed with task defaults first. The order matters and is fixed
// here: the user before GPU injection (CDI edits may depend on it), the
// capability sets before seccomp (containerd's default profile opens
// syscalls by capability, so an empty set must be in place first).
func Opts(t task.Task, img ocispec.ImageConfig, o Options) ([]oci.SpecOpts, error) {
	t = t.WithDefaults()
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if err := checkOutputDir(o.OutputDir); err != nil {
		return nil, err
	}
	oomScore, err := o.oomScoreAdj()
	if err != nil {
		return nil, err
	}
	proc, err := processFromImage(t, img)
	if err != nil {
		return nil, err
	}
	if err := checkUserNS(o.UserNS, proc.uid, proc.gid); err != nil {
		return nil, err
	}
	gpus, err := t.GPURequest()
	if err != nil {
		return nil, err
	}
	switch {
	case !gpus.Empty() && len(o.GPUDevices) == 0:
		return nil, fmt.Errorf("%w: task asks for GPUs %q but none was granted to it", errdefs.ErrFailedPrecondition, t.GPUs)
	case len(o.GPUDevices) > 0 && gpus.Empty():
		return nil, fmt.Errorf("%w: GPUs %s granted to a task that asks for none", errdefs.ErrInvalidArgument, strings.Join(o.GPUDevices, ","))
	case len(o.GPUDevices) > 0 && o.CDI == nil:
		return nil, fmt.Errorf("%w: task was granted GPUs but no CDI device injector is configured", errdefs.ErrFailedPrecondition)
	}
	for _, name := range o.GPUDevices {
		if err := CheckGPUDevice(name); err != nil {
			return nil, err
		}
	}
	l := t.Limits
	args := proc.args
	mounts := []specs.Mount{tmpMount(l, proc.uid, proc.gid), outputMount(o.OutputDir)}
	if t.Init {
		if !filepath.IsAbs(o.InitBinary) || filepath.Clean(o.InitBinary) != o.InitBinary {
			return nil, fmt.Errorf("%w: the task asks for an init, and this node has no nsn-init binary (an absolute, clean path) to give it", errdefs.ErrFailedPrecondition)
		}
		args = append([]string{InitPath, "--"}, args...)
		mounts = append(mounts, initMount(o.InitBinary))
	}

	opts := []oci.SpecOpts{
		oci.WithRootFSPath(RootfsPath),
		oci.WithRootFSReadonly(),
		withRootfsPropagation("rprivate"),
		oci.WithHostname(t.ID),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.CgroupNamespace}),

		oci.WithDefaultPathEnv,
		oci.WithEnv(proc.env),
		oci.WithProcessArgs(args...),
		oci.WithProcessCwd(proc.cwd),
		oci.WithUIDGID(proc.uid, proc.gid),
		oci.WithUmask(defaultUmask),
		oci.WithNoNewPrivileges,
		withRlimits(l, o.UserNS != nil),
		withOOMScoreAdj(oomScore),
		withAppArmorProfile(o.AppArmorProfile),

		oci.WithDefaultUnixDevices,
		withoutConsole,
		oci.WithMounts(mounts),
		withShmOwner(proc.uid, proc.gid),
		withPtyMax,
		withMaskedPaths(requiredMaskedPaths),
		withReadonlyPaths(requiredReadonlyPaths),

		oci.WithMemoryLimit(uint64(l.MemoryBytes)),
		// memory+swap equal to memory: the task gets no swap at all.
		oci.WithMemorySwap(l.MemoryBytes),
		oci.WithCPUCFS(cpuQuota(l.CPUs), cfsPeriod),
		oci.WithPidsLimit(l.Pids),
	}
	if len(o.GPUDevices) > 0 {
		inject, err := o.CDI.InjectSpecOpt(o.GPUDevices, gpus.Shared)
		if err != nil {
			return nil, err
		}
		opts = append(opts, inject)
	}
	// The user namespace after the CDI edits: the CDI library marks bind
	// mounts "idmap" when it sees id mappings, which runc 1.1 cannot do;
	// the driver files are readable to the task without it.
	if r := o.UserNS; r != nil {
		m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: r.HostID, Size: r.Size}}
		opts = append(opts, oci.WithUserNamespace(m, m))
	}
	opts = append(opts, withNoCapabilities, withSeccompProfile)
	if o.UserNS != nil && o.UserNSSysctls {
		opts = append(opts, withUserNSLimits)
	} else {
		opts = append(opts, withoutSysctls)
	}
	return opts, nil
}

// Generate builds the complete spec for t, as containerd would when creating
// its container. ctx supplies the containerd namespace (DefaultNamespace if
// it has none), which names the cgroup path.
func Generate(ctx context.Context, t task.Task, img ocispec.ImageConfig, o Options) (*specs.Spec, error) {
	opts, err := Opts(t, img, o)
	if err != nil {
		return nil, err
	}
	if _, ok := namespaces.Namespace(ctx); !ok {
		ctx = namespaces.WithNamespace(ctx, DefaultNamespace)
	}
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: t.ID}, opts...)
	if err != nil {
		return nil, fmt.Errorf("generate spec for task %s: %w", t.ID, err)
	}
	return s, nil
}

// Marshal renders a spec the way nsn-run prints and stores it: indented JSON
// with a trailing newline. encoding/json writes struct fields in declaration
// order and map keys sorted, so equal specs give identical bytes.
func Marshal(s *specs.Spec) ([]byte, error) {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("marshal spec: %w", err)
	}
	return append(b, '\n'), nil
}

func checkOutputDir(dir string) error {
	if dir == "" || !path.IsAbs(dir) || path.Clean(dir) != dir {
		return fmt.Errorf("%w: output dir %q: must be an absolute, clean host path", errdefs.ErrInvalidArgument, dir)
	}
	return nil
}

// cpuQuota converts a CPU fraction to a CFS quota per cfsPeriod.
func cpuQuota(cpus float64) int64 {
	q := int64(cpus*cfsPeriod + 0.5)
	return max(q, 1000) // the kernel refuses quotas under 1ms
}

// tmpMount is /tmp: the task's scratch space, sized in bytes and inodes so a
// job cannot exhaust memory (tmpfs pages are charged to its cgroup) or the
// inode table, and with nothing executable, setuid or device-like on it.
//
// It belongs to the task's user (uid=, gid=: ids of the task's own user
// namespace where it has one), as /dev/shm and /output do.
func tmpMount(l task.Limits, uid, gid uint32) specs.Mount {
	return specs.Mount{
		Destination: TmpPath,
		Type:        "tmpfs",
		Source:      "tmpfs",
		Options: []string{
			"nosuid", "nodev", "noexec", "mode=1777",
			"size=" + strconv.FormatInt(l.TmpBytes, 10),
			"nr_inodes=" + strconv.FormatInt(l.TmpInodes, 10),
			"uid=" + strconv.FormatUint(uint64(uid), 10),
			"gid=" + strconv.FormatUint(uint64(gid), 10),
		},
	}
}

// withShmOwner gives containerd's /dev/shm tmpfs to the task's user.
func withShmOwner(uid, gid uint32) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		for i := range s.Mounts {
			if s.Mounts[i].Destination == "/dev/shm" && s.Mounts[i].Type == "tmpfs" {
				s.Mounts[i].Options = append(s.Mounts[i].Options,
					"uid="+strconv.FormatUint(uint64(uid), 10), "gid="+strconv.FormatUint(uint64(gid), 10))
			}
		}
		return nil
	}
}

// PtyMax bounds the pseudo-terminals a task may open in its own /dev/pts
// instance (devpts "max="). Every instance but the host's draws on one
// host-wide count (kernel.pty.max less kernel.pty.reserve: 3072 by
// default), whose kernel memory no cgroup is charged for: without a bound
// one task took 3066 and every other container's openpty failed with
// ENOSPC (an outside review; TestEscapePtys shows it with runc). Tasks get
// no terminal; a few ptys serve programs that want one (script, expect).
const PtyMax = 16

// withPtyMax bounds containerd's /dev/pts instance to PtyMax.
func withPtyMax(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	for i := range s.Mounts {
		if s.Mounts[i].Destination == "/dev/pts" && s.Mounts[i].Type == "devpts" {
			s.Mounts[i].Options = append(s.Mounts[i].Options, "max="+strconv.Itoa(PtyMax))
		}
	}
	return nil
}

// outputMount binds the task's host output directory at /output. "bind"
// (not "rbind") so no host submount under it becomes visible; rprivate so no
// mount event propagates either way.
// InitPath is where a task that asks for an init finds nsn-init, which
// runs as its pid 1 with the task's command as its child. Under /dev, the
// tmpfs runc makes for each container, so no image directory is involved:
// /sbin is a symlink to usr/sbin in usr-merged images, and a mount point
// that is a symlink is refused.
const InitPath = "/dev/nsn-init"

// initMount binds the host's nsn-init read-only, executable, without
// setuid or devices.
func initMount(hostBinary string) specs.Mount {
	return specs.Mount{
		Destination: InitPath,
		Type:        "bind",
		Source:      hostBinary,
		Options:     []string{"bind", "ro", "nosuid", "nodev", "rprivate"},
	}
}

func outputMount(hostDir string) specs.Mount {
	return specs.Mount{
		Destination: OutputPath,
		Type:        "bind",
		Source:      hostDir,
		Options:     []string{"bind", "rw", "nosuid", "nodev", "noexec", "rprivate"},
	}
}

// Rlimits are the resource limits every task's process gets, each with soft =
// hard so the task cannot raise it; none is inherited from containerd:
//   - NOFILE: the task's open-files limit;
//   - CORE 0: no core dumps, which would write task memory to a
//     host-configured place (a pipe in core_pattern is not stopped by it:
//     nsn-run doctor checks that);
//   - RTPRIO 0 and NICE 0: no realtime scheduling, no raising priority;
//   - MEMLOCK, MSGQUEUE, SIGPENDING: small, fixed bounds on per-user kernel
//     memory.
//
// With its own user namespace a task's uid is its alone, so RLIMIT_NPROC
// (which counts processes per uid) is set to one above the pids limit: it
// bounds the uid as the cgroup bounds the task, and the cgroup's limit,
// checked after it, is the one a fork bomb hits, so pids.events counts the
// refused forks (pids_limit_hits). Without a user namespace it is left
// out: tasks share host uids, and the pids cgroup limit bounds processes
// per task.
func Rlimits(l task.Limits, ownIDs bool) []specs.POSIXRlimit {
	fixed := func(typ string, v uint64) specs.POSIXRlimit { return specs.POSIXRlimit{Type: typ, Hard: v, Soft: v} }
	rl := []specs.POSIXRlimit{
		fixed("RLIMIT_NOFILE", uint64(l.OpenFiles)),
		fixed("RLIMIT_CORE", 0),
		fixed("RLIMIT_RTPRIO", 0),
		fixed("RLIMIT_NICE", 0),
		fixed("RLIMIT_MEMLOCK", MemlockBytes),
		fixed("RLIMIT_MSGQUEUE", MsgqueueBytes),
		fixed("RLIMIT_SIGPENDING", SigpendingSignals),
	}
	if ownIDs {
		rl = append(rl, fixed("RLIMIT_NPROC", uint64(l.Pids)+1))
	}
	return rl
}

func withRlimits(l task.Limits, ownIDs bool) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		s.Process.Rlimits = Rlimits(l, ownIDs)
		return nil
	}
}

func withOOMScoreAdj(score int) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		s.Process.OOMScoreAdj = &score
		return nil
	}
}

// withAppArmorProfile sets the task's AppArmor profile, or clears it:
// nothing else decides it.
func withAppArmorProfile(name string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		s.Process.ApparmorProfile = name
		return nil
	}
}

// withRootfsPropagation sets the root's propagation explicitly rather than
// leaving it to the runtime's default, so the spec shows it.
func withRootfsPropagation(p string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		s.Linux.RootfsPropagation = p
		return nil
	}
}

// withoutConsole drops containerd's device-cgroup allow for /dev/console
// (c 5:1): a task has no terminal, and the host's console is not its to
// write.
func withoutConsole(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	if s.Linux.Resources == nil {
		return nil
	}
	s.Linux.Resources.Devices = slices.DeleteFunc(s.Linux.Resources.Devices, func(d specs.LinuxDeviceCgroup) bool {
		return d.Type == "c" && d.Major != nil && *d.Major == 5 && d.Minor != nil && *d.Minor == 1
	})
	return nil
}

// SeccompProfile is every task's seccomp filter: containerd's default
// allowlist for an empty capability set (ERRNO by default, clone only
// without namespace flags, clone3 ENOSYS so libcs fall back to clone, no
// io_uring), limited to the native architecture. containerd also lists the
// compat ABIs (i386 and x32 on x86_64), whose entry points would reach
// syscalls the native rules filter by argument: the 32-bit socketcall
// multiplexer, for one, creates sockets of any family, vsock included. With
// only the native architecture, a syscall from another ABI kills the
// process. The Docker backend sends the same profile.
func SeccompProfile() *specs.LinuxSeccomp {
	empty := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}}
	p := seccomp.DefaultProfile(empty)
	p.Architectures = nativeArchitectures()
	for i := range p.Syscalls {
		p.Syscalls[i].Names = slices.DeleteFunc(p.Syscalls[i].Names, func(n string) bool { return slices.Contains(deniedSyscalls, n) })
	}
	p.Syscalls = slices.DeleteFunc(p.Syscalls, func(r specs.LinuxSyscall) bool { return len(r.Names) == 0 })
	p.Syscalls = append(p.Syscalls, setsockoptRules()...)
	p.Syscalls = append(p.Syscalls, prctlRules()...)
	p.Syscalls = append(p.Syscalls, hugetlbRules()...)
	p.Syscalls = append(p.Syscalls, socketRules()...)
	return p
}

// deniedSyscalls are refused beyond containerd's default profile. Linux
// AIO contexts (io_setup; io_submit uses one) count against one host-wide
// limit, fs.aio-max-nr (65536 by default), which no cgroup and no user
// namespace bounds: one task holding them all (about 5 MiB of memory)
// leaves every other task and the host's own AIO users (databases, qemu)
// with EAGAIN. An outside review did it; TestEscapeAIOContexts shows it
// with runc. POSIX AIO (glibc's aio_*) runs on threads and is unaffected;
// io_uring was never allowed.
//
// memfd_secret takes each page it maps out of the kernel's direct map,
// splitting the huge page that held it, and the kernel never merges it
// back: a task repeating it fragments the host's direct map (less TLB
// reach for the kernel and every tenant) until reboot. RLIMIT_MEMLOCK
// caps one mapping, nothing bounds the damage. An outside review moved
// the host's DirectMap4k from 28 to 178 MiB with two tasks;
// TestEscapeSecretMemory shows the mechanism with runc.
//
// setsockopt and prctl are not denied but allowed by rules of their own,
// without the options that load classic BPF programs (setsockoptRules,
// prctlRules); seccomp(2), which only loads them (or asks about them), is.
// mmap, memfd_create and shmget are allowed without their hugetlb flags
// (hugetlbRules), socket without NETLINK_USERSOCK (socketRules).
var deniedSyscalls = []string{"io_setup", "io_submit", "memfd_secret", "setsockopt", "prctl", "seccomp", "mmap", "memfd_create", "shmget", "socket"}

// nativeArchitectures is the seccomp architecture of the build: tasks run
// binaries of the host's own ABI only.
func nativeArchitectures() []specs.Arch {
	switch goruntime.GOARCH {
	case "amd64":
		return []specs.Arch{specs.ArchX86_64}
	case "arm64":
		return []specs.Arch{specs.ArchAARCH64}
	case "s390x":
		return []specs.Arch{specs.ArchS390X}
	case "riscv64":
		return []specs.Arch{specs.ArchRISCV64}
	case "ppc64le":
		return []specs.Arch{specs.ArchPPC64LE}
	case "loong64":
		return []specs.Arch{specs.ArchLOONGARCH64}
	default:
		return []specs.Arch{}
	}
}

func withSeccompProfile(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	s.Linux.Seccomp = SeccompProfile()
	return nil
}

// withNoCapabilities empties all five capability sets. Empty slices (not
// nil) so `nsn-run spec` shows the reviewer each set as [].
func withNoCapabilities(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	s.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding:    []string{},
		Effective:   []string{},
		Inheritable: []string{},
		Permitted:   []string{},
		Ambient:     []string{},
	}
	return nil
}

// withoutSysctls drops any kernel parameter setting: even namespaced sysctls
// widen what the task can tune, and none is needed to run a job (the user
// namespace's limits, withUserNSLimits, are the one kind a task gets). (The default
// spec has no hooks; only a GPU injector adds them, and the auditor checks
// those against its allowlist.)
func withoutSysctls(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	s.Linux.Sysctl = nil
	return nil
}
