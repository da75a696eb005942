package spec_test

import (
	"bytes"
	"context"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const outputDir = "/var/lib/nsn-run/tasks/job-1/output/" + task.PreviewOutputKey

func baseTask() task.Task {
	return task.Task{ID: "job-1", Image: "busybox:latest", Command: []string{"echo", "hi"}}
}

func generate(t *testing.T, tk task.Task, img ocispec.ImageConfig) *specs.Spec {
	t.Helper()
	s, err := spec.Generate(context.Background(), tk, img, spec.Options{OutputDir: outputDir})
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return s
}

// thermalPath matches the per-CPU masked paths containerd adds for each CPU
// the host has: the only host-dependent part of a spec.
var thermalPath = regexp.MustCompile(`^/sys/devices/system/cpu/cpu[0-9]+/thermal_throttle$`)

func TestGolden(t *testing.T) {
	cases := []struct {
		name string
		task func() task.Task
		img  ocispec.ImageConfig
	}{
		{"default", baseTask, ocispec.ImageConfig{}},
		{"image-config", func() task.Task {
			tk := baseTask()
			tk.Env = []string{"LANG=C.UTF-8", "MODEL=tiny"}
			return tk
		}, ocispec.ImageConfig{
			Entrypoint: []string{"/usr/bin/entry"},
			Cmd:        []string{"ignored"},
			Env:        []string{"PATH=/opt/bin:/usr/bin:/bin", "LANG=C"},
			WorkingDir: "/work",
			User:       "1000:1001",
			Volumes:    map[string]struct{}{"/data": {}},
			StopSignal: "SIGKILL",
		}},
		{"limits", func() task.Task {
			tk := baseTask()
			tk.Limits = task.Limits{MemoryBytes: 256 * task.MiB, CPUs: 0.5, Pids: 64, OpenFiles: 4096, TmpBytes: 128 * task.MiB, TmpInodes: 1000}
			tk.User = "4242:4343"
			tk.WorkingDir = "/tmp"
			return tk
		}, ocispec.ImageConfig{User: "1000"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := generate(t, c.task(), c.img)
			s.Linux.MaskedPaths = slices.DeleteFunc(s.Linux.MaskedPaths, thermalPath.MatchString)
			got, err := spec.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", c.name+".json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./spec -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("spec differs from %s; run go test ./spec -update and review the diff\n%s", golden, firstDiff(got, want))
			}
		})
	}
}

func firstDiff(got, want []byte) string {
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < len(g) && i < len(w); i++ {
		if g[i] != w[i] {
			return "line " + strconv.Itoa(i+1) + ":\n got: " + g[i] + "\nwant: " + w[i]
		}
	}
	return "lengths differ: " + strconv.Itoa(len(g)) + " vs " + strconv.Itoa(len(w)) + " lines"
}

func TestDeterministic(t *testing.T) {
	img := ocispec.ImageConfig{Env: []string{"A=1"}, User: "1000"}
	first, _ := spec.Marshal(generate(t, baseTask(), img))
	for range 5 {
		again, _ := spec.Marshal(generate(t, baseTask(), img))
		if !bytes.Equal(first, again) {
			t.Fatal("two generations of the same task differ")
		}
	}
}

