package docker

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/mount"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/task"
)

func TestCreateRequestDefaults(t *testing.T) {
	tk := task.Task{ID: "job-1", Image: "alpine:latest", Command: []string{"echo", "hi"},
		Limits: task.Limits{MemoryBytes: 256 * task.MiB, CPUs: 0.5, Pids: 64}}
	r, err := CreateRequest(tk, ocispec.ImageConfig{User: "0", Entrypoint: []string{"/entry"}, Env: []string{"A=1"}}, RequestOptions{OutputDir: "/var/lib/nsn-run/tasks/job-1/output"})
	if err != nil {
		t.Fatal(err)
	}
	c, h := r.Config, r.HostConfig
	if c.User != "65534:65534" {
		t.Errorf("user = %q: USER 0 must fall back to nobody", c.User)
	}
	if strings.Join(c.Entrypoint, " ") != "/entry" || strings.Join(c.Cmd, " ") != "echo hi" {
		t.Errorf("entrypoint %v cmd %v", c.Entrypoint, c.Cmd)
	}
	if !slices.Contains(c.Env, "HOME=/tmp") || !slices.Contains(c.Env, "A=1") || !c.NetworkDisabled {
		t.Errorf("env %v network disabled %v", c.Env, c.NetworkDisabled)
	}
	if h.NetworkMode != "none" || !h.ReadonlyRootfs || h.Privileged || !slices.Equal(h.CapDrop, []string{"ALL"}) || len(h.CapAdd) != 0 {
		t.Errorf("isolation: network %q readonly %v privileged %v capdrop %v capadd %v", h.NetworkMode, h.ReadonlyRootfs, h.Privileged, h.CapDrop, h.CapAdd)
	}
	if len(h.SecurityOpt) != 2 || h.SecurityOpt[0] != "no-new-privileges:true" || !strings.HasPrefix(h.SecurityOpt[1], "seccomp={") {
		t.Errorf("security opts %.200q: want no-new-privileges and nsn-run's seccomp profile, nothing else", h.SecurityOpt)
	}
	if h.Runtime != "runc" {
		t.Errorf("runtime %q: want runc, never dockerd's default runtime", h.Runtime)
	}
	if h.OomScoreAdj != spec.DefaultOOMScoreAdj {
		t.Errorf("oom score adj %d, want %d", h.OomScoreAdj, spec.DefaultOOMScoreAdj)
	}
	masked, _ := spec.MaskedPaths()
	readonly, _ := spec.ReadonlyPaths()
	if !slices.Equal(h.MaskedPaths, masked) || !slices.Contains(h.MaskedPaths, "/proc/interrupts") || !slices.Contains(h.MaskedPaths, "/sys/devices/virtual/powercap") {
		t.Errorf("masked paths %v, want the spec's %v (with /proc/interrupts and powercap)", h.MaskedPaths, masked)
	}
	for _, p := range spec.RequiredMaskedPaths() {
		if !slices.Contains(h.MaskedPaths, p) {
			t.Errorf("masked paths lack %s", p)
		}
	}
	if !slices.Equal(h.ReadonlyPaths, readonly) || !slices.Contains(h.ReadonlyPaths, "/proc/sys") {
		t.Errorf("read-only paths %v, want the spec's %v", h.ReadonlyPaths, readonly)
	}
	if h.IpcMode != "private" || h.CgroupnsMode != "private" || h.PidMode != "" || h.UTSMode != "" {
		t.Errorf("namespaces ipc %q cgroupns %q pid %q uts %q", h.IpcMode, h.CgroupnsMode, h.PidMode, h.UTSMode)
	}
	if h.Memory != 256<<20 || h.MemorySwap != 256<<20 || h.CPUQuota != 50000 || h.CPUPeriod != 100000 || *h.PidsLimit != 64 {
		t.Errorf("limits memory %d swap %d quota %d/%d pids %d", h.Memory, h.MemorySwap, h.CPUQuota, h.CPUPeriod, *h.PidsLimit)
	}
	// The containerd backend's rlimits (spec.Rlimits), in dockerd's names.
	wantUlimits := []string{"nofile=1024:1024", "core=0:0", "rtprio=0:0", "nice=0:0", "memlock=65536:65536", "msgqueue=0:0", "sigpending=256:256"}
	var gotUlimits []string
	for _, u := range h.Ulimits {
		gotUlimits = append(gotUlimits, fmt.Sprintf("%s=%d:%d", u.Name, u.Soft, u.Hard))
	}
	if !slices.Equal(gotUlimits, wantUlimits) {
		t.Errorf("ulimits %v, want %v", gotUlimits, wantUlimits)
	}
	if tmp := h.Tmpfs["/tmp"]; !strings.Contains(tmp, "noexec") || !strings.Contains(tmp, "size=67108864") || !strings.Contains(tmp, "nr_inodes=16384") {
		t.Errorf("/tmp tmpfs %q", tmp)
	}
	if len(h.Mounts) != 1 || h.Mounts[0].Type != mount.TypeBind || h.Mounts[0].Target != "/output" || h.Mounts[0].Source != "/var/lib/nsn-run/tasks/job-1/output" ||
		h.Mounts[0].BindOptions == nil || !h.Mounts[0].BindOptions.NonRecursive || h.Mounts[0].BindOptions.Propagation != mount.PropagationRPrivate {
		t.Errorf("mounts %+v", h.Mounts)
	}
	if len(h.Binds) != 0 || len(h.Devices) != 0 || len(h.DeviceRequests) != 0 {
		t.Errorf("binds %v devices %v device requests %v: want none", h.Binds, h.Devices, h.DeviceRequests)
	}
	// Only the kernel's defaults, over dockerd's ping-for-all and
	// low-ports-for-all.
	if len(h.Sysctls) != 2 || h.Sysctls["net.ipv4.ping_group_range"] != "1 0" || h.Sysctls["net.ipv4.ip_unprivileged_port_start"] != "1024" {
		t.Errorf("sysctls %v, want the kernel's defaults for ping_group_range and ip_unprivileged_port_start", h.Sysctls)
	}
	if c.Labels["nsn.task-id"] != "job-1" || c.Labels["nsn.manager"] != "nsn-run" {
		t.Errorf("labels %v", c.Labels)
	}
}

