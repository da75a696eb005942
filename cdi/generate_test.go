package cdi

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	mockserver "github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"golang.org/x/sys/unix"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// TestGenerateDGXA100 generates the CDI spec of NVML's DGX A100 mock (8
// A100s) over a fake driver root: every GPU is named by index and UUID, no
// enable-cuda-compat hook, and every hook carries only the minimal env.
func TestGenerateDGXA100(t *testing.T) {
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
	if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	for p, dev := range nodes {
		if err := unix.Mknod(filepath.Join(root, p), unix.S_IFCHR|0o666, int(dev)); err != nil {
			t.Fatal(err)
		}
	}
	// The driver libraries of the mock's driver version, where nvcdi looks
	// for them under the driver root.
	for _, lib := range []string{"libcuda.so.550.54.15", "libnvidia-ml.so.550.54.15"} {
		p := filepath.Join(root, "usr/lib/x86_64-linux-gnu", lib)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	server := dgxa100.New()
	for _, d := range server.Devices {
		// Not implemented by the mock (NVIDIA's own tests set it too): no
		// MIG partitions on these GPUs.
		d.(*mockserver.Device).GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 0, nvml.SUCCESS }
	}
	s, err := Generate(GenerateOptions{Nvml: server, DriverRoot: root})
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

	for _, edits := range append([]editsT{s.ContainerEdits}, deviceEdits(s)...) {
		for _, h := range edits.Hooks {
			if slices.Contains(h.Args, "enable-cuda-compat") {
				t.Errorf("enable-cuda-compat hook present: %v", h.Args)
			}
			if !slices.Equal(h.Env, hookEnv) {
				t.Errorf("hook %v env %v, want only %v", h.Args, h.Env, hookEnv)
			}
		}
	}
	dir := t.TempDir()
	path, err := WriteSpec(s, dir)
	if err != nil {
		t.Fatal(err)
	}
	in, err := New(Options{SpecDirs: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(in.distinct(in.GPUs())); got != 8 {
		t.Errorf("the written spec %s loads as %d distinct GPUs, want 8", path, got)
	}
}

type editsT = cdispec.ContainerEdits

func deviceEdits(s *cdispec.Spec) []editsT {
	var out []editsT
	for _, d := range s.Devices {
		out = append(out, d.ContainerEdits)
	}
	return out
}
