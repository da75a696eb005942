package task

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
)

// Bounds beyond which a limit is treated as a mistake rather than a wish.
const (
	MinMemoryBytes = 4 * MiB // below this the runtime itself cannot start
	MaxMemoryBytes = 4 * TiB
	MinCPUs        = 0.01 // CFS quota of 1ms per 100ms period, the kernel minimum
	MaxCPUs        = 1024
	MaxPids        = 4194304 // the kernel's PID_MAX_LIMIT
	MaxOpenFiles   = 1048576 // the kernel's default fs.nr_open
	MinTmpBytes    = 1 * MiB
	MaxTmpBytes    = 1 * TiB
	MaxTmpInodes   = 1 << 30
	MaxOutputBytes = 1 * TiB
	MinOutputBytes = 64 * KiB
	MaxOutputFiles = 1 << 20
	MaxTimeout     = 30 * 24 * time.Hour
	MaxGrace       = time.Hour

	MaxIDLength      = 63
	MaxArgs          = 65536
	MaxArgBytes      = 1 << 20 // total argv; the kernel's ARG_MAX is 2 MiB with env
	MaxEnvEntries    = 4096
	MaxEnvBytes      = 1 << 20
	MaxPathLength    = 4096
	MaxGPUs          = 64
	nobodyID         = 65534
	maxNonRootIDBits = 31
)

// The patterns leave long names to a length check (MaxIDLength,
// maxRuntimeLength, maxGPUUUIDLength): a bounded repetition such as
// {0,127} compiles into a state per repetition, and these compile when any
// program linking this package starts (with the bounds in the patterns,
// this package's init took 273 KB in 3,800 allocations, more than
// distribution/reference's, in every nsn-run command).
var (
	idPattern      = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)
	envKeyPattern  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	userPattern    = regexp.MustCompile(`^([0-9]+)(?::([0-9]+))?$`)
	runtimePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
	gpuIDPattern   = regexp.MustCompile(`^(?:[0-9]{1,3}(?::[0-9]{1,3})?|(?:GPU|MIG)-[A-Za-z0-9][A-Za-z0-9/-]*)$`)
)

const (
	maxRuntimeLength = 128
	maxGPUUUIDLength = len("GPU-") + 128
)

// invalid builds the one-line error every validation failure returns, typed
// as errdefs.ErrInvalidArgument so callers (and the CLI's exit code) can tell
// bad input from a failing daemon.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errdefs.ErrInvalidArgument}, args...)...)
}

// Validate rejects a task that must not run, with one clear message typed as
// errdefs.ErrInvalidArgument. It checks the task as given; zero limits are
// valid and mean "default".
func (t Task) Validate() error {
	if err := ValidateID(t.ID); err != nil {
		return err
	}
	if _, err := NormalizeImage(t.Image); err != nil {
		return err
	}
	if err := validateCommand(t.Command); err != nil {
		return err
	}
	if err := ValidateEnv(t.Env); err != nil {
		return err
	}
	for _, kv := range t.Env {
		if key, _, _ := strings.Cut(kv, "="); IsNVIDIADeviceVar(key) {
			return invalid("env %s: selects NVIDIA devices; nsn-run sets it only for the GPUs a task is granted (request GPUs instead)", key)
		}
	}
	if t.WorkingDir != "" {
		if err := ValidateWorkingDir(t.WorkingDir); err != nil {
			return err
		}
	}
	if t.User != "" {
		if _, _, err := ParseUser(t.User); err != nil {
			return err
		}
	}
	if err := t.Limits.Validate(); err != nil {
		return err
	}
	if req, err := t.GPURequest(); err != nil {
		return err
	} else if req.Shared && req.Empty() {
		return invalid("gpu_shared: set without gpus")
	}
	if t.Runtime != "" {
		return ValidateRuntime(t.Runtime)
	}
	return nil
}