// TestSecurityDefaults checks every control of design.md's security table on
// the default spec, one assertion per control.
func TestSecurityDefaults(t *testing.T) {
	s := generate(t, baseTask(), ocispec.ImageConfig{})
	p := s.Process

	if p.User.UID != task.NobodyID || p.User.GID != task.NobodyID {
		t.Errorf("user = %d:%d, want 65534:65534", p.User.UID, p.User.GID)
	}
	c := p.Capabilities
	for name, set := range map[string][]string{"bounding": c.Bounding, "effective": c.Effective, "inheritable": c.Inheritable, "permitted": c.Permitted, "ambient": c.Ambient} {
		if set == nil || len(set) != 0 {
			t.Errorf("capabilities.%s = %v, want []", name, set)
		}
	}
	if !p.NoNewPrivileges {
		t.Error("noNewPrivileges is off")
	}
	sc := s.Linux.Seccomp
	if sc == nil || sc.DefaultAction != specs.ActErrno {
		t.Fatalf("seccomp = %+v, want default action SCMP_ACT_ERRNO", sc)
	}
	clone3ENOSYS := false
	for _, r := range sc.Syscalls {
		for _, n := range r.Names {
			if strings.HasPrefix(n, "io_uring") && r.Action == specs.ActAllow {
				t.Errorf("seccomp allows %s", n)
			}
			if n == "clone3" && r.Action == specs.ActErrno && r.ErrnoRet != nil && *r.ErrnoRet == uint(unix.ENOSYS) {
				clone3ENOSYS = true
			}
		}
	}
	if !clone3ENOSYS {
		t.Error("clone3 does not fail with ENOSYS")
	}
	if !s.Root.Readonly || s.Root.Path != "rootfs" {
		t.Errorf("root = %+v, want read-only rootfs", s.Root)
	}
	var nsTypes []string
	for _, ns := range s.Linux.Namespaces {
		if ns.Path != "" {
			t.Errorf("namespace %s joins %s", ns.Type, ns.Path)
		}
		nsTypes = append(nsTypes, string(ns.Type))
	}
	slices.Sort(nsTypes)
	if got := strings.Join(nsTypes, ","); got != "cgroup,ipc,mount,network,pid,uts" {
		t.Errorf("namespaces = %s", got)
	}
	for _, m := range spec.RequiredMaskedPaths() {
		if !slices.Contains(s.Linux.MaskedPaths, m) {
			t.Errorf("%s not masked", m)
		}
	}
	// containerd masks each CPU's thermal_throttle directory where the host
	// has one (this kind of VM often has none).
	if _, err := os.Stat("/sys/devices/system/cpu/cpu0/thermal_throttle"); err == nil &&
		!slices.Contains(s.Linux.MaskedPaths, "/sys/devices/system/cpu/cpu0/thermal_throttle") {
		t.Error("cpu0's thermal_throttle is not masked")
	}
	for _, r := range spec.RequiredReadonlyPaths() {
		if !slices.Contains(s.Linux.ReadonlyPaths, r) {
			t.Errorf("%s not read-only", r)
		}
	}
	res := s.Linux.Resources
	d := task.Defaults
	if *res.Memory.Limit != d.MemoryBytes || *res.Memory.Swap != d.MemoryBytes {
		t.Errorf("memory limit %d swap %d, want both %d", *res.Memory.Limit, *res.Memory.Swap, d.MemoryBytes)
	}
	if *res.CPU.Quota != 100000 || *res.CPU.Period != 100000 {
		t.Errorf("cpu quota/period = %d/%d, want 100000/100000 for 1 CPU", *res.CPU.Quota, *res.CPU.Period)
	}
	if *res.Pids.Limit != d.Pids {
		t.Errorf("pids = %d", *res.Pids.Limit)
	}
	wantRlimits := []specs.POSIXRlimit{
		{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}, {Type: "RLIMIT_CORE"}, {Type: "RLIMIT_RTPRIO"}, {Type: "RLIMIT_NICE"},
		{Type: "RLIMIT_MEMLOCK", Hard: 65536, Soft: 65536}, {Type: "RLIMIT_MSGQUEUE"},
		{Type: "RLIMIT_SIGPENDING", Hard: 256, Soft: 256},
	}
	if !slices.Equal(p.Rlimits, wantRlimits) {
		t.Errorf("rlimits = %+v, want %+v", p.Rlimits, wantRlimits)
	}
	if p.OOMScoreAdj == nil || *p.OOMScoreAdj != 1000 {
		t.Errorf("oomScoreAdj = %v, want 1000", p.OOMScoreAdj)
	}
	if s.Linux.RootfsPropagation != "rprivate" {
		t.Errorf("rootfsPropagation = %q, want rprivate", s.Linux.RootfsPropagation)
	}
	if got := s.Linux.Seccomp.Architectures; runtime.GOARCH == "amd64" && !slices.Equal(got, []specs.Arch{specs.ArchX86_64}) {
		t.Errorf("seccomp architectures = %v, want only the native SCMP_ARCH_X86_64", got)
	}
	for _, d := range res.Devices {
		if d.Allow && d.Major != nil && *d.Major == 5 && d.Minor != nil && *d.Minor == 1 {
			t.Errorf("device cgroup allows /dev/console: %+v", d)
		}
	}
	if len(s.Linux.Sysctl) != 0 || s.Hooks != nil {
		t.Errorf("sysctls %v hooks %v, want none", s.Linux.Sysctl, s.Hooks)
	}
	if !slices.Contains(p.Env, "HOME=/tmp") {
		t.Errorf("env %v lacks HOME=/tmp", p.Env)
	}
	if len(s.Linux.Devices) != 0 {
		t.Errorf("devices = %v, want none beyond runc's defaults", s.Linux.Devices)
	}

	mounts := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m
		if m.Type == "bind" && m.Destination != spec.OutputPath {
			t.Errorf("host bind mount at %s from %s", m.Destination, m.Source)
		}
	}
	tmp := mounts["/tmp"]
	for _, o := range []string{"nosuid", "nodev", "noexec", "size=67108864", "nr_inodes=16384"} {
		if tmp.Type != "tmpfs" || !slices.Contains(tmp.Options, o) {
			t.Errorf("/tmp mount %+v lacks %s", tmp, o)
		}
	}
	out := mounts["/output"]
	if out.Source != outputDir || !slices.Contains(out.Options, "rw") || !slices.Contains(out.Options, "noexec") || slices.Contains(out.Options, "rbind") {
		t.Errorf("/output mount = %+v", out)
	}
	if f := audit.Check(context.Background(), s, audit.Policy{HostIdentity: true}); len(f) != 0 {
		t.Errorf("the default spec has audit findings: %v", f)
	}
}

