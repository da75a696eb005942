package containerd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/cgroups"
	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd/images"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/stats"
	"github.com/nsn-run/nsn-run/task"
)

// DefaultSnapshotter is the snapshotter task filesystems are prepared with.
const DefaultSnapshotter = "overlayfs"

// spawnLeaseExpiry bounds how long what a crashed spawn created survives:
// everything is created under a lease that expires, so containerd's garbage
// collector reclaims it if the spawn never finishes.
const spawnLeaseExpiry = 15 * time.Minute

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
	// LogLimits cap each stream; logs.DefaultLimits if zero.
	LogLimits logs.Limits
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
	// ShimGroup, if set, makes tasks share runc shims: containers whose
	// spec carries the same group annotation are served by one shim
	// process. It saves a shim start and ~15 MiB per concurrent task, at
	// the price of failure isolation: a shim crash takes every task of its
	// group. Off by default: docs/performance.md measured it slower here,
	// and a grouped Debian 1.6 shim stalled under 64 concurrent tasks.
	ShimGroup string
}

// Backend runs tasks as containerd containers with runc.
type Backend struct {
	client *client.Client
	cfg    Config
	// stopEvents ends the OOM event subscription (Close).
	stopEvents context.CancelFunc

	mu    sync.Mutex
	waits map[string]*exitWait
	// remapIDs caches whether the snapshotter idmaps snapshots (nil: not
	// asked yet).
	remapIDs *bool
	// oom holds the ids of tasks containerd reported an OOM kill for.
	oom map[string]bool
}

// exitWait holds an exit registered before start (or on recover), read once
// by a goroutine so every later Wait sees the same status.
type exitWait struct {
	done   chan struct{}
	status runtime.ExitStatus
	err    error
}

var _ runtime.Backend = (*Backend)(nil)

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
	if !filepath.IsAbs(cfg.LoggerBinary) {
		return nil, fmt.Errorf("%w: logger binary %q must be an absolute path to nsn-run", errdefs.ErrInvalidArgument, cfg.LoggerBinary)
	}
	if _, err := os.Stat(cfg.LoggerBinary); err != nil {
		return nil, fmt.Errorf("%w: logger binary: %w", errdefs.ErrInvalidArgument, err)
	}
	// Where the host has AppArmor, every task runs under nsn-run's
	// profile, and the audit requires it; elsewhere no spec may name one.
	cfg.AuditPolicy.AppArmorProfile = AppArmorProfile()
	if err := loadAppArmorProfile(cfg.AuditPolicy.AppArmorProfile); err != nil {
		return nil, err
	}
	c, err := Dial(ctx, cfg.Address, cfg.Namespace)
	if err != nil {
		return nil, err
	}
	b := &Backend{client: c, cfg: cfg, waits: map[string]*exitWait{}, oom: map[string]bool{}}
	eventsCtx, stop := context.WithCancel(context.Background())
	b.stopEvents = stop
	ready := make(chan struct{})
	go b.watchOOM(eventsCtx, ready)
	<-ready
	return b, nil
}

// Close releases the connection to containerd; tasks keep running.
func (b *Backend) Close() error {
	b.stopEvents()
	return b.client.Close()
}

// oomResubscribe is how long watchOOM waits before subscribing again after
// the event stream broke (a containerd restart, say).
const oomResubscribe = time.Second

// watchOOM records containerd's /tasks/oom events for the namespace: one
// subscription shared by every task of this backend. ready is closed once
// the first subscription is in place, so no task starts before it.
func (b *Backend) watchOOM(ctx context.Context, ready chan struct{}) {
	first := true
	for ctx.Err() == nil {
		events, errs := b.client.EventService().Subscribe(ctx, `topic=="/tasks/oom"`)
		if first {
			close(ready)
			first = false
		}
	stream:
		for {
			select {
			case env := <-events:
				if env == nil || env.Namespace != b.cfg.Namespace {
					continue
				}
				ev, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					continue
				}
				if oom, ok := ev.(*apievents.TaskOOM); ok {
					b.mu.Lock()
					b.oom[oom.ContainerID] = true
					b.mu.Unlock()
				}
			case <-errs:
				break stream
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(oomResubscribe):
		}
	}
}

