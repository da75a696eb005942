package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/stats"
	"github.com/nsn-run/nsn-run/task"
)

// DefaultHost is dockerd's default socket.
const DefaultHost = "unix:///var/run/docker.sock"

// labelStateDir records a task's state directory on its container, so any
// nsn-run process can finish the task's logs.
const labelStateDir = "nsn.state-dir"

const pingTimeout = 5 * time.Second

// Config configures a Backend.
type Config struct {
	// Host is dockerd's address (DOCKER_HOST form); DefaultHost if empty.
	Host string
	// LogLimits cap each stream; logs.DefaultLimits if zero.
	LogLimits logs.Limits
	// CDI lets the audit replay the GPUs the Manager granted a task (the
	// gpu package's Injector); nil refuses GPU tasks. dockerd injects them
	// itself, from a CDI device request.
	CDI spec.DeviceInjector
	// GPUUsage adds the GPU memory and utilisation of the task's
	// processes to Stats (gpu/nvmlusage over NVML); nil leaves them out,
	// and a GPU memory limit cannot be enforced. dockerd must be local (as
	// /output requires): the container's host pids come from its cgroup.
	GPUUsage runtime.GPUUsageSampler
	// AuditPolicy is the operator's side of the audit every create request
	// passes before it is sent (AuditRequest): maxima, and the OOM score
	// tasks get (0: spec.DefaultOOMScoreAdj; the operator may set
	// spec.MinOOMScoreAdj..spec.MaxOOMScoreAdj), as for the containerd
	// backend. The backend fills in the task's state dir, bind source
	// resolution and the CDI injector.
	AuditPolicy audit.Policy
}

// minCDIAPIVersion is the Engine API version (Docker 25) from which dockerd
// takes CDI device requests.
const minCDIAPIVersion = "1.44"

// Backend runs tasks as Docker Engine containers.
type Backend struct {
	client *client.Client
	cfg    Config

	mu    sync.Mutex
	waits map[string]*exitWait
	// streams are the log captures this process runs, by task.
	streams map[string]chan struct{}
}

type exitWait struct {
	done   chan struct{}
	status runtime.ExitStatus
	err    error
}

var _ runtime.Backend = (*Backend)(nil)

// New connects to dockerd, negotiating the API version (dockerd 20.10
// speaks 1.41), and proves it answers with a ping.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Host == "" {
		cfg.Host = DefaultHost
	}
	if cfg.LogLimits == (logs.Limits{}) {
		cfg.LogLimits = logs.DefaultLimits
	}
	if _, err := spec.OOMScoreAdj(cfg.AuditPolicy.OOMScoreAdj); err != nil {
		return nil, err
	}
	c, err := Dial(ctx, cfg.Host)
	if err != nil {
		return nil, err
	}
	return &Backend{client: c, cfg: cfg, waits: map[string]*exitWait{}, streams: map[string]chan struct{}{}}, nil
}

// Dial connects to dockerd at host and pings it.
func Dial(ctx context.Context, host string) (*client.Client, error) {
	if path, ok := strings.CutPrefix(host, "unix://"); ok {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("%w: dockerd is not running: no socket at %s (set DOCKER_HOST)", errdefs.ErrUnavailable, path)
		}
	}
	// The client negotiates the API version with the daemon by default
	// (the ping below settles it), so dockerd 20.10's 1.41 is spoken.
	c, err := client.New(client.WithHost(host))
	if err != nil {
		return nil, fmt.Errorf("%w: connect to dockerd at %s: %w", errdefs.ErrUnavailable, host, err)
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if _, err := c.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: dockerd at %s does not answer: %w", errdefs.ErrUnavailable, host, err)
	}
	return c, nil
}

// Close releases the connection; tasks keep running.
func (b *Backend) Close() error { return b.client.Close() }

// Client is the underlying Engine API client (for image commands).
func (b *Backend) Client() *client.Client { return b.client }

// Name implements runtime.Backend.
func (b *Backend) Name() string { return "docker" }

// ImageConfig reads a local image's config.
func ImageConfig(ctx context.Context, c *client.Client, ref string) (ocispec.ImageConfig, error) {
	name, err := task.NormalizeImage(ref)
	if err != nil {
		return ocispec.ImageConfig{}, err
	}
	img, err := c.ImageInspect(ctx, name)
	if errdefs.IsNotFound(err) {
		return ocispec.ImageConfig{}, fmt.Errorf("image %s not found in dockerd: load or pull it first (docker load, nsn-run --backend docker image import): %w", name, errdefs.ErrNotFound)
	}
	if err != nil {
		return ocispec.ImageConfig{}, fmt.Errorf("inspect image %s: %w", name, err)
	}
	if img.Config == nil {
		return ocispec.ImageConfig{}, nil
	}
	return img.Config.ImageConfig, nil
}

