package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/idmap"
	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/stats"
	"github.com/nsn-run/nsn-run/task"
)

// Exit codes the Manager reports for tasks it stopped (the CLI contract).
const (
	ExitTimedOut  = 124
	ExitOOMKilled = 137
	// ExitLost is the exit code of a task whose exit status was lost
	// (Result reason failed, its error saying why): nsn-run's own 125.
	ExitLost = 125
	// ExitFailed is the exit code of a Run or Supervise that failed
	// before its task had a Result of its own: bad input, an unknown
	// image, a daemon that cannot be reached (as `nsn-run run` exits).
	ExitFailed = 125
)

type leaveRunningKey struct{}

// LeaveRunningOnCancel returns a context whose end makes Wait, Run and
// Supervise stop waiting and return its error, leaving the task running
// with its record, instead of stopping it (SIGTERM, grace, SIGKILL) as
// they do when a plain context ends. A node agent that shuts down for an
// upgrade passes it, and its next process takes the tasks up (Recover,
// then Wait). Until the next Wait nobody enforces the task's deadline and
// limits but gc, which ends a task past its deadline and grace.
func LeaveRunningOnCancel(ctx context.Context) context.Context {
	return context.WithValue(ctx, leaveRunningKey{}, true)
}

func leavesRunning(ctx context.Context) bool {
	leave, _ := ctx.Value(leaveRunningKey{}).(bool)
	return leave
}

// ExitCode is the exit status err stands for, as `nsn-run run` exits with
// it: a missing or unrunnable command's 127 or 126 (*CommandError), else
// ExitFailed.
func ExitCode(err error) int {
	var ce *CommandError
	if errors.As(err, &ce) {
		return ce.ExitCode()
	}
	return ExitFailed
}

// failedResult is the Result of a Run or Supervise of t that failed with
// err before the task had one of its own: reason failed, the exit code err
// stands for (ExitCode), and the error. Until 2026-11-30 its exit code was
// 0: an agent that read it without the error took the failure for a
// success (a node-core review).
func failedResult(t task.Task, err error) task.Result {
	return task.Result{ID: t.ID, Image: t.Image, Reason: task.ReasonFailed, ExitCode: ExitCode(err), Error: err.Error(), OutputFiles: []task.OutputFile{}}
}

// finalSampleWait bounds the last sample, taken after the exit: a daemon
// that does not answer costs the Result its final counters, not its exit.
const finalSampleWait = 2 * time.Second

// killWait bounds how long the Manager waits for a task to die after
// SIGKILL to every process in its cgroup.
const killWait = 30 * time.Second

// Files in a task's state directory.
const (
	recordFile = "task.json"
	outputDir  = "output"
)

// Config configures a Manager.
type Config struct {
	Backend Backend
	// StateDir holds a private directory per task (record, logs, output).
	StateDir string
	// SampleInterval is how often Wait samples a running task's cgroup;
	// DefaultSampleInterval if zero. It bounds how late the CPU-time limit
	// is enforced and how well peaks the kernel does not keep (pids on
	// cgroup v1) are caught.
	SampleInterval time.Duration
	// AllowedRuntimes are the containerd runtime names a task may ask for
	// (Task.Runtime); DefaultAllowedRuntimes if empty. Each runtime is its
	// own isolation boundary (a shim that runs the nvidia runtime, or one
	// without seccomp support, would run a task with less), so the
	// operator names the ones this node trusts.
	AllowedRuntimes []string
	// GPUs grants GPUs to tasks; nil refuses tasks that ask for any.
	GPUs GPUAllocator
	// UserNamespaces decides each task's host identity; UserNSPreferred
	// (the zero value) gives every task its own user namespace over a
	// host id range where the backend can.
	UserNamespaces UserNSMode
	// IDs grants host id ranges; nil means an idmap.Allocator over the
	// node-wide idmap.DefaultDir with the default span, owned by this
	// state dir, when the backend can give user namespaces at all.
	IDs IDAllocator
	// OutputFS provides each task's output directory; TmpfsOutput (a
	// size-capped tmpfs per task, which needs root) if nil.
	OutputFS OutputFS
	// ReleaseInBackground lets Run return once the task has exited, its
	// logs are complete and its output collected, and release the task
	// (container, snapshot, output mount, state) in the background,
	// where the backend can complete logs first (LogFinisher). A
	// release in flight holds the task busy, so gc leaves it alone,
	// and a crash leaves it to gc; Cleanup and Spawn of its id, Drain
	// and Close wait for it. Off, Run returns with nothing left.
	ReleaseInBackground bool
}

// UserNSMode is the operator's policy on per-task user namespaces.
type UserNSMode string

// User namespace modes.
const (
	// UserNSPreferred: a task gets its own user namespace and host id
	// range where the backend can give one (containerd); elsewhere
	// (dockerd) it runs with shared host ids, and its Result says so.
	UserNSPreferred UserNSMode = ""
	// UserNSRequired: a task that cannot have its own is refused.
	UserNSRequired UserNSMode = "required"
	// UserNSOff: no task gets one; tasks share host ids.
	UserNSOff UserNSMode = "off"
)

// ParseUserNSMode reads the CLI's spelling of a mode.
func ParseUserNSMode(s string) (UserNSMode, error) {
	switch s {
	case "", "preferred":
		return UserNSPreferred, nil
	case "required":
		return UserNSRequired, nil
	case "off":
		return UserNSOff, nil
	}
	return "", fmt.Errorf("%w: user namespaces %q: want preferred, required or off", errdefs.ErrInvalidArgument, s)
}

// IDAllocator grants each task a host id range of its own (idmap.Allocator).
type IDAllocator interface {
	Allocate(id string) (task.IDRange, error)
	// Preview returns the range Allocate would grant now, taking nothing.
	Preview(id string) (task.IDRange, error)
	Release(id string) error
	ReleaseExcept(keep map[string]bool) error
}

// abandonedReclaimer is an optional IDAllocator feature (idmap's): gc
// frees the ranges of removed state dirs that no process holds.
type abandonedReclaimer interface {
	ReclaimAbandoned(proc string, minAge time.Duration) ([]string, error)
}

// hostProc is the host's /proc, where gc looks for processes in a range.
const hostProc = "/proc"

// UserNamespacer is an optional Backend feature: running a task in its own
// user namespace over the host id range in StartRequest.UserNS. Identity
// says at which level (task.IdentityUserNS or task.IdentityIDMapped).
type UserNamespacer interface {
	Identity(ctx context.Context) (string, error)
}

// DefaultAllowedRuntimes are the runtimes a Manager allows unless its
// Config names others: runc through containerd's v2 shim.
var DefaultAllowedRuntimes = []string{task.DefaultRuntime}

// DefaultSampleInterval is the Manager's default cgroup sampling interval.
const DefaultSampleInterval = 100 * time.Millisecond

// Manager runs tasks on a Backend. It is safe for concurrent use; it keeps
// no state in memory that a restarted manager could not rebuild from the
// state directory and the backend.
type Manager struct {
	backend         Backend
	stateDir        string
	sampleInterval  time.Duration
	allowedRuntimes []string
	gpus            GPUAllocator
	userns          UserNSMode
	ids             IDAllocator
	output          OutputFS
	releases        *backgroundReleases
	// scope is the backend's (Scoper); "" if it names none.
	scope string
	// owner is the state dir and its id, which label the task's objects.
	owner Owner
}

// New returns a Manager, creating its state directory (mode 0700: task
// output and logs are nobody else's business).
func New(cfg Config) (*Manager, error) {
	if cfg.Backend == nil {
		return nil, fmt.Errorf("%w: no backend", errdefs.ErrInvalidArgument)
	}
	abs, err := filepath.Abs(cfg.StateDir)
	if err != nil || cfg.StateDir == "" {
		return nil, fmt.Errorf("%w: state dir %q", errdefs.ErrInvalidArgument, cfg.StateDir)
	}
	// As for an output dir: another user's link on the way would choose
	// where nsn-run, as root, keeps and removes state (a seventeenth
	// review's --state-dir went through one).
	if _, _, err := resolveTrustedParts("state dir", abs); err != nil {
		return nil, err
	}
	if err := refuseNestedStateDir(resolveExisting(abs)); err != nil {
		return nil, err
	}
	if err := checkAdoptable(resolveExisting(abs)); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(abs, "tasks"), 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	if err := checkOwnEntry(filepath.Join(resolveExisting(abs), "tasks")); err != nil {
		return nil, err // a link planted since checkAdoptable looked
	}
	// One state dir, one name: the id ranges record their owner by it, and
	// the audit refuses output dirs reached through a symlink.
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := refuseNestedStateDir(abs); err != nil {
		return nil, err
	}
	if err := os.Chmod(abs, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if cfg.SampleInterval < 0 {
		return nil, fmt.Errorf("%w: sample interval %s", errdefs.ErrInvalidArgument, cfg.SampleInterval)
	}
	if cfg.SampleInterval == 0 {
		cfg.SampleInterval = DefaultSampleInterval
	}
	allowed := slices.Clone(cfg.AllowedRuntimes)
	if len(allowed) == 0 {
		allowed = slices.Clone(DefaultAllowedRuntimes)
	}
	for _, r := range allowed {
		if err := task.ValidateRuntime(r); err != nil {
			return nil, fmt.Errorf("allowed runtimes: %w", err)
		}
	}
	if _, err := ParseUserNSMode(string(cfg.UserNamespaces)); err != nil {
		return nil, err
	}
	ids := cfg.IDs
	_, namespacer := cfg.Backend.(UserNamespacer)
	if ids == nil && namespacer && cfg.UserNamespaces != UserNSOff {
		var namespace, containerd string
		if n, ok := cfg.Backend.(interface{ Namespace() string }); ok {
			namespace = n.Namespace()
		}
		if u, ok := cfg.Backend.(interface{ ServerUUID() string }); ok {
			containerd = u.ServerUUID()
		}
		a, err := idmap.New(idmap.Config{Owner: abs, Namespace: namespace, Containerd: containerd})
		if err != nil {
			return nil, err
		}
		ids = a
	}
	output := cfg.OutputFS
	if output == nil {
		output = TmpfsOutput{}
	}
	stateDirID, err := loadStateDirID(abs)
	if err != nil {
		return nil, err
	}
	m := &Manager{owner: Owner{StateDir: abs, ID: stateDirID}, backend: cfg.Backend, stateDir: abs, sampleInterval: cfg.SampleInterval, allowedRuntimes: allowed,
		gpus: cfg.GPUs, userns: cfg.UserNamespaces, ids: ids, output: output,
		releases: newBackgroundReleases(cfg.ReleaseInBackground)}
	if s, ok := cfg.Backend.(Scoper); ok {
		m.scope = s.Scope()
	}
	return m, nil
}

// AllowedRuntimes are the runtimes this Manager lets a task ask for.
func (m *Manager) AllowedRuntimes() []string { return slices.Clone(m.allowedRuntimes) }

// BackendName is the name of the backend tasks run on ("containerd",
// "docker").
func (m *Manager) BackendName() string { return m.backend.Name() }

// Close waits for the releases in flight (Config.ReleaseInBackground),
// then releases the Manager's connection to its backend (when the backend
// holds one); running tasks keep running, and a later Manager over the same
// state dir picks them up.
func (m *Manager) Close() error {
	err := m.Drain(context.Background())
	if c, ok := m.backend.(io.Closer); ok {
		err = errors.Join(err, c.Close())
	}
	return err
}

// resolveExisting resolves the symlinks of the longest part of path that
// exists, and keeps the rest as it is.
func resolveExisting(path string) string {
	rest := ""
	for p := path; ; p = filepath.Dir(p) {
		if resolved, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(resolved, rest)
		}
		if p == filepath.Dir(p) {
			return path
		}
		rest = filepath.Join(filepath.Base(p), rest)
	}
}