func (b *Backend) oomKilled(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.oom[id]
}

// Client is the underlying containerd client (for image commands).
func (b *Backend) Client() *client.Client { return b.client }

// Name implements runtime.Backend.
func (b *Backend) Name() string { return "containerd" }

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

func labelsFor(id string) map[string]string {
	return map[string]string{runtime.LabelTaskID: id, runtime.LabelManager: runtime.ManagerName}
}

// Start implements runtime.Backend: resolve and unpack the image, build and
// audit the spec, prepare the snapshot, create the container and its task
// with the shim logger, register the exit wait, start. Everything is created
// under an expiring lease, and undone on error.
func (b *Backend) Start(ctx context.Context, req runtime.StartRequest) (h runtime.Handle, retErr error) {
	ctx = b.ns(ctx)
	t := req.Task
	sw := runtime.NewStopwatch(ctx)
	if _, err := b.client.LoadContainer(ctx, t.ID); err == nil {
		return h, fmt.Errorf("task %s already exists (remove it with nsn-run rm %s): %w", t.ID, t.ID, errdefs.ErrAlreadyExists)
	} else if !errdefs.IsNotFound(err) {
		return h, fmt.Errorf("look up container %s: %w", t.ID, err)
	}

	sw.Lap("start/check-id")
	img, s, err := b.spec(ctx, req)
	if err != nil {
		return h, err
	}
	// The task writes /output as its own user (its host ids, in its own
	// user namespace); nothing else on the host can reach the directory
	// (the state dir above it is private to root).
	uid, gid := s.Process.User.UID, s.Process.User.GID
	if r := req.UserNS; r != nil {
		uid, gid = r.HostID+uid, r.HostID+gid // spec.Opts checked both lie in the range
	}
	if err := os.Chown(req.OutputDir, int(uid), int(gid)); err != nil {
		return h, fmt.Errorf("prepare output dir: %w", err)
	}
	sw.Lap("start/spec-audit")

	ctx, releaseLease, err := b.client.WithLease(ctx,
		leases.WithRandomID(), leases.WithExpiration(spawnLeaseExpiry), leases.WithLabels(labelsFor(t.ID)))
	if err != nil {
		return h, fmt.Errorf("create lease: %w", err)
	}
	defer func() {
		// Once the container exists it references the snapshot, so the
		// lease is no longer needed; on failure the rollback below removed
		// what it protected.
		_ = releaseLease(context.WithoutCancel(ctx))
	}()

	sw.Lap("start/lease")
	parent, err := images.Unpack(ctx, img.Image, b.cfg.Snapshotter)
	if err != nil {
		return h, err
	}
	sw.Lap("start/unpack-check")
	sn := b.client.SnapshotService(b.cfg.Snapshotter)
	undo := []func(context.Context){func(ctx context.Context) { _ = sn.Remove(ctx, t.ID) }}
	defer func() {
		if retErr == nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i](cctx)
		}
	}()
	identity, err := b.prepareRoot(ctx, t.ID, parent, req.UserNS, s)
	if err != nil {
		return h, err
	}
	sw.Lap("start/prepare-snapshot")

	sw.Lap("start/check-rootfs")
	container, err := b.client.NewContainer(ctx, t.ID,
		client.WithSpec(s),
		client.WithSnapshotter(b.cfg.Snapshotter),
		client.WithSnapshot(t.ID),
		client.WithImageName(img.Name),
		client.WithContainerLabels(labelsFor(t.ID)),
		client.WithRuntime(t.Runtime, nil),
	)
	if err != nil {
		if errdefs.IsAlreadyExists(err) {
			undo = nil // the snapshot is the other task's
			return h, fmt.Errorf("task %s already exists: %w", t.ID, errdefs.ErrAlreadyExists)
		}
		return h, fmt.Errorf("create container %s: %w", t.ID, err)
	}
	undo = append(undo, func(ctx context.Context) { _ = container.Delete(ctx) })
	sw.Lap("start/create-container")

	tk, err := container.NewTask(ctx, cio.BinaryIO(b.cfg.LoggerBinary, logs.ShimLoggerArgs(req.StateDir, b.cfg.LogLimits)))
	if err != nil {
		if cerr := commandError(err, s.Process.Args[0], img.Name); cerr != nil {
			return h, cerr
		}
		return h, fmt.Errorf("create task %s: %w", t.ID, err)
	}
	undo = append(undo, func(ctx context.Context) { _, _ = tk.Delete(ctx, client.WithProcessKill) })
	sw.Lap("start/create-task")
	if req.UserNS != nil {
		if err := limitUserNS(ctx, tk.Pid()); err != nil {
			return h, err
		}
		sw.Lap("start/userns-limits")
	}

	if err := b.registerWait(t.ID, tk); err != nil {
		return h, err
	}
	undo = append(undo, func(context.Context) { b.forget(t.ID) })
	if err := tk.Start(ctx); err != nil {
		if cerr := commandError(err, s.Process.Args[0], img.Name); cerr != nil {
			return h, cerr
		}
		return h, fmt.Errorf("start task %s: %w", t.ID, err)
	}
	sw.Lap("start/start-task")
	return runtime.Handle{
		Version: runtime.HandleVersion, Backend: b.Name(), ID: t.ID, Image: img.Name,
		Pid: tk.Pid(), StartedAt: time.Now().UTC(), Identity: identity,
	}, nil
}