// Start implements runtime.Backend: create the container from
// CreateRequest, register the exit wait, start it, and capture its logs
// from the logs API.
func (b *Backend) Start(ctx context.Context, req runtime.StartRequest) (runtime.Handle, error) {
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
	if _, err := b.client.ContainerCreate(ctx, client.ContainerCreateOptions{Name: r.Name, Config: r.Config, HostConfig: r.HostConfig}); err != nil {
		if errdefs.IsConflict(err) || errdefs.IsAlreadyExists(err) {
			return runtime.Handle{}, fmt.Errorf("task %s already exists: %w", t.ID, errdefs.ErrAlreadyExists)
		}
		return runtime.Handle{}, fmt.Errorf("create container %s: %w", t.ID, err)
	}
	if _, err := b.client.ContainerStart(ctx, t.ID, client.ContainerStartOptions{}); err != nil {
		cctx := context.WithoutCancel(ctx)
		_ = b.Destroy(cctx, t.ID)
		if cerr := commandError(err, r.Config.Entrypoint[0], t.Image); cerr != nil {
			return runtime.Handle{}, cerr
		}
		return runtime.Handle{}, fmt.Errorf("start container %s: %w", t.ID, err)
	}
	// Wait for "not running" once started: it answers at once if the task
	// already exited, where a next-exit wait sent before the start could
	// reach dockerd after the exit and never return.
	b.registerWait(t.ID, container.WaitConditionNotRunning)
	b.captureLogs(t.ID, req.StateDir)
	h := runtime.Handle{Version: runtime.HandleVersion, Backend: b.Name(), ID: t.ID, Image: t.Image, StartedAt: time.Now().UTC()}
	if info, err := b.client.ContainerInspect(ctx, t.ID, client.ContainerInspectOptions{}); err == nil && info.Container.State != nil {
		h.Pid = uint32(info.Container.State.Pid)
		if name, err := task.NormalizeImage(t.Image); err == nil {
			h.Image = name
		}
	}
	return h, nil
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
	if len(req.GPUDevices) > 0 && b.cfg.CDI == nil {
		return Request{}, fmt.Errorf("%w: task was granted GPUs but no CDI specs are configured", errdefs.ErrFailedPrecondition)
	}
	r, err := CreateRequest(t, imgCfg, RequestOptions{OutputDir: req.OutputDir, GPUs: req.GPUDevices, OOMScoreAdj: b.cfg.AuditPolicy.OOMScoreAdj})
	if err != nil {
		return Request{}, err
	}
	r.Config.Labels[labelStateDir] = req.StateDir
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

// commandError recognises the OCI runtime's exec failure for the task's
// command, which dockerd reports only as text (as moby itself does).
func commandError(err error, command, image string) error {
	msg := err.Error()
	switch {
	case !strings.Contains(msg, "exec: "):
		return nil
	case strings.Contains(msg, "executable file not found"), strings.Contains(msg, "no such file or directory"):
		return &runtime.CommandError{Command: command, Image: image, NotFound: true}
	case strings.Contains(msg, "permission denied"):
		return &runtime.CommandError{Command: command, Image: image}
	}
	return nil
}

// registerWait subscribes to the container's exit.
func (b *Backend) registerWait(id string, cond container.WaitCondition) *exitWait {
	w := &exitWait{done: make(chan struct{})}
	b.mu.Lock()
	b.waits[id] = w
	b.mu.Unlock()
	res := b.client.ContainerWait(context.Background(), id, client.ContainerWaitOptions{Condition: cond})
	go func() {
		defer close(w.done)
		select {
		case r := <-res.Result:
			if r.Error != nil && r.Error.Message != "" {
				w.err = fmt.Errorf("wait on container %s: %s", id, r.Error.Message)
				return
			}
			w.status.Code = int(r.StatusCode)
		case err := <-res.Error:
			w.err = fmt.Errorf("wait on container %s: %w", id, err)
			return
		}
		info, err := b.client.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
		if err == nil && info.Container.State != nil {
			w.status.OOMKilled = info.Container.State.OOMKilled
			if at, err := time.Parse(time.RFC3339Nano, info.Container.State.FinishedAt); err == nil {
				w.status.ExitedAt = at
			}
		}
	}()
	return w
}

// captureLogs follows the container's logs from the logs API into the
// task's capped log files while this process lives.
func (b *Backend) captureLogs(id, stateDir string) {
	done := make(chan struct{})
	b.mu.Lock()
	b.streams[id] = done
	b.mu.Unlock()
	go func() {
		defer close(done)
		_ = b.copyLogs(context.Background(), id, stateDir, true)
	}()
}

// copyLogs reads the container's stdout and stderr, demultiplexed, into
// the task's capped log files.
func (b *Backend) copyLogs(ctx context.Context, id, stateDir string, follow bool) error {
	rc, err := b.client.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Follow: follow})
	if err != nil {
		return fmt.Errorf("logs of container %s: %w", id, err)
	}
	defer rc.Close()
	stdout, err := logs.Create(filepath.Join(stateDir, logs.StdoutFile), b.cfg.LogLimits)
	if err != nil {
		return err
	}
	stderr, err := logs.Create(filepath.Join(stateDir, logs.StderrFile), b.cfg.LogLimits)
	if err != nil {
		_, _ = stdout.Close()
		return err
	}
	_, cerr := stdcopy.StdCopy(stdout, stderr, rc)
	_, oerr := stdout.Close()
	_, eerr := stderr.Close()
	return errors.Join(cerr, oerr, eerr)
}