// refuseNestedStateDir refuses a state dir inside another: the outer one's
// gc takes what lies in its tasks directory for its own tasks' state (an
// outside review's state dir STATE/tasks/y lost its running task's record
// and logs to a gc of STATE). Only a state dir this process's user made
// counts (ownStateDir): another user could otherwise lock every state dir
// under a world-writable /tmp out by planting /tmp/id and /tmp/tasks (a
// sixteenth review did it under a 1777 directory).
func refuseNestedStateDir(dir string) error {
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		if ownStateDir(d) {
			return fmt.Errorf("%w: state dir %s lies inside the state dir %s", errdefs.ErrInvalidArgument, dir, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// stateDirIDFile, in the state dir, holds its id (Owner.ID).
const stateDirIDFile = "id"

// loadStateDirID returns the id kept in state dir dir, making one (16
// random bytes, hex) on its first use. The file also names the directory's
// inode: a copy of a state dir (cp -a of /var/lib/nsn-run, a restored
// backup, an image with one in it) would otherwise be the same owner as
// the original, and its gc --force killed the original's tasks (an outside
// review). A state dir whose records carry an id, or that holds another
// state dir, gets none made: it has lost its id, or is not a state dir.
func loadStateDirID(dir string) (string, error) {
	path := filepath.Join(dir, stateDirIDFile)
	info, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("state dir: %w", err)
	}
	ino := info.Sys().(*syscall.Stat_t).Ino
	for range 2 {
		id, madeFor, err := readStateDirID(path)
		if err == nil {
			if madeFor != 0 && madeFor != ino {
				return "", fmt.Errorf("%w: state dir %s: its id file was made for another directory (inode %d, this one is %d): a copy of a state dir is not that state dir; remove %s to make it one of its own (the tasks its records name stay the original's)",
					errdefs.ErrFailedPrecondition, dir, madeFor, ino, path)
			}
			return id, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		if err := checkFreshStateDir(dir); err != nil {
			return "", err
		}
		var raw [16]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return "", fmt.Errorf("state dir id: %w", err)
		}
		// Written whole, then linked into place: a reader never sees
		// it half written, and of two first uses one link wins.
		tmp, err := os.CreateTemp(dir, ".id-")
		if err != nil {
			return "", fmt.Errorf("state dir id: %w", err)
		}
		id = hex.EncodeToString(raw[:])
		_, err = fmt.Fprintf(tmp, "%s %d\n", id, ino)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Link(tmp.Name(), path)
		}
		_ = os.Remove(tmp.Name())
		if errors.Is(err, fs.ErrExist) {
			continue // another process made it first: read its
		}
		if err != nil {
			return "", fmt.Errorf("state dir id: %w", err)
		}
		return id, nil
	}
	return "", fmt.Errorf("state dir id %s: unreadable after it was made", path)
}

// readStateDirID reads a state dir's id file: "ID INODE" (or "ID", as
// the first ones were written). It opens only a regular file, without
// following a link or blocking on a fifo, and reads at most 128 bytes.
// StateDirID reads the id of state dir dir (Owner.ID) without making
// one: "" where it has none, or where its id file was made for another
// directory (a copy of a state dir is not that state dir).
func StateDirID(dir string) string {
	info, err := os.Stat(dir)
	if err != nil {
		return ""
	}
	id, madeFor, err := readStateDirID(filepath.Join(dir, stateDirIDFile))
	if err != nil || (madeFor != 0 && madeFor != info.Sys().(*syscall.Stat_t).Ino) {
		return ""
	}
	return id
}

func readStateDirID(path string) (id string, inode uint64, err error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return "", 0, fmt.Errorf("%w: state dir id %s: a symlink", errdefs.ErrFailedPrecondition, path)
		}
		if errors.Is(err, fs.ErrNotExist) {
			return "", 0, err
		}
		return "", 0, fmt.Errorf("state dir id: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return "", 0, fmt.Errorf("%w: state dir id %s: not a regular file", errdefs.ErrFailedPrecondition, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 128))
	if err != nil {
		return "", 0, fmt.Errorf("state dir id: %w", err)
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 || len(fields) > 2 || len(fields[0]) != 32 || strings.Trim(fields[0], "0123456789abcdef") != "" {
		return "", 0, fmt.Errorf("%w: state dir id %s: %q is not 32 hex digits and an inode", errdefs.ErrFailedPrecondition, path, b)
	}
	if len(fields) == 2 {
		if inode, err = strconv.ParseUint(fields[1], 10, 64); err != nil {
			return "", 0, fmt.Errorf("%w: state dir id %s: inode %q", errdefs.ErrFailedPrecondition, path, fields[1])
		}
	}
	return fields[0], inode, nil
}

// checkFreshStateDir refuses to make an id for a state dir that has lost
// its own (its records name the id their tasks were started with: without
// it they would be another's, out of reach) or that holds a state dir in
// its tasks directory (its gc would take that for a task's state: an
// outside review's outer state dir deleted an inner one's records and
// logs, and stranded its running task).
func checkFreshStateDir(dir string) error {
	entries, err := os.ReadDir(filepath.Join(dir, "tasks"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state dir: %w", err)
	}
	for _, e := range entries {
		taskDir := filepath.Join(dir, "tasks", e.Name())
		if isStateDir(taskDir) {
			return fmt.Errorf("%w: %s holds the state dir %s: a state dir cannot hold another", errdefs.ErrInvalidArgument, dir, taskDir)
		}
		b, err := os.ReadFile(filepath.Join(taskDir, recordFile))
		if err != nil {
			continue
		}
		var rec record
		if json.Unmarshal(b, &rec) == nil && rec.StateDirID != "" {
			return fmt.Errorf("%w: state dir %s has lost its id file, and its tasks were started with id %s: write that to %s to manage them again",
				errdefs.ErrFailedPrecondition, dir, rec.StateDirID, filepath.Join(dir, stateDirIDFile))
		}
	}
	return nil
}

// stateDirEntries are the names New and the Manager create in a state
// dir itself (besides the id file's temporary .id-*), and gpus, where
// GPU grants were kept before they became node-wide (and where a
// gpu.Options.AllocDir may still put them).
var stateDirEntries = []string{"tasks", stateDirIDFile, sweepLock, busyDir, spawningDir, waitingDir, "gpus"}

// checkAdoptable refuses to make dir a state dir unless it is new, empty,
// or a state dir already (or one cut short, or one that lost its id file:
// nothing in it but what a state dir holds), and its owner is this
// process's user. New makes the directory 0700 and fills it, and gc
// removes what lies in its tasks directory: a sixteenth review's `nsn-run
// --state-dir / ps` made the host's / mode 0700 (every non-root lookup
// on the host then failed) and wrote /id and /tasks, after which every
// other state dir on the host lay "inside the state dir /".
func checkAdoptable(dir string) error {
	info, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if !info.IsDir() {
		return fmt.Errorf("%w: state dir %s is not a directory", errdefs.ErrInvalidArgument, dir)
	}
	if uid := info.Sys().(*syscall.Stat_t).Uid; uid != uint32(os.Geteuid()) {
		return fmt.Errorf("%w: state dir %s belongs to uid %d, not to this process's user (%d): whoever owns it could change the tasks' records and logs",
			errdefs.ErrInvalidArgument, dir, uid, os.Geteuid())
	}
	// Others could put entries in it between this check and their use
	// (a seventeenth review planted tasks -> another directory in a 1777
	// one, and gc removed that directory's contents): not made private
	// behind their backs either.
	if info.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%w: state dir %s is writable by others (mode %04o): give a new directory, or one only its owner can write",
			errdefs.ErrInvalidArgument, dir, info.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	for _, e := range entries {
		if !slices.Contains(stateDirEntries, e.Name()) && !strings.HasPrefix(e.Name(), ".id-") {
			return fmt.Errorf("%w: state dir %s is a directory with other content (%s), not a state dir: give a new or empty directory",
				errdefs.ErrInvalidArgument, dir, strconv.Quote(e.Name()))
		}
		if err := checkOwnEntry(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// checkOwnEntry refuses an entry of a state dir that is not nsn-run's
// own: another user's, writable by others, or of the wrong kind (a link
// in place of tasks had gc remove what the link named).
func checkOwnEntry(path string) error {
	info, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	st := info.Sys().(*syscall.Stat_t)
	name := filepath.Base(path)
	file := name == stateDirIDFile || name == sweepLock || strings.HasPrefix(name, ".id-")
	switch {
	case file && !info.Mode().IsRegular(), !file && !info.IsDir():
		return fmt.Errorf("%w: state dir entry %s is a %s: not a state dir nsn-run made", errdefs.ErrInvalidArgument, path, fileKind(info.Mode()))
	case st.Uid != uint32(os.Geteuid()):
		return fmt.Errorf("%w: state dir entry %s belongs to uid %d, not to this process's user: not a state dir nsn-run made", errdefs.ErrInvalidArgument, path, st.Uid)
	case info.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%w: state dir entry %s is writable by others (mode %04o): not a state dir nsn-run made", errdefs.ErrInvalidArgument, path, info.Mode().Perm())
	}
	return nil
}

// fileKind names a file's type for an error.
func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	default:
		return "special file"
	}
}

// ownStateDir reports whether dir is a state dir (isStateDir) that this
// process's user made: its own, and writable by nobody else.
func ownStateDir(dir string) bool {
	info, err := os.Stat(dir)
	if err != nil || !isStateDir(dir) {
		return false
	}
	st := info.Sys().(*syscall.Stat_t)
	return st.Uid == uint32(os.Geteuid()) && info.Mode().Perm()&0o022 == 0
}

// isStateDir reports whether dir looks like a state dir: a tasks
// directory, and its id file or sweep lock.
func isStateDir(dir string) bool {
	_, errTasks := os.Stat(filepath.Join(dir, "tasks"))
	_, errLock := os.Stat(filepath.Join(dir, sweepLock))
	_, errID := os.Lstat(filepath.Join(dir, stateDirIDFile))
	return errTasks == nil && (errLock == nil || errID == nil)
}

// StateDir is the Manager's state directory (absolute): tasks/ID under it
// is each task's private directory.
func (m *Manager) StateDir() string { return m.stateDir }

// Owner is the Manager's state dir and its id: what labels its tasks'
// objects on the backend (Labels).
func (m *Manager) Owner() Owner { return m.owner }

// taskDir is the task's private host directory.
func (m *Manager) taskDir(id string) string { return filepath.Join(m.stateDir, "tasks", id) }

// logPaths are the files the task's stdout and stderr are captured in.
func (m *Manager) logPaths(id string) (stdout, stderr string) {
	dir := m.taskDir(id)
	return filepath.Join(dir, logs.StdoutFile), filepath.Join(dir, logs.StderrFile)
}

// record is what the Manager keeps of a task on disk.
type record struct {
	Task task.Task `json:"task"`
	// Grant is what the Manager allocated the task node-wide, written
	// before the backend starts it: Cleanup releases it, and gc releases
	// what no record names.
	Grant  Grant        `json:"grant"`
	Handle Handle       `json:"handle"`
	Result *task.Result `json:"result,omitempty"`
	// Scope is the scope of the backend the task was started on
	// (Scoper); empty in a record written before scopes were recorded,
	// which every Manager takes as its own.
	Scope string `json:"scope,omitempty"`
	// StateDirID is the id of the state dir that started the task
	// (Owner.ID): a state dir that has lost its id file is told from a
	// new one by its records.
	StateDirID string `json:"state_dir_id,omitempty"`
	// OutputKey names the directory in the task's output tmpfs that its
	// container binds at /output (task.NewOutputKey); empty in a record
	// written before keys, whose container binds the tmpfs itself.
	OutputKey string `json:"output_key,omitempty"`
	// OutputSealError is why the task's output could not be sealed when
	// it ended (EBUSY: a process outside the task held a file of it open
	// for writing, a process that could write into it after the end);
	// such an output is never handed over as the task's.
	OutputSealError string `json:"output_seal_error,omitempty"`
}

// outputOf is the host directory task id's container binds at /output:
// STATE/tasks/ID/output/KEY, or the tmpfs itself for a record without a
// key.
func (m *Manager) outputOf(id string, rec record) string {
	return filepath.Join(m.taskDir(id), outputDir, rec.OutputKey)
}

// identity is the Result's copy of the grant's identity; nil for a record
// written before identities were recorded.
func (g Grant) identity() *task.Identity {
	if g.Identity.Level == "" {
		return nil
	}
	id := g.Identity
	return &id
}

// Grant is what a task holds node-wide and exclusively.
type Grant struct {
	// GPUs are the CDI device names of the task's GPUs.
	GPUs []string `json:"gpus,omitempty"`
	// Identity is the task's host identity: its level, and the host id
	// range of its user namespace when it has one.
	Identity task.Identity `json:"identity"`
}

func (m *Manager) writeRecord(rec record) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	dir := m.taskDir(rec.Task.ID)
	tmp, err := os.CreateTemp(dir, recordFile+".*.tmp")
	if err != nil {
		return fmt.Errorf("write task record: %w", err)
	}
	_, werr := tmp.Write(b)
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), filepath.Join(dir, recordFile))
	}
	if werr != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write task record: %w", werr)
	}
	return nil
}

