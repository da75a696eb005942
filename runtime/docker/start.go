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
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/task"
)

// Start implements runtime.Backend: create the container from
// CreateRequest, attach to its stdout and stderr, start it, register the
// exit wait, and capture its logs from the attached stream.
func (b *Backend) Start(ctx context.Context, req runtime.StartRequest) (_ runtime.Handle, retErr error) {
	t := req.Task
	// Every call of the start waits on dockerd: bounded by StartTimeout,
	// and the container's start by the task's deadline as well.
	bound := runtime.NewStartBound(ctx)
	ctx, cancelDaemon := bound.Within(ctx, b.cfg.StartTimeout)
	defer cancelDaemon()
	containerID := "" // dockerd's id for the container, once it made one
	created := false  // the create was sent: dockerd may have made it
	var att client.HijackedResponse
	defer func() {
		if retErr == nil {
			return
		}
		if att.Conn != nil {
			att.Close()
		}
		switch {
		case !created && bound.Expired():
			retErr = b.unanswered(t, "nothing was created", retErr)
			return
		case !created || errdefs.IsAlreadyExists(retErr):
			return // nothing of this start's, or another's container
		case bound.Expired() || bound.CallerEnded():
			removed := b.removeUnanswered(ctx, t.ID, containerID)
			if bound.Expired() {
				retErr = b.unanswered(t, removed, retErr)
			} else {
				retErr = fmt.Errorf("%w (%s)", retErr, removed)
			}
			return
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoWait)
		defer cancel()
		_ = b.Destroy(dctx, t.ID)
	}()
	if _, err := b.client.ContainerInspect(ctx, t.ID, client.ContainerInspectOptions{}); err == nil {
		return runtime.Handle{}, &runtime.TaskExistsError{ID: t.ID}
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
	created = true
	// Answered: a create the caller's cancel cut in flight was still made
	// by dockerd after the rollback's removal by name (an outside
	// review's sweep of cancelled starts), and the container stayed.
	var cr client.ContainerCreateResult
	err = bound.Answered(ctx, func(ctx context.Context) (err error) {
		cr, err = b.client.ContainerCreate(ctx, client.ContainerCreateOptions{Name: r.Name, Config: r.Config, HostConfig: r.HostConfig})
		return err
	})
	if err != nil {
		if errdefs.IsConflict(err) || errdefs.IsAlreadyExists(err) {
			return runtime.Handle{}, fmt.Errorf("task %s already exists: %w", t.ID, errdefs.ErrAlreadyExists)
		}
		return runtime.Handle{}, fmt.Errorf("create container %s: %w", t.ID, err)
	}
	containerID = cr.ID
	if att, err = b.attachLogs(ctx, t.ID); err != nil {
		return runtime.Handle{}, err
	}
	captureLock, err := lockCapture(ctx, req.StateDir)
	if err != nil {
		return runtime.Handle{}, err
	}
	captured := false
	defer func() {
		if !captured {
			captureLock.Close()
		}
	}()
	// The task's time starts with the request: dockerd may start it
	// before it answers.
	startedAt := time.Now()
	startCtx, cancelStart := bound.Until(ctx, startedAt.Add(t.Limits.Timeout))
	defer cancelStart()
	// Answered too: a start cut in flight left dockerd starting the
	// container, whose removal the rollback then asked for and dockerd
	// refused (seen once in CI's sweep of cancelled starts).
	err = bound.Answered(startCtx, func(ctx context.Context) error {
		_, err := b.client.ContainerStart(ctx, t.ID, client.ContainerStartOptions{})
		return err
	})
	if err != nil {
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
	captured = true
	if err := b.captureAttached(th, att, req.StateDir, captureLock); err != nil {
		att = client.HijackedResponse{} // closed
		return runtime.Handle{}, err
	}
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

// unanswered is the error of task t's start, which dockerd did not answer
// in time (err), with what was done about its container.
func (b *Backend) unanswered(t task.Task, done string, err error) error {
	return fmt.Errorf("%w: task %s: dockerd did not answer its start within %s or by the task's deadline (timeout %s); %s: %w",
		errdefs.ErrUnavailable, t.ID, b.cfg.StartTimeout, t.Limits.Timeout, done, err)
}

// removeUnanswered removes task id's container (containerID, or by name
// where its create was not answered), whose start dockerd did not answer
// in time or its caller gave up on, and says what it did. A dockerd that
// is hung still starts the container once it answers (an outside review
// saw one run for a minute past its deadline, nobody waiting on it): where
// the removal fails, the Backend tries again in the background, backing
// off to 10 s, for as long as it lives (a node agent's does; a CLI process
// exits). The Docker backend has no cgroup of its own to kill without
// dockerd.
func (b *Backend) removeUnanswered(ctx context.Context, id, containerID string) string {
	ref := containerID
	if ref == "" {
		ref = id
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unansweredUndoWait)
	defer cancel()
	if _, err := b.client.ContainerRemove(dctx, ref, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !errdefs.IsNotFound(err) {
		b.removeLater(ref)
		return "removing its container failed too: this process tries again until dockerd answers, and gc removes it then"
	}
	return "its container was removed"
}

// removeLater removes container ref once dockerd answers, trying again,
// backing off from 1 s to 10 s, until it is gone or the Backend closes.
func (b *Backend) removeLater(ref string) {
	b.background.Go(func() {
		pause := time.Second
		for {
			ctx, cancel := context.WithTimeout(context.Background(), unansweredUndoWait)
			_, err := b.client.ContainerRemove(ctx, ref, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			cancel()
			if err == nil || errdefs.IsNotFound(err) {
				return
			}
			timer := time.NewTimer(pause)
			select {
			case <-b.closing:
				timer.Stop()
				return
			case <-timer.C:
			}
			pause = min(2*pause, 10*time.Second)
		}
	})
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
	img, err := InspectImage(ctx, b.client, t.Image)
	if err != nil {
		return Request{}, err
	}
	imgCfg := spec.SharedIdentityImage(img.Config, spec.HostIdentityTaken) // dockerd's tasks share host ids
	if len(req.GPUDevices) > 0 && b.cfg.CDI == nil {
		return Request{}, fmt.Errorf("%w: task was granted GPUs but no CDI specs are configured", errdefs.ErrFailedPrecondition)
	}
	r, err := CreateRequest(t, imgCfg, RequestOptions{OutputDir: req.OutputDir, GPUs: req.GPUDevices, OOMScoreAdj: b.cfg.AuditPolicy.OOMScoreAdj, ImageID: img.ID})
	if err != nil {
		return Request{}, err
	}
	r.Config.Labels[runtime.LabelStateDir] = req.StateDir
	if req.Owner.ID != "" {
		r.Config.Labels[runtime.LabelStateDirID] = req.Owner.ID
	}
	if err := b.audit(ctx, r, req, Image{ID: img.ID, Config: imgCfg}); err != nil {
		return Request{}, err
	}
	return r, nil
}

// audit refuses a request that AuditRequest finds more in than nsn-run
// would send for its task: the same allowlist a reviewer runs on
// `nsn-run spec --backend docker`, here on exactly what goes to dockerd.
func (b *Backend) audit(ctx context.Context, r Request, req runtime.StartRequest, img Image) error {
	p := b.cfg.AuditPolicy
	p.TasksDir = filepath.Dir(req.StateDir)
	p.ResolveSource = filepath.EvalSymlinks
	p.CDI = b.cfg.CDI
	// The image config the request was built from, read once for both.
	p.ResolveImage = func(context.Context, string) (string, ocispec.ImageConfig, error) { return img.ID, img.Config, nil }
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