func TestImageConfigIsFiltered(t *testing.T) {
	for _, c := range []struct {
		imageUser, taskUser string
		uid, gid            uint32
	}{
		{"", "", 65534, 65534},
		{"0", "", 65534, 65534},
		{"0:0", "", 65534, 65534},
		{"root", "", 65534, 65534},
		{"1000:root", "", 65534, 65534},
		{"1000:0", "", 65534, 65534},
		{"app", "", 65534, 65534},
		{"1000", "", 1000, 1000},
		{"1000:2000", "", 1000, 2000},
		{"0", "7:8", 7, 8},
	} {
		tk := baseTask()
		tk.User = c.taskUser
		s := generate(t, tk, ocispec.ImageConfig{User: c.imageUser})
		if s.Process.User.UID != c.uid || s.Process.User.GID != c.gid {
			t.Errorf("image user %q task user %q: got %d:%d, want %d:%d", c.imageUser, c.taskUser, s.Process.User.UID, s.Process.User.GID, c.uid, c.gid)
		}
	}

	s := generate(t, baseTask(), ocispec.ImageConfig{Entrypoint: []string{"/e", "-x"}, Cmd: []string{"dropped"}, Env: []string{"LANG=C"}})
	if got := strings.Join(s.Process.Args, " "); got != "/e -x echo hi" {
		t.Errorf("args = %q, want entrypoint + task command", got)
	}
	tk := baseTask()
	tk.Env = []string{"LANG=en", "HOME=/tmp/home"}
	s = generate(t, tk, ocispec.ImageConfig{Env: []string{"LANG=C"}})
	if !slices.Contains(s.Process.Env, "LANG=en") || !slices.Contains(s.Process.Env, "HOME=/tmp/home") || slices.Contains(s.Process.Env, "LANG=C") {
		t.Errorf("task env does not override image env: %v", s.Process.Env)
	}
}

