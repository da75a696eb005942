// Package cdi gives tasks GPUs through the Container Device Interface, and
// only the ones they were granted: it turns a GPU request into CDI device
// names (nvidia.com/gpu=...), resolves them with the CDI library over the
// spec dirs, allocates them exclusively on the node, injects their edits as
// an oci.SpecOpt (spec.GPUInjector), and derives the auditor policy that
// lets exactly those edits through. The legacy nvidia-container-cli hook
// path is never used.
package cdi

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// Kind is the CDI device kind of NVIDIA GPUs.
const Kind = "nvidia.com/gpu"

// DefaultSpecDirs are where CDI specs live by convention.
var DefaultSpecDirs = []string{"/etc/cdi", "/var/run/cdi"}

// DefaultHookPaths are the only hook binaries GPU edits may run: NVIDIA's
// CDI hook, in its usual install places.
var DefaultHookPaths = []string{
	"/usr/bin/nvidia-cdi-hook", "/usr/local/bin/nvidia-cdi-hook",
	"/usr/bin/nvidia-ctk", "/usr/local/bin/nvidia-ctk",
}

// hookEnv is the explicit, minimal environment every injected hook runs
// with: nothing inherited, so no LD_PRELOAD from anywhere (CVE-2025-23266).
var hookEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// Options configure an Injector.
type Options struct {
	// SpecDirs are searched for CDI specs; DefaultSpecDirs if empty.
	SpecDirs []string
	// AllocDir holds the node's GPU allocations, one file per device;
	// empty means no allocation (for printing specs).
	AllocDir string
	// HookPaths allowed in GPU edits; DefaultHookPaths if empty.
	HookPaths []string
}

// Injector resolves, allocates and injects GPUs. It implements
// spec.GPUInjector.
type Injector struct {
	cache *cdi.Cache
	opts  Options
	mu    sync.Mutex // serialises allocation within this process; files do across processes
}

var _ spec.GPUInjector = (*Injector)(nil)

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

// Resolve turns a GPU request into CDI device names without allocating: a
// count picks the first free GPUs. An unknown GPU is errdefs.ErrNotFound.
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
		free := in.free(in.distinct(in.GPUs()))
		if len(free) < req.Count {
			return nil, fmt.Errorf("%w: %d GPUs asked for, %d free of %d in the CDI specs under %s",
				errdefs.ErrResourceExhausted, req.Count, len(free), len(in.distinct(in.GPUs())), strings.Join(in.opts.SpecDirs, ", "))
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
	return fmt.Errorf("%w: %s not found in the CDI specs under %s (nsn-run doctor lists them)", errdefs.ErrNotFound, what, strings.Join(in.opts.SpecDirs, ", "))
}

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

func (in *Injector) allocPath(name string) string {
	k := strings.NewReplacer("/", "_", "+", ",", "=", "-").Replace(in.key(name))
	return filepath.Join(in.opts.AllocDir, k)
}

func (in *Injector) free(names []string) []string {
	if in.opts.AllocDir == "" {
		return names
	}
	var out []string
	for _, n := range names {
		if _, err := os.Stat(in.allocPath(n)); os.IsNotExist(err) {
			out = append(out, n)
		}
	}
	return out
}

// Allocate resolves req and takes its GPUs for task id, all or none: a GPU
// another task holds is errdefs.ErrResourceExhausted ("all" too, unless
// every GPU is free). Each allocation is a file created exclusively, so
// tasks of concurrent nsn-run processes never share a GPU, and the files
// outlive a manager restart. Without an AllocDir it only resolves.
func (in *Injector) Allocate(id string, req task.GPURequest) ([]string, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	names, err := in.Resolve(req)
	if err != nil || in.opts.AllocDir == "" || len(names) == 0 {
		return names, err
	}
	physical := names
	if len(names) == 1 && names[0] == Kind+"=all" {
		physical = in.distinct(in.GPUs())
	}
	var taken []string
	for _, n := range physical {
		f, err := os.OpenFile(in.allocPath(n), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			for _, t := range taken {
				_ = os.Remove(t)
			}
			if os.IsExist(err) {
				owner, _ := os.ReadFile(in.allocPath(n))
				return nil, fmt.Errorf("%w: GPU %s is allocated to task %s", errdefs.ErrResourceExhausted, n, strings.TrimSpace(string(owner)))
			}
			return nil, fmt.Errorf("allocate GPU %s: %w", n, err)
		}
		_, werr := f.WriteString(id + "\n")
		cerr := f.Close()
		taken = append(taken, in.allocPath(n))
		if werr != nil || cerr != nil {
			for _, t := range taken {
				_ = os.Remove(t)
			}
			return nil, fmt.Errorf("allocate GPU %s: %w", n, errorsJoin(werr, cerr))
		}
	}
	return names, nil
}

