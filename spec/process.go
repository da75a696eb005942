package spec

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/idmap"
	"github.com/nsn-run/nsn-run/task"
)

// process is what the container's process gets from the task and the image.
type process struct {
	args     []string
	env      []string
	cwd      string
	uid, gid uint32
}

// Process is what a task's process gets from the task and its image config,
// for backends that do not take an OCI spec (the Docker Engine API).
type Process struct {
	Args     []string
	Env      []string
	Cwd      string
	UID, GID uint32
}

// ProcessFor applies the same rules as the OCI spec: the image config is
// attacker input, and only its Env, Entrypoint, a validated WorkingDir and
// a numeric non-root User are taken. t must be valid.
func ProcessFor(t task.Task, img ocispec.ImageConfig) (Process, error) {
	p, err := processFromImage(t, img)
	if err != nil {
		return Process{}, err
	}
	return Process{Args: p.args, Env: p.env, Cwd: p.cwd, UID: p.uid, GID: p.gid}, nil
}

// processFromImage merges the task with its image config. The image config is
// attacker input: only Env (without the NVIDIA device variables),
// Entrypoint, a validated WorkingDir and a numeric non-root User are taken
// from it. Everything else it can say (volumes,
// exposed ports, stop signal, labels, healthchecks) is ignored.
func processFromImage(t task.Task, img ocispec.ImageConfig) (process, error) {
	if err := task.ValidateEnv(img.Env); err != nil {
		return process{}, fmt.Errorf("image config Env: %w", err)
	}
	p := process{
		// Docker semantics: the task's command replaces the image's Cmd
		// and is passed to its Entrypoint, if it has one.
		args: append(slices.Clone(img.Entrypoint), t.Command...),
		// Image env first, then HOME on the only writable scratch space,
		// then the task's own env, which wins over both.
		env: mergeEnv(withoutNVIDIADeviceVars(img.Env), []string{"HOME=" + TmpPath}, t.Env),
		cwd: "/",
	}
	switch {
	case t.WorkingDir != "":
		p.cwd = t.WorkingDir
	case img.WorkingDir != "":
		if err := task.ValidateWorkingDir(img.WorkingDir); err != nil {
			return process{}, fmt.Errorf("image config WorkingDir: %w", err)
		}
		p.cwd = img.WorkingDir
	}
	var err error
	if p.uid, p.gid, err = userFor(t.User, img.User); err != nil {
		return process{}, err
	}
	return p, nil
}

// withoutNVIDIADeviceVars drops the variables that select NVIDIA devices
// (task.IsNVIDIADeviceVar) from an image's env. An image is attacker input,
// and CUDA images set NVIDIA_VISIBLE_DEVICES=all: under a runtime with
// NVIDIA's legacy hook that alone hands the task every GPU on the node,
// whatever nsn-run allocated. A task granted GPUs gets these variables
// from its devices' CDI edits, which are applied after the process env.
func withoutNVIDIADeviceVars(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		key, _, _ := strings.Cut(kv, "=")
		return task.IsNVIDIADeviceVar(key)
	})
}

// mergeEnv layers KEY=VALUE lists: a later value for a key replaces an
// earlier one in place, so each key appears once (getenv returns the first
// match, which would otherwise be the image's, not the task's).
func mergeEnv(lists ...[]string) []string {
	var out []string
	at := map[string]int{}
	for _, list := range lists {
		for _, kv := range list {
			key, _, _ := strings.Cut(kv, "=")
			if i, ok := at[key]; ok {
				out[i] = kv
				continue
			}
			at[key] = len(out)
			out = append(out, kv)
		}
	}
	return out
}

// userFor picks the task's uid and gid: the task's explicit user, else the
// image's if it is numeric and not root, else nobody (65534:65534). A named
// image user is not looked up: /etc/passwd in the image is attacker input.
func userFor(taskUser, imageUser string) (uid, gid uint32, err error) {
	if taskUser != "" {
		return task.ParseUser(taskUser)
	}
	if imageUser != "" {
		if uid, gid, err := task.ParseUser(imageUser); err == nil {
			return uid, gid, nil
		}
	}
	return task.NobodyID, task.NobodyID, nil
}

// SharedIdentityImage returns img as a task that shares host ids (no user
// namespace of its own: UserNSOff, the Docker backend) may use it. There
// the image's numeric USER is the task's host uid and gid, so an image
// could pick a host account's (an outside review's USER 1000 took all of
// host account 1000's inotify instances) or another task's (a second one
// ran as a live task's host uid 1114110): a USER whose ids taken says
// are in use is dropped, and the task runs as nobody, as for a USER that
// is not numeric.
func SharedIdentityImage(img ocispec.ImageConfig, taken func(uid, gid uint32) bool) ocispec.ImageConfig {
	if img.User == "" {
		return img
	}
	uid, gid, err := task.ParseUser(img.User)
	if err != nil || !taken(uid, gid) {
		return img
	}
	img.User = ""
	return img
}