// Wait implements runtime.Backend. Once the container has exited, its logs
// are complete in the task's state dir: from this process's capture, or
// read again from the logs API if another process started the task.
func (b *Backend) Wait(ctx context.Context, id string) (runtime.ExitStatus, error) {
	b.mu.Lock()
	w := b.waits[id]
	b.mu.Unlock()
	if w == nil {
		if _, err := b.client.ContainerInspect(ctx, id, client.ContainerInspectOptions{}); err != nil {
			return runtime.ExitStatus{}, fmt.Errorf("task %s: %w", id, err)
		}
		w = b.registerWait(id, container.WaitConditionNotRunning)
	}
	select {
	case <-w.done:
	case <-ctx.Done():
		return runtime.ExitStatus{}, ctx.Err()
	}
	if w.err != nil {
		return runtime.ExitStatus{}, w.err
	}
	if err := b.finishLogs(ctx, id); err != nil {
		return runtime.ExitStatus{}, err
	}
	return w.status, nil
}

func (b *Backend) finishLogs(ctx context.Context, id string) error {
	b.mu.Lock()
	stream := b.streams[id]
	b.mu.Unlock()
	if stream != nil {
		select {
		case <-stream:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	info, err := b.client.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return fmt.Errorf("task %s: %w", id, err)
	}
	stateDir := info.Container.Config.Labels[labelStateDir]
	if stateDir == "" {
		return fmt.Errorf("container %s has no %s label", id, labelStateDir)
	}
	return b.copyLogs(ctx, id, stateDir, false)
}

// Stop implements runtime.Backend. The task is pid 1 of its own pid
// namespace: SIGKILL to it ends every process in the container, which is
// what `all` asks for.
func (b *Backend) Stop(ctx context.Context, id string, sig syscall.Signal, _ bool) error {
	name := strings.TrimPrefix(signalName(sig), "SIG")
	if _, err := b.client.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: name}); err != nil {
		if errdefs.IsConflict(err) { // not running
			return fmt.Errorf("task %s is not running: %w", id, errdefs.ErrNotFound)
		}
		return fmt.Errorf("signal task %s: %w", id, err)
	}
	return nil
}

func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGKILL:
		return "KILL"
	case syscall.SIGTERM:
		return "TERM"
	case syscall.SIGINT:
		return "INT"
	case syscall.SIGHUP:
		return "HUP"
	}
	return fmt.Sprint(int(sig))
}

// logDrainTimeout bounds how long Destroy waits for a log capture to end
// once its container is gone (dockerd ends the stream at once).
const logDrainTimeout = 30 * time.Second

// Destroy implements runtime.Backend: remove the container (killing it
// first) and its anonymous volumes, then wait until this process's log
// capture of it has ended, so that nothing writes into the task's state dir
// once Destroy returns (the Manager removes it next). Idempotent.
func (b *Backend) Destroy(ctx context.Context, id string) error {
	b.mu.Lock()
	stream := b.streams[id]
	delete(b.waits, id)
	delete(b.streams, id)
	b.mu.Unlock()
	_, err := b.client.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	if stream != nil {
		select {
		case <-stream:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(logDrainTimeout):
			return fmt.Errorf("%w: log capture of task %s still running %s after its container was removed", errdefs.ErrUnavailable, id, logDrainTimeout)
		}
	}
	return nil
}