// prepareRoot prepares the task's writable snapshot and inspects it: the
// image is attacker input, so one whose mount points are symlinks is
// refused before the runtime resolves them on the host. With a user
// namespace (ids) the snapshot is idmapped into the task's range where the
// snapshotter can; where the idmapped mount then fails on this host (a
// kernel or filesystem that refuses it, although the snapshotter claimed
// it could), the snapshot is prepared again plainly and the backend stops
// trying. It returns the identity level the task gets ("" without ids).
func (b *Backend) prepareRoot(ctx context.Context, id, parent string, ids *task.IDRange, s *specs.Spec) (string, error) {
	sn := b.client.SnapshotService(b.cfg.Snapshotter)
	idmapped := false
	if ids != nil {
		var err error
		if idmapped, err = b.idmapSnapshots(ctx); err != nil {
			return "", err
		}
	}
	for {
		opts := []snapshots.Opt{snapshots.WithLabels(labelsFor(id))}
		if idmapped {
			m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: ids.HostID, Size: ids.Size}}
			opts = append(opts, client.WithUserNSRemapperLabels(m, m))
		}
		// An active (writable) snapshot, not a view: runc must be able to
		// create mount points (/tmp, /output) the image lacks. The task
		// still sees a read-only root: runc remounts it read-only.
		mounts, err := sn.Prepare(ctx, id, parent, opts...)
		if err != nil {
			return "", fmt.Errorf("prepare snapshot for task %s: %w", id, err)
		}
		var refused error
		err = mount.WithTempMount(ctx, mounts, func(root string) error {
			if refused = images.CheckMountPoints(root, mountDestinations(s)); refused != nil {
				return refused
			}
			// In its own user namespace runc cannot create mount points
			// in the image's directories (they are host root's): make
			// them here. Idmapped, they are the task's root's, and runc
			// can.
			if ids != nil && !idmapped {
				return images.CreateMountPoints(root, mountPoints(s))
			}
			return nil
		})
		switch {
		case refused != nil:
			return "", refused
		case err != nil && idmapped:
			// The same mount code runs in the shim: it would fail there.
			log.G(ctx).WithError(err).Warn("idmapped task snapshots fail on this host; tasks get plain user namespaces")
			b.mu.Lock()
			no := false
			b.remapIDs = &no
			b.mu.Unlock()
			if rerr := sn.Remove(ctx, id); rerr != nil {
				return "", fmt.Errorf("remove snapshot of task %s: %w", id, rerr)
			}
			idmapped = false
			continue
		case err != nil:
			return "", fmt.Errorf("inspect root filesystem of task %s: %w", id, err)
		}
		switch {
		case ids == nil:
			return "", nil
		case idmapped:
			return task.IdentityIDMapped, nil
		}
		return task.IdentityUserNS, nil
	}
}