// HostIdentityTaken reports whether a task sharing host ids must not run
// as uid:gid: a host account's uid or group's gid (nobody's aside: every
// such task's), or an id of the node's per-task ranges (idmap.DefaultSpan),
// which belong to tasks with user namespaces of their own.
func HostIdentityTaken(uid, gid uint32) bool {
	span := idmap.DefaultSpan
	return (uid != task.NobodyID && HostAccount(uid)) || (gid != task.NobodyID && HostGroup(gid)) ||
		span.Contains(uid) || span.Contains(gid)
}

// CheckSharedIdentity refuses uid:gid for a task that shares host ids
// (user namespaces off, or dockerd's) where either is in the node's span of
// per-task ranges (idmap.DefaultSpan): each id there is a host identity of
// a task with a user namespace of its own, and the task would share it
// (after an escape from its namespaces, signal and ptrace its processes).
// An image's USER there gives nobody instead (SharedIdentityImage); a
// task's own user, which the task chose, is refused.
func CheckSharedIdentity(uid, gid uint32) error {
	span := idmap.DefaultSpan
	if span.Contains(uid) || span.Contains(gid) {
		return fmt.Errorf("%w: user %d:%d is in the host ids nsn-run keeps for tasks' own user namespaces (%d and up): a task sharing host ids cannot run as one of them",
			errdefs.ErrInvalidArgument, uid, gid, span.Base)
	}
	return nil
}

// HostGroup reports whether gid is a group's on this host, as HostAccount
// does for uids.
func HostGroup(gid uint32) bool {
	_, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10))
	var unknown user.UnknownGroupIdError
	return !errors.As(err, &unknown)
}

// HostAccount reports whether uid is an account's on this host (os/user:
// /etc/passwd, or NSS where the program links libc). A lookup that fails
// for another reason than an unknown uid counts as an account: the image
// then gets nobody, the safe side.
func HostAccount(uid uint32) bool {
	_, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	var unknown user.UnknownUserIdError
	return !errors.As(err, &unknown)
}

// requiredMaskedPaths is the union of Docker's and containerd's default
// masked paths. containerd's default spec already carries them (and the
// per-CPU thermal_throttle paths); listing them here keeps them in place
// even if an upstream default ever shrinks.
var requiredMaskedPaths = []string{
	"/proc/acpi",
	"/proc/asound",
	"/proc/interrupts",
	"/proc/kcore",
	"/proc/keys",
	"/proc/latency_stats",
	"/proc/sched_debug",
	"/proc/scsi",
	"/proc/timer_list",
	"/proc/timer_stats",
	"/sys/devices/virtual/powercap",
	"/sys/firmware",
}

// requiredReadonlyPaths is the union of Docker's and containerd's defaults.
var requiredReadonlyPaths = []string{
	"/proc/bus",
	"/proc/fs",
	"/proc/irq",
	"/proc/sys",
	"/proc/sysrq-trigger",
}

// RequiredMaskedPaths returns the /proc and /sys paths every task has masked.
func RequiredMaskedPaths() []string { return slices.Clone(requiredMaskedPaths) }

// RequiredReadonlyPaths returns the /proc paths every task sees read-only.
func RequiredReadonlyPaths() []string { return slices.Clone(requiredReadonlyPaths) }

// MaskedPaths is the complete list of masked paths a task's spec has, in
// its order: containerd's defaults, which include a thermal_throttle
// directory for each CPU this host has (the one part read from the host),
// then any of RequiredMaskedPaths they lack. Backends that do not take an
// OCI spec (the Docker Engine API) send this list, so both backends mask
// the same paths.
func MaskedPaths() ([]string, error) {
	l, err := defaultLinux()
	if err != nil {
		return nil, err
	}
	return appendMissing(l.MaskedPaths, requiredMaskedPaths), nil
}

// ReadonlyPaths is the complete list of read-only paths a task's spec has,
// as MaskedPaths is for masked ones.
func ReadonlyPaths() ([]string, error) {
	l, err := defaultLinux()
	if err != nil {
		return nil, err
	}
	return appendMissing(l.ReadonlyPaths, requiredReadonlyPaths), nil
}

// defaultLinux is the Linux section of containerd's default spec, the base
// Opts builds on.
func defaultLinux() (*specs.Linux, error) {
	ctx := namespaces.WithNamespace(context.Background(), DefaultNamespace)
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: "defaults"})
	if err != nil {
		return nil, fmt.Errorf("containerd's default spec: %w", err)
	}
	return s.Linux, nil
}

func withMaskedPaths(paths []string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		s.Linux.MaskedPaths = appendMissing(s.Linux.MaskedPaths, paths)
		return nil
	}
}

func withReadonlyPaths(paths []string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		s.Linux.ReadonlyPaths = appendMissing(s.Linux.ReadonlyPaths, paths)
		return nil
	}
}

func appendMissing(have, want []string) []string {
	for _, p := range want {
		if !slices.Contains(have, p) {
			have = append(have, p)
		}
	}
	return have
}