func TestOptsRefuses(t *testing.T) {
	cases := []struct {
		name  string
		task  func() task.Task
		img   ocispec.ImageConfig
		opts  spec.Options
		isErr func(error) bool
		want  string
	}{
		{"invalid task", func() task.Task { tk := baseTask(); tk.ID = "A"; return tk }, ocispec.ImageConfig{}, spec.Options{OutputDir: outputDir}, errdefs.IsInvalidArgument, "task id"},
		{"relative output dir", baseTask, ocispec.ImageConfig{}, spec.Options{OutputDir: "out"}, errdefs.IsInvalidArgument, "output dir"},
		{"no output dir", baseTask, ocispec.ImageConfig{}, spec.Options{}, errdefs.IsInvalidArgument, "output dir"},
		{"image workdir in proc", baseTask, ocispec.ImageConfig{WorkingDir: "/proc/self/fd/7"}, spec.Options{OutputDir: outputDir}, errdefs.IsInvalidArgument, "image config WorkingDir"},
		{"image workdir relative", baseTask, ocispec.ImageConfig{WorkingDir: "../x"}, spec.Options{OutputDir: outputDir}, errdefs.IsInvalidArgument, "image config WorkingDir"},
		{"image env nul", baseTask, ocispec.ImageConfig{Env: []string{"A=\x00"}}, spec.Options{OutputDir: outputDir}, errdefs.IsInvalidArgument, "image config Env"},
		{"gpus not granted", func() task.Task { tk := baseTask(); tk.GPUs = "all"; return tk }, ocispec.ImageConfig{}, spec.Options{OutputDir: outputDir}, errdefs.IsFailedPrecondition, "none was granted"},
		{"gpus without injector", func() task.Task { tk := baseTask(); tk.GPUs = "all"; return tk }, ocispec.ImageConfig{}, spec.Options{OutputDir: outputDir, GPUDevices: []string{"nvidia.com/gpu=0"}}, errdefs.IsFailedPrecondition, "no CDI device injector"},
		{"gpus granted to a task without", baseTask, ocispec.ImageConfig{}, spec.Options{OutputDir: outputDir, GPUDevices: []string{"nvidia.com/gpu=0"}}, errdefs.IsInvalidArgument, "asks for none"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := spec.Opts(c.task(), c.img, c.opts)
			if err == nil || !c.isErr(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Opts() = %v, want a typed error saying %q", err, c.want)
			}
		})
	}
}

// recordingInjector stands in for the CDI injector to show where GPU edits
// run in the option order.
type recordingInjector struct {
	names  []string
	shared bool
	uid    uint32
	capsAt int
}

func (r *recordingInjector) InjectSpecOpt(names []string, shared bool) (oci.SpecOpts, error) {
	r.names, r.shared = names, shared
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		r.uid = s.Process.User.UID
		r.capsAt = len(s.Process.Capabilities.Bounding)
		s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{Path: "/dev/nvidia0", Type: "c", Major: 195})
		return nil
	}, nil
}

func TestGPUInjectionRunsAfterUserAndBeforeCapabilityDrop(t *testing.T) {
	inj := &recordingInjector{}
	tk := baseTask()
	tk.GPUs = "0,1"
	granted := []string{"nvidia.com/gpu=0", "nvidia.com/gpu=1"}
	s, err := spec.Generate(context.Background(), tk, ocispec.ImageConfig{User: "1000"}, spec.Options{OutputDir: outputDir, GPUDevices: granted, CDI: inj})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(inj.names, granted) || inj.shared {
		t.Errorf("injector got %v shared=%v, want exactly the granted %v", inj.names, inj.shared, granted)
	}
	if inj.uid != 1000 {
		t.Errorf("injector saw uid %d, want the final user 1000", inj.uid)
	}
	if inj.capsAt == 0 {
		t.Error("capabilities were already dropped when GPUs were injected; the drop must come last so nothing re-adds them")
	}
	if len(s.Process.Capabilities.Bounding) != 0 {
		t.Error("capabilities survived")
	}
	if !slices.ContainsFunc(s.Linux.Devices, func(d specs.LinuxDevice) bool { return d.Path == "/dev/nvidia0" }) {
		t.Error("injected device missing")
	}
}

