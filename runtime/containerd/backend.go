package containerd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/cgroups"
	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd/images"
	"github.com/nsn-run/nsn-run/runtime/internal/taskhandle"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// DefaultSnapshotter is the snapshotter task filesystems are prepared with.
const DefaultSnapshotter = "overlayfs"

// Config configures a Backend.
type Config struct {
	Address   string // containerd socket
	Namespace string // containerd namespace nsn-run owns
	// Snapshotter for task filesystems; DefaultSnapshotter if empty.
	Snapshotter string
	// LoggerBinary is an nsn-run binary: the shim runs its shim-logger
	// command to write each task's stdout and stderr to the task's state
	// directory, so no log passes through (or is lost with) the manager.
	LoggerBinary string
	// InitBinary is the host path of nsn-init (cmd/nsn-init), bound
	// read-only into tasks that ask for an init (--init); empty refuses
	// them. It must be an absolute, clean path with no symlink in it, and
	// searchable and executable by others (tasks in their own user
	// namespaces run it as their own ids).
	InitBinary string
	// LogLimits cap each stream; logs.DefaultLimits if zero.
	LogLimits logs.Limits
	// LoggerCPUs is the CPU quota all tasks' loggers on the node share:
	// each task's shim logger is moved into cgroups.LoggersGroup when its
	// task is created (cgroups.DefaultLoggerCPUs if zero; node-wide, the
	// last start's value holds).
	LoggerCPUs float64
	// AuditPolicy is the operator's side of the audit every spec passes
	// before it runs: maxima and the OOM score. The backend fills in its
	// namespace, the task's state dir, the GPU injector and the AppArmor
	// profile (AppArmorProfile: nsn-run's where the host has AppArmor).
	AuditPolicy audit.Policy
	// CDI injects the GPUs the Manager granted a task (the gpu package's
	// Injector) and lets the audit replay them; nil refuses GPU tasks.
	CDI spec.DeviceInjector
	// SpecOpts are the operator's own spec options, applied after
	// nsn-run's. Whatever they change is audited like the rest: a spec
	// nsn-run would not generate is refused.
	SpecOpts []oci.SpecOpts
	// GPUUsage adds the GPU memory and utilisation of the task's
	// processes to Stats (gpu/nvmlusage over NVML); nil leaves them out,
	// and a GPU memory limit cannot be enforced.
	GPUUsage runtime.GPUUsageSampler
	// ShimGroup (experimental), if set, makes tasks share a runc shim (the runc v2
	// shim's group annotation) that an idle anchor container keeps
	// running between tasks, so a task joins a running shim instead of
	// starting one and ending it: less memory per task (one shim for up
	// to ShimGroupSize tasks) and less time in create and delete. The
	// price is failure isolation: a shim crash ends every task of its
	// group. The group is this Backend's own (the name gets a random
	// suffix), its anchor removed at Close, or by gc once its process is
	// gone. Needs containerd 2.3 or later (nsn-shim speaks its shim
	// bootstrap protocol), InitBinary (the anchor's idle process) and
	// ShimBinary. Off if empty. Only tasks of the runc
	// runtime (task.DefaultRuntime) join the group.
	ShimGroup string
	// ShimGroupSize bounds the tasks in the group at once;
	// DefaultShimGroupSize if zero. Past it a task gets its own shim.
	ShimGroupSize int
	// ShimBinary is the absolute path of nsn-shim (cmd/nsn-shim): on
	// containerd 2.3 and later, every task of the runc runtime
	// (task.DefaultRuntime) and every shim group anchor runs with it.
	// nsn-shim is a small front that does containerd's `start` and
	// `delete` actions in their usual cases without loading the full
	// shim, and execs nsn-shimd (cmd/nsn-shimd), which must lie beside
	// it, for everything else: nsn-shimd is containerd's runc shim with
	// two changes. Its start does not take a live group shim that is
	// slow to answer for a dead one (containerd's does, under CPU load,
	// and starts a second shim for the group), and its delete does not
	// exec runc when runc has already forgotten the container
	// (containerd's does, after every task: a process start on each
	// release); the front does both the same way. On older containerd
	// it is not used (nsn-shim speaks the 2.3 bootstrap protocol) and
	// tasks keep io.containerd.runc.v2. Needed with ShimGroup. Both
	// must pass CheckShim (root's, in root's directories, writable by
	// root only); tasks run nsn-shim by its resolved path, which
	// containerd records with each task: both must stay in place while
	// they run.
	ShimBinary string
	// ProbeDir, if set, is a node-wide directory (on a tmpfs that a
	// reboot empties, as /run/nsn-run) where the backend keeps what it
	// learned of this host for later processes: that an idmapped task
	// snapshot mounts here, so that each CLI process need not find out
	// again with an idmapped inspection mount (about 13 ms a run); and
	// the lock that makes images' first unpacks one at a time on the node
	// (images.UnpackGuard); and the images' manifests and configs that
	// starts read, each checked against its digest when read back
	// (images.Configs.Dir).
	ProbeDir string
	// MaxUnpackedBytes bounds what an image may unpack to on its first
	// task (images.CheckUnpackedSize: image layers are attacker input,
	// and a few kilobytes can claim gigabytes); 0: what the snapshotter's
	// filesystem has free, less 5% of it (at most 8 GiB).
	MaxUnpackedBytes int64
	// RuncBinary is the runc the runc shim runs for tasks of the runc
	// runtime and shim group anchors (the shim options' BinaryName): an
	// absolute path that passes CheckShimBinary, run by its resolved
	// path. Empty: the runc on containerd's PATH.
	RuncBinary string
	// StartTimeout bounds how long a task's start waits for containerd
	// once its image is unpacked (snapshot, container, task create and
	// start); DefaultStartTimeout if zero. The start of the task's
	// process is bounded by the task's deadline as well. A containerd
	// that does not answer in time fails the start unavailable, with
	// every process in the task's cgroup killed: a containerd hung
	// between runc starting the task and its answer had held Start, and
	// the task ran with nobody enforcing its deadline.
	StartTimeout time.Duration
}

