package docker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/cgroups"
	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/internal/taskhandle"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// DefaultHost is dockerd's default socket.
const DefaultHost = "unix:///var/run/docker.sock"

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
	// LoggerBinary, if set, is an absolute path to nsn-logger (or
	// nsn-run): each task's attach stream is then captured by
	// `LoggerBinary attach-logger CONFIG` (logs.RunAttachLogger), a
	// process of its own that outlives the manager's, as containerd's
	// shim logger does. Empty: the capture runs in the process that
	// started the task, and if that process dies the logs are read again
	// from dockerd's copy, which keeps 16 MiB stored (a few dozen bytes a
	// line more than the output) and loses the start of a longer log.
	LoggerBinary string
	// LoggerCPUs is the CPU quota all tasks' loggers on the node share:
	// each attach logger (LoggerBinary) is moved into
	// cgroups.LoggersGroup as it starts (cgroups.DefaultLoggerCPUs if
	// zero; node-wide, the last start's value holds). A capture in the
	// manager's own process (no LoggerBinary) is not confined.
	LoggerCPUs float64
	// StartTimeout bounds how long a task's start waits for dockerd (the
	// container's create and start); DefaultStartTimeout if zero. The
	// container's start is bounded by the task's deadline as well.
	StartTimeout time.Duration
}

// DefaultStartTimeout is Config.StartTimeout's default, kubelet's default
// bound on a container runtime request.
const DefaultStartTimeout = 2 * time.Minute

// minCDIAPIVersion is the Engine API version (Docker 25) from which dockerd
// takes CDI device requests.
const minCDIAPIVersion = "1.44"

// Backend runs tasks as Docker Engine containers.
type Backend struct {
	client *client.Client
	cfg    Config
	// tasks are the handles of the tasks this process started or waits
	// on: their exit waits and log captures.
	tasks *taskhandle.Set
	// background runs removals of containers whose start dockerd did not
	// answer (removeLater) until closing is closed.
	background sync.WaitGroup
	closing    chan struct{}
	closeOnce  sync.Once
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
	loggerCPUs, err := cgroups.LoggerCPUs(cfg.LoggerCPUs)
	if err != nil {
		return nil, err
	}
	cfg.LoggerCPUs = loggerCPUs
	if _, err := spec.OOMScoreAdj(cfg.AuditPolicy.OOMScoreAdj); err != nil {
		return nil, err
	}
	if cfg.LoggerBinary != "" {
		if !filepath.IsAbs(cfg.LoggerBinary) {
			return nil, fmt.Errorf("%w: logger binary %q must be an absolute path to nsn-logger or nsn-run", errdefs.ErrInvalidArgument, cfg.LoggerBinary)
		}
		if _, err := os.Stat(cfg.LoggerBinary); err != nil {
			return nil, fmt.Errorf("%w: logger binary: %w", errdefs.ErrInvalidArgument, err)
		}
	}
	if cfg.StartTimeout < 0 {
		return nil, fmt.Errorf("%w: start timeout %s", errdefs.ErrInvalidArgument, cfg.StartTimeout)
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	c, err := Dial(ctx, cfg.Host)
	if err != nil {
		return nil, err
	}
	return &Backend{client: c, cfg: cfg, tasks: taskhandle.NewSet(), closing: make(chan struct{})}, nil
}

// Dial connects to dockerd at host and pings it.
func Dial(ctx context.Context, host string) (*client.Client, error) {
	if path, ok := strings.CutPrefix(host, "unix://"); ok {
		if _, err := os.Stat(path); err != nil {
			return nil, &runtime.DaemonNotRunningError{Daemon: "dockerd", Socket: path}
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

// Close ends every task handle (exit waits and log captures), then
// releases the connection. Tasks keep running: a later Backend waits on
// them again (Wait, Recover), and reads their logs again from the logs API.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() { close(b.closing) })
	b.background.Wait()
	b.tasks.Close()
	return b.client.Close()
}

// Client is the underlying Engine API client (for image commands).
func (b *Backend) Client() *client.Client { return b.client }

// Name implements runtime.Backend.
func (b *Backend) Name() string { return "docker" }

// Scope implements runtime.Scoper: the dockerd the tasks live in.
func (b *Backend) Scope() string { return "dockerd at " + b.cfg.Host }

// Image is a local image as dockerd holds it.
type Image struct {
	ID     string // the image's ID, "sha256:" and 64 hex digits
	Config ocispec.ImageConfig
}

// IsImageID reports whether ref is an image's full ID ("sha256:" and 64
// lowercase hex digits): the only form in which a create request pins its
// image (dockerd takes an ID's prefix too, which nsn-run never sends).
func IsImageID(ref string) bool {
	hex, ok := strings.CutPrefix(ref, "sha256:")
	return ok && len(hex) == 64 && strings.Trim(hex, "0123456789abcdef") == ""
}

// InspectImage reads a local image, by name or by its full ID (IsImageID),
// as dockerd holds it.
func InspectImage(ctx context.Context, c *client.Client, ref string) (Image, error) {
	name := ref
	if !IsImageID(ref) {
		var err error
		if name, err = task.NormalizeImage(ref); err != nil {
			return Image{}, err
		}
	}
	img, err := c.ImageInspect(ctx, name)
	if errdefs.IsNotFound(err) {
		return Image{}, &runtime.ImageNotFoundError{Name: name, Docker: true}
	}
	if err != nil {
		return Image{}, fmt.Errorf("inspect image %s: %w", name, err)
	}
	if !IsImageID(img.ID) {
		return Image{}, fmt.Errorf("%w: image %s: dockerd gives it the id %q, not a sha256 digest", errdefs.ErrFailedPrecondition, name, img.ID)
	}
	out := Image{ID: img.ID}
	if img.Config != nil {
		out.Config = img.Config.ImageConfig
	}
	return out, nil
}
