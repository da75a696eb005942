// Package gpu is the node's GPUs as CDI devices: it gives tasks GPUs
// through the Container Device Interface, and only the ones they were
// granted. It turns a GPU request into CDI device names (nvidia.com/gpu=...),
// resolves them with the CDI library over the spec dirs, allocates them
// exclusively on the node, and injects their edits as an oci.SpecOpt
// (spec.DeviceInjector) that the auditor can replay from the spec's
// annotation. The legacy nvidia-container-cli hook path is never used.
//
// It links no NVIDIA code and needs no cgo: writing the node's CDI spec with
// NVIDIA's nvcdi is gpu/cdigen, sampling GPU usage over NVML is
// gpu/nvmlusage, each linked only by what needs it.
package gpu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/task"
)

// Kind is the CDI device kind of NVIDIA GPUs.
const Kind = spec.GPUKind

// DefaultSpecDirs are where CDI specs live by convention.
var DefaultSpecDirs = []string{"/etc/cdi", "/var/run/cdi"}

// DefaultHookPaths are the only hook binaries GPU edits may run: NVIDIA's
// CDI hook, in its usual install places.
var DefaultHookPaths = []string{
	"/usr/bin/nvidia-cdi-hook", "/usr/local/bin/nvidia-cdi-hook",
	"/usr/bin/nvidia-ctk", "/usr/local/bin/nvidia-ctk",
}

// HookEnv is the explicit, minimal environment every hook of a GPU's CDI
// edits runs with: nothing inherited, so no LD_PRELOAD from anywhere
// (CVE-2025-23266). The injector enforces it and gpu/cdigen writes it; a
// fresh slice each call, so no caller can change it for the others.
func HookEnv() []string {
	return []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
}

// DefaultAllocDir is the node-wide GPU allocation directory: on /run,
// which a reboot empties with the tasks that held the GPUs, beside the
// host id ranges (idmap.DefaultDir). Until 2026-11-30 grants lived in each
// state dir, and a task of a second state dir was given a GPU a task of
// the first held (an outside review).
const DefaultAllocDir = "/run/nsn-run/gpus"

// Options configure an Injector.
type Options struct {
	// SpecDirs are searched for CDI specs; DefaultSpecDirs if empty.
	SpecDirs []string
	// AllocDir holds the node's GPU allocations, one file per device;
	// empty means no allocation (for printing specs). Every allocator of
	// the node must use the same one (DefaultAllocDir).
	AllocDir string
	// Owner is whose tasks this Injector allocates for: the state dir of
	// its Manager, whose tasks dir is Owner/tasks. Task ids are a state
	// dir's, so in the node-wide AllocDir a grant is (Owner, task);
	// Release and ReleaseExcept touch only Owner's grants, and a grant
	// whose task's state dir no longer exists in its owner's tasks dir (a
	// crash past its cleanup) is free again; one whose owner's tasks dir
	// is gone is held (stale). Empty: grants are plain task ids and never
	// stale (an AllocDir of one state dir's own).
	Owner string
	// HookPaths allowed in GPU edits; DefaultHookPaths if empty.
	HookPaths []string
}

// Injector resolves, allocates and injects GPUs. It implements
// spec.DeviceInjector.
type Injector struct {
	cache *cdi.Cache
	opts  Options
	mu    sync.Mutex // serialises allocation within this process; flock does across processes
}

var _ spec.DeviceInjector = (*Injector)(nil)

// New loads the CDI specs under the spec dirs.
func New(o Options) (*Injector, error) {
	if len(o.SpecDirs) == 0 {
		o.SpecDirs = DefaultSpecDirs
	}
	if len(o.HookPaths) == 0 {
		o.HookPaths = DefaultHookPaths
	}
	cache, err := cdi.NewCache(cdi.WithSpecDirs(o.SpecDirs...), cdi.WithAutoRefresh(false))
	if err != nil {
		return nil, fmt.Errorf("load CDI specs: %w", err)
	}
	// Specs that fail to parse are reported, not fatal: others may hold
	// the GPUs asked for.
	_ = cache.Refresh()
	if o.AllocDir != "" {
		if err := os.MkdirAll(o.AllocDir, 0o700); err != nil {
			return nil, fmt.Errorf("GPU allocation dir: %w", err)
		}
	}
	return &Injector{cache: cache, opts: o}, nil
}