func TestOOMScoreAdjBounds(t *testing.T) {
	for _, c := range []struct {
		score int
		ok    bool
		want  int
	}{{0, true, 1000}, {500, true, 500}, {999, true, 999}, {499, false, 0}, {1001, false, 0}, {-1000, false, 0}} {
		s, err := spec.Generate(context.Background(), baseTask(), ocispec.ImageConfig{}, spec.Options{OutputDir: outputDir, OOMScoreAdj: c.score})
		if c.ok != (err == nil) {
			t.Errorf("oom score %d: err = %v, want ok=%v", c.score, err, c.ok)
			continue
		}
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("oom score %d: error %v is not invalid-argument", c.score, err)
			}
			continue
		}
		if *s.Process.OOMScoreAdj != c.want {
			t.Errorf("oom score %d: spec has %d, want %d", c.score, *s.Process.OOMScoreAdj, c.want)
		}
	}
}

// TestMaskedAndReadonlyPathsAreTheSpecs: the lists backends without an OCI
// spec send are exactly the generated spec's, required paths included.
func TestMaskedAndReadonlyPathsAreTheSpecs(t *testing.T) {
	s := generate(t, baseTask(), ocispec.ImageConfig{})
	masked, err := spec.MaskedPaths()
	if err != nil {
		t.Fatal(err)
	}
	readonly, err := spec.ReadonlyPaths()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(masked, s.Linux.MaskedPaths) {
		t.Errorf("MaskedPaths() = %v, spec has %v", masked, s.Linux.MaskedPaths)
	}
	if !slices.Equal(readonly, s.Linux.ReadonlyPaths) {
		t.Errorf("ReadonlyPaths() = %v, spec has %v", readonly, s.Linux.ReadonlyPaths)
	}
	for _, p := range spec.RequiredMaskedPaths() {
		if !slices.Contains(masked, p) {
			t.Errorf("MaskedPaths() lacks %s", p)
		}
	}
	for _, p := range spec.RequiredReadonlyPaths() {
		if !slices.Contains(readonly, p) {
			t.Errorf("ReadonlyPaths() lacks %s", p)
		}
	}
}

// envInjector is a GPU injector whose edits set the device variables, as
// the NVIDIA CDI specs' edits do.
type envInjector struct{}

func (envInjector) InjectSpecOpt([]string, bool) (oci.SpecOpts, error) {
	return oci.WithEnv([]string{"NVIDIA_VISIBLE_DEVICES=void"}), nil
}