// checkScope refuses task id, recorded in scope, where that is another
// backend scope's than this Manager's: the task runs there, and its state
// dir, id range and GPUs are that scope's to release.
func (m *Manager) checkScope(id, scope string) error {
	if scope == "" || m.scope == "" || scope == m.scope {
		return nil
	}
	return fmt.Errorf("%w: task %s belongs to %s, not this nsn-run's %s (they share the state dir %s): manage it from there",
		errdefs.ErrFailedPrecondition, id, scope, m.scope, m.stateDir)
}

// foreign reports whether task id's record names another backend scope
// than this Manager's (checkScope).
func (m *Manager) foreign(id string) bool {
	_, err := m.readRecord(id)
	return errdefs.IsFailedPrecondition(err)
}

func (m *Manager) readRecord(id string) (record, error) {
	if err := task.ValidateID(id); err != nil {
		return record{}, err
	}
	b, err := os.ReadFile(filepath.Join(m.taskDir(id), recordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return record{}, fmt.Errorf("task %s: %w", id, errdefs.ErrNotFound)
	}
	if err != nil {
		return record{}, fmt.Errorf("read task record: %w", err)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return record{}, fmt.Errorf("task record of %s: %w", id, err)
	}
	if err := m.checkScope(id, rec.Scope); err != nil {
		return record{}, err
	}
	if rec.Result != nil && rec.Result.OutputFiles == nil {
		rec.Result.OutputFiles = []task.OutputFile{} // recorded before it was [] (null)
	}
	return rec, nil
}

// Spawn validates t, creates its state directory and starts it on the
// backend. Bad input, a duplicate id, a missing image or a failing daemon
// leave nothing behind, nor does ctx ending during the start where the
// daemon answers what was in flight within a second
// (StartBound.Answered); what a daemon that does not answer in time makes of the start
// afterwards, CleanupOrphans (gc) removes once it answers (the containerd
// backend's objects also carry a lease that expires). t's zero limits
// take the defaults.
func (m *Manager) Spawn(ctx context.Context, t task.Task) (Handle, error) {
	t, err := m.admit(t)
	if err != nil {
		return Handle{}, err
	}
	// The id's last task may still be on its way out.
	if err := m.releases.await(ctx, t.ID); err != nil {
		return Handle{}, err
	}
	// gc and CleanupOrphans, in this process or another, leave a spawn in
	// flight alone: until it is done, what it made looks orphaned.
	release, err := m.hold(ctx, t.ID)
	if err != nil {
		return Handle{}, err
	}
	defer release()
	// Marked spawning too: even a forced sweep leaves it alone.
	releaseSpawn, err := m.holdSpawn(ctx, t.ID)
	if err != nil {
		return Handle{}, err
	}
	defer releaseSpawn()
	dir := m.taskDir(t.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			if _, rerr := m.readRecord(t.ID); errdefs.IsFailedPrecondition(rerr) {
				return Handle{}, fmt.Errorf("task %s already exists: %w: %w", t.ID, errdefs.ErrAlreadyExists, rerr)
			}
			return Handle{}, &TaskExistsError{ID: t.ID}
		}
		return Handle{}, fmt.Errorf("create task dir: %w", err)
	}
	h, err := m.start(ctx, t, dir)
	if err != nil {
		_ = m.removeState(t.ID)
		return Handle{}, err
	}
	return h, nil
}

// admit completes t with the defaults and refuses what this node does not
// run: invalid input, a runtime the operator does not allow.
func (m *Manager) admit(t task.Task) (task.Task, error) {
	t = t.WithDefaults()
	if err := t.Validate(); err != nil {
		return t, err
	}
	if !slices.Contains(m.allowedRuntimes, t.Runtime) {
		return t, fmt.Errorf("%w: runtime %q is not allowed on this node (allowed: %s)",
			errdefs.ErrInvalidArgument, t.Runtime, strings.Join(m.allowedRuntimes, ", "))
	}
	if t.Limits.GPUMemoryBytes > 0 {
		if s, ok := m.backend.(GPUUsageSampling); !ok || !s.SamplesGPUUsage() {
			return t, fmt.Errorf("%w: task %s: a GPU memory limit cannot be enforced here: the %s backend samples no GPU usage (no GPUs, NVML did not load, or no sampler was wired in)",
				errdefs.ErrFailedPrecondition, t.ID, m.backend.Name())
		}
	}
	return t, nil
}