// GPUs lists the individual GPU device names the specs define (without the
// "all" device), sorted.
func (in *Injector) GPUs() []string {
	var names []string
	for _, name := range in.cache.ListDevices() {
		if strings.HasPrefix(name, Kind+"=") && name != Kind+"=all" {
			names = append(names, name)
		}
	}
	return names
}

// Device is one physical device of the specs (a GPU or a MIG slice) with
// every CDI name that reaches it, and who holds it now.
type Device struct {
	Names     []string `json:"names"`               // e.g. nvidia.com/gpu=0 and its UUID name
	Nodes     string   `json:"nodes"`               // the device nodes that identify it
	Exclusive string   `json:"exclusive,omitempty"` // the task holding it alone
	Sharers   []string `json:"sharers,omitempty"`   // the tasks sharing it
}

// Devices lists the specs' devices and their holders (none without an
// AllocDir), in the specs' name order.
func (in *Injector) Devices() []Device {
	var out []Device
	index := map[string]int{}
	for _, n := range in.GPUs() {
		k := in.key(n)
		if i, ok := index[k]; ok {
			out[i].Names = append(out[i].Names, n)
			continue
		}
		d := Device{Names: []string{n}, Nodes: k}
		if in.opts.AllocDir != "" {
			d.Exclusive, d.Sharers = in.holders(n)
		}
		index[k] = len(out)
		out = append(out, d)
	}
	return out
}

