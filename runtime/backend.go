// Package runtime is the Manager the node agent links: it runs a Task
// isolated from start to cleanup (Spawn, Wait, Stats, CollectOutput,
// Cleanup, CleanupOrphans, and Run for all of them in order), whatever the
// backend. Backends (runtime/containerd, runtime/docker) implement Backend.
package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/stats"
	"github.com/nsn-run/nsn-run/task"
)

// Labels nsn-run puts on everything it creates, so it can find its own
// objects (and only those) after a crash.
const (
	// LabelPrefix begins every label and annotation key of nsn-run's.
	LabelPrefix  = "nsn."
	LabelTaskID  = "nsn.task-id"
	LabelManager = "nsn.manager"
	// LabelStateDir is the task's own state directory (STATE/tasks/ID):
	// any nsn-run process can find the task's logs through it.
	LabelStateDir = "nsn.state-dir"
	// LabelStateDirID is the id of the state dir whose Manager started
	// the task (Owner). Several state dirs may share a containerd
	// namespace or a dockerd, under different paths, or under one path in
	// different mount namespaces (agents in containers, each with its own
	// /var/lib/nsn-run); each Manager lists, removes, kills and sweeps
	// only what its own state dir started.
	LabelStateDirID = "nsn.state-dir-id"
	// LabelImage is a Docker task's image name: its container names the
	// image by ID (sha256:...), so that dockerd creates it from the image
	// the request was built and audited for, whatever the name names by
	// then.
	LabelImage = "nsn.image"
	// ManagerName is the value of LabelManager.
	ManagerName = "nsn-run"
)

// Owner is the state dir of a Manager: its path, and the random id it
// keeps in it (the file "id", made on its first use), which tells it
// from another directory that has, or had, the same path.
type Owner struct {
	StateDir string
	ID       string
}

// Labels are the labels a backend puts on what it creates for task id of
// owner o: its container, and whatever else the task holds (a lease, a
// snapshot). A zero Owner adds neither state-dir label.
func Labels(id string, o Owner) map[string]string {
	l := map[string]string{LabelTaskID: id, LabelManager: ManagerName}
	if o.StateDir != "" {
		l[LabelStateDir] = filepath.Join(o.StateDir, "tasks", id)
	}
	if o.ID != "" {
		l[LabelStateDirID] = o.ID
	}
	return l
}

// Disowns reports whether an object labelled with Labels was made for
// another state dir's Manager than o's. With a state-dir id that is
// another's, it was, whatever its path says (an outside review's agent in
// a mount namespace of its own, with its own directory at the same path,
// killed the other's tasks with gc --force). Objects labelled with a path
// alone (made on 2026-11-30 before the id) are another's when their state
// dir lies in another directory that exists. Objects without either label
// (made before) are everyone's.
func (o Owner) Disowns(labels map[string]string) bool {
	if id, ok := labels[LabelStateDirID]; ok {
		return id != o.ID
	}
	taskDir, ok := labels[LabelStateDir]
	if !ok {
		return false
	}
	owner := filepath.Dir(filepath.Dir(taskDir))
	if owner == o.StateDir {
		return false
	}
	a, err := os.Stat(owner)
	if err != nil {
		return false
	}
	b, err := os.Stat(o.StateDir)
	return err == nil && !os.SameFile(a, b)
}