// DefaultStartTimeout is Config.StartTimeout's default, kubelet's default
// bound on a container runtime request.
const DefaultStartTimeout = 2 * time.Minute

// Backend runs tasks as containerd containers with runc.
type Backend struct {
	client *client.Client
	cfg    Config
	// stopEvents ends the OOM event subscription, and eventsDone is closed
	// once it has ended (Close).
	stopEvents context.CancelFunc
	eventsDone chan struct{}
	// tasks are the handles of the tasks this process started, waits on
	// or was told of an OOM kill in: their exit waits and OOM flags.
	tasks *taskhandle.Set

	// serverUUID identifies the containerd (Scope).
	serverUUID string
	// configs are the image configs this Backend's starts read, by
	// manifest digest: a later task of the same image reads none.
	configs images.Configs

	mu sync.Mutex
	// remapIDs caches whether the snapshotter idmaps snapshots (nil: not
	// asked yet).
	remapIDs *bool
	// idmapMountWorks is set once an idmapped snapshot has mounted for
	// this Backend: from then on the root filesystem is inspected
	// through a plain mount (prepareRoot).
	idmapMountWorks bool
	// passedRoots are the roots whose inspection passed (prepareRoot),
	// by passedRootKey: a later task's root of the same image and the
	// same spec's paths is not mounted to be inspected again.
	passedRoots map[string]bool
	// group is the shim group (Config.ShimGroup); nil without one.
	group *shimGroup
	// shim is the runtime runc-runtime tasks run with: Config.ShimBinary
	// where containerd can run it (2.3 and later), else "" (the task's
	// own runtime, io.containerd.runc.v2).
	shim string
	// anchorCtx lives as long as the Backend: the anchor's exit wait.
	anchorCtx context.Context
	// userNSSysctls is set while runc-runtime tasks get their user
	// namespace's per-user limits in the spec (spec.Options.UserNSSysctls):
	// from containerd 2.3, until the runtime refuses them once (runc
	// before 1.4; Start); otherwise limitUserNS sets them.
	userNSSysctls atomic.Bool
	// hostStats holds the ids of the tasks this Backend started with the
	// runc runtime: Stats reads their cgroup in-process. Another runtime
	// (gVisor, Kata) may keep its sandbox in the same cgroup, whose
	// numbers are then not the task's: its shim reports those.
	hostStats sync.Map
	// appArmorLoaded is set once this backend has loaded its AppArmor
	// profile: the first Start does, so a failing parser refuses tasks
	// but leaves ps, logs, rm and gc working.
	appArmorLoaded bool
}

