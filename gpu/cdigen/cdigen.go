// Package cdigen writes the CDI spec of the node's NVIDIA GPUs with NVIDIA's
// nvcdi over NVML. It is the one package of nsn-run that links NVIDIA's
// toolkit (and, through NVML, cgo): only `nsn-run gpu cdi-generate` and the
// GPU check import it, so neither backend nor the Manager carries it.
package cdigen

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/nvidia-container-toolkit/pkg/nvcdi"
	"github.com/NVIDIA/nvidia-container-toolkit/pkg/nvcdi/transform"
	"github.com/containerd/errdefs"
	"sigs.k8s.io/yaml"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/nsn-run/nsn-run/gpu"
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
	// NoHooks leaves every NVIDIA hook out, for hosts without
	// nvidia-cdi-hook: tasks then get the device nodes and driver files but
	// no soname links or ld.so cache entries, so their images must find the
	// driver libraries themselves (LD_LIBRARY_PATH).
	NoHooks bool
	// HookPath is the nvidia-cdi-hook the spec's hooks run; the first of
	// gpu.DefaultHookPaths that exists if empty. Generation fails when hooks
	// are wanted and it does not exist: every GPU task would fail to start.
	HookPath string
	// LibrarySearchPaths are searched for the driver libraries besides the
	// ld.so cache (drivers installed outside it, such as /usr/local/nvidia).
	LibrarySearchPaths []string
}

// Generate builds the CDI spec of the node's NVIDIA GPUs (full GPUs and MIG
// devices, named by index and UUID) with NVIDIA's nvcdi over NVML. Every hook
// in it is given the same explicit minimal env the injector enforces
// (gpu.HookEnv).
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
	switch {
	case o.NoHooks:
		opts = append(opts, nvcdi.WithDisabledHooks(nvcdi.AllHooks))
	default:
		hook, err := hookPath(o.HookPath)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nvcdi.WithNVIDIACDIHookPath(hook))
		if !o.EnableCUDACompat {
			opts = append(opts, nvcdi.WithDisabledHooks(nvcdi.EnableCudaCompatHook))
		}
	}
	if len(o.LibrarySearchPaths) > 0 {
		opts = append(opts, nvcdi.WithLibrarySearchPaths(o.LibrarySearchPaths))
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

// hookPath is the nvidia-cdi-hook binary the spec will name: path, or the
// first of gpu.DefaultHookPaths's nvidia-cdi-hook entries present.
func hookPath(path string) (string, error) {
	candidates := []string{path}
	if path == "" {
		candidates = nil
		for _, p := range gpu.DefaultHookPaths {
			if filepath.Base(p) == "nvidia-cdi-hook" {
				candidates = append(candidates, p)
			}
		}
	}
	for _, p := range candidates {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", &HookNotFoundError{Paths: candidates}
}

func minimalHookEnv(e *cdispec.ContainerEdits) {
	for _, h := range e.Hooks {
		if h != nil {
			h.Env = gpu.HookEnv()
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

// HookNotFoundError is a spec with hooks asked for on a host without
// nvidia-cdi-hook at any of Paths: install NVIDIA's
// nvidia-container-toolkit-base, or generate with Options.NoHooks.
type HookNotFoundError struct {
	Paths []string
}

func (e *HookNotFoundError) Error() string {
	return fmt.Sprintf("%s: nvidia-cdi-hook not found at %s: install NVIDIA's nvidia-container-toolkit-base, or generate with no hooks", errdefs.ErrNotFound, strings.Join(e.Paths, " or "))
}

// Unwrap types the error for errdefs: NotFound.
func (e *HookNotFoundError) Unwrap() error { return errdefs.ErrNotFound }
