package gpu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/gpu/gputest"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

const uuid0 = gputest.UUID0

// StandInSpec writes the stand-in GPUs' CDI spec (see gputest).
func StandInSpec(t *testing.T) (dir, driver string) {
	t.Helper()
	dir, driver, err := gputest.WriteStandInSpec(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return dir, driver
}

func newInjector(t *testing.T, alloc bool) *Injector {
	t.Helper()
	dir, _ := StandInSpec(t)
	o := Options{SpecDirs: []string{dir}}
	if alloc {
		o.AllocDir = filepath.Join(t.TempDir(), "gpus")
	}
	in, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func req(t *testing.T, s string) task.GPURequest {
	t.Helper()
	r, err := task.ParseGPURequest(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestResolve(t *testing.T) {
	in := newInjector(t, false)
	cases := map[string][]string{
		"device=0": {"nvidia.com/gpu=0"},
		"0,1":      {"nvidia.com/gpu=0", "nvidia.com/gpu=1"},
		uuid0:      {"nvidia.com/gpu=" + uuid0},
		"all":      {"nvidia.com/gpu=all"},
		"2":        {"nvidia.com/gpu=0", "nvidia.com/gpu=1"}, // the UUID aliases GPU 0: not a third GPU
	}
	for in_, want := range cases {
		got, err := in.Resolve(req(t, in_))
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("Resolve(%q) = %v, %v; want %v", in_, got, err, want)
		}
	}
	if _, err := in.Resolve(req(t, "device=7")); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "GPU 7 not found") {
		t.Errorf("unknown GPU: %v", err)
	}
	if _, err := in.Resolve(req(t, "3")); !errdefs.IsResourceExhausted(err) {
		t.Errorf("more GPUs than exist: %v", err)
	}
	if got, _ := in.Resolve(task.GPURequest{}); got != nil {
		t.Errorf("no request resolved to %v", got)
	}
}

// TestAllocatorUnderConcurrency: tasks racing for one GPU each, through two
// injectors over one allocation dir (as two nsn-run processes would be),
// never get the same one; an alias (UUID of GPU 0) is the same GPU; release
// frees.
func TestAllocatorUnderConcurrency(t *testing.T) {
	in := newInjector(t, true)
	other, err := New(in.opts)
	if err != nil {
		t.Fatal(err)
	}
	injectors := []*Injector{in, other}
	var mu sync.Mutex
	got := map[string]string{} // device -> task
	var wg sync.WaitGroup
	var exhausted int
	for i := range 20 {
		wg.Go(func() {
			id := fmt.Sprintf("task-%d", i)
			names, err := injectors[i%2].Allocate(id, req(t, "1"))
			mu.Lock()
			defer mu.Unlock()
			if errdefs.IsResourceExhausted(err) {
				exhausted++
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			for _, n := range names {
				if owner, taken := got[n]; taken {
					t.Errorf("%s given to %s and %s", n, owner, id)
				}
				got[n] = id
			}
		})
	}
	wg.Wait()
	if len(got) != 2 || exhausted != 18 {
		t.Fatalf("allocated %v, %d refused; want both GPUs given once and 18 refusals", got, exhausted)
	}
	owner0 := got["nvidia.com/gpu=0"]
	if _, err := in.Allocate("other", req(t, uuid0)); !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), owner0) {
		t.Errorf("GPU 0 by its UUID while allocated: %v", err)
	}
	if _, err := in.Allocate("other", req(t, "all")); !errdefs.IsResourceExhausted(err) {
		t.Errorf("all while allocated: %v", err)
	}
	if err := in.Release(owner0); err != nil {
		t.Fatal(err)
	}
	if names, err := in.Allocate("other", req(t, uuid0)); err != nil || len(names) != 1 {
		t.Errorf("after release: %v %v", names, err)
	}
	if err := in.ReleaseExcept(map[string]bool{"other": true}); err != nil {
		t.Fatal(err)
	}
	if names, err := in.Allocate("third", req(t, "1")); err != nil || names[0] != "nvidia.com/gpu=1" {
		t.Errorf("gc should have freed GPU 1: %v %v", names, err)
	}
}

// TestSharing: tasks that ask for sharing share a GPU; a GPU held
// exclusively is never shared, and a shared one is never taken exclusively
// until its last sharer releases it.
func TestSharing(t *testing.T) {
	in := newInjector(t, true)
	shared := func(s string) task.GPURequest { r := req(t, s); r.Shared = true; return r }
	for _, id := range []string{"a", "b"} {
		if names, err := in.Allocate(id, shared("device=0")); err != nil || !slices.Equal(names, []string{"nvidia.com/gpu=0"}) {
			t.Fatalf("%s sharing GPU 0: %v %v", id, names, err)
		}
	}
	var sharedOnly *SharedOnlyError
	if _, err := in.Allocate("c", req(t, uuid0)); !errdefs.IsResourceExhausted(err) || !errors.As(err, &sharedOnly) || !strings.Contains(err.Error(), "shared by tasks a, b") {
		t.Errorf("GPU 0 exclusively while shared: %v", err)
	}
	if _, err := in.Allocate("d", req(t, "device=1")); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Allocate("e", shared("device=1")); !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "allocated to task d") {
		t.Errorf("sharing GPU 1 held by d: %v", err)
	}
	if _, err := in.Allocate("e", shared("all")); !errdefs.IsResourceExhausted(err) {
		t.Errorf("sharing all while GPU 1 is held: %v", err)
	}
	// A sharing count takes GPUs no task holds exclusively.
	if names, err := in.Allocate("e", shared("1")); err != nil || !slices.Equal(names, []string{"nvidia.com/gpu=0"}) {
		t.Errorf("sharing count 1: %v %v, want GPU 0", names, err)
	}
	if _, err := in.Allocate("f", req(t, "1")); !errdefs.IsResourceExhausted(err) {
		t.Errorf("exclusive count with every GPU held: %v", err)
	}
	for _, id := range []string{"a", "b"} {
		if err := in.Release(id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := in.Allocate("c", req(t, "device=0")); !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "shared by tasks e") {
		t.Errorf("GPU 0 exclusively while e still shares it: %v", err)
	}
	if err := in.ReleaseExcept(map[string]bool{"d": true}); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Allocate("c", req(t, "device=0")); err != nil {
		t.Errorf("GPU 0 exclusively after every sharer is gone: %v", err)
	}
}

// TestDevices: aliases are one device; holders are shown.
func TestDevices(t *testing.T) {
	in := newInjector(t, true)
	if _, err := in.Allocate("a", req(t, "device=1")); err != nil {
		t.Fatal(err)
	}
	r := req(t, uuid0)
	r.Shared = true
	for _, id := range []string{"b", "c"} {
		if _, err := in.Allocate(id, r); err != nil {
			t.Fatal(err)
		}
	}
	got := in.Devices()
	want := []Device{
		{Names: []string{"nvidia.com/gpu=0", "nvidia.com/gpu=" + uuid0}, Nodes: "/dev/zero", Sharers: []string{"b", "c"}},
		{Names: []string{"nvidia.com/gpu=1", "nvidia.com/gpu=" + gputest.UUID1}, Nodes: "/dev/full", Exclusive: "a"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("devices\n got %+v\nwant %+v", got, want)
	}
}

// TestInjection: only the granted GPU's node, the common edits, hooks with
// a minimal env, and an audit that passes exactly with the GPU policy.
func TestInjection(t *testing.T) {
	in := newInjector(t, true)
	tk := task.Task{ID: "gpu-task", Image: "busybox", Command: []string{"true"}, GPUs: "device=1"}
	s, err := generateWithGPUs(in, tk, "/var/lib/nsn-run/tasks/gpu-task/output/"+task.PreviewOutputKey)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []string
	for _, d := range s.Linux.Devices {
		nodes = append(nodes, d.Path)
	}
	if !slices.Equal(nodes, []string{"/dev/nvidia-standin1"}) {
		t.Errorf("device nodes %v, want only /dev/nvidia-standin1", nodes)
	}
	if !slices.Contains(s.Process.Env, "NVIDIA_STANDIN=1") {
		t.Errorf("common env missing: %v", s.Process.Env)
	}
	if !slices.ContainsFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == "/usr/lib/libnvidia-standin.so" }) {
		t.Error("common mount missing")
	}
	if len(s.Process.Capabilities.Bounding) != 0 || s.Process.User.UID == 0 {
		t.Error("GPU injection changed the capability drop or the user")
	}
	if f := audit.Check(context.Background(), s, audit.Policy{CDI: in, HostIdentity: true}); len(f) != 0 {
		t.Errorf("GPU spec fails the audit that replays its CDI edits: %v", f)
	}
	if _, shared := s.Annotations[SharedAnnotation]; shared {
		t.Error("an exclusive task's spec says its GPUs are shared")
	}
	if f := audit.Check(context.Background(), s, audit.Policy{HostIdentity: true}); !slices.ContainsFunc(f, func(f audit.Finding) bool { return f.Rule == audit.RuleDevices }) {
		t.Errorf("without the CDI specs the injected node must be a finding: %v", f)
	}
	// Another GPU's edits under this task's annotation are findings.
	other := *s
	other.Annotations = map[string]string{Annotation: "nvidia.com/gpu=0"}
	if f := audit.Check(context.Background(), &other, audit.Policy{CDI: in, HostIdentity: true}); !slices.ContainsFunc(f, func(f audit.Finding) bool { return f.Rule == audit.RuleDevices }) {
		t.Errorf("GPU 1's node under an annotation naming GPU 0 must be a finding: %v", f)
	}
	// The allocation was made for the container id: the task's.
	if _, err := in.Allocate("someone-else", req(t, "device=1")); !errdefs.IsResourceExhausted(err) {
		t.Errorf("GPU 1 not allocated to the task: %v", err)
	}
	// A sharing task's spec says so.
	sharing := tk
	sharing.ID, sharing.GPUs, sharing.GPUShared = "sharing", "device=0", true
	if s, err := generateWithGPUs(in, sharing, "/o"); err != nil || s.Annotations[SharedAnnotation] != "true" {
		t.Errorf("sharing task's spec: %v %v", err, s)
	}
	// An unknown GPU fails generation and allocates nothing.
	bad := tk
	bad.ID, bad.GPUs = "bad", "device=7"
	if _, err := generateWithGPUs(in, bad, "/o"); !errdefs.IsNotFound(err) {
		t.Errorf("unknown GPU: %v", err)
	}
}