// mountPoints are s's mount destinations, binds of host files as files.
func mountPoints(s *specs.Spec) []images.MountPoint {
	points := make([]images.MountPoint, 0, len(s.Mounts))
	for _, m := range s.Mounts {
		file := false
		if m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind") {
			if info, err := os.Stat(m.Source); err == nil && !info.IsDir() {
				file = true
			}
		}
		points = append(points, images.MountPoint{Dest: m.Destination, File: file})
	}
	return points
}

func mountDestinations(s *specs.Spec) []string {
	dests := make([]string, 0, len(s.Mounts))
	for _, m := range s.Mounts {
		dests = append(dests, m.Destination)
	}
	return dests
}

// generate builds the task's spec with its granted GPUs, applies the
// operator's options and the shim group, and audits the result: a spec
// with findings never reaches runc.
// Preview implements runtime.Backend: the OCI runtime spec Start would
// create req's container with, audited, as `nsn-run spec` prints it.
// Nothing is created.
func (b *Backend) Preview(ctx context.Context, req runtime.StartRequest) ([]byte, error) {
	_, s, err := b.spec(b.ns(ctx), req)
	if err != nil {
		return nil, err
	}
	return spec.Marshal(s)
}

// spec resolves req's image and generates and audits its spec: the one
// path both Start and Preview take, so what `nsn-run spec` prints is what
// runs.
func (b *Backend) spec(ctx context.Context, req runtime.StartRequest) (images.Image, *specs.Spec, error) {
	img, err := images.Resolve(ctx, b.client, req.Task.Image)
	if err != nil {
		return images.Image{}, nil, err
	}
	s, err := b.generate(ctx, req.Task, img.Config, req)
	if err != nil {
		return images.Image{}, nil, err
	}
	return img, s, nil
}

func (b *Backend) generate(ctx context.Context, t task.Task, img ocispec.ImageConfig, req runtime.StartRequest) (*specs.Spec, error) {
	o := spec.Options{OutputDir: req.OutputDir, GPUDevices: req.GPUDevices, OOMScoreAdj: b.cfg.AuditPolicy.OOMScoreAdj, AppArmorProfile: b.cfg.AuditPolicy.AppArmorProfile, CDI: b.cfg.CDI, UserNS: req.UserNS}
	opts, err := spec.Opts(t, img, o)
	if err != nil {
		return nil, err
	}
	opts = append(opts, b.cfg.SpecOpts...)
	if b.cfg.ShimGroup != "" {
		opts = append(opts, oci.WithAnnotations(map[string]string{audit.AnnotationShimGroup: b.cfg.ShimGroup}))
	}
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: t.ID}, opts...)
	if err != nil {
		return nil, fmt.Errorf("generate spec for task %s: %w", t.ID, err)
	}
	p := b.cfg.AuditPolicy
	p.Namespace = b.cfg.Namespace
	p.TasksDir = filepath.Dir(req.StateDir)
	p.ResolveSource = filepath.EvalSymlinks
	p.CDI = b.cfg.CDI
	p.HostIdentity = req.UserNS == nil
	p.ShimGroup = b.cfg.ShimGroup
	if findings := audit.Check(ctx, s, p); len(findings) > 0 {
		return nil, fmt.Errorf("%w: spec for task %s fails the audit (%d findings), first: %s", errdefs.ErrFailedPrecondition, t.ID, len(findings), findings[0])
	}
	return s, nil
}