// Preview returns what Start would send the backend for t, without
// creating or allocating anything: the OCI runtime spec (containerd) or
// the Engine create request (docker), as JSON, through the same
// generation and audit as Spawn. The GPUs and host id range in it are
// those the node would grant t now; a task spawned later may get others.
func (m *Manager) Preview(ctx context.Context, t task.Task) ([]byte, error) {
	t, err := m.admit(t)
	if err != nil {
		return nil, err
	}
	dir := m.taskDir(t.ID)
	// A task of the id exists: its spec is its container's, with its own
	// host id range; a preview would show another (a sixteenth review:
	// `spec --id` of a live task answered as if the id were free).
	if _, err := os.Lstat(dir); err == nil {
		return nil, fmt.Errorf("%w: task %s exists: its spec is its container's, not a new one's", errdefs.ErrAlreadyExists, t.ID)
	}
	if _, err := m.backend.Inspect(ctx, t.ID); err == nil {
		return nil, fmt.Errorf("%w: a task %s exists on the backend: its spec is its container's, not a new one's", errdefs.ErrAlreadyExists, t.ID)
	}
	req := StartRequest{Task: t, StateDir: dir, OutputDir: filepath.Join(dir, outputDir, task.PreviewOutputKey), Owner: m.owner}
	g, err := m.grant(ctx, t, false)
	if err != nil {
		return nil, err
	}
	req.GPUDevices, req.UserNS = g.GPUs, g.Identity.Range
	return m.backend.Preview(ctx, req)
}

func (m *Manager) start(ctx context.Context, t task.Task, dir string) (Handle, error) {
	defer ObservePhase(ctx, "spawn", time.Now())
	out := filepath.Join(dir, outputDir)
	if err := os.Mkdir(out, 0o700); err != nil {
		return Handle{}, fmt.Errorf("create output dir: %w", err)
	}
	if err := m.output.Prepare(out, t.Limits); err != nil {
		return Handle{}, err
	}
	// The container binds a directory of the tmpfs named by a key of the
	// task's alone (task.NewOutputKey), not the tmpfs: a spec audited for
	// this id before the task existed names no directory that exists.
	key := task.NewOutputKey()
	taskOut := filepath.Join(out, key)
	if err := os.Mkdir(taskOut, 0o700); err != nil {
		return Handle{}, fmt.Errorf("create output dir: %w", err)
	}
	grant, err := m.allocate(ctx, t)
	if err != nil {
		m.release(t.ID)
		return Handle{}, err
	}
	started := false
	defer func() {
		if !started {
			m.release(t.ID)
		}
	}()
	if err := m.writeRecord(record{Task: t, Grant: grant, Scope: m.scope, StateDirID: m.owner.ID, OutputKey: key}); err != nil {
		return Handle{}, err
	}
	h, err := m.backend.Start(ctx, StartRequest{Task: t, StateDir: dir, OutputDir: taskOut, GPUDevices: grant.GPUs, UserNS: grant.Identity.Range, Owner: m.owner})
	if err != nil {
		return Handle{}, err
	}
	if h.Identity != "" && grant.Identity.Level != task.IdentityShared {
		grant.Identity.Level = h.Identity
	}
	if err := m.writeRecord(record{Task: t, Grant: grant, Handle: h, Scope: m.scope, StateDirID: m.owner.ID, OutputKey: key}); err != nil {
		_ = m.backend.Destroy(context.WithoutCancel(ctx), t.ID)
		return Handle{}, err
	}
	started = true
	return h, nil
}

// allocate grants t what it holds node-wide, before the backend is asked
// to start it: its host identity (a user namespace over a host id range of
// its own, where the backend can and the policy wants one) and its GPUs.
// On error the caller releases whatever was taken.
func (m *Manager) allocate(ctx context.Context, t task.Task) (Grant, error) {
	return m.grant(ctx, t, true)
}

// grant works out what t would hold node-wide and, with take, takes it.
func (m *Manager) grant(ctx context.Context, t task.Task, take bool) (Grant, error) {
	identity, err := m.Identity(ctx)
	if err != nil {
		return Grant{}, err
	}
	g := Grant{Identity: task.Identity{Level: identity}}
	if identity != task.IdentityShared {
		allocate := m.ids.Allocate
		if !take {
			allocate = m.ids.Preview
		}
		r, err := allocate(t.ID)
		if err != nil {
			return Grant{}, fmt.Errorf("allocate a host id range for task %s: %w", t.ID, err)
		}
		g.Identity.Range = &r
	}
	req, err := t.GPURequest()
	if err != nil || req.Empty() {
		return g, err
	}
	if m.gpus == nil {
		return Grant{}, fmt.Errorf("%w: task asks for GPUs %q but this node has no GPU allocator (CDI specs)", errdefs.ErrFailedPrecondition, t.GPUs)
	}
	allocate := m.gpus.Allocate
	if !take {
		allocate = m.gpus.Preview
	}
	if g.GPUs, err = allocate(t.ID, req); err != nil {
		return Grant{}, err
	}
	return g, nil
}

// Identity is the level of host identity tasks get from this Manager (a
// task.Identity* level): what the backend can give, within the operator's
// policy. With user namespaces required and a backend that cannot give one
// it is an error.
func (m *Manager) Identity(ctx context.Context) (string, error) {
	if m.userns == UserNSOff {
		return task.IdentityShared, nil
	}
	level := task.IdentityShared
	if u, ok := m.backend.(UserNamespacer); ok {
		l, err := u.Identity(ctx)
		if err != nil {
			return "", err
		}
		level = l
	}
	if level == task.IdentityShared && m.userns == UserNSRequired {
		return "", fmt.Errorf("%w: the %s backend cannot give a task its own user namespace and host id range, and this node requires one (user namespaces: required)",
			errdefs.ErrFailedPrecondition, m.backend.Name())
	}
	return level, nil
}

// release frees what task id was granted. Idempotent.
// releaseGPUs frees the GPUs granted to task id. Idempotent.
func (m *Manager) releaseGPUs(id string) error {
	if m.gpus != nil {
		if err := m.gpus.Release(id); err != nil {
			return fmt.Errorf("release GPUs of task %s: %w", id, err)
		}
	}
	return nil
}

func (m *Manager) release(id string) error {
	if err := m.releaseGPUs(id); err != nil {
		return err
	}
	if m.ids != nil {
		if err := m.ids.Release(id); err != nil {
			return fmt.Errorf("release host id range of task %s: %w", id, err)
		}
	}
	return nil
}

// Wait waits for the task to end and returns its Result (without stdout,
// stderr and output files: CollectOutput adds those). While the task runs,
// its cgroup is sampled every SampleInterval for the Result's peaks and for
// the CPU-time limit. At the task's deadline it sends SIGTERM, and after the
// grace period SIGKILL to every process in its cgroup (reason timed_out,
// exit 124). Over its CPU-time limit every process gets SIGKILL at once
// (reason cpu_time_exceeded, exit 124); over its GPU memory limit, likewise
// (reason gpu_memory_exceeded, exit 137). If ctx ends first the task is
// stopped as at the deadline (reason killed). A task the kernel's OOM killer
// ended is reported as oom_killed, exit 137: known from the backend's OOM
// event or the cgroup's OOM counter together with a SIGKILL exit, never from
// the exit code alone. Once the task has exited its container is released,
// which completes its logs; the Result is recorded, so a second Wait
// returns it again. The Result has no logs and lists no output files:
// CollectOutput adds them (WaitAndCollect does both, as nsn-run wait).
func (m *Manager) Wait(ctx context.Context, id string) (task.Result, error) {
	res, _, err := m.wait(ctx, id, false)
	return res, err
}

// WaitAndCollect is Wait then CollectOutput, as `nsn-run wait
// --output-dir` does: the Result with its logs and output files, copied to
// dest unless dest is empty. Before the wait, which may be long, dest is
// checked (CollectOutput's check: a new or empty directory, outside the
// state dir) and taken, as Run takes its own: made, and refused to a
// second run or wait meanwhile. The task is held from before the wait
// until its output is collected, so a gc between the two cannot take its
// logs and output, as it can between a Wait and a CollectOutput of the
// caller's. Once the task has a Result, its output is collected even if
// ctx ends meanwhile (an interrupted wait that stopped the task), as Run
// collects.
func (m *Manager) WaitAndCollect(ctx context.Context, id, dest string) (task.Result, error) {
	if err := m.checkOutputDest(dest); err != nil {
		return task.Result{}, err
	}
	// Another scope's task is refused, and a task that does not exist
	// found, before anything is held or dest is made.
	if _, err := m.readRecord(id); err != nil {
		return task.Result{}, err
	}
	var d *outputDest
	if dest != "" {
		var err error
		if d, err = takeOutputDest(dest); err != nil {
			return task.Result{}, err
		}
		defer d.release()
	}
	release, err := m.hold(ctx, id)
	if err != nil {
		return task.Result{}, err
	}
	defer release()
	res, err := m.Wait(ctx, id)
	if err != nil {
		return res, err
	}
	return res, m.collectOutput(context.WithoutCancel(ctx), id, d, &res)
}

