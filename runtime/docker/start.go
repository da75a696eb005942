package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/task"
)

// Start implements runtime.Backend: create the container from
// CreateRequest, attach to its stdout and stderr, start it, register the
// exit wait, and capture its logs from the attached stream.
func (b *Backend) Start(ctx context.Context, req runtime.StartRequest) (_ runtime.Handle, retErr error) {
	t := req.Task
	if _, err := b.client.ContainerInspect(ctx, t.ID, client.ContainerInspectOptions{}); err == nil {
		return runtime.Handle{}, fmt.Errorf("task %s already exists (remove it with nsn-run rm %s): %w", t.ID, t.ID, errdefs.ErrAlreadyExists)
	} else if !errdefs.IsNotFound(err) {
		return runtime.Handle{}, fmt.Errorf("look up container %s: %w", t.ID, err)
	}
	// Never a fallback to the legacy NVIDIA hook (CVE-2024-0132): dockerd
	// must take CDI device requests. (Preview still shows the request: it
	// is what a dockerd that can would be sent.)
	if v := b.client.ClientVersion(); len(req.GPUDevices) > 0 && versionLess(v, minCDIAPIVersion) {
		return runtime.Handle{}, fmt.Errorf("%w: dockerd speaks API %s; CDI device requests need %s (Docker 25+ with CDI enabled), and nsn-run does not use the legacy NVIDIA hook", errdefs.ErrFailedPrecondition, v, minCDIAPIVersion)
	}
	r, err := b.request(ctx, req)
	if err != nil {
		return runtime.Handle{}, err
	}
	uid, gid, err := userIDs(r.Config.User)
	if err != nil {
		return runtime.Handle{}, err
	}
	if err := os.Chown(req.OutputDir, uid, gid); err != nil {
		return runtime.Handle{}, fmt.Errorf("prepare output dir: %w", err)
	}
	// From here on the start waits on dockerd alone: bounded by
	// StartTimeout, and the container's start by the task's deadline too
	// (bound becomes that context then).
	callerCtx := ctx
	ctx, cancelDaemon := context.WithTimeout(ctx, b.cfg.StartTimeout)
	defer cancelDaemon()
	bound := ctx
	var att client.HijackedResponse
	defer func() {
		if retErr == nil {
			return
		}
		if att.Conn != nil {
			att.Close()
		}
		if errdefs.IsAlreadyExists(retErr) {
			return // another's container
		}
		if bound.Err() != nil && callerCtx.Err() == nil {
			retErr = b.unanswered(ctx, t, retErr)
			return
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoWait)
		defer cancel()
		_ = b.Destroy(dctx, t.ID)
	}()
	if _, err := b.client.ContainerCreate(ctx, client.ContainerCreateOptions{Name: r.Name, Config: r.Config, HostConfig: r.HostConfig}); err != nil {
		if errdefs.IsConflict(err) || errdefs.IsAlreadyExists(err) {
			return runtime.Handle{}, fmt.Errorf("task %s already exists: %w", t.ID, errdefs.ErrAlreadyExists)
		}
		return runtime.Handle{}, fmt.Errorf("create container %s: %w", t.ID, err)
	}
	if att, err = b.attachLogs(ctx, t.ID); err != nil {
		return runtime.Handle{}, err
	}
	// The task's time starts with the request: dockerd may start it
	// before it answers.
	startedAt := time.Now()
	startCtx, cancelStart := context.WithDeadline(ctx, startedAt.Add(t.Limits.Timeout))
	defer cancelStart()
	bound = startCtx
	if _, err := b.client.ContainerStart(startCtx, t.ID, client.ContainerStartOptions{}); err != nil {
		if cerr := runtime.ParseCommandError(err, r.Config.Entrypoint[0], t.Image); cerr != nil {
			return runtime.Handle{}, cerr
		}
		return runtime.Handle{}, fmt.Errorf("start container %s: %w", t.ID, err)
	}
	// Wait for "not running" once started: it answers at once if the task
	// already exited, where a next-exit wait sent before the start could
	// reach dockerd after the exit and never return. A new handle: one an
	// earlier task of this id left is not this task's.
	th := b.tasks.Add(t.ID)
	if err := b.watchExit(th, container.WaitConditionNotRunning); err != nil {
		// The backend is closing: leave nothing behind.
		return runtime.Handle{}, fmt.Errorf("wait on container %s: %w", t.ID, err)
	}
	b.captureAttached(th, att, req.StateDir)
	h := runtime.Handle{Version: runtime.HandleVersion, Backend: b.Name(), ID: t.ID, Image: t.Image, StartedAt: startedAt.UTC()}
	if info, err := b.client.ContainerInspect(ctx, t.ID, client.ContainerInspectOptions{}); err == nil && info.Container.State != nil {
		h.Pid = uint32(info.Container.State.Pid)
		if name, err := task.NormalizeImage(t.Image); err == nil {
			h.Image = name
		}
	}
	return h, nil
}