// ValidateRuntime checks a containerd runtime name (a task's, or one an
// operator allows): a name such as io.containerd.runc.v2, never a path.
func ValidateRuntime(name string) error {
	if len(name) > maxRuntimeLength || !runtimePattern.MatchString(name) {
		return invalid("runtime %q: must be a runtime name such as %s", name, DefaultRuntime)
	}
	return nil
}

// NewID returns a random task id ("t-" and 12 hex digits) that passes
// ValidateID, for a caller that has no id of its own (nsn-run run
// without --id).
func NewID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return "t-" + hex.EncodeToString(b)
}

// ValidateID checks a task id: it names directories, containers and cgroups,
// so it must be a short lower-case name that cannot escape a path.
func ValidateID(id string) error {
	switch {
	case id == "":
		return invalid("task id is empty")
	case len(id) > MaxIDLength:
		return invalid("task id %.20q...: longer than %d characters", id, MaxIDLength)
	case strings.Contains(id, ".."):
		return invalid("task id %q: must not contain \"..\"", id)
	case !idPattern.MatchString(id):
		return invalid("task id %q: must match [a-z0-9][a-z0-9_.-]* (lower case, no path separators)", id)
	}
	return nil
}

// NormalizeImage parses an image reference and returns its normalised form
// ("busybox" becomes "docker.io/library/busybox:latest").
func NormalizeImage(ref string) (string, error) {
	if ref == "" {
		return "", invalid("image reference is empty")
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", invalid("image reference %q: %v", ref, err)
	}
	return named.String(), nil
}

func validateCommand(cmd []string) error {
	if len(cmd) == 0 || cmd[0] == "" {
		return invalid("command is empty")
	}
	if len(cmd) > MaxArgs {
		return invalid("command has %d arguments, more than %d", len(cmd), MaxArgs)
	}
	total := 0
	for i, arg := range cmd {
		if strings.ContainsRune(arg, 0) {
			return invalid("command argument %d contains a NUL byte", i)
		}
		total += len(arg) + 1
	}
	if total > MaxArgBytes {
		return invalid("command is %d bytes, more than %d", total, MaxArgBytes)
	}
	return nil
}

// ValidateEnv checks KEY=VALUE entries: keys must be shell names and values
// must not hold NUL bytes (which would silently cut them).
func ValidateEnv(env []string) error {
	if len(env) > MaxEnvEntries {
		return invalid("env has %d entries, more than %d", len(env), MaxEnvEntries)
	}
	total := 0
	for _, kv := range env {
		key, value, ok := strings.Cut(kv, "=")
		if !ok {
			return invalid("env entry %.40q: want KEY=VALUE", kv)
		}
		if !envKeyPattern.MatchString(key) {
			return invalid("env key %.40q: must match [A-Za-z_][A-Za-z0-9_]*", key)
		}
		if strings.ContainsRune(value, 0) {
			return invalid("env %s: value contains a NUL byte", key)
		}
		total += len(kv) + 1
	}
	if total > MaxEnvBytes {
		return invalid("env is %d bytes, more than %d", total, MaxEnvBytes)
	}
	return nil
}

// nvidiaDeviceVars and nvidiaDeviceVarPrefixes are the environment
// variables by which NVIDIA's container toolkit (its legacy hook, and its
// runtime in every mode) chooses the devices a container gets: which GPUs
// (VISIBLE_DEVICES), which driver parts (DRIVER_CAPABILITIES), which
// requirements to check (REQUIRE_*), MIG management access (MIG_CONFIG_DEVICES,
// MIG_MONITOR_DEVICES), IMEX channels, and the GPUDirect Storage, MOFED,
// NVSwitch and GDRCopy devices. Whatever runs a task, they must say only
// what nsn-run granted.
var (
	nvidiaDeviceVars = []string{
		"NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_IMEX_CHANNELS",
		"NVIDIA_GDS", "NVIDIA_MOFED", "NVIDIA_NVSWITCH", "NVIDIA_GDRCOPY",
	}
	nvidiaDeviceVarPrefixes = []string{"NVIDIA_REQUIRE_", "NVIDIA_MIG_"}
)