// Backend runs containers. It is shaped like Nomad's task driver (Start,
// Wait, Stop, Destroy, Inspect, Stats, Recover) with a context on every
// method. A Backend holds no policy: timeouts, output collection and cleanup
// order are the Manager's.
type Backend interface {
	// Name is the backend's name ("containerd", "docker").
	Name() string
	// Preview returns what Start would send for req, through the same
	// generation and audit, as JSON: the OCI runtime spec (containerd) or
	// the Engine create request (docker). It creates nothing.
	Preview(ctx context.Context, req StartRequest) ([]byte, error)
	// Start creates the task's container from req and starts it, with the
	// exit wait registered before the start so no exit is missed. On error
	// it leaves nothing behind.
	Start(ctx context.Context, req StartRequest) (Handle, error)
	// Wait blocks until the task's process exits, or ctx ends.
	Wait(ctx context.Context, id string) (ExitStatus, error)
	// Stop sends sig to the task's main process, or to every process in
	// its cgroup when all is set.
	Stop(ctx context.Context, id string, sig syscall.Signal, all bool) error
	// Destroy removes the task, its container and its filesystem, killing
	// it first if it still runs. Destroying what does not exist is not an
	// error.
	Destroy(ctx context.Context, id string) error
	// Inspect reports the task's state.
	Inspect(ctx context.Context, id string) (Status, error)
	// List reports every task this manager created on the backend.
	List(ctx context.Context) ([]Status, error)
	// Stats samples the task's cgroup.
	Stats(ctx context.Context, id string) (stats.Sample, error)
	// Recover reattaches to a task after the manager restarted.
	Recover(ctx context.Context, h Handle) error
}

// OrphanSweeper is an optional Backend feature: removing objects a crashed
// run left that belong to no task (a lease or snapshot of a spawn that died
// before its container existed).
type OrphanSweeper interface {
	// SweepOrphans removes nsn-run's leases and snapshots (and what else
	// a task can leave on the host, such as an empty cgroup) whose task is
	// not in keep, and returns one line per object removed. Those another
	// state dir's Manager made (o.Disowns) stay.
	SweepOrphans(ctx context.Context, o Owner, keep map[string]bool) ([]string, error)
}

// LogFinisher is an optional Backend feature: completing the logs of a task
// that has exited while its container is still in place, so that its
// release need not come first (Config.ReleaseInBackground). FinishLogs
// fails when the backend has not seen the task exit; the Manager then
// releases the task before it returns, as without the feature.
type LogFinisher interface {
	FinishLogs(ctx context.Context, id, stateDir string) error
}

// Scoper is an optional Backend feature: naming where its tasks live (a
// containerd namespace at an address, a dockerd). Several Managers may
// share a state dir (the CLI's default, /var/lib/nsn-run, whatever its
// --namespace), but a task's container exists in one scope only: the
// Manager records the scope with each task and leaves another scope's
// tasks alone (remove, gc, wait, ps), their host id ranges and GPUs
// included.
type Scoper interface {
	Scope() string
}

// GPUUsageSampling is an optional Backend feature: sampling the GPU usage
// of a task's processes (a backend given a GPUUsageSampler). The Manager
// enforces Limits.GPUMemoryBytes only from those samples, so it refuses a
// task with that limit where the backend has none: a limit nobody checks
// would pass for one that holds.
type GPUUsageSampling interface {
	SamplesGPUUsage() bool
}

// StartRequest is what a backend needs to start a task.
type StartRequest struct {
	// Task has been validated and completed with defaults.
	Task task.Task
	// StateDir is the task's private host directory (logs live there).
	StateDir string
	// OutputDir is the host directory to mount at /output.
	OutputDir string
	// GPUDevices are the CDI devices the Manager granted the task (empty
	// when it asks for none). The backend only injects them.
	GPUDevices []string
	// UserNS is the host id range the Manager granted the task's own user
	// namespace; nil runs it with shared host ids. Only a UserNamespacer
	// backend is given one.
	UserNS *task.IDRange
	// Owner is the Manager's state dir, for the labels (Labels).
	Owner Owner
}

// GPUAllocator grants GPUs node-wide and exclusively (the gpu package's
// Injector, over an allocation dir that `nsn-run gpu ls` and gc see too).
// The Manager allocates before Backend.Start and releases in Cleanup, so
// every backend gets the same allocation and release.
type GPUAllocator interface {
	// Allocate grants task id the GPUs req asks for and returns their
	// CDI device names.
	Allocate(id string, req task.GPURequest) ([]string, error)
	// Preview returns what Allocate would grant now, taking nothing.
	Preview(id string, req task.GPURequest) ([]string, error)
	// Release frees what task id holds; releasing nothing is no error.
	Release(id string) error
	// ReleaseExcept frees what every task not in keep holds (gc).
	ReleaseExcept(keep map[string]bool) error
}