// wait is Wait; with finishLogs, a task whose backend can complete its
// logs without a release (LogFinisher) is left in place, and released
// reports whether it was released.
func (m *Manager) wait(ctx context.Context, id string, finishLogs bool) (res task.Result, released bool, err error) {
	if _, err := m.readRecord(id); errdefs.IsFailedPrecondition(err) {
		return task.Result{}, false, err // another scope's task: refused before waiting for a turn
	}
	release, err := m.hold(ctx, id)
	if err != nil {
		return task.Result{}, false, err
	}
	defer release()
	// One waiter at a time, in any process (a supervisor and `nsn-run
	// wait`): the first enforces the limits and records the Result, the
	// next reads it.
	unlockWaiter, err := m.lockWaiter(ctx, id)
	if err != nil {
		return task.Result{}, false, err
	}
	defer unlockWaiter()
	rec, err := m.readRecord(id)
	if err != nil {
		return task.Result{}, false, err
	}
	if rec.Result != nil {
		return *rec.Result, false, nil
	}
	if rec.Handle.ID == "" {
		st, err := m.backend.Inspect(ctx, id)
		if err != nil {
			return task.Result{}, false, err
		}
		if err := m.adoptHandle(&rec, st); err != nil {
			return task.Result{}, false, err
		}
	}
	// output_files is [] until CollectOutput fills it, never null: the
	// schema's contract, and the recorded Result is what inspect prints.
	res = task.Result{ID: id, Image: rec.Handle.Image, StartedAt: rec.Handle.StartedAt, Reason: task.ReasonExited, Identity: rec.Grant.identity(), OutputFiles: []task.OutputFile{}}
	limits := rec.Task.Limits

	// The backend wait runs on a context of its own: when the caller's
	// context ends, the task still has to be stopped and waited for.
	waitCtx, cancelWait := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWait()
	exited := make(chan waitResult, 1)
	go func() {
		st, err := m.backend.Wait(waitCtx, id)
		exited <- waitResult{status: st, err: err}
	}()

	deadline := time.NewTimer(time.Until(rec.Handle.StartedAt.Add(limits.Timeout)))
	defer deadline.Stop()
	// Samples come from a goroutine of their own: a backend slow to
	// answer (dockerd takes up to a second) never delays the deadline,
	// the CPU-time limit or cancellation.
	samplerCtx, stopSampling := context.WithCancel(waitCtx)
	samples := make(chan stats.Sample)
	sampling := make(chan struct{})
	go func() {
		defer close(sampling)
		m.sample(samplerCtx, id, samples)
	}()
	defer func() { stopSampling(); <-sampling }()
	var peaks stats.Peaks
	var w *waitResult
	for w == nil {
		var r waitResult
		select {
		case r = <-exited:
			// An exit at or past the deadline is the deadline's,
			// whichever of the two this select took first: a Wait that
			// starts after both (a run that killed the task at its
			// deadline through its cgroup while containerd hung, and
			// gave up; this Wait once containerd answers) finds both
			// ready, and Go picks at random: CI saw "exited 137" for
			// such a task once (TestRunWithContainerdHung).
			if res.Reason == task.ReasonExited && limits.Timeout > 0 && !r.status.ExitedAt.IsZero() &&
				!r.status.ExitedAt.Before(rec.Handle.StartedAt.Add(limits.Timeout)) {
				res.Reason = task.ReasonTimedOut
			}
		case <-deadline.C:
			res.Reason = task.ReasonTimedOut
			r = m.terminate(waitCtx, id, limits.Grace, exited)
		case <-ctx.Done():
			if leavesRunning(ctx) {
				return task.Result{}, false, fmt.Errorf("stopped waiting on task %s, left running: %w", id, ctx.Err())
			}
			res.Reason = task.ReasonKilled
			r = m.terminate(waitCtx, id, limits.Grace, exited)
		case s := <-samples:
			peaks.Add(s)
			switch {
			case limits.GPUMemoryBytes > 0 && s.GPUMemoryBytes > uint64(limits.GPUMemoryBytes):
				res.Reason = task.ReasonGPUMemoryExceeded
			case limits.CPUTime > 0 && s.CPUUsageSeconds >= limits.CPUTime.Seconds():
				res.Reason = task.ReasonCPUTimeExceeded
			default:
				continue
			}
			r = m.killAll(waitCtx, id, exited)
		}
		w = &r
	}
	// The task has ended: its output is its result, read-only from now on
	// (OutputSealer), sealed before anything else here: a host process
	// sharing a task's host ids can write into it until then (a
	// twenty-eighth review's writes landed 10 ms after the end on
	// containerd and 115 ms after it on Docker, where the seal came after
	// the last sample and the final stats). A failure is recorded: the
	// Result stands, but the output is not handed over (outputRefused).
	var sealErr error
	if s, ok := m.output.(OutputSealer); ok && (w.err == nil || errdefs.IsNotFound(w.err)) {
		if sealErr = s.Seal(filepath.Join(m.taskDir(id), outputDir)); sealErr != nil {
			log.G(ctx).WithError(sealErr).Warnf("task %s: output not sealed", id)
		}
	}
	stopSampling()
	<-sampling
	if errdefs.IsNotFound(w.err) {
		// The task is gone and its exit status with it: containerd
		// 2.x, restarted after the task exited while it was down,
		// removes it as a leaked shim's (an outside review). The Result
		// says so, and the logs and output are still collected. A task
		// stopped here (its deadline, a limit: killed through its
		// cgroup while containerd was down) keeps its reason, whose exit
		// code does not depend on the status.
		if res.Reason == task.ReasonExited || w.gone {
			// Not stopped here: it had exited before the stop
			// found it (a review: exit 7 at 6 s of a 12 s timeout,
			// containerd down until after the deadline, reported
			// timed_out).
			res.Reason = task.ReasonFailed
		}
		res.Error = fmt.Sprintf("the task's exit status was lost: %v", w.err)
		w = &waitResult{status: ExitStatus{Code: ExitLost}}
	}
	if w.err != nil {
		return task.Result{}, false, w.err
	}
	sw := NewStopwatch(ctx)
	if res.Reason == task.ReasonTimedOut && !w.status.ExitedAt.IsZero() && w.status.ExitedAt.Before(rec.Handle.StartedAt.Add(limits.Timeout)) {
		// It exited on its own before its deadline, which came while
		// the daemon could not say so (an outside review: exit 0 at 3 s,
		// containerd down until 14 s, reported timed_out 124).
		res.Reason = task.ReasonExited
	}
	res.ExitCode = w.status.Code
	res.FinishedAt = w.status.ExitedAt.UTC()
	if res.FinishedAt.IsZero() || res.FinishedAt.Before(res.StartedAt) {
		res.FinishedAt = time.Now().UTC()
	}
	res.DurationMS = res.FinishedAt.Sub(res.StartedAt).Milliseconds()

	// The cgroup outlives the process until the container is released: its
	// counters now hold the final CPU time, memory peak and OOM kills.
	finalCtx, cancelFinal := context.WithTimeout(waitCtx, finalSampleWait)
	if s, err := m.backend.Stats(finalCtx, id); err == nil {
		peaks.Add(s)
	}
	cancelFinal()
	res.Stats = peaks.Stats()
	if w.status.OOMKilled && res.Stats.OOMKills == 0 {
		// The backend saw an OOM kill in the task's cgroup that no
		// sample counted: dockerd's State.OOMKilled is set by any OOM
		// event in the container, its stats carry no count, and a child
		// killed just before the task exits is in no sample (a review
		// saw oom_kills 0 for such a child on the Docker backend).
		res.Stats.OOMKills = 1
	}
	if res.Stats.PidsPeak == 0 {
		// The task ran, so its own process was there: a task that forked
		// and exited between two samples on cgroup v1 (no pids.peak)
		// would read 0. pids_limit_hits says whether forks failed.
		res.Stats.PidsPeak = 1
	}
	sw.Lap("wait/final-stats")
	switch {
	case res.Reason == task.ReasonTimedOut || res.Reason == task.ReasonCPUTimeExceeded:
		res.ExitCode = ExitTimedOut
	case res.Reason == task.ReasonGPUMemoryExceeded:
		res.ExitCode = ExitOOMKilled
	case (w.status.OOMKilled || res.Stats.OOMKills > 0) && w.status.Code == ExitOOMKilled:
		res.Reason = task.ReasonOOMKilled
	case res.Reason == task.ReasonExited && w.status.Code == ExitOOMKilled && m.killRequested(id):
		res.Reason = task.ReasonKilled
	}
	if sealErr != nil {
		rec.OutputSealError = sealErr.Error()
	}
	// Recorded first: from here on ps, inspect and a second Wait know the
	// task ended, while its container is released (Cleanup releases it
	// again if this fails).
	rec.Result = &res
	if err := m.writeRecord(rec); err != nil {
		return task.Result{}, false, err
	}
	if f, ok := m.backend.(LogFinisher); ok && finishLogs {
		finishCtx, cancelFinish := context.WithTimeout(waitCtx, finishLogsWait)
		err := f.FinishLogs(finishCtx, id, m.taskDir(id))
		cancelFinish()
		if err == nil {
			sw.Lap("wait/finish-logs")
			return res, false, nil
		}
		// The release completes the logs, as it does without the
		// feature.
	}
	if err := m.backend.Destroy(waitCtx, id); err != nil {
		return task.Result{}, false, fmt.Errorf("release task %s: %w", id, err)
	}
	sw.Lap("wait/release")
	return res, true, nil
}