// commandError recognises runc's exec failure for the task's command. The
// OCI runtime reports it only as text through the shim (moby matches the same
// strings), so text is all there is to go on.
func commandError(err error, command, image string) error {
	msg := err.Error()
	// runc says `exec: "cmd": ...` when it looked the command up on PATH,
	// and `exec /path: ...` when execve of the path itself failed.
	if !strings.Contains(msg, "exec: ") && !strings.Contains(msg, "exec "+command+": ") {
		return nil
	}
	switch {
	case strings.Contains(msg, "executable file not found"), strings.Contains(msg, "no such file or directory"):
		return &runtime.CommandError{Command: command, Image: image, NotFound: true}
	case strings.Contains(msg, "permission denied"), strings.Contains(msg, "is a directory"):
		// runc 1.1 execs a directory into EACCES; runc 1.5 says so.
		return &runtime.CommandError{Command: command, Image: image}
	}
	return nil
}

// registerWait subscribes to the task's exit before it starts, in a context
// of its own: the wait must outlive the Start call.
func (b *Backend) registerWait(id string, tk client.Task) error {
	ch, err := tk.Wait(b.ns(context.Background()))
	if err != nil {
		return fmt.Errorf("wait on task %s: %w", id, err)
	}
	w := &exitWait{done: make(chan struct{})}
	b.mu.Lock()
	b.waits[id] = w
	b.mu.Unlock()
	go func() {
		defer close(w.done)
		for {
			st := <-ch
			code, at, err := st.Result()
			if err == nil {
				w.status = runtime.ExitStatus{Code: int(code), ExitedAt: at, OOMKilled: b.oomKilled(id)}
				return
			}
			// The wait stream broke: containerd restarted or the
			// connection dropped. The shim and the task live on, and the
			// shim keeps the exit status: subscribe again once containerd
			// answers.
			if ch, err = b.rewait(id); err != nil {
				w.err = err
				return
			}
		}
	}()
	return nil
}

// reconnectWindow bounds how long a broken exit wait tries to reach
// containerd again before giving up.
const reconnectWindow = 2 * time.Minute

// rewait subscribes to the exit of a task whose earlier wait broke.
func (b *Backend) rewait(id string) (<-chan client.ExitStatus, error) {
	deadline := time.Now().Add(reconnectWindow)
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ns(context.Background()), pingTimeout)
		tk, err := b.loadTask(ctx, id)
		cancel()
		if errdefs.IsNotFound(err) {
			return nil, err // deleted meanwhile: nothing to wait for
		}
		if err == nil {
			ch, werr := tk.Wait(b.ns(context.Background()))
			if werr == nil {
				return ch, nil
			}
			err = werr
		}
		lastErr = err
		time.Sleep(oomResubscribe) // containerd is down: retry after a pause
	}
	return nil, fmt.Errorf("wait on task %s: containerd unreachable for %s: %w", id, reconnectWindow, lastErr)
}

func (b *Backend) forget(id string) {
	b.mu.Lock()
	delete(b.waits, id)
	delete(b.oom, id)
	b.mu.Unlock()
}

// Wait implements runtime.Backend. Without a registered wait (another
// process started the task) it subscribes now; containerd answers at once
// for a task that already exited.
func (b *Backend) Wait(ctx context.Context, id string) (runtime.ExitStatus, error) {
	b.mu.Lock()
	w := b.waits[id]
	b.mu.Unlock()
	if w == nil {
		tk, err := b.loadTask(ctx, id)
		if err != nil {
			return runtime.ExitStatus{}, err
		}
		if err := b.registerWait(id, tk); err != nil {
			return runtime.ExitStatus{}, err
		}
		return b.Wait(ctx, id)
	}
	select {
	case <-w.done:
		if w.err != nil {
			return runtime.ExitStatus{}, fmt.Errorf("wait on task %s: %w", id, w.err)
		}
		return w.status, nil
	case <-ctx.Done():
		return runtime.ExitStatus{}, ctx.Err()
	}
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

// Stop implements runtime.Backend.
func (b *Backend) Stop(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	tk, err := b.loadTask(ctx, id)
	if err != nil {
		return err
	}
	var opts []client.KillOpts
	if all {
		opts = append(opts, client.WithKillAll)
	}
	if err := tk.Kill(b.ns(ctx), sig, opts...); err != nil {
		return fmt.Errorf("signal task %s: %w", id, err)
	}
	return nil
}

// Destroy implements runtime.Backend: kill and delete the task (the shim then
// stops its logger), delete the container and its snapshot. Idempotent.
func (b *Backend) Destroy(ctx context.Context, id string) error {
	ctx = b.ns(ctx)
	defer b.forget(id)
	c, err := b.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		if err := b.removeSnapshot(ctx, id); err != nil {
			return err
		}
		return b.removeLeases(ctx, id)
	}
	if err != nil {
		return fmt.Errorf("load container %s: %w", id, err)
	}
	if tk, err := c.Task(ctx, nil); err == nil {
		if _, err := tk.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete task %s: %w", id, err)
		}
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("load task %s: %w", id, err)
	}
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	if err := b.removeSnapshot(ctx, id); err != nil {
		return err
	}
	return b.removeLeases(ctx, id)
}