func TestCreateRequestRefuses(t *testing.T) {
	good := task.Task{ID: "j", Image: "alpine", Command: []string{"true"}}
	out := RequestOptions{OutputDir: "/o"}
	if _, err := CreateRequest(good, ocispec.ImageConfig{WorkingDir: "/proc/self/fd/7"}, out); !errdefs.IsInvalidArgument(err) {
		t.Errorf("image WORKDIR in /proc: %v", err)
	}
	if _, err := CreateRequest(good, ocispec.ImageConfig{}, RequestOptions{OutputDir: "relative"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("relative output dir: %v", err)
	}
	gpu := good
	gpu.GPUs = "all"
	if _, err := CreateRequest(gpu, ocispec.ImageConfig{}, out); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("GPUs: %v", err)
	}
	for _, rt := range []string{"io.containerd.runsc.v1", "runc", "nvidia", "io.containerd.runc.v1"} {
		other := good
		other.Runtime = rt
		if _, err := CreateRequest(other, ocispec.ImageConfig{}, out); !errdefs.IsInvalidArgument(err) {
			t.Errorf("runtime %q: %v, want invalid argument: only runc's shim maps to dockerd", rt, err)
		}
	}
	named := good
	named.Runtime = task.DefaultRuntime
	if r, err := CreateRequest(named, ocispec.ImageConfig{}, out); err != nil || r.HostConfig.Runtime != "runc" {
		t.Errorf("runtime %s: %v, runtime %q, want runc", task.DefaultRuntime, err, r.HostConfig.Runtime)
	}
	bad := good
	bad.ID = "Bad"
	if _, err := CreateRequest(bad, ocispec.ImageConfig{}, out); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad id: %v", err)
	}
}