// TestImageNVIDIADeviceVarsDropped: an image's NVIDIA device-selection
// variables reach neither backend's process (spec.Generate for containerd,
// spec.ProcessFor for docker); the rest of its env does. Only a granted
// GPU's edits set them.
func TestImageNVIDIADeviceVarsDropped(t *testing.T) {
	for _, c := range []struct {
		kv   string
		kept bool
	}{
		{"NVIDIA_VISIBLE_DEVICES=all", false},
		{"NVIDIA_DRIVER_CAPABILITIES=compute,utility,video,display", false},
		{"NVIDIA_REQUIRE_CUDA=cuda>=12.0 brand=tesla", false},
		{"NVIDIA_MIG_CONFIG_DEVICES=all", false},
		{"NVIDIA_MIG_MONITOR_DEVICES=all", false},
		{"NVIDIA_IMEX_CHANNELS=all", false},
		{"NVIDIA_MOFED=enabled", false},
		{"CUDA_VERSION=12.4.1", true},
		{"NVIDIA_PRODUCT_NAME=CUDA", true},
	} {
		img := ocispec.ImageConfig{Env: []string{"PATH=/usr/local/cuda/bin:/bin", c.kv}}
		s := generate(t, baseTask(), img)
		p, err := spec.ProcessFor(baseTask(), img)
		if err != nil {
			t.Fatal(err)
		}
		for name, env := range map[string][]string{"containerd spec": s.Process.Env, "docker process": p.Env} {
			if slices.Contains(env, c.kv) != c.kept {
				t.Errorf("image env %s: in the %s = %v, want %v (%v)", c.kv, name, !c.kept, c.kept, env)
			}
			if !slices.Contains(env, "PATH=/usr/local/cuda/bin:/bin") {
				t.Errorf("%s lost the image's PATH: %v", name, env)
			}
		}
	}

	tk := baseTask()
	tk.GPUs = "device=0"
	s, err := spec.Generate(context.Background(), tk, ocispec.ImageConfig{Env: []string{"NVIDIA_VISIBLE_DEVICES=all"}}, spec.Options{OutputDir: outputDir, GPUDevices: []string{"nvidia.com/gpu=0"}, CDI: envInjector{}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(s.Process.Env, "NVIDIA_VISIBLE_DEVICES=void") || slices.Contains(s.Process.Env, "NVIDIA_VISIBLE_DEVICES=all") {
		t.Errorf("granted GPU: env %v, want the edits' NVIDIA_VISIBLE_DEVICES=void and not the image's", s.Process.Env)
	}
}

// TestInit: a task with Init runs nsn-init as pid 1 (the command after
// "--"), bound read-only from the node's binary; without a binary to give
// it the task is refused, and a task without Init gets neither.
func TestInit(t *testing.T) {
	tk := baseTask()
	tk.Init = true
	s, err := spec.Generate(context.Background(), tk, ocispec.ImageConfig{}, spec.Options{OutputDir: outputDir, InitBinary: "/usr/local/lib/nsn-run/nsn-init"})
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]string{spec.InitPath, "--"}, tk.Command...); !slices.Equal(s.Process.Args, want) {
		t.Errorf("args %q, want %q", s.Process.Args, want)
	}
	i := slices.IndexFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == spec.InitPath })
	if i < 0 || s.Mounts[i].Source != "/usr/local/lib/nsn-run/nsn-init" || !slices.Contains(s.Mounts[i].Options, "ro") || !slices.Contains(s.Mounts[i].Options, "nosuid") {
		t.Errorf("init mount: %+v", s.Mounts)
	}
	if _, err := spec.Generate(context.Background(), tk, ocispec.ImageConfig{}, spec.Options{OutputDir: outputDir}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("init without a binary: %v, want FailedPrecondition", err)
	}
	plain, err := spec.Generate(context.Background(), baseTask(), ocispec.ImageConfig{}, spec.Options{OutputDir: outputDir, InitBinary: "/usr/local/lib/nsn-run/nsn-init"})
	if err != nil {
		t.Fatal(err)
	}
	if plain.Process.Args[0] == spec.InitPath || slices.ContainsFunc(plain.Mounts, func(m specs.Mount) bool { return m.Destination == spec.InitPath }) {
		t.Errorf("a task without Init got nsn-init: %q", plain.Process.Args)
	}
}