// MissingHooks lists the hook binaries the GPU specs run that do not exist
// on this host: with any, every task given those GPUs fails to start.
func (in *Injector) MissingHooks() []string {
	var missing []string
	for _, p := range in.Hooks() {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	return missing
}

// Hooks lists the hook binaries the GPU specs run, each once, in the
// specs' order: what runs as root on the host when a GPU task starts.
func (in *Injector) Hooks() []string {
	var paths []string
	add := func(hooks []*cdispec.Hook) {
		for _, h := range hooks {
			if h != nil && !slices.Contains(paths, h.Path) {
				paths = append(paths, h.Path)
			}
		}
	}
	for _, s := range in.cache.GetVendorSpecs("nvidia.com") {
		if s.GetClass() != "gpu" {
			continue
		}
		add(s.ContainerEdits.Hooks)
		for _, d := range s.Devices {
			add(d.ContainerEdits.Hooks)
		}
	}
	return paths
}

// Resolve turns a GPU request into CDI device names without allocating: a
// count picks the first free GPUs (for a sharing request: those no task
// holds exclusively, the least shared first). An unknown GPU is
// errdefs.ErrNotFound.
func (in *Injector) Resolve(req task.GPURequest) ([]string, error) {
	switch {
	case req.Empty():
		return nil, nil
	case req.All:
		if in.cache.GetDevice(Kind+"=all") != nil {
			return []string{Kind + "=all"}, nil
		}
		names := in.distinct(in.GPUs())
		if len(names) == 0 {
			return nil, in.notFound("any GPU")
		}
		return names, nil
	case req.Count > 0:
		all := in.distinct(in.GPUs())
		free := in.free(all, req.Shared)
		if len(free) < req.Count {
			return nil, fmt.Errorf("%w: %d GPUs asked for, %d free of %d in the CDI specs under %s",
				errdefs.ErrResourceExhausted, req.Count, len(free), len(all), strings.Join(in.opts.SpecDirs, ", "))
		}
		return free[:req.Count], nil
	}
	var names []string
	for _, id := range req.IDs {
		name := Kind + "=" + id
		if in.cache.GetDevice(name) == nil {
			return nil, in.notFound("GPU " + id)
		}
		names = append(names, name)
	}
	return names, nil
}

func (in *Injector) notFound(what string) error {
	return &NotFoundError{What: what, SpecDirs: in.opts.SpecDirs}
}

// NotFoundError is a GPU a request names that the CDI specs do not define
// (Devices lists those they do).
type NotFoundError struct {
	What     string   // "GPU ID", or "any GPU"
	SpecDirs []string // where the specs were read
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("%s: %s not found in the CDI specs under %s", errdefs.ErrNotFound, e.What, strings.Join(e.SpecDirs, ", "))
}

// Unwrap types the error for errdefs: NotFound.
func (e *NotFoundError) Unwrap() error { return errdefs.ErrNotFound }

// SharedOnlyError is a GPU that tasks hold shared, asked for by a request
// that does not share (Request.Shared): it can only be shared until they
// end.
type SharedOnlyError struct {
	GPU     string
	Sharers []string // the task IDs holding it
}

func (e *SharedOnlyError) Error() string {
	return fmt.Sprintf("%s: GPU %s is shared by tasks %s: it can only be shared", errdefs.ErrResourceExhausted, e.GPU, strings.Join(e.Sharers, ", "))
}

// Unwrap types the error for errdefs: ResourceExhausted.
func (e *SharedOnlyError) Unwrap() error { return errdefs.ErrResourceExhausted }

// key identifies the physical device behind a CDI name: the set of device
// nodes its own edits add. An index and a UUID naming the same GPU share
// it; two MIG slices of one GPU do not (each has its own capability node).
func (in *Injector) key(name string) string {
	d := in.cache.GetDevice(name)
	if d == nil {
		return name
	}
	var nodes []string
	for _, n := range d.ContainerEdits.DeviceNodes {
		host := n.HostPath
		if host == "" {
			host = n.Path
		}
		nodes = append(nodes, host)
	}
	slices.Sort(nodes)
	if len(nodes) == 0 {
		return name
	}
	return strings.Join(nodes, "+")
}

// distinct drops names that alias a device already in the list.
func (in *Injector) distinct(names []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range names {
		k := in.key(n)
		if !seen[k] {
			seen[k] = true
			out = append(out, n)
		}
	}
	return out
}

// allocPath is the file that holds name exclusively; a sharing task holds
// it through sharePath instead.
func (in *Injector) allocPath(name string) string {
	k := strings.NewReplacer("/", "_", "+", ",", "=", "-", "@", "_").Replace(in.key(name))
	return filepath.Join(in.opts.AllocDir, k)
}

// sharePath is the file through which task id of this Injector's Owner
// shares name.
func (in *Injector) sharePath(name, id string) string {
	p := in.allocPath(name) + "@" + id
	if in.opts.Owner != "" {
		sum := sha256.Sum256([]byte(in.opts.Owner))
		p += "." + hex.EncodeToString(sum[:6])
	}
	return p
}

// holder is who holds a grant: a task of a state dir (Owner), and that
// state dir's identity when the grant was made (its device and inode), so
// that another directory at its path later is not taken for it.
type holder struct {
	Owner string `json:"owner,omitempty"`
	Task  string `json:"task"`
	Dev   uint64 `json:"dev,omitempty"`
	Ino   uint64 `json:"ino,omitempty"`
}

// dirIdentity is the device and inode of directory path.
func dirIdentity(path string) (dev, ino uint64, ok bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return 0, 0, false
	}
	return uint64(st.Dev), st.Ino, true
}

// readHolder reads a grant file: a holder as JSON, or (an AllocDir of one
// state dir's own) a bare task id.
func readHolder(path string) (holder, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return holder{}, false
	}
	var h holder
	if json.Unmarshal(b, &h) != nil || h.Task == "" {
		h = holder{Task: strings.TrimSpace(string(b))}
	}
	return h, h.Task != ""
}