// GPUUsageSampler measures what a set of host processes use of the node's
// GPUs (gpu/nvmlusage over NVML). A backend given one adds it to Stats, and
// the Manager enforces Limits.GPUMemoryBytes from those samples. It is an
// interface so that the backends link no NVML: whoever has the driver (the
// CLI) wires one in.
type GPUUsageSampler interface {
	// Usage is what the processes pids (host pids) hold and use.
	Usage(ctx context.Context, pids []uint32) (stats.GPUUsage, error)
}

// HandleVersion is the version of Handle's stored form.
const HandleVersion = 1

// Handle identifies a started task across manager restarts; the Manager
// stores it in the task's state directory.
type Handle struct {
	Version   int       `json:"version"`
	Backend   string    `json:"backend"`
	ID        string    `json:"id"`
	Image     string    `json:"image"` // normalised reference
	Pid       uint32    `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	// Identity is the level of host identity the backend gave the task
	// (a task.Identity* level), where it can differ from the one it said
	// it would (idmapped mounts that fail on this host); empty otherwise.
	Identity string `json:"identity,omitempty"`
}

// CheckBackend refuses a handle that backend did not give: a Backend's
// Recover checks it before it reattaches to the task.
func (h Handle) CheckBackend(backend string) error {
	if h.Backend != backend {
		return fmt.Errorf("%w: handle of task %s is for backend %q", errdefs.ErrInvalidArgument, h.ID, h.Backend)
	}
	return nil
}

// ExitStatus is how a task's process ended.
type ExitStatus struct {
	Code     int
	ExitedAt time.Time
	// OOMKilled is set when the backend knows the kernel's OOM killer
	// ended the task.
	OOMKilled bool
}

// State is a task's lifecycle state.
type State string

// The states a task can be in.
const (
	StateCreated State = "created"
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateStopped State = "stopped"
	StateUnknown State = "unknown"
)

// Status is what Inspect and List report.
type Status struct {
	ID        string    `json:"id"`
	Image     string    `json:"image"`
	State     State     `json:"state"`
	Pid       uint32    `json:"pid,omitempty"`
	ExitCode  int       `json:"exit_code"`
	CreatedAt time.Time `json:"created_at"`
	ExitedAt  time.Time `json:"exited_at,omitzero"`
	// Identity is the task's host identity, from the Manager's record
	// (backends leave it empty).
	Identity *task.Identity `json:"identity,omitempty"`
	// Result is the task's Result once a Wait recorded it (without its
	// logs and output files: CollectOutput adds those). A task whose
	// container was released after it exited is listed from it.
	Result *task.Result `json:"result,omitempty"`
	// Labels are the labels of the task's container (Labels; the
	// Manager leaves out those of other state dirs).
	Labels map[string]string `json:"-"`
}

// Exit codes for a task whose command could not be run, as a shell (and
// docker run) reports them.
const (
	ExitCommandNotExecutable = 126
	ExitCommandNotFound      = 127
)

// CommandError is a start failure caused by the task's command rather than
// by nsn-run: the binary is missing from the image, or is not executable.
type CommandError struct {
	Command  string
	Image    string
	NotFound bool // false: found but not executable
}

func (e *CommandError) Error() string {
	if e.NotFound {
		return fmt.Sprintf("command %q not found in image %s", e.Command, e.Image)
	}
	return fmt.Sprintf("command %q in image %s is not executable", e.Command, e.Image)
}

// Unwrap types the error for errdefs: NotFound or PermissionDenied.
func (e *CommandError) Unwrap() error {
	if e.NotFound {
		return errdefs.ErrNotFound
	}
	return errdefs.ErrPermissionDenied
}

// TaskExistsError is a start refused because a task with its id exists on
// this node already (its state dir, or its container): it must be removed
// first (Manager.Remove).
type TaskExistsError struct {
	ID string
}

func (e *TaskExistsError) Error() string {
	return fmt.Sprintf("task %s already exists: remove it first", e.ID)
}

// Unwrap types the error for errdefs: AlreadyExists.
func (e *TaskExistsError) Unwrap() error { return errdefs.ErrAlreadyExists }

// ImageNotFoundError is a task's image that the backend does not hold: it
// must be imported or pulled first (the containerd backend's images.Import
// and images.Pull; docker load for dockerd).
type ImageNotFoundError struct {
	Name   string
	Docker bool // the Docker backend's: dockerd does not hold it
}

func (e *ImageNotFoundError) Error() string {
	if e.Docker {
		return fmt.Sprintf("image %s not found in dockerd: load or pull it first", e.Name)
	}
	return fmt.Sprintf("image %s not found locally: import or pull it first", e.Name)
}

// Unwrap types the error for errdefs: NotFound.
func (e *ImageNotFoundError) Unwrap() error { return errdefs.ErrNotFound }

// ImageConflictError is an import refused because an image of the
// archive's name exists with other content: importing would change what
// every task naming it runs. The caller removes the image first, or imports
// again with ImportOptions.Replace.
type ImageConflictError struct {
	Name    string
	Have    string // the local image's content (digest, media type)
	Archive string // the archive's
}

func (e *ImageConflictError) Error() string {
	return fmt.Sprintf("%s: image %s exists (%s) and the archive's is other content (%s): importing would replace it; remove it first, or import replacing it", errdefs.ErrAlreadyExists, e.Name, e.Have, e.Archive)
}

// Unwrap types the error for errdefs: AlreadyExists.
func (e *ImageConflictError) Unwrap() error { return errdefs.ErrAlreadyExists }

// TaskElsewhereError is a task on the backend that the Manager of another
// state dir started (sharing this one's containerd namespace or dockerd):
// that Manager's to list, remove, kill and sweep.
type TaskElsewhereError struct {
	ID       string
	StateDir string // the state dir whose Manager owns it
}

func (e *TaskElsewhereError) Error() string {
	return fmt.Sprintf("task %s belongs to the state dir %s: %s", e.ID, e.StateDir, errdefs.ErrFailedPrecondition)
}

// Unwrap types the error for errdefs: FailedPrecondition.
func (e *TaskElsewhereError) Unwrap() error { return errdefs.ErrFailedPrecondition }

// DaemonNotRunningError is a backend's daemon with no socket where the
// caller said it listens: it is not running, or the address is another's.
type DaemonNotRunningError struct {
	Daemon string // "containerd" or "dockerd"
	Socket string
}

func (e *DaemonNotRunningError) Error() string {
	return fmt.Sprintf("%s: %s is not running: no socket at %s", errdefs.ErrUnavailable, e.Daemon, e.Socket)
}

// Unwrap types the error for errdefs: Unavailable.
func (e *DaemonNotRunningError) Unwrap() error { return errdefs.ErrUnavailable }

// ParseCommandError recognises, in a start error, the OCI runtime's
// failure to exec the task's command, and returns it as a CommandError
// (nil for any other error). runc reports it only as text, through the shim
// and through dockerd alike (moby matches the same strings), so text is all
// there is to go on. runc says `exec: "cmd": ...` when looking the command
// up failed (on PATH, or the path's stat), and `exec /path: ...` when the
// execve of the path itself failed; anything else (a mount that failed with
// "permission denied", say) is nsn-run's failure, not the command's.
func ParseCommandError(err error, command, image string) *CommandError {
	msg := err.Error()
	if !strings.Contains(msg, "exec: ") && !strings.Contains(msg, "exec "+command+": ") {
		return nil
	}
	switch {
	case strings.Contains(msg, "executable file not found"), strings.Contains(msg, "no such file or directory"):
		return &CommandError{Command: command, Image: image, NotFound: true}
	case strings.Contains(msg, "permission denied"), strings.Contains(msg, "is a directory"):
		// runc 1.1 (Go's LookPath before 1.22) calls a directory
		// "permission denied"; runc 1.5 says "is a directory".
		return &CommandError{Command: command, Image: image}
	}
	return nil
}

// ExitCode is the exit status the CLI reports for the failure.
func (e *CommandError) ExitCode() int {
	if e.NotFound {
		return ExitCommandNotFound
	}
	return ExitCommandNotExecutable
}
