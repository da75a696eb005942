package cdigen

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	mockserver "github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/nsn-run/nsn-run/gpu"
	"github.com/nsn-run/nsn-run/task"
)

// TestGenerateDGXA100 generates the CDI spec of NVML's DGX A100 mock (8
// A100s) over a fake driver root: every GPU is named by index and UUID, no
// enable-cuda-compat hook, and every hook carries only the minimal env.
func TestGenerateDGXA100(t *testing.T) {
	root := fakeDriverRoot(t)
	server := dgxa100.New()
	for _, d := range server.Devices {
		// Not implemented by the mock (NVIDIA's own tests set it too): no
		// MIG partitions on these GPUs.
		d.(*mockserver.Device).GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 0, nvml.SUCCESS }
	}
	var noHook *HookNotFoundError
	if _, err := Generate(GenerateOptions{Nvml: server, DriverRoot: root, HookPath: filepath.Join(root, "missing")}); !errdefs.IsNotFound(err) || !errors.As(err, &noHook) || !strings.Contains(err.Error(), "generate with no hooks") {
		t.Errorf("hooks without nvidia-cdi-hook: %v", err)
	}
	hook := fakeHook(t, root)
	s, err := Generate(GenerateOptions{Nvml: server, DriverRoot: root, HookPath: hook})
	if err != nil {
		t.Fatal(err)
	}
	if s.Kind != "nvidia.com/gpu" {
		t.Errorf("kind %q", s.Kind)
	}
	var names []string
	for _, d := range s.Devices {
		names = append(names, d.Name)
	}
	for i := range 8 {
		if !slices.Contains(names, string(rune('0'+i))) {
			t.Errorf("GPU %d not named by index: %v", i, names)
		}
	}
	uuids := 0
	for _, n := range names {
		if strings.HasPrefix(n, "GPU-") {
			uuids++
		}
	}
	if uuids != 8 || !slices.Contains(names, "all") {
		t.Errorf("names %v: want 8 UUIDs and all", names)
	}

	hooks := 0
	for _, edits := range append([]editsT{s.ContainerEdits}, deviceEdits(s)...) {
		for _, h := range edits.Hooks {
			hooks++
			if h.Path != hook {
				t.Errorf("hook runs %s, want %s", h.Path, hook)
			}
			if slices.Contains(h.Args, "enable-cuda-compat") {
				t.Errorf("enable-cuda-compat hook present: %v", h.Args)
			}
			if !slices.Equal(h.Env, gpu.HookEnv()) {
				t.Errorf("hook %v env %v, want only %v", h.Args, h.Env, gpu.HookEnv())
			}
		}
	}
	if hooks == 0 {
		t.Error("no hooks generated: the hook checks above checked nothing")
	}
	bare, err := Generate(GenerateOptions{Nvml: server, DriverRoot: root, NoHooks: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, edits := range append([]editsT{bare.ContainerEdits}, deviceEdits(bare)...) {
		if len(edits.Hooks) != 0 {
			t.Errorf("--no-hooks spec has hooks: %+v", edits.Hooks)
		}
	}
	dir := t.TempDir()
	path, err := WriteSpec(s, dir)
	if err != nil {
		t.Fatal(err)
	}
	in, err := gpu.New(gpu.Options{SpecDirs: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(in.Devices()); got != 8 {
		t.Errorf("the written spec %s loads as %d distinct GPUs, want 8", path, got)
	}
}

// fakeDriverRoot lays out what nvcdi looks for under a driver root for the
// DGX A100 mock: the device nodes of 8 GPUs (and of MIG capabilities), and
// the driver libraries of the mock's driver version.
func fakeDriverRoot(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create device nodes in the fake driver root")
	}
	root := t.TempDir()
	// Device nodes as the driver creates them: nvcdi takes only real
	// character devices.
	nodes := map[string]uint64{"dev/nvidiactl": unix.Mkdev(195, 255), "dev/nvidia-uvm": unix.Mkdev(510, 0), "dev/nvidia-uvm-tools": unix.Mkdev(510, 1)}
	for i := range 8 {
		nodes["dev/nvidia"+strconv.Itoa(i)] = unix.Mkdev(195, uint32(i))
	}
	for minor := range 32 {
		nodes["dev/nvidia-caps/nvidia-cap"+strconv.Itoa(minor)] = unix.Mkdev(237, uint32(minor))
	}
	if err := os.MkdirAll(filepath.Join(root, "dev/nvidia-caps"), 0o755); err != nil {
		t.Fatal(err)
	}
	for p, dev := range nodes {
		if err := unix.Mknod(filepath.Join(root, p), unix.S_IFCHR|0o666, int(dev)); err != nil {
			t.Fatal(err)
		}
	}
	for _, lib := range []string{"libcuda.so.550.54.15", "libnvidia-ml.so.550.54.15"} {
		p := filepath.Join(root, "usr/lib/x86_64-linux-gnu", lib)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// fakeHook is an nvidia-cdi-hook stand-in: generation only checks that it
// exists.
func fakeHook(t *testing.T, root string) string {
	t.Helper()
	p := filepath.Join(root, "usr/bin/nvidia-cdi-hook")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

type editsT = cdispec.ContainerEdits

func deviceEdits(s *cdispec.Spec) []editsT {
	var out []editsT
	for _, d := range s.Devices {
		out = append(out, d.ContainerEdits)
	}
	return out
}

// migChildEnv marks the re-executed test binary that runs TestGenerateMIG in
// a private mount namespace.
const migChildEnv = "NSN_TEST_MIG_CHILD"

// migSlice is one MIG device the mock shows: its GPU, GPU instance and
// compute instance, and the minors of their capability device nodes.
type migSlice struct {
	gpu, gi, ci      int
	giMinor, ciMinor int
	uuid             string
}

// TestGenerateMIG generates the spec of the DGX A100 mock with MIG enabled
// on GPUs 0 and 1 (two MIG devices each): the six other GPUs are named as
// whole GPUs, each MIG device by "GPU:MIG" index and MIG UUID, with exactly
// its parent's node and its own GI and CI capability nodes, and the
// injector treats two slices of one GPU as two devices.
//
// nvcdi reads the MIG capability minors from the host's
// /proc/driver/nvidia-caps/mig-minors, whatever the driver root, so the
// test re-runs itself in a private mount namespace with a tmpfs on
// /proc/driver that holds the driver's file.
func TestGenerateMIG(t *testing.T) {
	root := fakeDriverRoot(t)
	migs := []migSlice{
		{gpu: 0, giMinor: 12, ciMinor: 13, uuid: "MIG-11111111-2222-5333-8444-000000000001"},
		{gpu: 0, giMinor: 21, ciMinor: 22, uuid: "MIG-11111111-2222-5333-8444-000000000002"},
		{gpu: 1, giMinor: 14, ciMinor: 15, uuid: "MIG-11111111-2222-5333-8444-000000000003"},
		{gpu: 1, giMinor: 23, ciMinor: 24, uuid: "MIG-11111111-2222-5333-8444-000000000004"},
	}
	if os.Getenv(migChildEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestGenerateMIG$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), migChildEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS} // Go makes / private in it
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestGenerateMIG") {
			t.Fatalf("TestGenerateMIG in a private mount namespace: %v\n%s", err, out)
		}
		return
	}
	server := dgxa100.New()
	byUUID := map[string]nvml.Device{}
	perGPU := map[int][]nvml.Device{}
	for k := range migs {
		m := &migs[k]
		parent := server.Devices[m.gpu].(*mockserver.Device)
		gi, ci := newMIGInstance(t, parent)
		m.gi, m.ci = int(gi.Info.Id), int(ci.Info.Id)
		mig := &mock.Device{
			IsMigDeviceHandleFunc:                  func() (bool, nvml.Return) { return true, nvml.SUCCESS },
			GetUUIDFunc:                            func() (string, nvml.Return) { return m.uuid, nvml.SUCCESS },
			GetIndexFunc:                           func() (int, nvml.Return) { return len(perGPU[m.gpu]), nvml.SUCCESS },
			GetGpuInstanceIdFunc:                   func() (int, nvml.Return) { return m.gi, nvml.SUCCESS },
			GetComputeInstanceIdFunc:               func() (int, nvml.Return) { return m.ci, nvml.SUCCESS },
			GetDeviceHandleFromMigDeviceHandleFunc: func() (nvml.Device, nvml.Return) { return parent, nvml.SUCCESS },
			GetAttributesFunc: func() (nvml.DeviceAttributes, nvml.Return) {
				return nvml.DeviceAttributes{MemorySizeMB: gi.MIGProfiles.GpuInstanceProfiles[int(gi.Info.ProfileId)].MemorySizeMB}, nvml.SUCCESS
			},
		}
		byUUID[m.uuid] = mig
		perGPU[m.gpu] = append(perGPU[m.gpu], mig)
	}
	for gpu, devs := range perGPU {
		parent := server.Devices[gpu].(*mockserver.Device)
		parent.SetMigMode(nvml.DEVICE_MIG_ENABLE)
		parent.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 7, nvml.SUCCESS }
		parent.GetMigDeviceHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
			if i < len(devs) {
				return devs[i], nvml.SUCCESS
			}
			return nil, nvml.ERROR_NOT_FOUND
		}
	}
	for i, d := range server.Devices {
		if _, mig := perGPU[i]; !mig {
			d.(*mockserver.Device).GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 0, nvml.SUCCESS }
		}
	}
	byGPUUUID := server.DeviceGetHandleByUUIDFunc
	server.DeviceGetHandleByUUIDFunc = func(uuid string) (nvml.Device, nvml.Return) {
		if d, ok := byUUID[uuid]; ok {
			return d, nvml.SUCCESS
		}
		return byGPUUUID(uuid)
	}

	// The driver's MIG minors file, written once the instance ids are known.
	if err := unix.Mount("tmpfs", "/proc/driver", "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatalf("tmpfs on /proc/driver: %v", err)
	}
	minors := "config 1\nmonitor 2\n"
	for _, m := range migs {
		minors += fmt.Sprintf("gpu%d/gi%d/access %d\ngpu%d/gi%d/ci%d/access %d\n", m.gpu, m.gi, m.giMinor, m.gpu, m.gi, m.ci, m.ciMinor)
	}
	if err := os.MkdirAll("/proc/driver/nvidia-caps", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/proc/driver/nvidia-caps/mig-minors", []byte(minors), 0o444); err != nil {
		t.Fatal(err)
	}

	s, err := Generate(GenerateOptions{Nvml: server, DriverRoot: root, HookPath: fakeHook(t, root)})
	if err != nil {
		t.Fatal(err)
	}
	devices := map[string]cdispec.Device{}
	for _, d := range s.Devices {
		devices[d.Name] = d
	}
	for i := range 8 {
		_, whole := devices[strconv.Itoa(i)]
		if want := i >= 2; whole != want {
			t.Errorf("GPU %d named as a whole GPU: %v, want %v (MIG is on for GPUs 0 and 1)", i, whole, want)
		}
	}
	nodes := func(d cdispec.Device) []string {
		var out []string
		for _, n := range d.ContainerEdits.DeviceNodes {
			out = append(out, n.Path)
		}
		slices.Sort(out)
		return out
	}
	for _, m := range migs {
		index := fmt.Sprintf("%d:%d", m.gpu, slices.Index(perGPU[m.gpu], byUUID[m.uuid]))
		want := []string{
			fmt.Sprintf("/dev/nvidia-caps/nvidia-cap%d", m.giMinor),
			fmt.Sprintf("/dev/nvidia-caps/nvidia-cap%d", m.ciMinor),
			fmt.Sprintf("/dev/nvidia%d", m.gpu),
		}
		slices.Sort(want)
		for _, name := range []string{index, m.uuid} {
			d, ok := devices[name]
			if !ok {
				t.Errorf("MIG device %s not named %q; names: %v", m.uuid, name, slices.Sorted(maps.Keys(devices)))
				continue
			}
			if got := nodes(d); !slices.Equal(got, want) {
				t.Errorf("MIG device %s nodes %v, want %v", name, got, want)
			}
		}
	}

	dir := t.TempDir()
	if _, err := WriteSpec(s, dir); err != nil {
		t.Fatal(err)
	}
	in, err := gpu.New(gpu.Options{SpecDirs: []string{dir}, AllocDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(in.Devices()); got != 6+len(migs) {
		t.Errorf("%d distinct devices, want 6 GPUs + %d MIG devices", got, len(migs))
	}
	// Two slices of GPU 0 go to two tasks; the same slice by index and by
	// UUID is one device.
	if _, err := in.Allocate("a", task.GPURequest{IDs: []string{"0:0"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Allocate("b", task.GPURequest{IDs: []string{"0:1"}}); err != nil {
		t.Errorf("second MIG slice of GPU 0: %v", err)
	}
	if _, err := in.Allocate("c", task.GPURequest{IDs: []string{migs[0].uuid}}); !errdefs.IsResourceExhausted(err) {
		t.Errorf("MIG slice 0:0 again by UUID: %v, want resource exhausted", err)
	}
}

// newMIGInstance creates a 3g.20gb GPU instance with one compute instance
// spanning it on parent, as `nvidia-smi mig -cgi 9 -C` would, and lets the
// mock find them by id (which it does not do itself).
func newMIGInstance(t *testing.T, parent *mockserver.Device) (*mockserver.GpuInstance, *mockserver.ComputeInstance) {
	t.Helper()
	giProfile, r := parent.GetGpuInstanceProfileInfo(nvml.GPU_INSTANCE_PROFILE_3_SLICE)
	if r != nvml.SUCCESS {
		t.Fatalf("GI profile: %v", r)
	}
	g, r := parent.CreateGpuInstance(&giProfile)
	if r != nvml.SUCCESS {
		t.Fatalf("create GI: %v", r)
	}
	gi := g.(*mockserver.GpuInstance)
	ciProfile, r := gi.GetComputeInstanceProfileInfo(nvml.COMPUTE_INSTANCE_PROFILE_3_SLICE, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
	if r != nvml.SUCCESS {
		t.Fatalf("CI profile: %v", r)
	}
	c, r := gi.CreateComputeInstance(&ciProfile)
	if r != nvml.SUCCESS {
		t.Fatalf("create CI: %v", r)
	}
	ci := c.(*mockserver.ComputeInstance)
	gi.GetComputeInstanceByIdFunc = func(id int) (nvml.ComputeInstance, nvml.Return) {
		for c := range gi.ComputeInstances {
			if int(c.Info.Id) == id {
				return c, nvml.SUCCESS
			}
		}
		return nil, nvml.ERROR_NOT_FOUND
	}
	parent.GetGpuInstanceByIdFunc = func(id int) (nvml.GpuInstance, nvml.Return) {
		for g := range parent.GpuInstances {
			if int(g.Info.Id) == id {
				return g, nvml.SUCCESS
			}
		}
		return nil, nvml.ERROR_NOT_FOUND
	}
	return gi, ci
}