// stale reports whether h's task is gone: its owner's tasks dir is there
// and holds no state dir of it (only grants with an owner can tell). A
// grant whose owner's tasks dir is missing altogether is held: the state
// dir may only have moved (an outside review renamed a live task's state
// dir's parent, and its GPU went to another task), and exclusivity comes
// first; `gpu ls` shows such a grant with its state dir.
//
// The state dir at the owner's path must also be the one the grant was
// made in (its device and inode): a fifth review renamed a live task's
// state dir and let the next nsn-run make a new one, with an empty tasks
// dir, at its path.
func stale(h holder) bool {
	if h.Owner == "" {
		return false
	}
	if dev, ino, ok := dirIdentity(h.Owner); !ok || h.Ino == 0 || dev != h.Dev || ino != h.Ino {
		return false
	}
	tasks := filepath.Join(h.Owner, "tasks")
	if info, err := os.Lstat(tasks); err != nil || !info.IsDir() {
		return false
	}
	_, err := os.Lstat(filepath.Join(tasks, h.Task))
	return errors.Is(err, fs.ErrNotExist)
}

// display is how a holder reads in listings and errors: the task id, and
// its state dir when it is not this Injector's Owner's.
func (in *Injector) display(h holder) string {
	if h.Owner == in.opts.Owner || h.Owner == "" {
		return h.Task
	}
	return fmt.Sprintf("%s (state dir %s)", h.Task, h.Owner)
}

// liveHolders reads who holds name: the task holding it exclusively, if
// any, and the tasks sharing it. Stale grants (stale) are no one's.
func (in *Injector) liveHolders(name string) (exclusive *holder, sharers []holder) {
	p := in.allocPath(name)
	if h, ok := readHolder(p); ok && !stale(h) {
		exclusive = &h
	}
	shared, _ := filepath.Glob(p + "@*")
	for _, f := range shared {
		if h, ok := readHolder(f); ok && !stale(h) {
			sharers = append(sharers, h)
		}
	}
	return exclusive, sharers
}

// holders is liveHolders as display has them.
func (in *Injector) holders(name string) (exclusive string, sharers []string) {
	ex, sh := in.liveHolders(name)
	if ex != nil {
		exclusive = in.display(*ex)
	}
	for _, h := range sh {
		sharers = append(sharers, in.display(h))
	}
	return exclusive, sharers
}

// free keeps the devices a request may take now: for an exclusive one,
// those nobody holds; for a sharing one, those nobody holds exclusively,
// least shared first.
func (in *Injector) free(names []string, shared bool) []string {
	if in.opts.AllocDir == "" {
		return names
	}
	type candidate struct {
		name    string
		sharers int
	}
	var cands []candidate
	for _, n := range names {
		exclusive, sharers := in.holders(n)
		if exclusive != "" || (!shared && len(sharers) > 0) {
			continue
		}
		cands = append(cands, candidate{n, len(sharers)})
	}
	slices.SortStableFunc(cands, func(a, b candidate) int { return a.sharers - b.sharers })
	out := make([]string, 0, len(cands))
	for _, c := range cands {
		out = append(out, c.name)
	}
	return out
}

