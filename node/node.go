// Package node is the one way in for a node agent: Open returns a
// runtime.Manager wired for this node exactly as the nsn-run CLI wires it:
// the backend, the GPU allocator over the state dir's allocation
// directory, the node-wide host id ranges, the audit policy. An agent that
// links it and an operator's nsn-run on the same host see the same tasks,
// GPU grants and id ranges: `nsn-run ps`, `logs`, `gpu ls` and `gc` work
// on what the agent started, and the other way round.
//
// It links no NVIDIA code and needs no cgo: GPU usage sampling (NVML) is
// wired in by the caller through Options.GPUUsage (gpu/nvmlusage).
package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/gpu"
	"github.com/nsn-run/nsn-run/idmap"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/runtime/docker"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// Backends.
const (
	BackendContainerd = "containerd"
	BackendDocker     = "docker"
)

// Defaults, the CLI's as well.
const (
	DefaultAddress  = "/run/containerd/containerd.sock"
	DefaultStateDir = "/var/lib/nsn-run"
	// ProbeDir is where the containerd backend keeps what it learned of
	// the host for later processes (containerd.Config.ProbeDir): node-wide
	// and emptied by a reboot, beside the host id ranges.
	ProbeDir = "/run/nsn-run"
	// LoggerName is the small shim logger binary (cmd/nsn-logger) Open
	// looks for when Options.LoggerBinary is empty.
	LoggerName = "nsn-logger"
	// InitName is the init binary (cmd/nsn-init) Open looks for when
	// Options.InitBinary is empty.
	InitName = "nsn-init"
	// ShimName is nsn-run's runc shim (cmd/nsn-shim) Open looks for when
	// Options.ShimBinary is empty.
	ShimName = "nsn-shim"
)

// Options say which backend to reach and where the node keeps its state.
// The zero value is the CLI's defaults: containerd at DefaultAddress,
// namespace "nsn", state in DefaultStateDir, CDI specs in /etc/cdi and
// /var/run/cdi, per-task user namespaces where the backend can.
type Options struct {
	// Backend is BackendContainerd (the default) or BackendDocker.
	Backend string
	// Address is containerd's socket; DefaultAddress if empty.
	Address string
	// Namespace is the containerd namespace tasks live in;
	// spec.DefaultNamespace if empty. It names their cgroups too.
	Namespace string
	// DockerHost is dockerd's address (DOCKER_HOST form);
	// docker.DefaultHost if empty.
	DockerHost string
	// StateDir holds each task's private directory and the node's GPU
	// allocations; DefaultStateDir if empty.
	StateDir string
	// CDISpecDirs hold the CDI specs of the node's GPUs;
	// gpu.DefaultSpecDirs if empty.
	CDISpecDirs []string
	// LoggerBinary is the program that captures a task's logs in a
	// process of its own (nsn-logger, or nsn-run itself): containerd's
	// shim runs it for every task, the Docker backend starts it for every
	// task (without one, a Docker task's capture runs in the process that
	// started it). Empty: nsn-logger beside the running program, else on
	// PATH. A program that ships no nsn-logger can be its own, as nsn-run
	// is: name its own absolute path here, and first thing in main run
	// logs.RunShimLogger(os.Args[2]) or logs.RunAttachLogger(os.Args[2])
	// and exit when os.Args[1] is logs.ShimLoggerCommand or
	// logs.AttachLoggerCommand.
	LoggerBinary string
	// LoggerCPUs is the CPU quota every task's logger process on the node
	// shares (cgroups.LoggersGroup); cgroups.DefaultLoggerCPUs if zero.
	LoggerCPUs float64
	// InitBinary is nsn-init, which a task with Init runs as pid 1 (on
	// containerd; dockerd has its own). Empty: nsn-init beside the
	// running program, else on PATH, else tasks with Init are refused.
	InitBinary string
	// UserNamespaces is the per-task host identity policy
	// (runtime.UserNSPreferred by default).
	UserNamespaces runtime.UserNSMode
	// AllowedRuntimes are the runtimes a task may name;
	// runtime.DefaultAllowedRuntimes if empty.
	AllowedRuntimes []string
	// GPUUsage samples the GPU memory of a task's processes for its
	// stats and its GPU memory limit (gpu/nvmlusage over NVML); nil
	// leaves GPU usage out. The caller closes it after the Manager.
	GPUUsage runtime.GPUUsageSampler
	// SampleInterval is how often a waiting Manager samples a task;
	// runtime.DefaultSampleInterval if zero.
	SampleInterval time.Duration
	// ReleaseInBackground lets Run return before the task's container
	// and snapshot are deleted (runtime.Config.ReleaseInBackground);
	// Close and Drain wait for those releases.
	ReleaseInBackground bool
	// ShimGroup and ShimGroupSize make the containerd backend's tasks
	// share a runc shim kept warm by an anchor container
	// (containerd.Config.ShimGroup): for a long-lived Manager on
	// containerd 2.x. Experimental (docs/performance.md). Empty: a shim
	// per task.
	ShimGroup     string
	ShimGroupSize int
	// ShimBinary is nsn-shim (cmd/nsn-shim, with cmd/nsn-shimd beside
	// it), which tasks of the runc runtime run with on containerd 2.3 and
	// later (containerd.Config.ShimBinary). Open looks for ShimName
	// beside this program, then on PATH, when it is empty: without one,
	// tasks run with containerd's own shim, and a shim group is refused.
	ShimBinary string
}