// runtimeOptions are the shim options a container of runtime rt is
// created with: the runc binary (Config.RuncBinary) for the runc runtime,
// nil (the shim's defaults) otherwise.
func (b *Backend) runtimeOptions(rt string) any {
	if b.cfg.RuncBinary == "" || rt != task.DefaultRuntime {
		return nil
	}
	return &options.Options{BinaryName: b.cfg.RuncBinary}
}

// ensureAppArmor loads the tasks' AppArmor profile once per backend,
// before the first task that needs it.
func (b *Backend) ensureAppArmor() error {
	name := b.cfg.AuditPolicy.AppArmorProfile
	if name == "" {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.appArmorLoaded {
		return nil
	}
	if err := loadAppArmorProfile(name); err != nil {
		return err
	}
	b.appArmorLoaded = true
	return nil
}

var _ runtime.Backend = (*Backend)(nil)

// blobDirName, in ProbeDir, keeps the images' manifests and configs that
// starts read (images.Configs.Dir).
const blobDirName = "blobs"

// New connects to containerd (Dial: it must answer) and returns a Backend.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = spec.DefaultNamespace
	}
	if cfg.Snapshotter == "" {
		cfg.Snapshotter = DefaultSnapshotter
	}
	if cfg.LogLimits == (logs.Limits{}) {
		cfg.LogLimits = logs.DefaultLimits
	}
	loggerCPUs, err := cgroups.LoggerCPUs(cfg.LoggerCPUs)
	if err != nil {
		return nil, err
	}
	cfg.LoggerCPUs = loggerCPUs
	if cfg.StartTimeout < 0 {
		return nil, fmt.Errorf("%w: start timeout %s", errdefs.ErrInvalidArgument, cfg.StartTimeout)
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if !filepath.IsAbs(cfg.LoggerBinary) {
		return nil, fmt.Errorf("%w: logger binary %q must be an absolute path to nsn-run", errdefs.ErrInvalidArgument, cfg.LoggerBinary)
	}
	if _, err := os.Stat(cfg.LoggerBinary); err != nil {
		return nil, fmt.Errorf("%w: logger binary: %w", errdefs.ErrInvalidArgument, err)
	}
	// Where the host has AppArmor, every task runs under nsn-run's
	// profile, and the audit requires it; elsewhere no spec may name one.
	cfg.AuditPolicy.AppArmorProfile = AppArmorProfile()
	cfg.AuditPolicy.InitBinary = cfg.InitBinary
	if cfg.RuncBinary != "" {
		if !filepath.IsAbs(cfg.RuncBinary) {
			return nil, fmt.Errorf("%w: runc binary %q is not an absolute path", errdefs.ErrInvalidArgument, cfg.RuncBinary)
		}
		resolved, err := CheckShimBinary(cfg.RuncBinary)
		if err != nil {
			return nil, fmt.Errorf("%w: runc binary: %w", errdefs.ErrInvalidArgument, err)
		}
		cfg.RuncBinary = resolved
	}
	// Which containerd this is, whatever path reaches its socket: its
	// UUID, kept in its root across restarts (Scope). And whether its
	// snapshotter idmaps (idmapSnapshots), which a task's start asks
	// first: both asked beside the version call.
	var (
		info     client.ServerInfo
		infoErr  error
		remapIDs *bool
	)
	c, version, err := dial(ctx, cfg.Address, cfg.Namespace,
		func(ctx context.Context, c *client.Client) { info, infoErr = c.Server(ctx) },
		func(ctx context.Context, c *client.Client) {
			// A failure here is asked again, and reported, at the
			// first task that needs the answer.
			if caps, err := c.GetSnapshotterCapabilities(namespaces.WithNamespace(ctx, cfg.Namespace), cfg.Snapshotter); err == nil {
				v := slices.Contains(caps, snapshotterRemapsIDs)
				remapIDs = &v
			}
		})
	if err != nil {
		return nil, err
	}
	b := &Backend{client: c, cfg: cfg, tasks: taskhandle.NewSet(), eventsDone: make(chan struct{}), remapIDs: remapIDs}
	if cfg.ProbeDir != "" {
		b.configs.Dir = filepath.Join(cfg.ProbeDir, blobDirName)
	}
	if infoErr != nil {
		c.Close()
		return nil, fmt.Errorf("%w: containerd at %s: server info: %w", errdefs.ErrUnavailable, cfg.Address, infoErr)
	}
	b.serverUUID = info.UUID
	if b.shim, err = shimRuntime(cfg, version); err != nil {
		c.Close()
		return nil, err
	}
	// containerd's releases before 2.3 come with a runc older than 1.4
	// (2.0 with 1.2, 2.1 and 2.2 with 1.3, Debian's 1.6 with 1.1.5): no
	// refused first task in every process there.
	b.userNSSysctls.Store(UserNSLimitsInSpec(version))
	if cfg.ShimGroup != "" {
		if b.group, err = newShimGroup(cfg, b.shim, version); err != nil {
			c.Close()
			return nil, err
		}
	}
	eventsCtx, stop := context.WithCancel(context.Background())
	b.stopEvents = stop
	b.anchorCtx = b.ns(eventsCtx)
	ready := make(chan struct{})
	go func() {
		defer close(b.eventsDone)
		b.watchOOM(eventsCtx, ready)
	}()
	<-ready
	return b, nil
}