// lock serialises allocation decisions across nsn-run processes: checking
// who holds a device and taking it must be one step.
func (in *Injector) lock() (unlock func(), err error) {
	in.mu.Lock()
	f, err := os.OpenFile(filepath.Join(in.opts.AllocDir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		in.mu.Unlock()
		return nil, fmt.Errorf("lock GPU allocations: %w", err)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
		in.mu.Unlock()
	}, nil
}

// Allocate resolves req and takes its GPUs for task id, all or none. A GPU
// another task holds, or (for an exclusive request) one that tasks share, is
// errdefs.ErrResourceExhausted; "all" takes every GPU. Each allocation is a
// file, written under a lock shared with every nsn-run process on the node,
// so they never hand out a GPU twice, and the files outlive a manager
// restart (Recover needs nothing more; gc releases those of dead tasks).
// Without an AllocDir it only resolves.
func (in *Injector) Allocate(id string, req task.GPURequest) ([]string, error) {
	return in.grant(id, req, true)
}

// Preview returns the devices Allocate(id, req) would grant now, or its
// error, and takes nothing: what `nsn-run spec` shows.
func (in *Injector) Preview(id string, req task.GPURequest) ([]string, error) {
	return in.grant(id, req, false)
}

// grant resolves req against what is free under the allocation lock and,
// with take, records the devices as task id's.
func (in *Injector) grant(id string, req task.GPURequest, take bool) ([]string, error) {
	if in.opts.AllocDir == "" {
		return in.Resolve(req)
	}
	unlock, err := in.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	names, err := in.Resolve(req)
	if err != nil || len(names) == 0 {
		return names, err
	}
	physical := names
	if len(names) == 1 && names[0] == Kind+"=all" {
		physical = in.distinct(in.GPUs())
	}
	for _, n := range physical {
		exclusive, sharers := in.holders(n)
		switch {
		case exclusive != "":
			return nil, fmt.Errorf("%w: GPU %s is allocated to task %s", errdefs.ErrResourceExhausted, n, exclusive)
		case !req.Shared && len(sharers) > 0:
			return nil, &SharedOnlyError{GPU: n, Sharers: sharers}
		}
	}
	if !take {
		return names, nil
	}
	var taken []string
	for _, n := range physical {
		p := in.allocPath(n)
		if req.Shared {
			p = in.sharePath(n, id)
		}
		if h, ok := readHolder(p); ok && stale(h) {
			_ = os.Remove(p) // a gone task's: free
		}
		if err := writeExclusive(p, in.holderOf(id)); err != nil {
			for _, t := range taken {
				_ = os.Remove(t)
			}
			return nil, fmt.Errorf("allocate GPU %s: %w", n, err)
		}
		taken = append(taken, p)
	}
	return names, nil
}

// CheckHolds refuses names, the CDI devices a spec or create request of
// task id names (as the audit reads them), where another task holds one:
// exclusively, or, unless shared, sharing it. Task id's own grants of
// this Injector's Owner pass: its own spec names them. Without an
// AllocDir nothing is held.
func (in *Injector) CheckHolds(id string, names []string, shared bool) error {
	if in.opts.AllocDir == "" {
		return nil
	}
	physical := names
	if slices.Contains(names, Kind+"=all") {
		physical = in.distinct(in.GPUs())
	}
	// Its own task's grant: the same task id of this same state dir, by
	// the directory's identity where the grant recorded it, not only its
	// path (a twenty-second review audited, in a mount namespace where
	// the path showed another directory, a spec under a running task's
	// id and GPU: it passed, and run in the host's view it used the GPU
	// and forged the task's /output).
	myDev, myIno, _ := dirIdentity(in.opts.Owner)
	mine := func(h holder) bool {
		switch {
		case h.Task != id:
			return false
		case h.Owner == "":
			return in.opts.Owner == ""
		case h.Owner != in.opts.Owner:
			return false
		}
		return h.Ino == 0 || (h.Dev == myDev && h.Ino == myIno)
	}
	for _, n := range physical {
		exclusive, sharers := in.liveHolders(n)
		if exclusive != nil && !mine(*exclusive) {
			return fmt.Errorf("%w: GPU %s is allocated to task %s", errdefs.ErrResourceExhausted, n, in.display(*exclusive))
		}
		if shared {
			continue
		}
		for _, h := range sharers {
			if !mine(h) {
				return fmt.Errorf("%w: GPU %s is shared by task %s, and this task's use is not shared", errdefs.ErrResourceExhausted, n, in.display(h))
			}
		}
	}
	return nil
}

// holderOf is what a grant file of task id holds: the holder as JSON
// with an Owner, else the bare id.
func (in *Injector) holderOf(id string) string {
	if in.opts.Owner == "" {
		return id
	}
	h := holder{Owner: in.opts.Owner, Task: id}
	h.Dev, h.Ino, _ = dirIdentity(in.opts.Owner) // a grant without them is never stale
	b, _ := json.Marshal(h)                      // strings and numbers only: no error
	return string(b)
}

// writeExclusive creates path holding owner, failing if it exists.
func writeExclusive(path, owner string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(owner + "\n")
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path)
	}
	return werr
}