// TestUserNSSysctls: with a user namespace and UserNSSysctls the spec's only
// sysctls are the per-user limits this kernel has, at UserNSLimits' values;
// without either there are none. Each spec has a map of its own.
func TestUserNSSysctls(t *testing.T) {
	tk := task.Task{ID: "limits", Image: "busybox", Command: []string{"true"}}
	r := task.IDRange{HostID: 1 << 20, Size: task.IDRangeSize}
	gen := func(o spec.Options) *specs.Spec {
		t.Helper()
		o.OutputDir = "/var/lib/nsn-run/tasks/limits/output"
		s, err := spec.Generate(context.Background(), tk, ocispec.ImageConfig{}, o)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	want := map[string]string{}
	for _, l := range spec.UserNSLimits {
		if _, err := os.Stat("/proc/sys/user/" + l.Name); err == nil {
			want["user."+l.Name] = strconv.Itoa(l.Value)
		}
	}
	if want["user.max_user_namespaces"] != "0" || want["user.max_inotify_instances"] != "16" {
		t.Fatalf("this kernel's limits as sysctls: %v; want at least max_user_namespaces 0 and max_inotify_instances 16", want)
	}
	s := gen(spec.Options{UserNS: &r, UserNSSysctls: true})
	if !maps.Equal(s.Linux.Sysctl, want) {
		t.Errorf("sysctls %v, want %v", s.Linux.Sysctl, want)
	}
	s.Linux.Sysctl["user.max_inotify_instances"] = "128"
	if again := gen(spec.Options{UserNS: &r, UserNSSysctls: true}); again.Linux.Sysctl["user.max_inotify_instances"] != "16" {
		t.Errorf("a change to one spec's sysctls reached the next spec: %v", again.Linux.Sysctl)
	}
	if s := gen(spec.Options{UserNS: &r}); s.Linux.Sysctl != nil {
		t.Errorf("without UserNSSysctls: sysctls %v, want none", s.Linux.Sysctl)
	}
	if s := gen(spec.Options{UserNSSysctls: true}); s.Linux.Sysctl != nil {
		t.Errorf("without a user namespace: sysctls %v, want none (runc refuses user.* there)", s.Linux.Sysctl)
	}
}

// TestSharedIdentityImage: under shared host ids an image's USER whose
// uid or gid is taken (a host account's or group's, or in the node's
// per-task ranges) is dropped, so the task runs as nobody; any other USER
// is kept.
func TestSharedIdentityImage(t *testing.T) {
	accounts := map[uint32]bool{1: true, 1000: true}
	taken := func(uid, gid uint32) bool { return accounts[uid] || accounts[gid] }
	for user, want := range map[string]string{
		"1000":      "",
		"1000:2000": "",
		"1":         "",
		"4242:1000": "",
		"65534":     "65534",
		"4242":      "4242",
		"":          "",
		"daemon":    "daemon", // not numeric: nobody anyway
	} {
		got := spec.SharedIdentityImage(ocispec.ImageConfig{User: user, Env: []string{"A=1"}}, taken)
		if got.User != want || len(got.Env) != 1 {
			t.Errorf("USER %q: %q (env %v), want %q", user, got.User, got.Env, want)
		}
		tk := task.Task{ID: "u", Image: "busybox", Command: []string{"true"}}
		p, err := spec.ProcessFor(tk, got)
		if err != nil {
			t.Fatal(err)
		}
		if want == "" && (p.UID != task.NobodyID || p.GID != task.NobodyID) {
			t.Errorf("USER %q: runs as %d:%d, want nobody", user, p.UID, p.GID)
		}
	}
	if !spec.HostAccount(0) || spec.HostAccount(4000000000) || !spec.HostGroup(0) {
		t.Errorf("HostAccount: root %v, 4000000000 %v; HostGroup: root %v", spec.HostAccount(0), spec.HostAccount(4000000000), spec.HostGroup(0))
	}
	for _, c := range []struct {
		uid, gid uint32
		want     bool
	}{
		{task.NobodyID, task.NobodyID, false},
		{4242, 4343, false},
		{1 << 20, 4343, true},              // the first per-task range's root
		{4242, 1<<20 + 65535, true},        // its last id, as a gid
		{1<<20 + 16384*65536, 4343, false}, // past the span
		{0, 4343, true},                    // root: an account
	} {
		if got := spec.HostIdentityTaken(c.uid, c.gid); got != c.want {
			t.Errorf("HostIdentityTaken(%d, %d) = %v, want %v", c.uid, c.gid, got, c.want)
		}
	}
	// A task's own user in the span is refused (an image's gives nobody).
	for _, c := range []struct {
		uid, gid uint32
		refused  bool
	}{{1 << 20, 4343, true}, {4242, 1<<20 + 65535, true}, {1<<20 + 16384*65536, 4343, false}, {1000, 1000, false}} {
		if err := spec.CheckSharedIdentity(c.uid, c.gid); (err != nil) != c.refused || (err != nil && !errdefs.IsInvalidArgument(err)) {
			t.Errorf("CheckSharedIdentity(%d, %d) = %v, want refused %v", c.uid, c.gid, err, c.refused)
		}
	}
}