// removeLeases deletes the spawn lease of a task whose manager died before
// releasing it.
func (b *Backend) removeLeases(ctx context.Context, id string) error {
	ls := b.client.LeasesService()
	found, err := ls.List(ctx, fmt.Sprintf("labels.%q==%s", runtime.LabelTaskID, id))
	if err != nil {
		return fmt.Errorf("list leases of task %s: %w", id, err)
	}
	for _, l := range found {
		if err := ls.Delete(ctx, l); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete lease %s: %w", l.ID, err)
		}
	}
	return nil
}

// removeSnapshot removes a task snapshot that outlived its container (a
// crash between prepare and create).
func (b *Backend) removeSnapshot(ctx context.Context, id string) error {
	err := b.client.SnapshotService(b.cfg.Snapshotter).Remove(ctx, id)
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove snapshot %s: %w", id, err)
	}
	return nil
}

// Inspect implements runtime.Backend.
func (b *Backend) Inspect(ctx context.Context, id string) (runtime.Status, error) {
	ctx = b.ns(ctx)
	c, err := b.client.LoadContainer(ctx, id)
	if err != nil {
		return runtime.Status{}, fmt.Errorf("task %s: %w", id, err)
	}
	info, err := c.Info(ctx, client.WithoutRefreshedMetadata)
	if err != nil {
		return runtime.Status{}, fmt.Errorf("task %s: %w", id, err)
	}
	return b.status(ctx, c, info)
}

func (b *Backend) status(ctx context.Context, c client.Container, info containers.Container) (runtime.Status, error) {
	st := runtime.Status{ID: info.ID, Image: info.Image, State: runtime.StateCreated, CreatedAt: info.CreatedAt}
	tk, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("task %s: %w", info.ID, err)
	}
	ts, err := tk.Status(ctx)
	if err != nil {
		return st, fmt.Errorf("task %s status: %w", info.ID, err)
	}
	st.Pid = tk.Pid()
	switch ts.Status {
	case client.Running:
		st.State = runtime.StateRunning
	case client.Stopped:
		st.State, st.ExitCode, st.ExitedAt = runtime.StateStopped, int(ts.ExitStatus), ts.ExitTime
	case client.Paused, client.Pausing:
		st.State = runtime.StatePaused
	case client.Created:
		st.State = runtime.StateCreated
	default:
		st.State = runtime.StateUnknown
	}
	return st, nil
}