// undoWait bounds the removal of a container whose start failed;
// unansweredUndoWait that of one dockerd did not answer in time.
const (
	undoWait           = time.Minute
	unansweredUndoWait = 5 * time.Second
)

// unanswered tries to remove task t's container, whose create or start
// dockerd did not answer in time (err), and returns the start's error.
// dockerd may still start it once it answers again; without its record
// nobody waits on it, and gc ends it (a running task of the state dir
// that has no record). The Docker backend has no cgroup of its own to kill
// without dockerd.
func (b *Backend) unanswered(ctx context.Context, t task.Task, err error) error {
	removed := "its container was removed"
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unansweredUndoWait)
	defer cancel()
	if derr := b.Destroy(dctx, t.ID); derr != nil {
		removed = "removing its container failed too, and gc removes it once dockerd answers"
	}
	return fmt.Errorf("%w: task %s: dockerd did not answer its start within %s or by the task's deadline (timeout %s); %s: %w",
		errdefs.ErrUnavailable, t.ID, b.cfg.StartTimeout, t.Limits.Timeout, removed, err)
}

// Preview implements runtime.Backend: the Engine create request Start
// would send for req, audited, as indented JSON. Nothing is created.
func (b *Backend) Preview(ctx context.Context, req runtime.StartRequest) ([]byte, error) {
	r, err := b.request(ctx, req)
	if err != nil {
		return nil, err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// request builds and audits the create request for req: the one path both
// Start and Preview take, so what `nsn-run spec` prints is what is sent.
func (b *Backend) request(ctx context.Context, req runtime.StartRequest) (Request, error) {
	t := req.Task
	imgCfg, err := ImageConfig(ctx, b.client, t.Image)
	if err != nil {
		return Request{}, err
	}
	imgCfg = spec.SharedIdentityImage(imgCfg, spec.HostIdentityTaken) // dockerd's tasks share host ids
	if len(req.GPUDevices) > 0 && b.cfg.CDI == nil {
		return Request{}, fmt.Errorf("%w: task was granted GPUs but no CDI specs are configured", errdefs.ErrFailedPrecondition)
	}
	r, err := CreateRequest(t, imgCfg, RequestOptions{OutputDir: req.OutputDir, GPUs: req.GPUDevices, OOMScoreAdj: b.cfg.AuditPolicy.OOMScoreAdj})
	if err != nil {
		return Request{}, err
	}
	r.Config.Labels[runtime.LabelStateDir] = req.StateDir
	if req.Owner.ID != "" {
		r.Config.Labels[runtime.LabelStateDirID] = req.Owner.ID
	}
	if err := b.audit(ctx, r, req); err != nil {
		return Request{}, err
	}
	return r, nil
}

// audit refuses a request that AuditRequest finds more in than nsn-run
// would send for its task: the same allowlist a reviewer runs on
// `nsn-run spec --backend docker`, here on exactly what goes to dockerd.
func (b *Backend) audit(ctx context.Context, r Request, req runtime.StartRequest) error {
	p := b.cfg.AuditPolicy
	p.TasksDir = filepath.Dir(req.StateDir)
	p.ResolveSource = filepath.EvalSymlinks
	p.CDI = b.cfg.CDI
	if findings := AuditRequest(ctx, r, p); len(findings) > 0 {
		return fmt.Errorf("%w: create request for task %s fails the audit (%d findings), first: %s",
			errdefs.ErrFailedPrecondition, r.Name, len(findings), findings[0])
	}
	return nil
}

// versionLess compares Engine API versions ("1.41" < "1.44").
func versionLess(a, b string) bool {
	pa, pb := strings.SplitN(a, ".", 2), strings.SplitN(b, ".", 2)
	if len(pa) != 2 || len(pb) != 2 {
		return a < b
	}
	ma, _ := strconv.Atoi(pa[0])
	mb, _ := strconv.Atoi(pb[0])
	if ma != mb {
		return ma < mb
	}
	na, _ := strconv.Atoi(pa[1])
	nb, _ := strconv.Atoi(pb[1])
	return na < nb
}

func userIDs(user string) (int, int, error) {
	var uid, gid int
	if _, err := fmt.Sscanf(user, "%d:%d", &uid, &gid); err != nil {
		return 0, 0, fmt.Errorf("user %q: %w", user, err)
	}
	return uid, gid, nil
}