// Release frees the GPUs allocated to task id of this Injector's Owner.
// Idempotent.
func (in *Injector) Release(id string) error {
	return in.releaseIf(func(task string) bool { return task == id })
}

// ReleaseExcept frees every allocation of this Injector's Owner whose task
// is not in keep (after a crash: gc), and every stale one.
func (in *Injector) ReleaseExcept(keep map[string]bool) error {
	return in.releaseIf(func(task string) bool { return !keep[task] })
}

// releaseIf removes the grants of this Injector's Owner whose task match
// says, and stale grants of any owner.
func (in *Injector) releaseIf(match func(task string) bool) error {
	if in.opts.AllocDir == "" {
		return nil
	}
	unlock, err := in.lock()
	if err != nil {
		return err
	}
	defer unlock()
	entries, err := os.ReadDir(in.opts.AllocDir)
	if err != nil {
		return fmt.Errorf("read GPU allocations: %w", err)
	}
	for _, e := range entries {
		if e.Name() == ".lock" {
			continue
		}
		p := filepath.Join(in.opts.AllocDir, e.Name())
		h, ok := readHolder(p)
		if !ok {
			continue
		}
		if (h.Owner == in.opts.Owner && match(h.Task)) || stale(h) {
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("release GPU allocation %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

// InjectSpecOpt implements spec.DeviceInjector: the option that adds
// exactly the CDI edits of these granted devices, with every hook given an
// explicit minimal env, and records them in the spec's annotations. Pure:
// allocation happened before (Allocate), so the auditor can rebuild the
// same edits from the annotation. Devices the specs do not know, and hooks
// outside the allowlist, are refused.
func (in *Injector) InjectSpecOpt(names []string, shared bool) (oci.SpecOpts, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: no CDI devices to inject", errdefs.ErrInvalidArgument)
	}
	names = slices.Clone(names)
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		if _, err := in.cache.InjectDevices(s, names...); err != nil {
			return fmt.Errorf("%w: inject GPUs %s: %w", errdefs.ErrFailedPrecondition, strings.Join(names, ", "), err)
		}
		if s.Hooks != nil {
			stages := []*[]specs.Hook{&s.Hooks.CreateRuntime, &s.Hooks.CreateContainer, &s.Hooks.StartContainer, &s.Hooks.Poststart, &s.Hooks.Poststop}
			// Prestart is deprecated, but runc still runs its hooks as
			// root on the host, and a CDI spec can still add them: the
			// allowlist and the minimal env must hold for them too.
			//lint:ignore SA1019 an allowlist must cover every stage runc runs
			stages = append(stages, &s.Hooks.Prestart)
			for _, stage := range stages {
				for i := range *stage {
					h := &(*stage)[i]
					if !slices.Contains(in.opts.HookPaths, h.Path) {
						return fmt.Errorf("%w: the CDI edits of %s run hook %s, which is not an allowed hook (%s)",
							errdefs.ErrFailedPrecondition, strings.Join(names, ", "), h.Path, strings.Join(in.opts.HookPaths, ", "))
					}
					h.Env = HookEnv()
				}
			}
		}
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[Annotation] = strings.Join(names, ",")
		if shared {
			// Reviewers of the spec see that these GPUs may be shared.
			s.Annotations[SharedAnnotation] = "true"
		}
		return nil
	}, nil
}

// Annotation lists, in a spec, the CDI devices injected into it;
// SharedAnnotation is "true" where the task let other tasks share them.
const (
	Annotation       = "nsn.gpus"
	SharedAnnotation = "nsn.gpus-shared"
)