// IsNVIDIADeviceVar reports whether the environment variable key selects
// NVIDIA devices (NVIDIA_VISIBLE_DEVICES and its kind). A task may not set
// one, and one from an image is dropped: only the edits for the GPUs a task
// is granted set them.
func IsNVIDIADeviceVar(key string) bool {
	if slices.Contains(nvidiaDeviceVars, key) {
		return true
	}
	return slices.ContainsFunc(nvidiaDeviceVarPrefixes, func(p string) bool { return strings.HasPrefix(key, p) })
}

// ValidateWorkingDir checks a working directory, whether it comes from the
// task or from an image config (which is attacker input): absolute, clean,
// and not inside the kernel's pseudo filesystems, where a directory such as
// /proc/self/fd/N would hand the process a descriptor it was never given.
func ValidateWorkingDir(dir string) error {
	switch {
	case strings.ContainsRune(dir, 0):
		return invalid("working dir contains a NUL byte")
	case len(dir) > MaxPathLength:
		return invalid("working dir is longer than %d bytes", MaxPathLength)
	case !path.IsAbs(dir):
		return invalid("working dir %q: must be absolute", dir)
	case path.Clean(dir) != dir || strings.Contains(dir, ".."):
		return invalid("working dir %q: must be a clean path without \"..\"", dir)
	}
	for _, pseudo := range []string{"/proc", "/sys", "/dev"} {
		if dir == pseudo || strings.HasPrefix(dir, pseudo+"/") {
			return invalid("working dir %q: must not be under %s", dir, pseudo)
		}
	}
	return nil
}

// ParseUser parses a numeric "UID" or "UID:GID". A missing GID equals the
// UID. Root (0) is refused for either: uid 0 only by explicit policy, and no
// policy allows it yet.
func ParseUser(s string) (uid, gid uint32, err error) {
	m := userPattern.FindStringSubmatch(s)
	if m == nil {
		return 0, 0, invalid("user %q: want numeric UID or UID:GID", s)
	}
	u, err := strconv.ParseUint(m[1], 10, maxNonRootIDBits)
	if err != nil {
		return 0, 0, invalid("user %q: uid out of range", s)
	}
	g := u
	if m[2] != "" {
		if g, err = strconv.ParseUint(m[2], 10, maxNonRootIDBits); err != nil {
			return 0, 0, invalid("user %q: gid out of range", s)
		}
	}
	if u == 0 || g == 0 {
		return 0, 0, invalid("user %q: uid and gid 0 (root) are not allowed", s)
	}
	return uint32(u), uint32(g), nil
}

// NobodyID is the uid and gid a task runs as when neither it nor its image
// names a usable non-root user.
const NobodyID = nobodyID

// Validate checks every limit against its bounds; zero means default.
func (l Limits) Validate() error {
	if err := checkRange("memory", l.MemoryBytes, MinMemoryBytes, MaxMemoryBytes); err != nil {
		return err
	}
	if math.IsNaN(l.CPUs) || math.IsInf(l.CPUs, 0) || l.CPUs < 0 || (l.CPUs != 0 && (l.CPUs < MinCPUs || l.CPUs > MaxCPUs)) {
		return invalid("cpus %v: must be between %v and %v", l.CPUs, MinCPUs, MaxCPUs)
	}
	if err := checkRange("pids limit", l.Pids, 1, MaxPids); err != nil {
		return err
	}
	if err := checkRange("open files limit", l.OpenFiles, 1, MaxOpenFiles); err != nil {
		return err
	}
	if err := checkRange("tmp size", l.TmpBytes, MinTmpBytes, MaxTmpBytes); err != nil {
		return err
	}
	if err := checkRange("tmp inodes", l.TmpInodes, 1, MaxTmpInodes); err != nil {
		return err
	}
	if err := checkRange("output size", l.OutputBytes, MinOutputBytes, MaxOutputBytes); err != nil {
		return err
	}
	if err := checkRange("output files", l.OutputFiles, 1, MaxOutputFiles); err != nil {
		return err
	}
	if err := checkDuration("timeout", l.Timeout, time.Second, MaxTimeout); err != nil {
		return err
	}
	if err := checkDuration("grace", l.Grace, time.Millisecond, MaxGrace); err != nil {
		return err
	}
	if err := checkDuration("cpu time", l.CPUTime, 10*time.Millisecond, MaxTimeout); err != nil {
		return err
	}
	return checkRange("gpu memory", l.GPUMemoryBytes, MiB, MaxMemoryBytes)
}