// Inspect implements runtime.Backend.
func (b *Backend) Inspect(ctx context.Context, id string) (runtime.Status, error) {
	info, err := b.client.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return runtime.Status{}, fmt.Errorf("task %s: %w", id, err)
	}
	c := info.Container
	if c.Config == nil || c.Config.Labels[runtime.LabelManager] != runtime.ManagerName {
		return runtime.Status{}, fmt.Errorf("task %s: %w", id, errdefs.ErrNotFound)
	}
	st := runtime.Status{ID: id, Image: c.Config.Image, State: runtime.StateUnknown}
	if at, err := time.Parse(time.RFC3339Nano, c.Created); err == nil {
		st.CreatedAt = at
	}
	if s := c.State; s != nil {
		st.Pid = uint32(s.Pid)
		switch {
		case s.Running && s.Paused:
			st.State = runtime.StatePaused
		case s.Running:
			st.State = runtime.StateRunning
		case s.Status == container.StateCreated:
			st.State = runtime.StateCreated
		default:
			st.State, st.ExitCode = runtime.StateStopped, s.ExitCode
			if at, err := time.Parse(time.RFC3339Nano, s.FinishedAt); err == nil {
				st.ExitedAt = at
			}
		}
	}
	return st, nil
}

// List implements runtime.Backend: containers with nsn-run's label.
func (b *Backend) List(ctx context.Context) ([]runtime.Status, error) {
	res, err := b.client.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", runtime.LabelManager+"="+runtime.ManagerName),
	})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]runtime.Status, 0, len(res.Items))
	for _, c := range res.Items {
		st, err := b.Inspect(ctx, c.Labels[runtime.LabelTaskID])
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// Stats implements runtime.Backend from one stats sample of the Engine API,
// which reports cgroup v1 and v2 in one shape.
func (b *Backend) Stats(ctx context.Context, id string) (stats.Sample, error) {
	res, err := b.client.ContainerStats(ctx, id, client.ContainerStatsOptions{})
	if err != nil {
		return stats.Sample{}, fmt.Errorf("stats of task %s: %w", id, err)
	}
	defer res.Body.Close()
	var s container.StatsResponse
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&s); err != nil {
		return stats.Sample{}, fmt.Errorf("decode stats of task %s: %w", id, err)
	}
	sample := sampleFromStats(s)
	if b.cfg.GPUUsage == nil {
		return sample, nil
	}
	pids, err := b.hostPids(ctx, id)
	if err != nil {
		return sample, err
	}
	u, err := b.cfg.GPUUsage.Usage(ctx, pids)
	if err != nil {
		return sample, fmt.Errorf("GPU usage of task %s: %w", id, err)
	}
	return sample.WithGPU(u), nil
}

// hostPids lists the host pids of task id's processes: those in the cgroup
// of its init process.
func (b *Backend) hostPids(ctx context.Context, id string) ([]uint32, error) {
	res, err := b.client.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return nil, fmt.Errorf("task %s: %w", id, err)
	}
	if res.Container.State == nil || res.Container.State.Pid == 0 {
		return nil, nil // not running: no processes hold GPU memory
	}
	return pidsInCgroupOf(hostProc, res.Container.State.Pid)
}

// sampleFromStats maps the Engine API's stats to a Sample. A stopped
// container reports zeros; its peaks come from earlier samples.
func sampleFromStats(s container.StatsResponse) stats.Sample {
	version := 1
	if _, ok := s.MemoryStats.Stats["anon"]; ok { // a cgroup v2 memory.stat key
		version = 2
	}
	return stats.Sample{
		Time:                s.Read,
		Version:             version,
		MemoryCurrentBytes:  s.MemoryStats.Usage,
		MemoryPeakBytes:     s.MemoryStats.MaxUsage,
		MemoryLimitBytes:    s.MemoryStats.Limit,
		CPUUsageSeconds:     float64(s.CPUStats.CPUUsage.TotalUsage) / 1e9,
		CPUThrottledPeriods: s.CPUStats.ThrottlingData.ThrottledPeriods,
		CPUThrottledSeconds: float64(s.CPUStats.ThrottlingData.ThrottledTime) / 1e9,
		PidsCurrent:         s.PidsStats.Current,
		PidsLimit:           s.PidsStats.Limit,
		OOMKills:            s.MemoryStats.Stats["oom_kill"],
	}
}

// Recover implements runtime.Backend.
func (b *Backend) Recover(ctx context.Context, h runtime.Handle) error {
	if h.Backend != b.Name() {
		return fmt.Errorf("%w: handle of task %s is for backend %q", errdefs.ErrInvalidArgument, h.ID, h.Backend)
	}
	if _, err := b.client.ContainerInspect(ctx, h.ID, client.ContainerInspectOptions{}); err != nil {
		return fmt.Errorf("task %s: %w", h.ID, err)
	}
	b.registerWait(h.ID, container.WaitConditionNotRunning)
	return nil
}