func TestHooksGetMinimalEnv(t *testing.T) {
	dir := t.TempDir()
	yaml := `cdiVersion: "0.6.0"
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes: [{path: /dev/nvidia-standin0, hostPath: /dev/zero}]
    hooks:
    - {hookName: createContainer, path: /usr/bin/nvidia-cdi-hook, args: [nvidia-cdi-hook, update-ldcache], env: [LD_PRELOAD=/evil.so]}
`
	if err := os.WriteFile(filepath.Join(dir, "h.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	in, err := New(Options{SpecDirs: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := generateWithGPUs(in, task.Task{ID: "h", Image: "busybox", Command: []string{"true"}, GPUs: "device=0"}, "/var/lib/nsn-run/tasks/h/output/"+task.PreviewOutputKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Hooks.CreateContainer) != 1 || !slices.Equal(s.Hooks.CreateContainer[0].Env, HookEnv()) {
		t.Errorf("hook env = %v, want only %v", s.Hooks.CreateContainer, HookEnv())
	}
	if f := audit.Check(context.Background(), s, audit.Policy{CDI: in, HostIdentity: true}); len(f) != 0 {
		t.Errorf("allowlisted hook with minimal env: %v", f)
	}
	// A hook outside the allowlist is refused at injection.
	strict, err := New(Options{SpecDirs: []string{dir}, HookPaths: []string{"/usr/bin/nvidia-ctk"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := generateWithGPUs(strict, task.Task{ID: "h2", Image: "busybox", Command: []string{"true"}, GPUs: "device=0"}, "/o"); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "not an allowed hook") {
		t.Errorf("hook outside the allowlist: %v", err)
	}
}

// TestInjectionInUserNamespace: with the task's own user namespace the
// CDI mounts carry no "idmap" option (runc 1.1 cannot do it), and the audit
// replays the same edits.
func TestInjectionInUserNamespace(t *testing.T) {
	in := newInjector(t, true)
	tk := task.Task{ID: "userns-gpu", Image: "busybox", Command: []string{"true"}, GPUs: "device=0"}
	r, _ := tk.GPURequest()
	names, err := in.Allocate(tk.ID, r)
	if err != nil {
		t.Fatal(err)
	}
	ids := task.IDRange{HostID: 1 << 20, Size: task.IDRangeSize}
	s, err := spec.Generate(context.Background(), tk, ocispec.ImageConfig{}, spec.Options{OutputDir: "/var/lib/nsn-run/tasks/userns-gpu/output/" + task.PreviewOutputKey, GPUDevices: names, CDI: in, UserNS: &ids, UserNSSysctls: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range s.Mounts {
		if slices.Contains(m.Options, "idmap") || slices.Contains(m.Options, "ridmap") {
			t.Errorf("mount %s has %v", m.Destination, m.Options)
		}
	}
	if f := audit.Check(context.Background(), s, audit.Policy{CDI: in}); len(f) != 0 {
		t.Errorf("findings: %v", f)
	}
}

// generateWithGPUs allocates tk's GPUs and generates its spec with them, as
// the backends do.
func generateWithGPUs(in *Injector, tk task.Task, outDir string) (*specs.Spec, error) {
	r, err := tk.GPURequest()
	if err != nil {
		return nil, err
	}
	names, err := in.Allocate(tk.ID, r)
	if err != nil {
		return nil, err
	}
	return spec.Generate(context.Background(), tk, ocispec.ImageConfig{}, spec.Options{OutputDir: outDir, GPUDevices: names, CDI: in})
}

// TestStateDirsShareTheNodesGPUs: two allocators over the node-wide
// allocation dir, each for its own state dir (Owner), as a node agent and
// the CLI with different state dirs: a GPU the first's task holds is not
// given to the second's task of the same id (an outside review had GPU 0
// granted twice when each state dir kept its own grants); neither releases
// the other's grants; a grant whose task's state dir is gone from its
// owner's tasks dir is free, and one whose owner moved away is not.
func TestStateDirsShareTheNodesGPUs(t *testing.T) {
	specDir, _ := StandInSpec(t)
	alloc := filepath.Join(t.TempDir(), "gpus")
	open := func() (*Injector, string) {
		state := t.TempDir()
		in, err := New(Options{SpecDirs: []string{specDir}, AllocDir: alloc, Owner: state})
		if err != nil {
			t.Fatal(err)
		}
		return in, state
	}
	agent, agentState := open()
	cli, _ := open()
	if err := os.MkdirAll(filepath.Join(agentState, "tasks", "job-1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Allocate("job-1", req(t, "device=0")); err != nil {
		t.Fatal(err)
	}
	_, err := cli.Allocate("job-1", req(t, "device=0"))
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "job-1 (state dir "+agentState+")") {
		t.Errorf("the other state dir's task got the held GPU: %v", err)
	}
	if err := cli.Release("job-1"); err != nil {
		t.Fatal(err)
	}
	if err := cli.ReleaseExcept(map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	if got := agent.Devices()[0].Exclusive; got != "job-1" {
		t.Errorf("after the other's release and gc GPU 0 is held by %q, want job-1", got)
	}
	if got := cli.Devices()[0].Exclusive; got != "job-1 (state dir "+agentState+")" {
		t.Errorf("the other allocator lists GPU 0 held by %q", got)
	}
	// Shared grants of the same id in both state dirs are two grants, and
	// one's release leaves the other's.
	shared := req(t, "device=1")
	shared.Shared = true
	if err := os.MkdirAll(filepath.Join(agentState, "tasks", "both"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, in := range []*Injector{agent, cli} {
		if _, err := in.Allocate("both", shared); err != nil {
			t.Fatal(err)
		}
	}
	if err := cli.Release("both"); err != nil {
		t.Fatal(err)
	}
	if got := agent.Devices()[1].Sharers; !slices.Equal(got, []string{"both"}) {
		t.Errorf("GPU 1's sharers after the other's release: %v, want the agent's both", got)
	}
	// The agent's state dir moves (an outside review renamed its parent
	// while its task ran): the grant is held, not taken as stale.
	moved := agentState + ".moved"
	if err := os.Rename(agentState, moved); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Allocate("job-2", req(t, "device=0")); !errdefs.IsResourceExhausted(err) {
		t.Errorf("GPU 0 of a task whose state dir moved: %v, want it still held", err)
	}
	// ... and another state dir made at its path (by any nsn-run naming
	// it: a fifth review) is not the grant's either.
	if err := os.MkdirAll(filepath.Join(agentState, "tasks"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Allocate("job-2", req(t, "device=0")); !errdefs.IsResourceExhausted(err) {
		t.Errorf("GPU 0 of a task whose state dir moved, a new one at its path: %v, want it still held", err)
	}
	if err := os.RemoveAll(agentState); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(moved, agentState); err != nil {
		t.Fatal(err)
	}
	// The task's own state dir goes (a crash past its cleanup): the grant
	// is stale, and the GPU free.
	if err := os.RemoveAll(filepath.Join(agentState, "tasks", "job-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Allocate("job-2", req(t, "device=0")); err != nil {
		t.Errorf("a stale grant kept GPU 0: %v", err)
	}
}

// TestCheckHolds: what the audit asks of a spec's GPUs: none another task
// holds alone; none another task shares, unless the spec's use is shared
// too; its own task's grants pass.
func TestCheckHolds(t *testing.T) {
	in := newInjector(t, true)
	if _, err := in.Allocate("d", req(t, "device=1")); err != nil {
		t.Fatal(err)
	}
	shared := req(t, "device=0")
	shared.Shared = true
	if _, err := in.Allocate("s", shared); err != nil {
		t.Fatal(err)
	}
	gpu0, gpu1, all := []string{"nvidia.com/gpu=0"}, []string{"nvidia.com/gpu=" + gputest.UUID1}, []string{"nvidia.com/gpu=all"}
	for _, c := range []struct {
		id     string
		names  []string
		shared bool
		want   string // "" no error
	}{
		{"d", gpu1, false, ""},
		{"x", gpu1, false, "allocated to task d"},
		{"x", gpu1, true, "allocated to task d"},
		{"x", gpu0, false, "shared by task s"},
		{"x", gpu0, true, ""},
		{"s", gpu0, false, ""},
		{"x", all, true, "allocated to task d"},
	} {
		err := in.CheckHolds(c.id, c.names, c.shared)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("task %s, %v, shared %v: %v; want no error", c.id, c.names, c.shared, err)
		case c.want != "" && (!errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("task %s, %v, shared %v: %v; want %q", c.id, c.names, c.shared, err, c.want)
		}
	}
	if err := in.Release("d"); err != nil {
		t.Fatal(err)
	}
	if err := in.CheckHolds("x", gpu1, false); err != nil {
		t.Errorf("GPU 1 once released: %v", err)
	}
}

// TestCheckHoldsStateDirIdentity: a grant is its own task's only for the
// state dir it was made in, by the directory's identity, not its path: a
// state dir moved away and a new one at its path, or another directory
// at that path in another mount namespace, does not own it.
func TestCheckHoldsStateDirIdentity(t *testing.T) {
	dir, _ := StandInSpec(t)
	alloc := filepath.Join(t.TempDir(), "gpus")
	state := filepath.Join(t.TempDir(), "state")
	if err := os.MkdirAll(filepath.Join(state, "tasks", "t"), 0o700); err != nil {
		t.Fatal(err)
	}
	first, err := New(Options{SpecDirs: []string{dir}, AllocDir: alloc, Owner: state})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Allocate("t", req(t, "device=1")); err != nil {
		t.Fatal(err)
	}
	gpu1 := []string{"nvidia.com/gpu=1"}
	if err := first.CheckHolds("t", gpu1, false); err != nil {
		t.Fatalf("its own grant: %v", err)
	}
	if err := os.Rename(state, state+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(state, "tasks", "t"), 0o700); err != nil {
		t.Fatal(err)
	}
	second, err := New(Options{SpecDirs: []string{dir}, AllocDir: alloc, Owner: state})
	if err != nil {
		t.Fatal(err)
	}
	if err := second.CheckHolds("t", gpu1, false); !errdefs.IsResourceExhausted(err) {
		t.Errorf("the same path and task id, another directory: %v; want the grant refused", err)
	}
}