func errorsJoin(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// Release frees the GPUs allocated to task id. Idempotent.
func (in *Injector) Release(id string) error {
	return in.releaseIf(func(owner string) bool { return owner == id })
}

// ReleaseExcept frees every allocation whose task is not in keep (after a
// crash: gc).
func (in *Injector) ReleaseExcept(keep map[string]bool) error {
	return in.releaseIf(func(owner string) bool { return !keep[owner] })
}

func (in *Injector) releaseIf(match func(owner string) bool) error {
	if in.opts.AllocDir == "" {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	entries, err := os.ReadDir(in.opts.AllocDir)
	if err != nil {
		return fmt.Errorf("read GPU allocations: %w", err)
	}
	for _, e := range entries {
		p := filepath.Join(in.opts.AllocDir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if match(strings.TrimSpace(string(b))) {
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("release GPU allocation %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

// GPUSpecOpt implements spec.GPUInjector: allocate the task's GPUs (the
// container id is the task id) and inject their CDI edits, giving every hook
// an explicit minimal env.
func (in *Injector) GPUSpecOpt(_ context.Context, req task.GPURequest) (oci.SpecOpts, error) {
	return func(_ context.Context, _ oci.Client, c *containers.Container, s *specs.Spec) error {
		names, err := in.Allocate(c.ID, req)
		if err != nil {
			return err
		}
		if _, err := in.cache.InjectDevices(s, names...); err != nil {
			_ = in.Release(c.ID)
			return fmt.Errorf("%w: inject GPUs %s: %w", errdefs.ErrFailedPrecondition, strings.Join(names, ", "), err)
		}
		if s.Hooks != nil {
			for _, stage := range []*[]specs.Hook{&s.Hooks.CreateRuntime, &s.Hooks.CreateContainer, &s.Hooks.StartContainer, &s.Hooks.Poststart, &s.Hooks.Poststop, &s.Hooks.Prestart} { //nolint:staticcheck
				for i := range *stage {
					(*stage)[i].Env = slices.Clone(hookEnv)
				}
			}
		}
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations["nsn.gpus"] = strings.Join(names, ",")
		return nil
	}, nil
}

// AuditPolicy is what the auditor must allow for a spec with these GPUs:
// exactly the device nodes and bind mounts their CDI edits (and their
// specs' common edits) add, and the allowlisted hooks.
func (in *Injector) AuditPolicy(names []string) audit.Policy {
	p := audit.Policy{HookPaths: slices.Clone(in.opts.HookPaths)}
	add := func(e *cdi.ContainerEdits) {
		if e == nil || e.ContainerEdits == nil {
			return
		}
		for _, n := range e.DeviceNodes {
			p.DevicePaths = append(p.DevicePaths, n.Path)
		}
		for _, m := range e.Mounts {
			p.BindSources = append(p.BindSources, m.HostPath)
		}
	}
	expanded := names
	if len(names) == 1 && names[0] == Kind+"=all" {
		expanded = append(expanded, in.GPUs()...)
	}
	for _, n := range expanded {
		d := in.cache.GetDevice(n)
		if d == nil {
			continue
		}
		add(&cdi.ContainerEdits{ContainerEdits: &d.ContainerEdits})
		if sp := d.GetSpec(); sp != nil {
			add(&cdi.ContainerEdits{ContainerEdits: &sp.ContainerEdits})
		}
	}
	return p
}
