package cdi

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/nvidia-container-toolkit/pkg/nvcdi"
	"github.com/NVIDIA/nvidia-container-toolkit/pkg/nvcdi/transform"
	"github.com/containerd/errdefs"
	"sigs.k8s.io/yaml"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// GenerateOptions configure Generate.
type GenerateOptions struct {
	// Nvml is the NVML library; a mock in tests, nvml.New() on a host.
	Nvml nvml.Interface
	// DriverRoot is where the NVIDIA driver's files are found ("/").
	DriverRoot string
	// DevRoot is where the device nodes are found (DriverRoot if empty).
	DevRoot string
	// EnableCUDACompat keeps NVIDIA's enable-cuda-compat hook, which
	// nsn-run leaves out by default: one host binary fewer run per task.
	EnableCUDACompat bool
}

// Generate builds the CDI spec of the node's NVIDIA GPUs (full GPUs and MIG
// devices, named by index and UUID) with NVIDIA's nvcdi over NVML. Every hook
// in it is given the same explicit minimal env the injector enforces.
func Generate(o GenerateOptions) (*cdispec.Spec, error) {
	if o.Nvml == nil {
		return nil, fmt.Errorf("%w: no NVML library", errdefs.ErrInvalidArgument)
	}
	if o.DriverRoot == "" {
		o.DriverRoot = "/"
	}
	if o.DevRoot == "" {
		o.DevRoot = o.DriverRoot
	}
	if r := o.Nvml.Init(); r != nvml.SUCCESS {
		return nil, fmt.Errorf("%w: NVML: %s (is the NVIDIA driver installed?)", errdefs.ErrUnavailable, o.Nvml.ErrorString(r))
	}
	defer o.Nvml.Shutdown()
	var namers []nvcdi.DeviceNamer
	for _, strategy := range []string{"index", "uuid"} {
		n, err := nvcdi.NewDeviceNamer(strategy)
		if err != nil {
			return nil, err
		}
		namers = append(namers, n)
	}
	opts := []nvcdi.Option{
		nvcdi.WithMode(nvcdi.ModeNvml),
		nvcdi.WithNvmlLib(o.Nvml),
		nvcdi.WithDriverRoot(o.DriverRoot),
		nvcdi.WithDevRoot(o.DevRoot),
		nvcdi.WithVendor("nvidia.com"),
		nvcdi.WithClass("gpu"),
		nvcdi.WithDeviceNamers(namers...),
		// An "all" device, as `nvidia-ctk cdi generate` writes: --gpus all.
		nvcdi.WithMergedDeviceOptions(transform.WithName("all"), transform.WithSkipIfExists(true)),
	}
	if !o.EnableCUDACompat {
		opts = append(opts, nvcdi.WithDisabledHook(nvcdi.EnableCudaCompatHook))
	}
	lib, err := nvcdi.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nvcdi: %w", err)
	}
	s, err := lib.GetSpec()
	if err != nil {
		return nil, fmt.Errorf("generate CDI spec: %w", err)
	}
	raw := s.Raw()
	if raw == nil {
		return nil, errors.New("nvcdi returned no spec")
	}
	minimalHookEnv(&raw.ContainerEdits)
	for i := range raw.Devices {
		minimalHookEnv(&raw.Devices[i].ContainerEdits)
	}
	return raw, nil
}

func minimalHookEnv(e *cdispec.ContainerEdits) {
	for _, h := range e.Hooks {
		if h != nil {
			h.Env = slices.Clone(hookEnv)
		}
	}
}

// WriteSpec writes s as dir/nvidia.yaml, root-owned 0644 (the doctor
// checks both), replacing any earlier one atomically.
func WriteSpec(s *cdispec.Spec, dir string) (string, error) {
	b, err := yaml.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("marshal CDI spec: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "nvidia.yaml")
	if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
		return "", err
	}
	if err := os.Chmod(path+".tmp", 0o644); err != nil {
		return "", err
	}
	return path, os.Rename(path+".tmp", path)
}