// Close ends the OOM event subscription and every task handle (their exit
// waits), then releases the connection to containerd. Tasks keep running:
// a later Backend waits on them again (Wait, Recover).
func (b *Backend) Close() error {
	err := b.closeGroup()
	b.stopEvents()
	<-b.eventsDone
	b.tasks.Close()
	return errors.Join(err, b.client.Close())
}

// Client is the underlying containerd client (for image commands).
func (b *Backend) Client() *client.Client { return b.client }

// Name implements runtime.Backend.
func (b *Backend) Name() string { return "containerd" }

// Scope implements runtime.Scoper: the containerd namespace, in this
// containerd (its UUID, not its socket, which several paths reach; an
// outside review had a second containerd's namespace of the same name
// remove a task of the first).
func (b *Backend) Scope() string {
	return fmt.Sprintf("containerd namespace %q (containerd %s)", b.cfg.Namespace, b.serverUUID)
}

// Namespace is the containerd namespace the backend's tasks run in (the
// Manager records it with each task's host id range).
func (b *Backend) Namespace() string { return b.cfg.Namespace }

// ServerUUID is the UUID of the backend's containerd, the same across its
// restarts (the Manager records it with each task's host id range).
func (b *Backend) ServerUUID() string { return b.serverUUID }

var _ runtime.UserNamespacer = (*Backend)(nil)

// Identity implements runtime.UserNamespacer: a task runs in its own user
// namespace over the range the Manager granted. Where the snapshotter can
// idmap a snapshot's layers (containerd 2.x's overlay on a kernel with
// idmapped overlay layers: its "remap-ids" capability) the image's files
// keep their owners inside (task.IdentityIDMapped); elsewhere (containerd
// 1.6) they keep their host owners, and root's show inside as the overflow
// id (task.IdentityUserNS).
func (b *Backend) Identity(ctx context.Context) (string, error) {
	idmapped, err := b.idmapSnapshots(ctx)
	if err != nil {
		return "", err
	}
	if idmapped {
		return task.IdentityIDMapped, nil
	}
	return task.IdentityUserNS, nil
}

// snapshotterRemapsIDs is the capability of a snapshotter that mounts a
// snapshot's layers idmapped, from its uid and gid mapping labels.
const snapshotterRemapsIDs = "remap-ids"

// idmapSnapshots reports (once per Backend) whether the snapshotter can
// idmap task snapshots.
func (b *Backend) idmapSnapshots(ctx context.Context) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.remapIDs == nil {
		caps, err := b.client.GetSnapshotterCapabilities(b.ns(ctx), b.cfg.Snapshotter)
		if err != nil {
			return false, fmt.Errorf("snapshotter %s capabilities: %w", b.cfg.Snapshotter, err)
		}
		v := slices.Contains(caps, snapshotterRemapsIDs)
		b.remapIDs = &v
	}
	return *b.remapIDs, nil
}

func (b *Backend) ns(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, b.cfg.Namespace)
}

func (b *Backend) loadTask(ctx context.Context, id string) (client.Task, error) {
	ctx = b.ns(ctx)
	c, err := b.client.LoadContainer(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("task %s: %w", id, err)
	}
	tk, err := c.Task(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("task %s has no running process: %w", id, err)
	}
	return tk, nil
}