func checkRange(name string, v, lo, hi int64) error {
	return checkBounds(name, v, lo, hi, func(v int64) string { return strconv.FormatInt(v, 10) })
}

// checkDuration is checkRange for a duration, which it names as one ("1s",
// not 1000000000: a review read "timeout 1: must be between 1000000000
// and ...").
func checkDuration(name string, v, lo, hi time.Duration) error {
	return checkBounds(name, v, lo, hi, time.Duration.String)
}

// checkBounds refuses v outside lo..hi (0 is the default, and fine),
// written by show.
func checkBounds[T int64 | time.Duration](name string, v, lo, hi T, show func(T) string) error {
	if v == 0 {
		return nil
	}
	if v < 0 {
		return invalid("%s %s: must not be negative", name, show(v))
	}
	if v < lo || v > hi {
		return invalid("%s %s: must be between %s and %s", name, show(v), show(lo), show(hi))
	}
	return nil
}

// GPURequest is a parsed Task.GPUs.
type GPURequest struct {
	All   bool     // every GPU on the node
	Count int      // this many free GPUs, chosen by the allocator
	IDs   []string // these devices: indices, GPU-... or MIG-... UUIDs
	// Shared: the devices may be given to other sharing tasks at the same
	// time (Task.GPUShared).
	Shared bool
}

// GPURequest parses the task's GPU request, sharing included.
func (t Task) GPURequest() (GPURequest, error) {
	req, err := ParseGPURequest(t.GPUs)
	req.Shared = t.GPUShared
	return req, err
}

// Empty reports whether no GPU was asked for.
func (r GPURequest) Empty() bool { return !r.All && r.Count == 0 && len(r.IDs) == 0 }

// ParseGPURequest parses "", "all", "N" (a count), "device=ID[,ID]" or
// "ID,ID[,...]" where an ID is a GPU index, a MIG device index "GPU:MIG"
// (as nvcdi names them), or a GPU/MIG UUID.
func ParseGPURequest(s string) (GPURequest, error) {
	switch {
	case s == "":
		return GPURequest{}, nil
	case s == "all":
		return GPURequest{All: true}, nil
	}
	list, explicit := strings.CutPrefix(s, "device=")
	if !explicit && !strings.Contains(s, ",") {
		if n, err := strconv.Atoi(s); err == nil {
			if n < 1 || n > MaxGPUs {
				return GPURequest{}, invalid("gpus %q: count must be between 1 and %d", s, MaxGPUs)
			}
			return GPURequest{Count: n}, nil
		}
	}
	var req GPURequest
	seen := map[string]bool{}
	for id := range strings.SplitSeq(list, ",") {
		if len(id) > maxGPUUUIDLength || !gpuIDPattern.MatchString(id) {
			return GPURequest{}, invalid("gpus %q: %q is not a GPU index, MIG index (0:1) or GPU/MIG UUID", s, id)
		}
		if seen[id] {
			return GPURequest{}, invalid("gpus %q: %q given twice", s, id)
		}
		seen[id] = true
		req.IDs = append(req.IDs, id)
	}
	if len(req.IDs) > MaxGPUs {
		return GPURequest{}, invalid("gpus %q: more than %d devices", s, MaxGPUs)
	}
	return req, nil
}
