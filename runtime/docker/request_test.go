package docker

import (
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/mount"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/task"
)

func TestCreateRequestDefaults(t *testing.T) {
	tk := task.Task{ID: "job-1", Image: "alpine:latest", Command: []string{"echo", "hi"},
		Limits: task.Limits{MemoryBytes: 256 * task.MiB, CPUs: 0.5, Pids: 64}}
	r, err := CreateRequest(tk, ocispec.ImageConfig{User: "0", Entrypoint: []string{"/entry"}, Env: []string{"A=1"}}, "/var/lib/nsn-run/tasks/job-1/output", nil)
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
	if !slices.Equal(h.SecurityOpt, []string{"no-new-privileges:true"}) {
		t.Errorf("security opts %v: no-new-privileges, and nothing that disables the default seccomp profile", h.SecurityOpt)
	}
	if h.IpcMode != "private" || h.CgroupnsMode != "private" || h.PidMode != "" || h.UTSMode != "" {
		t.Errorf("namespaces ipc %q cgroupns %q pid %q uts %q", h.IpcMode, h.CgroupnsMode, h.PidMode, h.UTSMode)
	}
	if h.Memory != 256<<20 || h.MemorySwap != 256<<20 || h.CPUQuota != 50000 || h.CPUPeriod != 100000 || *h.PidsLimit != 64 {
		t.Errorf("limits memory %d swap %d quota %d/%d pids %d", h.Memory, h.MemorySwap, h.CPUQuota, h.CPUPeriod, *h.PidsLimit)
	}
	if len(h.Ulimits) != 2 || h.Ulimits[0].Name != "nofile" || h.Ulimits[0].Hard != 1024 || h.Ulimits[1].Name != "core" || h.Ulimits[1].Hard != 0 {
		t.Errorf("ulimits %+v", h.Ulimits)
	}
	if tmp := h.Tmpfs["/tmp"]; !strings.Contains(tmp, "noexec") || !strings.Contains(tmp, "size=67108864") || !strings.Contains(tmp, "nr_inodes=16384") {
		t.Errorf("/tmp tmpfs %q", tmp)
	}
	if len(h.Mounts) != 1 || h.Mounts[0].Type != mount.TypeBind || h.Mounts[0].Target != "/output" || h.Mounts[0].Source != "/var/lib/nsn-run/tasks/job-1/output" ||
		h.Mounts[0].BindOptions == nil || !h.Mounts[0].BindOptions.NonRecursive || h.Mounts[0].BindOptions.Propagation != mount.PropagationRPrivate {
		t.Errorf("mounts %+v", h.Mounts)
	}
	if len(h.Binds) != 0 || len(h.Devices) != 0 || len(h.DeviceRequests) != 0 || len(h.Sysctls) != 0 {
		t.Errorf("binds %v devices %v device requests %v sysctls %v: want none", h.Binds, h.Devices, h.DeviceRequests, h.Sysctls)
	}
	if c.Labels["nsn.task-id"] != "job-1" || c.Labels["nsn.manager"] != "nsn-run" {
		t.Errorf("labels %v", c.Labels)
	}
}

func TestCreateRequestRefuses(t *testing.T) {
	good := task.Task{ID: "j", Image: "alpine", Command: []string{"true"}}
	if _, err := CreateRequest(good, ocispec.ImageConfig{WorkingDir: "/proc/self/fd/7"}, "/o", nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("image WORKDIR in /proc: %v", err)
	}
	if _, err := CreateRequest(good, ocispec.ImageConfig{}, "relative", nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("relative output dir: %v", err)
	}
	gpu := good
	gpu.GPUs = "all"
	if _, err := CreateRequest(gpu, ocispec.ImageConfig{}, "/o", nil); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("GPUs: %v", err)
	}
	bad := good
	bad.ID = "Bad"
	if _, err := CreateRequest(bad, ocispec.ImageConfig{}, "/o", nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad id: %v", err)
	}
}

func TestCreateRequestGPUsAsCDI(t *testing.T) {
	tk := task.Task{ID: "g", Image: "alpine", Command: []string{"true"}, GPUs: "device=1"}
	r, err := CreateRequest(tk, ocispec.ImageConfig{}, "/o", []string{"nvidia.com/gpu=1"})
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