// withDefaults fills in the defaults and reads UserNamespaces in the
// CLI's spellings too ("preferred").
func (o Options) withDefaults() (Options, error) {
	mode, err := runtime.ParseUserNSMode(string(o.UserNamespaces))
	if err != nil {
		return o, err
	}
	o.UserNamespaces = mode
	if o.Backend == "" {
		o.Backend = BackendContainerd
	}
	if o.Address == "" {
		o.Address = DefaultAddress
	}
	if o.Namespace == "" {
		o.Namespace = spec.DefaultNamespace
	}
	if o.DockerHost == "" {
		o.DockerHost = docker.DefaultHost
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.InitBinary == "" {
		o.InitBinary = findBinary(InitName)
	}
	if o.InitBinary != "" {
		// The audit refuses a bind source that runs through a symlink.
		resolved, err := filepath.EvalSymlinks(o.InitBinary)
		if err != nil {
			return o, fmt.Errorf("%w: init binary: %w", errdefs.ErrInvalidArgument, err)
		}
		o.InitBinary = resolved
	}
	return o, nil
}

// tasksDir is where the Manager keeps each task's directory.
func (o Options) tasksDir() (string, error) {
	abs, err := filepath.Abs(o.StateDir)
	if err != nil {
		return "", fmt.Errorf("%w: state dir %q: %w", errdefs.ErrInvalidArgument, o.StateDir, err)
	}
	// As the Manager resolves it, so that a state dir given through a
	// symlink audits what `spec` shows (an outside review's
	// `--state-dir LINK spec | --state-dir LINK audit -` was refused).
	if resolved, err := filepath.EvalSymlinks(abs); err == nil {
		abs = resolved
	}
	return filepath.Join(abs, "tasks"), nil
}

// GPUs returns the node's GPU allocator as Open wires it: the CDI specs
// under CDISpecDirs, allocations node-wide (gpu.DefaultAllocDir), the
// state dir's tasks' own (what `nsn-run gpu ls` shows).
func GPUs(o Options) (*gpu.Injector, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	owner, err := filepath.Abs(o.StateDir)
	if err != nil {
		return nil, fmt.Errorf("%w: state dir %q: %w", errdefs.ErrInvalidArgument, o.StateDir, err)
	}
	if resolved, err := filepath.EvalSymlinks(owner); err == nil {
		owner = resolved // as runtime.New names it
	}
	return gpu.New(gpu.Options{SpecDirs: o.CDISpecDirs, AllocDir: gpu.DefaultAllocDir, Owner: owner})
}

// AuditPolicy is the policy the backend's Start applies to every task of
// this node, for auditing a spec or an Engine create request elsewhere
// (`nsn-run audit`): the namespace, the tasks dir, the GPUs' CDI edits,
// bind sources resolved on this host, the user-namespace policy, the
// AppArmor profile this host applies, and whether a spec must carry its
// user namespace's per-user limits (unless this node's containerd, where
// it answers, is older than 2.3, or its runtime info says the runc its
// shim runs is older than 1.4: containerd.UserNSLimitsInSpecAt).
func AuditPolicy(ctx context.Context, o Options) (audit.Policy, error) {
	o, err := o.withDefaults()
	if err != nil {
		return audit.Policy{}, err
	}
	tasks, err := o.tasksDir()
	if err != nil {
		return audit.Policy{}, err
	}
	gpus, err := gpu.New(gpu.Options{SpecDirs: o.CDISpecDirs})
	if err != nil {
		return audit.Policy{}, err
	}
	p := audit.Policy{
		Namespace:     o.Namespace,
		TasksDir:      tasks,
		CDI:           gpus,
		ResolveSource: filepath.EvalSymlinks,
		HostIdentity:  o.UserNamespaces == runtime.UserNSOff,
		StateDirID:    runtime.StateDirID(filepath.Dir(tasks)),
		// A spec under the id of a task this state dir holds must be
		// that task's own, whatever its user namespace.
		TaskExists: func(id string) (bool, error) {
			_, err := os.Lstat(filepath.Join(tasks, id))
			if errors.Is(err, fs.ErrNotExist) {
				return false, nil
			}
			return err == nil, err
		},
	}
	// A spec's GPUs must be free on this node or its own task's, as the
	// node's allocator says.
	holds, err := GPUs(o)
	if err != nil {
		return audit.Policy{}, err
	}
	p.GPUHolds = holds.CheckHolds
	if !p.HostIdentity {
		// A spec's host id range must be no other live task's: the
		// node's allocations say whose it is.
		p.RangeHolder = func(r task.IDRange) (idmap.Holder, bool, error) {
			return idmap.HolderOf(idmap.DefaultDir, idmap.DefaultSpan, r)
		}
		p.CheckRange = func(r task.IDRange) error {
			return idmap.CheckHostIDs(idmap.Span{Base: r.HostID, Count: 1})
		}
	}
	if o.Backend == BackendContainerd {
		p.AppArmorProfile = containerd.AppArmorProfile()
		p.InitBinary = o.InitBinary
		// A spec must carry the per-user limits, unless nsn-run sets them
		// itself on this node: its containerd is one the backend does not
		// put them in the spec for (before 2.3), or the runc its shim runs
		// refuses them (before 1.4). Never the runc on the auditor's own
		// PATH: that need not be the node's.
		limitsInSpec, uuid := containerd.AuditFactsAt(ctx, o.Address)
		p.UserNSLimitsOutside, p.Containerd = !limitsInSpec, uuid
		// A spec whose range its own task holds, or under the id of a
		// task in the state dir, must be that task's spec, as
		// containerd keeps it.
		p.TaskSpec = func(id string) (audit.TaskState, bool, error) {
			return containerd.TaskSpecAt(ctx, o.Address, o.Namespace, id)
		}
	}
	return p, nil
}

// Open connects the backend o names and returns a Manager over it, with
// the node's GPU allocator and host id ranges. Close the Manager to
// release the connection; running tasks keep running.
func Open(ctx context.Context, o Options) (*runtime.Manager, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	// One allocator over the node's allocation dir: the Manager
	// allocates with it, the backend injects, gc and `gpu ls` see the
	// same grants.
	gpus, err := GPUs(o)
	if err != nil {
		return nil, err
	}
	var b runtime.Backend
	switch o.Backend {
	case BackendContainerd:
		logger, err := loggerBinary(o.LoggerBinary)
		if err != nil {
			return nil, err
		}
		shimBinary, err := shimBinary(ctx, o)
		if err != nil {
			return nil, err
		}
		b, err = containerd.New(ctx, containerd.Config{Address: o.Address, Namespace: o.Namespace, LoggerBinary: logger, LoggerCPUs: o.LoggerCPUs, InitBinary: o.InitBinary, CDI: gpus, GPUUsage: o.GPUUsage, ProbeDir: ProbeDir,
			ShimGroup: o.ShimGroup, ShimGroupSize: o.ShimGroupSize, ShimBinary: shimBinary})
		if err != nil {
			return nil, err
		}
	case BackendDocker:
		// The attach logger where there is one: the capture then
		// outlives this process. Without one it runs in this process.
		logger, _ := loggerBinary(o.LoggerBinary)
		b, err = docker.New(ctx, docker.Config{Host: o.DockerHost, CDI: gpus, GPUUsage: o.GPUUsage, LoggerBinary: logger, LoggerCPUs: o.LoggerCPUs})
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: backend %q: want %s or %s", errdefs.ErrInvalidArgument, o.Backend, BackendContainerd, BackendDocker)
	}
	m, err := runtime.New(runtime.Config{Backend: b, StateDir: o.StateDir, AllowedRuntimes: o.AllowedRuntimes,
		GPUs: gpus, UserNamespaces: o.UserNamespaces, SampleInterval: o.SampleInterval, ReleaseInBackground: o.ReleaseInBackground})
	if err != nil {
		if c, ok := b.(interface{ Close() error }); ok {
			_ = c.Close()
		}
		return nil, err
	}
	return m, nil
}

// loggerBinary is the shim logger Open gives containerd: the one named,
// else nsn-logger beside the running program, else on PATH.
func loggerBinary(named string) (string, error) {
	if named != "" {
		return named, nil
	}
	if p := findBinary(LoggerName); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("%w: the containerd backend needs %s to capture task logs: install it beside this program or on PATH (go build ./cmd/nsn-logger), or set Options.LoggerBinary", errdefs.ErrFailedPrecondition, LoggerName)
}

// shimBinary is the nsn-shim tasks run with: the one named, else
// nsn-shim beside the running program, else on PATH; "" where there is
// none (containerd's own shim then), an error if o names a shim group.
// One found that containerd must not run as root, or without nsn-shimd
// beside it (CheckShim: a build of someone else's, an old install, say),
// is passed over with a warning, unless a shim group needs it: the
// backend then says why.
func shimBinary(ctx context.Context, o Options) (string, error) {
	if o.ShimBinary != "" {
		return o.ShimBinary, nil
	}
	p := findBinary(ShimName)
	if p != "" && o.ShimGroup == "" {
		if _, err := containerd.CheckShim(p); err != nil {
			log.G(ctx).WithError(err).Warnf("not running tasks with %s: containerd's own shim instead", p)
			return "", nil
		}
	}
	if p != "" || o.ShimGroup == "" {
		return p, nil
	}
	return "", fmt.Errorf("%w: shim group %q needs %s: install it, root's and written by root only, beside this program or on PATH with nsn-shimd beside it (make build), or set Options.ShimBinary", errdefs.ErrFailedPrecondition, o.ShimGroup, ShimName)
}

// findBinary is the absolute path of name beside the running program,
// else on PATH; empty where there is none.
func findBinary(name string) string {
	if self, err := os.Executable(); err == nil {
		if self, err = filepath.EvalSymlinks(self); err == nil {
			if beside := filepath.Join(filepath.Dir(self), name); isExecutable(beside) {
				return beside
			}
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
	}
	return ""
}

func isExecutable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0
}

// ErrUnreadable marks input Audit cannot read as either kind of request:
// `nsn-run audit` exits 2 for it rather than 1 (findings).
var ErrUnreadable = errors.New("unreadable")

// Audit judges data, an OCI runtime spec or a Docker Engine create request
// (told apart by their shape), against the policy this node's Start
// applies (AuditPolicy): strict decoding findings (unknown, case-variant
// and duplicate keys) first, then the allowlist's. Input that is neither
// is an error wrapping ErrUnreadable.
func Audit(ctx context.Context, o Options, data []byte) ([]audit.Finding, error) {
	policy, err := AuditPolicy(ctx, o)
	if err != nil {
		return nil, err
	}
	if docker.IsCreateRequest(data) {
		r, strict, err := docker.DecodeRequest(data)
		if err != nil {
			return nil, fmt.Errorf("%w: not a Docker Engine create request: %w", ErrUnreadable, err)
		}
		// dockerd merges the image's config into the container: the
		// request's guards are judged against the image as the node's
		// dockerd holds it.
		o, err := o.withDefaults()
		if err != nil {
			return nil, err
		}
		c, err := docker.Dial(ctx, o.DockerHost)
		if err != nil {
			policy.ResolveImage = func(context.Context, string) (string, ocispec.ImageConfig, error) {
				return "", ocispec.ImageConfig{}, err
			}
		} else {
			defer c.Close()
			policy.ResolveImage = func(ctx context.Context, name string) (string, ocispec.ImageConfig, error) {
				img, err := docker.InspectImage(ctx, c, name)
				return img.ID, img.Config, err
			}
		}
		return append(strict, docker.AuditRequest(ctx, r, policy)...), nil
	}
	s, strict, err := audit.DecodeSpec(data)
	if err != nil {
		return nil, fmt.Errorf("%w: not an OCI runtime spec: %w", ErrUnreadable, err)
	}
	return append(strict, audit.Check(ctx, s, policy)...), nil
}