// List implements runtime.Backend: every container with nsn-run's manager
// label in the namespace.
func (b *Backend) List(ctx context.Context) ([]runtime.Status, error) {
	ctx = b.ns(ctx)
	cs, err := b.client.Containers(ctx, fmt.Sprintf("labels.%q==%s", runtime.LabelManager, runtime.ManagerName))
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]runtime.Status, 0, len(cs))
	for _, c := range cs {
		info, err := c.Info(ctx, client.WithoutRefreshedMetadata)
		if errdefs.IsNotFound(err) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", c.ID(), err)
		}
		st, err := b.status(ctx, c, info)
		if err != nil && !errdefs.IsNotFound(err) {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// Stats implements runtime.Backend from the task's cgroup metrics.
func (b *Backend) Stats(ctx context.Context, id string) (stats.Sample, error) {
	tk, err := b.loadTask(ctx, id)
	if err != nil {
		return stats.Sample{}, err
	}
	m, err := tk.Metrics(b.ns(ctx))
	if err != nil {
		return stats.Sample{}, fmt.Errorf("metrics of task %s: %w", id, err)
	}
	data, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return stats.Sample{}, fmt.Errorf("decode metrics of task %s: %w", id, err)
	}
	at := time.Now()
	if m.Timestamp != nil {
		at = m.Timestamp.AsTime()
	}
	s, err := cgroups.FromMetrics(data, at)
	if err != nil {
		return s, err
	}
	if s.Version == 2 {
		// The spec's cgroup path is /<namespace>/<id> (containerd's default).
		s = cgroups.AddV2Peaks(s, cgroups.V2Root, "/"+b.cfg.Namespace+"/"+id)
	}
	if b.cfg.GPUUsage == nil {
		return s, nil
	}
	procs, err := tk.Pids(b.ns(ctx))
	if err != nil {
		return s, fmt.Errorf("processes of task %s: %w", id, err)
	}
	pids := make([]uint32, len(procs))
	for i, p := range procs {
		pids[i] = p.Pid
	}
	u, err := b.cfg.GPUUsage.Usage(ctx, pids)
	if err != nil {
		return s, fmt.Errorf("GPU usage of task %s: %w", id, err)
	}
	return s.WithGPU(u), nil
}

// Recover implements runtime.Backend: reattach the exit wait of a task
// started by an earlier manager process.
func (b *Backend) Recover(ctx context.Context, h runtime.Handle) error {
	if h.Backend != b.Name() {
		return fmt.Errorf("%w: handle of task %s is for backend %q", errdefs.ErrInvalidArgument, h.ID, h.Backend)
	}
	tk, err := b.loadTask(ctx, h.ID)
	if err != nil {
		return err
	}
	return b.registerWait(h.ID, tk)
}

var _ runtime.OrphanSweeper = (*Backend)(nil)

// SweepOrphans implements runtime.OrphanSweeper: nsn-run's leases and task
// snapshots whose task is neither in keep nor has a container.
func (b *Backend) SweepOrphans(ctx context.Context, keep map[string]bool) ([]string, error) {
	ctx = b.ns(ctx)
	orphan := func(id string) bool {
		if id == "" || keep[id] {
			return false
		}
		_, err := b.client.LoadContainer(ctx, id)
		return errdefs.IsNotFound(err)
	}
	var removed []string
	ls := b.client.LeasesService()
	all, err := ls.List(ctx, fmt.Sprintf("labels.%q==%s", runtime.LabelManager, runtime.ManagerName))
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	for _, l := range all {
		if !orphan(l.Labels[runtime.LabelTaskID]) {
			continue
		}
		if err := ls.Delete(ctx, l, leases.SynchronousDelete); err != nil && !errdefs.IsNotFound(err) {
			return removed, fmt.Errorf("delete lease %s: %w", l.ID, err)
		}
		removed = append(removed, "lease "+l.ID)
	}
	sn := b.client.SnapshotService(b.cfg.Snapshotter)
	var names []string
	err = sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Labels[runtime.LabelManager] == runtime.ManagerName && orphan(info.Labels[runtime.LabelTaskID]) {
			names = append(names, info.Name)
		}
		return nil
	}, fmt.Sprintf("labels.%q==%s", runtime.LabelManager, runtime.ManagerName))
	if err != nil {
		return removed, fmt.Errorf("list snapshots: %w", err)
	}
	for _, name := range names {
		if err := sn.Remove(ctx, name); err != nil && !errdefs.IsNotFound(err) {
			return removed, fmt.Errorf("remove snapshot %s: %w", name, err)
		}
		removed = append(removed, "snapshot "+name)
	}
	return removed, nil
}