// TestCreateRequestOOMScoreAdj: the operator's score goes through the same
// bounds as the containerd backend's (spec.OOMScoreAdj).
func TestCreateRequestOOMScoreAdj(t *testing.T) {
	tk := task.Task{ID: "j", Image: "alpine", Command: []string{"true"}}
	for _, c := range []struct {
		score, want int
		ok          bool
	}{{0, 1000, true}, {500, 500, true}, {1000, 1000, true}, {499, 0, false}, {-1000, 0, false}, {1001, 0, false}} {
		r, err := CreateRequest(tk, ocispec.ImageConfig{}, RequestOptions{OutputDir: "/o", OOMScoreAdj: c.score})
		switch {
		case !c.ok && !errdefs.IsInvalidArgument(err):
			t.Errorf("score %d: %v, want invalid argument", c.score, err)
		case c.ok && err != nil:
			t.Errorf("score %d: %v", c.score, err)
		case c.ok && r.HostConfig.OomScoreAdj != c.want:
			t.Errorf("score %d: request has %d, want %d", c.score, r.HostConfig.OomScoreAdj, c.want)
		}
	}
}

// TestCreateRequestSeccomp: the security option carries spec.SeccompProfile
// in fields moby's profile type knows (decoded strictly, so a field dockerd
// would silently drop fails here), with the same rules: the same default
// action, native architecture only, the same syscalls with the same actions,
// errnos and argument filters; io_uring nowhere allowed.
func TestCreateRequestSeccomp(t *testing.T) {
	r, err := CreateRequest(task.Task{ID: "j", Image: "alpine", Command: []string{"true"}}, ocispec.ImageConfig{}, RequestOptions{OutputDir: "/o"})
	if err != nil {
		t.Fatal(err)
	}
	var body string
	for _, o := range r.HostConfig.SecurityOpt {
		if v, ok := strings.CutPrefix(o, "seccomp="); ok {
			body = v
		}
	}
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	var got seccompProfile
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("seccomp option %.80q: %v", body, err)
	}
	want := spec.SeccompProfile()
	if got.DefaultAction != want.DefaultAction || got.DefaultAction != specs.ActErrno || !slices.Equal(got.Architectures, want.Architectures) || len(got.Architectures) != 1 {
		t.Errorf("default %s architectures %v, want %s %v", got.DefaultAction, got.Architectures, want.DefaultAction, want.Architectures)
	}
	if len(got.Syscalls) != len(want.Syscalls) {
		t.Fatalf("%d syscall rules, want %d", len(got.Syscalls), len(want.Syscalls))
	}
	for i, w := range want.Syscalls {
		g := got.Syscalls[i]
		if !slices.Equal(g.Names, w.Names) || g.Action != w.Action || !reflect.DeepEqual(g.ErrnoRet, w.ErrnoRet) || !slices.Equal(g.Args, w.Args) {
			t.Errorf("rule %d: %+v, want %+v", i, g, w)
		}
		if g.Action == specs.ActAllow && slices.ContainsFunc(g.Names, func(n string) bool { return strings.HasPrefix(n, "io_uring") }) {
			t.Errorf("rule %d allows io_uring: %v", i, g.Names)
		}
	}
	flagged := spec.SeccompProfile()
	flagged.Flags = []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagLog}
	if _, err := seccompSecurityOpt(flagged); !errdefs.IsNotImplemented(err) {
		t.Errorf("profile with flags dockerd would drop: %v", err)
	}
}

func TestCreateRequestGPUsAsCDI(t *testing.T) {
	tk := task.Task{ID: "g", Image: "alpine", Command: []string{"true"}, GPUs: "device=1"}
	r, err := CreateRequest(tk, ocispec.ImageConfig{}, RequestOptions{OutputDir: "/o", GPUs: []string{"nvidia.com/gpu=1"}})
	if err != nil {
		t.Fatal(err)
	}
	dr := r.HostConfig.DeviceRequests
	if len(dr) != 1 || dr[0].Driver != "cdi" || !slices.Equal(dr[0].DeviceIDs, []string{"nvidia.com/gpu=1"}) || dr[0].Count != 0 {
		t.Errorf("device requests %+v, want exactly the CDI device nvidia.com/gpu=1", dr)
	}
	for _, v := range []struct {
		a, b string
		less bool
	}{{"1.41", "1.44", true}, {"1.44", "1.44", false}, {"1.50", "1.44", false}, {"1.9", "1.44", true}} {
		if versionLess(v.a, v.b) != v.less {
			t.Errorf("versionLess(%s, %s) != %v", v.a, v.b, v.less)
		}
	}
}