// sample sends task id's samples to out until ctx ends: the first at once
// (a task that forks to its limit and exits within one interval still
// shows its pids), then one every SampleInterval, or as fast as the backend
// answers when it is slower. A failed sample is skipped: the task may be
// exiting, and its exit decides.
func (m *Manager) sample(ctx context.Context, id string, out chan<- stats.Sample) {
	tick := time.NewTicker(m.sampleInterval)
	defer tick.Stop()
	for {
		if s, err := m.backend.Stats(ctx, id); err == nil {
			select {
			case out <- s:
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

type waitResult struct {
	status ExitStatus
	err    error
	// gone: the stop found no process of the task left (it had exited,
	// whatever its exit's arrival said): a lost status is then not the
	// stop's doing.
	gone bool
}

// terminate stops a task: SIGTERM to its main process, then after grace
// SIGKILL to every process in its cgroup, and waits for the exit.
//
// The grace starts with the first try of SIGTERM, delivered or not: a
// daemon that cannot take it is tried again until the grace ends, and then
// SIGKILL goes, which a backend can deliver without its daemon (the
// containerd backend kills the task's cgroup). Until 2026-11-30 a SIGTERM
// that could not be delivered was tried for up to stopRetryFor before the
// grace began: with containerd down, the deadline moved by two minutes.
func (m *Manager) terminate(ctx context.Context, id string, grace time.Duration, exited <-chan waitResult) waitResult {
	graceEnds := time.Now().Add(grace)
	w, done := m.signal(ctx, id, syscall.SIGTERM, false, exited, graceEnds)
	if done && !errdefs.IsUnavailable(w.err) {
		return w
	}
	gone := w.gone
	graceTimer := time.NewTimer(time.Until(graceEnds))
	defer graceTimer.Stop()
	select {
	case w := <-exited:
		w.gone = w.gone || gone
		return w
	case <-graceTimer.C:
	}
	w = m.killAll(ctx, id, exited)
	w.gone = w.gone || gone
	return w
}

// killAll sends SIGKILL to every process in the task's cgroup and waits for
// the exit.
func (m *Manager) killAll(ctx context.Context, id string, exited <-chan waitResult) waitResult {
	w, done := m.signal(ctx, id, syscall.SIGKILL, true, exited, time.Now().Add(stopRetryFor))
	if done {
		return w
	}
	gone := w.gone
	killTimer := time.NewTimer(killWait)
	defer killTimer.Stop()
	select {
	case w := <-exited:
		w.gone = gone
		return w
	case <-killTimer.C:
		return waitResult{err: fmt.Errorf("task %s: no exit seen %s after SIGKILL to all its processes (waiting on it again records its Result once the daemon answers): %w", id, killWait, errdefs.ErrUnavailable)}
	}
}

// killRequested reports whether Kill sent the task SIGKILL.
func (m *Manager) killRequested(id string) bool {
	_, err := os.Stat(filepath.Join(m.taskDir(id), killedFile))
	return err == nil
}

// stopRetryFor bounds how long signal keeps trying a daemon it cannot
// reach.
var stopRetryFor = 2 * time.Minute

// signal sends sig to the task (with all, to every process in its cgroup).
// A daemon that cannot be reached (restarting: an outside review stopped
// containerd for 0.3 s at a task's deadline, and the task ran on with
// nobody watching it) is tried again, backing off to a second, for up to
// giveUp, each failed try reported as the phase "wait/stop-retry".
// done is false once the signal is delivered (or the task is gone: w.gone
// says which); true, with the exit, when the task exited meanwhile, or
// with the error when the signal could not be sent.
func (m *Manager) signal(ctx context.Context, id string, sig syscall.Signal, all bool, exited <-chan waitResult, giveUp time.Time) (w waitResult, done bool) {
	pause := 10 * time.Millisecond
	for {
		tried := time.Now()
		// A try ends at giveUp: containerd's client spends up to its dial
		// timeout (seconds) on a daemon that is down, longer than a
		// short grace.
		tryCtx, cancelTry := context.WithDeadline(ctx, giveUp)
		err := m.backend.Stop(tryCtx, id, sig, all)
		if err != nil && tryCtx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w: no answer by the end of the grace: %w", errdefs.ErrUnavailable, err)
		}
		cancelTry()
		if err == nil || errdefs.IsNotFound(err) {
			return waitResult{gone: err != nil}, false
		}
		if !errdefs.IsUnavailable(err) || time.Now().After(giveUp) {
			return waitResult{err: fmt.Errorf("send %s to task %s: %w", unix.SignalName(sig), id, err)}, true
		}
		ObservePhase(ctx, "wait/stop-retry", tried)
		timer := time.NewTimer(min(pause, max(time.Until(giveUp), 0)))
		select {
		case w := <-exited:
			timer.Stop()
			return w, true
		case <-timer.C:
		}
		pause = min(2*pause, time.Second)
	}
}

// Stats samples the task's cgroup once.
func (m *Manager) Stats(ctx context.Context, id string) (stats.Sample, error) {
	if err := task.ValidateID(id); err != nil {
		return stats.Sample{}, err
	}
	if st, err := m.backend.Inspect(ctx, id); err == nil && m.elsewhere(st) {
		return stats.Sample{}, m.errElsewhere(st)
	}
	return m.backend.Stats(ctx, id)
}

// Monitor samples the task's cgroup every interval and sends each sample,
// with CPUPercent against the one before, until the task is gone or ctx
// ends; then it closes the channel. A slow reader delays sampling rather
// than losing samples.
func (m *Manager) Monitor(ctx context.Context, id string, interval time.Duration) (<-chan stats.Sample, error) {
	if interval <= 0 {
		return nil, fmt.Errorf("%w: monitor interval %s", errdefs.ErrInvalidArgument, interval)
	}
	first, err := m.Stats(ctx, id)
	if err != nil {
		return nil, err
	}
	out := make(chan stats.Sample, 1)
	out <- first
	go func() {
		defer close(out)
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		prev := first
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			s, err := m.backend.Stats(ctx, id)
			if err != nil {
				return // the task exited or was removed
			}
			s = s.WithCPUPercent(prev)
			prev = s
			select {
			case out <- s:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// killedFile, in a task's dir, marks a task Kill sent SIGKILL.
const killedFile = "killed"

// Kill sends sig to the task; with all, to every process in its cgroup.
// A task ended by SIGKILL from here has reason killed in its Result.
// `nsn-run kill` sets all for SIGKILL (nothing of the task may outlive
// it) and sends other signals to the task's main process only, for its
// own handler to pass on.
func (m *Manager) Kill(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	if err := task.ValidateID(id); err != nil {
		return err
	}
	// Linux's signals are 1 to 64: another number would reach runc, whose
	// error names neither the signal nor the cause (a review's `kill -s 99`).
	if sig < 1 || sig > 64 {
		return fmt.Errorf("%w: signal %d: Linux's signals are 1 to 64", errdefs.ErrInvalidArgument, int(sig))
	}
	if st, err := m.backend.Inspect(ctx, id); err == nil && m.elsewhere(st) {
		return m.errElsewhere(st)
	}
	if sig == syscall.SIGKILL {
		// Its waiter, in whatever process, reports the task killed, not
		// exited 137 as if it had killed itself.
		if err := os.WriteFile(filepath.Join(m.taskDir(id), killedFile), nil, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("kill task %s: %w", id, err)
		}
	}
	return m.backend.Stop(ctx, id, sig, all)
}

// Cleanup removes everything the task left: its container, task and
// snapshot on the backend, and its state directory. Idempotent. A release
// of the task running in the background is waited for first: when Cleanup
// returns nil, nothing of the task is left.
func (m *Manager) Cleanup(ctx context.Context, id string) error {
	if err := task.ValidateID(id); err != nil {
		return err
	}
	if _, err := m.readRecord(id); errdefs.IsFailedPrecondition(err) {
		return err // another scope's task
	}
	if st, err := m.backend.Inspect(ctx, id); err == nil && m.elsewhere(st) {
		return m.errElsewhere(st)
	}
	return m.cleanupOwn(ctx, id)
}

// cleanupOwn is Cleanup of a task this Manager knows is its own.
func (m *Manager) cleanupOwn(ctx context.Context, id string) error {
	if err := m.releases.await(ctx, id); err != nil {
		return err
	}
	return m.cleanup(ctx, id)
}

// elsewhere reports whether a task on the backend was started by the
// Manager of another state dir that shares this one's containerd
// namespace or dockerd: that Manager's to list, remove, kill and sweep.
func (m *Manager) elsewhere(st Status) bool { return m.owner.Disowns(st.Labels) }

func (m *Manager) errElsewhere(st Status) error {
	return &TaskElsewhereError{ID: st.ID, StateDir: filepath.Dir(filepath.Dir(st.Labels[LabelStateDir]))}
}

func (m *Manager) cleanup(ctx context.Context, id string) error {
	if err := m.backend.Destroy(ctx, id); err != nil {
		return err
	}
	if err := m.release(id); err != nil {
		return err
	}
	return m.removeState(id)
}

// removeState releases the task's output dir and removes its state dir.
func (m *Manager) removeState(id string) error {
	dir := m.taskDir(id)
	if err := m.output.Release(filepath.Join(dir, outputDir)); err != nil {
		return fmt.Errorf("remove state of task %s: %w", id, err)
	}
	// A log capture still finishing (another process's, on dockerd: its
	// follow ends as the container goes) may write its meta files while
	// the directory is removed: RemoveAll then fails with ENOTEMPTY, and
	// the next pass takes what it wrote.
	var err error
	for range 5 {
		if err = os.RemoveAll(dir); !errors.Is(err, syscall.ENOTEMPTY) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("remove state of task %s: %w", id, err)
	}
	return nil
}

// Remove cleans up a task; a running task only with force (it is killed).
func (m *Manager) Remove(ctx context.Context, id string, force bool) error {
	if err := task.ValidateID(id); err != nil {
		return err
	}
	if _, err := m.readRecord(id); errdefs.IsFailedPrecondition(err) {
		return err // another scope's task: its own Manager removes it
	}
	if !force && m.spawning(id) {
		return fmt.Errorf("task %s is being started: wait for it or use rm -f: %w", id, errdefs.ErrFailedPrecondition)
	}
	st, err := m.backend.Inspect(ctx, id)
	switch {
	case errdefs.IsNotFound(err):
		if _, serr := os.Stat(m.taskDir(id)); serr != nil {
			return fmt.Errorf("task %s: %w", id, errdefs.ErrNotFound)
		}
	case err != nil:
		return err
	case m.elsewhere(st):
		return m.errElsewhere(st)
	case st.State == StateRunning && !force:
		return fmt.Errorf("task %s is running: stop it first or use rm -f: %w", id, errdefs.ErrFailedPrecondition)
	}
	return m.cleanupOwn(ctx, id)
}

// List reports the tasks this manager created on the backend, and the
// finished ones whose containers are released but whose state is kept
// (a detached task its supervisor waited on), until Remove or gc.
func (m *Manager) List(ctx context.Context) ([]Status, error) {
	sts, err := m.backend.List(ctx)
	if err != nil {
		return nil, err
	}
	sts = slices.DeleteFunc(sts, m.elsewhere)
	seen := map[string]bool{}
	for i := range sts {
		seen[sts[i].ID] = true
		m.addRecorded(&sts[i])
	}
	entries, err := os.ReadDir(filepath.Join(m.stateDir, "tasks"))
	if err != nil {
		return sts, fmt.Errorf("read state dir: %w", err)
	}
	for _, e := range entries {
		if seen[e.Name()] {
			continue
		}
		if st, ok := m.finished(e.Name()); ok {
			sts = append(sts, st)
		}
	}
	return sts, nil
}

// addRecorded adds what the Manager's record knows of a task: its host
// identity, and its Result once recorded.
func (m *Manager) addRecorded(st *Status) {
	rec, err := m.readRecord(st.ID)
	if err != nil {
		return
	}
	st.Identity = rec.Grant.identity()
	st.Result = rec.Result
	if r := rec.Result; r != nil {
		// Waited on: the task has ended, whatever its container is
		// doing while it is released.
		st.State, st.ExitCode, st.ExitedAt = StateStopped, r.ExitCode, r.FinishedAt
	}
}

// finished is the status of a task whose container is gone but whose
// record holds its Result.
func (m *Manager) finished(id string) (Status, bool) {
	rec, err := m.readRecord(id)
	if err != nil || rec.Result == nil {
		return Status{}, false
	}
	r := rec.Result
	return Status{ID: id, Image: r.Image, State: StateStopped, ExitCode: r.ExitCode, CreatedAt: r.StartedAt,
		ExitedAt: r.FinishedAt, Identity: rec.Grant.identity(), Result: r}, true
}

// Inspect reports one task's state: from the backend while its container
// exists, from its recorded Result after.
func (m *Manager) Inspect(ctx context.Context, id string) (Status, error) {
	if err := task.ValidateID(id); err != nil {
		return Status{}, err
	}
	st, err := m.backend.Inspect(ctx, id)
	if errdefs.IsNotFound(err) {
		if fin, ok := m.finished(id); ok {
			return fin, nil
		}
	}
	if err == nil && m.elsewhere(st) {
		return Status{}, m.errElsewhere(st)
	}
	if err == nil {
		m.addRecorded(&st)
	}
	return st, err
}

// CleanupOrphans removes what earlier runs left behind, and ends running
// tasks past their deadline and grace that nobody waits on (a detached
// task whose supervisor was killed), recording their Result: nsn-run's
// containers that are not running, with their tasks, snapshots and output
// mounts; leases and snapshots of spawns that never got a container (and,
// on containerd, the empty cgroups of creates given up on midway); and
// state directories no container belongs to. Spawns in flight over the
// same state dir (in any process) are left alone: it is safe to run on a
// timer while tasks start. With force it also stops and removes running
// tasks and spawns in flight. It returns what it removed, one line each.
func (m *Manager) CleanupOrphans(ctx context.Context, force bool) ([]string, error) {
	removed, overdue, err := m.sweep(ctx, force)
	if err != nil {
		return removed, err
	}
	// Past their deadline with nobody waiting (a supervisor killed): end
	// them now, as their Wait would have, outside the sweep's lock.
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []error
	for _, id := range overdue {
		wg.Go(func() {
			res, err := m.Wait(ctx, id)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("end overdue task %s: %w", id, err))
				return
			}
			removed = append(removed, fmt.Sprintf("ended task %s: past its deadline with nobody waiting (%s)", id, res.Reason))
		})
	}
	wg.Wait()
	return removed, errors.Join(errs...)
}

// overdue reports whether task id's record says it is past its deadline
// and grace period (created is its container's creation time).
func (m *Manager) overdue(id string, created time.Time) bool {
	rec, err := m.readRecord(id)
	if err != nil || rec.Result != nil {
		return false
	}
	started := rec.Handle.StartedAt
	if started.IsZero() {
		// Its spawner died before recording the handle: the container's
		// creation stands in, as Recover has it.
		started = created
	}
	if started.IsZero() {
		return false
	}
	l := rec.Task.WithDefaults().Limits
	return time.Now().After(started.Add(l.Timeout + l.Grace))
}

// unrecorded reports whether st, a task on the backend labelled with this
// state dir's id, has no state here: its record is written before the
// backend is asked to start it and removed only after the task is
// destroyed, so nobody can wait on such a task, and even a plain sweep
// removes it. A start the daemon did not answer in time leaves one where
// the daemon started it later (dockerd, which nsn-run cannot bypass).
func (m *Manager) unrecorded(st Status) bool {
	if st.Labels[LabelStateDirID] != m.owner.ID || m.owner.ID == "" {
		return false
	}
	_, err := os.Lstat(m.taskDir(st.ID))
	return errors.Is(err, fs.ErrNotExist)
}

// sweep is CleanupOrphans' removal; it also returns the running tasks
// nobody holds that are past their deadline and grace.
//
// A look at what to remove is taken under the state dir's sweep lock: no
// task registers busy meanwhile (they wait for it), so the busy set read
// then holds while the lock does. The containers the first look finds
// are removed outside the lock, each claimed first (its busy mark taken
// exclusively, under the lock), so that no hold of its id gets in until it
// is gone, and a start of another task waits only for the look: with the
// removals under the lock, a start waited for all of them (a sweep of 20
// stopped tasks held every start 0.7 s). A second look then does the rest
// under the lock to its end, as a whole sweep did before: it removes
// inline only what was orphaned in between, and frees the leases,
// snapshots, state dirs and grants of what no task holds.
func (m *Manager) sweep(ctx context.Context, force bool) (removed, overdue []string, err error) {
	claimed := false
	for {
		unlock, err := m.lockStateForSweep(ctx)
		if err != nil {
			return removed, nil, fmt.Errorf("lock the state dir for a sweep: %w", err)
		}
		look, err := m.sweepLook(ctx, force)
		if err != nil {
			unlock()
			return removed, nil, err
		}
		// Forced, an orphan may be held busy (a Run in flight): it goes
		// under the lock, as before, without a claim.
		if !claimed && !force && len(look.orphans) > 0 {
			claimed = true
			orphans, claims, err := m.claimOrphans(ctx, look.orphans)
			unlock()
			if err != nil {
				for _, release := range claims {
					release()
				}
				return removed, nil, err
			}
			gone, err := m.removeClaimed(ctx, orphans, claims)
			removed = append(removed, gone...)
			if err != nil {
				return removed, nil, err
			}
			continue
		}
		more, err := m.sweepRest(ctx, look)
		unlock()
		return append(removed, more...), look.overdue, err
	}
}

// sweepLook is what a sweep found to keep and to remove: call it with the
// sweep lock held.
type sweepLook struct {
	live    map[string]bool // held, spawning, running (unforced), or another scope's
	orphans []orphan        // the containers to remove, in List's order
	overdue []string        // running, unheld, past deadline and grace
}

// orphan is a container a sweep removes, with the state it reports.
type orphan struct{ id, state string }

// sweepLook reads what the state dir's holds and the backend's list say:
// what a sweep keeps and what it removes.
func (m *Manager) sweepLook(ctx context.Context, force bool) (sweepLook, error) {
	live, err := m.busyTasks()
	if err != nil {
		return sweepLook{}, err
	}
	spawning, err := m.spawningTasks()
	if err != nil {
		return sweepLook{}, err
	}
	// Waiter locks nobody holds are only litter.
	if _, err := m.heldTasks(waitingDir); err != nil {
		return sweepLook{}, err
	}
	if force {
		// Forced: running and waited-on tasks go too, but never a spawn
		// in flight (half of it removed would leave a running task
		// without its record or id range).
		live = spawning
	}
	maps.Copy(live, spawning)
	statuses, err := m.backend.List(ctx)
	if err != nil {
		return sweepLook{}, err
	}
	look := sweepLook{live: live}
	listed := map[string]bool{}
	for _, st := range statuses {
		// Once each: a backend that lists an id twice (two dockerd
		// containers with one task label) must not have a sweep claim
		// it twice, nor remove it twice.
		if listed[st.ID] {
			continue
		}
		listed[st.ID] = true
		// An id no task can have is nothing to remove: an empty one
		// would name the state dir's tasks directory itself.
		if live[st.ID] || m.elsewhere(st) || task.ValidateID(st.ID) != nil {
			continue
		}
		if !force && (st.State == StateRunning || st.State == StatePaused) && !m.unrecorded(st) {
			// (Not busy: the check above passed over busy ones.)
			if m.overdue(st.ID, st.CreatedAt) {
				look.overdue = append(look.overdue, st.ID)
			}
			live[st.ID] = true
			continue
		}
		state := string(st.State)
		if st.State == StateRunning && m.unrecorded(st) {
			state += ", no record"
		}
		look.orphans = append(look.orphans, orphan{id: st.ID, state: state})
	}
	return look, nil
}

// claimOrphans takes each orphan's busy mark exclusively, so that a hold
// of its id waits until its removal is done and another sweep passes over
// it; call it with the sweep lock held, for an unforced look's orphans (no
// hold is registering, and none holds them). It never waits: a mark it
// cannot take at once is held after all, and that orphan is left out (an
// outside review's backend listing an id twice had the second claim wait
// on the first, with the sweep lock held, and every start with it). It
// returns the orphans claimed and their claims, in order; on an error,
// the claims it took.
func (m *Manager) claimOrphans(ctx context.Context, orphans []orphan) ([]orphan, []func(), error) {
	now, cancel := context.WithCancel(ctx)
	cancel() // a free lock is taken all the same (flock.Context)
	var claimed []orphan
	claims := make([]func(), 0, len(orphans))
	for _, o := range orphans {
		release, err := m.lockTask(now, busyDir, o.id, unix.LOCK_EX, false)
		if errors.Is(err, context.Canceled) && ctx.Err() == nil {
			continue // held
		}
		if err != nil {
			return nil, claims, err
		}
		claimed = append(claimed, o)
		claims = append(claims, release)
	}
	return claimed, claims, nil
}

// removeClaimed removes the orphans claims holds, in order, releasing
// each claim once its orphan is gone (or its removal failed); it stops at
// the first failure.
func (m *Manager) removeClaimed(ctx context.Context, orphans []orphan, claims []func()) (removed []string, err error) {
	defer func() {
		for _, release := range claims {
			release()
		}
	}()
	for i := range claims {
		o := orphans[i]
		err := m.cleanupOwn(ctx, o.id)
		claims[i]()
		claims[i] = func() {}
		if err != nil {
			return removed, err
		}
		removed = append(removed, fmt.Sprintf("task %s (%s)", o.id, o.state))
	}
	return removed, nil
}

// sweepRest is the rest of a sweep after its look, under the sweep lock to
// its end: the orphans the look found removed inline, then the leases,
// snapshots, state dirs and grants of what no task holds.
func (m *Manager) sweepRest(ctx context.Context, look sweepLook) (removed []string, err error) {
	live := look.live
	for _, o := range look.orphans {
		if err := m.cleanupOwn(ctx, o.id); err != nil {
			return removed, err
		}
		removed = append(removed, fmt.Sprintf("task %s (%s)", o.id, o.state))
	}
	// What the backend's sweep could not remove yet is reported at the
	// end: it does not keep the rest of the sweep from running.
	var sweepErr error
	if sw, ok := m.backend.(OrphanSweeper); ok {
		swept, err := sw.SweepOrphans(ctx, m.owner, live)
		removed = append(removed, swept...)
		sweepErr = err
	}
	entries, err := os.ReadDir(filepath.Join(m.stateDir, "tasks"))
	if err != nil {
		return removed, fmt.Errorf("read state dir: %w", err)
	}
	for _, e := range entries {
		if live[e.Name()] || task.ValidateID(e.Name()) != nil {
			continue
		}
		if isStateDir(filepath.Join(m.stateDir, "tasks", e.Name())) {
			continue // not a task's: a state dir of its own, which New now refuses to nest
		}
		if m.foreign(e.Name()) {
			// Another scope's task (its Manager sweeps it): its id
			// range and GPUs stay too.
			live[e.Name()] = true
			continue
		}
		if err := m.removeState(e.Name()); err != nil {
			return removed, err
		}
		removed = append(removed, "state "+e.Name())
	}
	// Grants of tasks that are gone (a manager killed between allocating
	// and recording, or before Cleanup).
	if m.gpus != nil {
		if err := m.gpus.ReleaseExcept(live); err != nil {
			return removed, fmt.Errorf("release GPUs of finished tasks: %w", err)
		}
	}
	if m.ids != nil {
		if err := m.ids.ReleaseExcept(live); err != nil {
			return removed, fmt.Errorf("release host id ranges of finished tasks: %w", err)
		}
		// Ranges of state dirs removed with tasks in them: nobody else
		// would ever release them.
		if r, ok := m.ids.(abandonedReclaimer); ok {
			freed, err := r.ReclaimAbandoned(hostProc, idmap.AbandonedAge)
			removed = append(removed, freed...)
			if err != nil {
				return removed, fmt.Errorf("free host id ranges of removed state dirs: %w", err)
			}
		}
	}
	return removed, sweepErr
}

// Recover picks up the tasks an earlier manager process started and did not
// finish (it crashed or was restarted): a task still running is reattached,
// so Wait works on it as if this process had spawned it, deadline included;
// a task that exited meanwhile is finished now, its Result recorded with its
// complete logs (the shim's logger, not the manager, wrote them). It returns
// the handles of both kinds; call Wait on each for its Result.
func (m *Manager) Recover(ctx context.Context) ([]Handle, error) {
	entries, err := os.ReadDir(filepath.Join(m.stateDir, "tasks"))
	if err != nil {
		return nil, fmt.Errorf("read state dir: %w", err)
	}
	var recovered []Handle
	for _, e := range entries {
		rec, err := m.readRecord(e.Name())
		if err != nil || rec.Result != nil {
			continue // not an unfinished task of ours: gc's business
		}
		st, err := m.backend.Inspect(ctx, rec.Task.ID)
		if errdefs.IsNotFound(err) {
			continue // never started, or gone: gc's business
		}
		if err != nil {
			return recovered, err
		}
		if m.elsewhere(st) {
			continue // a stale record: the container is another state dir's task
		}
		if rec.Handle.ID == "" {
			if err := m.adoptHandle(&rec, st); err != nil {
				return recovered, err
			}
		}
		switch st.State {
		case StateRunning, StatePaused:
			if err := m.backend.Recover(ctx, rec.Handle); err != nil {
				return recovered, fmt.Errorf("recover task %s: %w", rec.Handle.ID, err)
			}
		case StateStopped:
			_, err := m.Wait(ctx, rec.Handle.ID)
			if errdefs.IsNotFound(err) {
				// A sweep removed it meanwhile (gc's business, done):
				// the tasks after it are still to recover.
				continue
			}
			if err != nil {
				return recovered, fmt.Errorf("finish task %s: %w", rec.Handle.ID, err)
			}
		default:
			continue
		}
		recovered = append(recovered, rec.Handle)
	}
	return recovered, nil
}

// adoptHandle records the handle of a task whose spawner died after the
// backend started it but before it recorded the handle, rebuilt from the
// backend's status: its Result then has the task's image and start time
// (an outside review's gc recorded "image": "", a start in year 1 and a
// duration of 292 years).
func (m *Manager) adoptHandle(rec *record, st Status) error {
	started := st.CreatedAt.UTC()
	if started.IsZero() {
		started = time.Now().UTC() // the deadline then counts from now, never from year 1
	}
	rec.Handle = Handle{Version: HandleVersion, Backend: m.backend.Name(), ID: rec.Task.ID,
		Image: st.Image, Pid: st.Pid, StartedAt: started}
	return m.writeRecord(*rec)
}

// Supervise spawns t and waits on it as Run does (deadline, CPU time, GPU
// memory; the Result recorded, the container released), but tells started
// the Spawn's outcome as soon as it is known, and neither collects the
// task's output nor cleans it up: its Result, logs and output stay for a
// later Wait (which returns the recorded Result), Logs, CollectOutput and
// Cleanup. The task is held busy from before its spawn to its Result, so
// gc never takes it in between. `nsn-run run -d` runs it in a supervisor
// process, so a detached task's limits hold with nobody waiting.
func (m *Manager) Supervise(ctx context.Context, t task.Task, started func(Handle, error)) (task.Result, error) {
	if err := task.ValidateID(t.ID); err == nil {
		if release, err := m.hold(ctx, t.ID); err == nil {
			defer release()
		}
	}
	h, err := m.Spawn(ctx, t)
	if started != nil {
		started(h, err)
	}
	if err != nil {
		return failedResult(t, err), err
	}
	return m.Wait(ctx, t.ID)
}

// RunOptions are the options of Run.
type RunOptions struct {
	// OutputDir receives copies of the files the task wrote to /output;
	// empty lists and hashes them without copying. It must not exist or
	// be empty (CheckOutputDest), and Run checks before the task starts.
	OutputDir string
	// Stdout and Stderr, when set, receive the task's streams while it
	// runs (as `nsn-run run` prints them), complete by the time Run
	// returns. The Result carries them either way. A writer that fails is
	// not written to again; the task runs on, and Run returns its Result,
	// output collected and the task cleaned up, with the writer's error
	// (unless something else failed: then that error).
	// To stop the task when a writer fails (its reader gone), cancel ctx.
	Stdout, Stderr io.Writer
}

// Run runs t from start to finish: Spawn, Wait, CollectOutput, Cleanup. It
// always cleans up, even when ctx ends or a step fails, as far as the
// backend answers (Spawn: what a daemon that did not answer in time made,
// gc removes). With
// Config.ReleaseInBackground the cleanup of a task that ran may finish
// after Run has returned (Drain waits for it).
func (m *Manager) Run(ctx context.Context, t task.Task, opts RunOptions) (task.Result, error) {
	// Held from start to cleanup: gc leaves the task alone between steps
	// too (a stopped task not yet collected looks left behind).
	if err := task.ValidateID(t.ID); err == nil {
		if release, err := m.hold(ctx, t.ID); err == nil {
			defer release()
		}
	}
	// Checked before anything starts: refused after the task ran, its
	// output would go with its cleanup.
	if err := m.checkOutputDest(opts.OutputDir); err != nil {
		return failedResult(t, err), err
	}
	if _, err := m.Spawn(ctx, t); err != nil {
		return failedResult(t, err), err
	}
	cleanupCtx := context.WithoutCancel(ctx)
	// Made and taken now, not when the task is done: a directory that
	// cannot be made (a read-only filesystem), or that another run has
	// taken, stops the task before it has done work whose output would
	// be lost.
	var dest *outputDest
	if opts.OutputDir != "" {
		var err error
		if dest, err = takeOutputDest(opts.OutputDir); err != nil {
			if cerr := m.cleanupOwn(cleanupCtx, t.ID); cerr != nil {
				err = errors.Join(err, cerr)
			}
			return failedResult(t, err), err
		}
		defer dest.release()
	}
	sw := NewStopwatch(ctx)
	var streamed *logFollower
	if opts.Stdout != nil || opts.Stderr != nil {
		streamed = m.followLogs(t.ID, opts.Stdout, opts.Stderr)
	}
	res, released, err := m.wait(ctx, t.ID, m.releases.enabled)
	// A writer that failed stopped being written to; the task ran on
	// under its limits, and its Result and output are collected as
	// usual: the writer's error is returned with them, not instead.
	var streamErr error
	if streamed != nil {
		// The task was released, or its logs completed without a
		// release: either way they are whole.
		if serr := streamed.stop(); serr != nil {
			streamErr = fmt.Errorf("stream the logs of task %s: %w", t.ID, serr)
		}
	}
	sw.Lap("wait")
	if leavesRunning(ctx) && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		// The caller asked to stop waiting and leave the task: its
		// record stays for a later Wait (after Recover, in another
		// process too), which collects nothing: call CollectOutput and
		// Cleanup after it, as after Supervise.
		return task.Result{ID: t.ID, Image: t.Image}, err
	}
	if errdefs.IsUnavailable(err) {
		// The daemon cannot be reached (down, or hung: its socket
		// accepting and never answering). The task, stopped at its
		// deadline through its cgroup or still running, and its record
		// stay for a later Wait, which records its Result once the daemon
		// answers: a cleanup now would block on the daemon, then remove
		// both (an outside review: containerd stopped with SIGSTOP, run
		// returned only once it was resumed, with task and Result gone).
		return failedResult(t, err), err
	}
	if err == nil {
		err = m.collectOutput(cleanupCtx, t.ID, dest, &res)
	}
	sw.Lap("collect")
	if err == nil && !released {
		// Every process of the task is gone: its GPUs are free for the
		// next task now, not only once the release is done.
		err = m.releaseGPUs(t.ID)
		if err == nil && m.releaseLater(t.ID) == nil {
			return res, streamErr
		}
	}
	if cerr := m.cleanupOwn(cleanupCtx, t.ID); err == nil {
		err = cerr
	}
	sw.Lap("cleanup")
	if err == nil {
		err = streamErr
	}
	if err != nil && res.Reason == "" {
		res = failedResult(t, err)
	}
	return res, err
}
