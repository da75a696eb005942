// Command gpucheck proves, on a machine with real NVIDIA GPUs, that a task
// given one GPU sees exactly that GPU: it generates the node's CDI spec
// with nsn-run's gpu/cdigen package (nvcdi over NVML), builds a minimal
// rootfs, and for each request (by index, by UUID, "all", none) generates the
// task's OCI spec with nsn-run's spec package, audits it, runs it with runc
// and compares the GPUs `nvidia-smi -L` lists inside with NVML's answer on
// the host.
//
// It needs no containerd and no image registry, so it runs on a bare
// machine with only the NVIDIA driver: integration/gpu/run.sh drives it
// with the binaries integration/gpu/build.sh prepares. With -cdi-spec and
// -gpu it takes a given CDI spec and GPU list instead of asking NVML, which
// is how CI runs the same flow over a stand-in driver (fakedriver/) on
// machines without a GPU.
package main

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"sigs.k8s.io/yaml"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/nsn-run/nsn-run/gpu"
	"github.com/nsn-run/nsn-run/gpu/cdigen"
	"github.com/nsn-run/nsn-run/internal/imagebuild"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// hostGPU is one device the host has, as NVML (or the stand-in spec) names it.
type hostGPU struct {
	index string
	uuid  string
}

// check is one way of asking for GPUs and the UUIDs the task must then see.
type check struct {
	name string
	gpus string
	want []string
}

type options struct {
	specDir    string
	gpus       []hostGPU
	runc       string
	work       string
	driverRoot string
	hooks      string
	libDirs    []string
	maxGPUs    int
}

func main() {
	var o options
	flag.StringVar(&o.specDir, "cdi-spec", "", "use the CDI spec in this directory instead of generating one with NVML (needs -gpu)")
	flag.Func("gpu", "INDEX=UUID: a GPU the -cdi-spec spec defines (repeatable)", func(s string) error {
		index, uuid, ok := strings.Cut(s, "=")
		if !ok {
			return errors.New("want INDEX=UUID")
		}
		o.gpus = append(o.gpus, hostGPU{index, uuid})
		return nil
	})
	flag.StringVar(&o.runc, "runc", "", "runc binary (default: runc beside this binary, else on PATH)")
	flag.StringVar(&o.work, "work", "", "work directory (default: a new temporary one, removed at the end)")
	flag.StringVar(&o.driverRoot, "driver-root", "/", "where the NVIDIA driver's files are")
	flag.StringVar(&o.hooks, "hooks", "auto", "NVIDIA hooks in the CDI spec: on, off, or auto (on where nvidia-cdi-hook is installed)")
	flag.Func("library-search-path", "directory searched for driver libraries besides the ld.so cache (repeatable)", func(s string) error {
		o.libDirs = append(o.libDirs, s)
		return nil
	})
	flag.IntVar(&o.maxGPUs, "max-gpus", 4, "check at most this many GPUs one by one")
	flag.Parse()

	passed, failed, err := run(context.Background(), o)
	fmt.Printf("gpucheck: %d passed, %d failed\n", passed, failed)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpucheck:", err)
		os.Exit(2)
	}
	if failed > 0 {
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) (passed, failed int, err error) {
	if o.runc == "" {
		o.runc = besideSelf("runc")
	}
	if o.work == "" {
		if o.work, err = os.MkdirTemp("", "gpucheck."); err != nil {
			return 0, 0, err
		}
		defer os.RemoveAll(o.work)
	}
	fmt.Printf("runc: %s\n", firstLine(exec.CommandContext(ctx, o.runc, "--version")))

	gpus := o.gpus
	specDir := o.specDir
	var s *cdispec.Spec
	if specDir == "" {
		if s, gpus, err = nvidiaSpec(o); err != nil {
			return 0, 0, err
		}
		specDir = filepath.Join(o.work, "cdi")
		if _, err := cdigen.WriteSpec(s, specDir); err != nil {
			return 0, 0, err
		}
	} else if s, err = readSpec(specDir); err != nil {
		return 0, 0, err
	}
	rootfs := filepath.Join(o.work, "bundle", spec.RootfsPath)
	smi, libDirs, err := driverRootfs(rootfs, s, len(hooksIn(s)) == 0)
	if err != nil {
		return 0, 0, err
	}
	lister := []string{smi, "-L"}
	env := []string{"LD_LIBRARY_PATH=" + strings.Join(libDirs, ":")}
	fmt.Printf("GPUs on the host: %d\n", len(gpus))
	for _, g := range gpus {
		fmt.Printf("  %s %s\n", g.index, g.uuid)
	}
	if len(gpus) == 0 {
		return 0, 0, errors.New("no GPU found")
	}

	in, err := gpu.New(gpu.Options{SpecDirs: []string{specDir}, AllocDir: filepath.Join(o.work, "alloc")})
	if err != nil {
		return 0, 0, err
	}
	var checks []check
	all := make([]string, 0, len(gpus))
	for i, g := range gpus {
		all = append(all, g.uuid)
		if i < o.maxGPUs {
			checks = append(checks,
				check{"index " + g.index, "device=" + g.index, []string{g.uuid}},
				check{"uuid " + g.uuid, g.uuid, []string{g.uuid}})
		}
	}
	checks = append(checks, check{"all", "all", all}, check{"count 1", "1", []string{gpus[0].uuid}}, check{"none", "", nil})

	for i, c := range checks {
		seen, out, err := runCheck(ctx, o, in, fmt.Sprintf("gpucheck-%d", i), c.gpus, lister, env)
		switch {
		case err != nil:
			failed++
			fmt.Printf("FAIL %-50s %v\n%s", c.name, err, indent(out))
		case !slices.Equal(seen, c.want):
			failed++
			fmt.Printf("FAIL %-50s saw %v, want %v\n%s", c.name, seen, c.want, indent(out))
		default:
			passed++
			fmt.Printf("PASS %-50s saw %v\n%s", c.name, seen, indent(out))
		}
	}
	return passed, failed, nil
}

// nvidiaSpec generates the host's CDI spec through NVML and lists its GPUs.
func nvidiaSpec(o options) (*cdispec.Spec, []hostGPU, error) {
	lib := nvml.New()
	if r := lib.Init(); r != nvml.SUCCESS {
		return nil, nil, fmt.Errorf("NVML: %s", lib.ErrorString(r))
	}
	defer lib.Shutdown()
	if v, r := lib.SystemGetDriverVersion(); r == nvml.SUCCESS {
		fmt.Printf("NVIDIA driver: %s\n", v)
	}
	n, r := lib.DeviceGetCount()
	if r != nvml.SUCCESS {
		return nil, nil, fmt.Errorf("NVML device count: %s", lib.ErrorString(r))
	}
	var gpus []hostGPU
	for i := range n {
		d, r := lib.DeviceGetHandleByIndex(i)
		if r != nvml.SUCCESS {
			return nil, nil, fmt.Errorf("NVML device %d: %s", i, lib.ErrorString(r))
		}
		uuid, r := d.GetUUID()
		if r != nvml.SUCCESS {
			return nil, nil, fmt.Errorf("NVML device %d UUID: %s", i, lib.ErrorString(r))
		}
		gpus = append(gpus, hostGPU{fmt.Sprint(i), uuid})
	}
	noHooks := o.hooks == "off"
	if o.hooks == "auto" {
		noHooks = !slices.ContainsFunc(gpu.DefaultHookPaths, func(p string) bool {
			_, err := os.Stat(p)
			return filepath.Base(p) == "nvidia-cdi-hook" && err == nil
		})
	}
	fmt.Printf("CDI spec: hooks %v\n", map[bool]string{true: "off", false: "on"}[noHooks])
	s, err := cdigen.Generate(cdigen.GenerateOptions{Nvml: lib, DriverRoot: o.driverRoot, NoHooks: noHooks, LibrarySearchPaths: o.libDirs})
	if err != nil {
		return nil, nil, err
	}
	return s, gpus, nil
}

// readSpec reads the one CDI spec in dir.
func readSpec(dir string) (*cdispec.Spec, error) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if len(files) != 1 {
		return nil, fmt.Errorf("%s: want exactly one CDI spec (*.yaml), found %d", dir, len(files))
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		return nil, err
	}
	var s cdispec.Spec
	if err := yaml.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", files[0], err)
	}
	return &s, nil
}

func hooksIn(s *cdispec.Spec) []*cdispec.Hook {
	hooks := slices.Clone(s.ContainerEdits.Hooks)
	for _, d := range s.Devices {
		hooks = append(hooks, d.ContainerEdits.Hooks...)
	}
	return hooks
}

// driverRootfs builds the smallest rootfs nvidia-smi runs in: the host's C
// library and loader that the CDI-mounted nvidia-smi needs, an /etc/passwd,
// and (when the spec has no hooks to make them) the soname links of the
// CDI-mounted driver libraries. It returns nvidia-smi's path in the
// container and the directories of the driver libraries.
func driverRootfs(rootfs string, s *cdispec.Spec, links bool) (smi string, libDirs []string, err error) {
	if err := imagebuild.BaseRootfs(rootfs); err != nil {
		return "", nil, err
	}
	var smiHost string
	for _, m := range s.ContainerEdits.Mounts {
		if filepath.Base(m.ContainerPath) == "nvidia-smi" {
			smi, smiHost = m.ContainerPath, m.HostPath
		}
		if !strings.Contains(filepath.Base(m.ContainerPath), ".so") {
			continue
		}
		dir := filepath.Dir(m.ContainerPath)
		if !slices.Contains(libDirs, dir) {
			libDirs = append(libDirs, dir)
		}
		if !links {
			continue
		}
		soname := sonameOf(m.HostPath)
		if soname == "" || soname == filepath.Base(m.ContainerPath) {
			continue
		}
		link := filepath.Join(rootfs, dir, soname)
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return "", nil, err
		}
		if err := os.Symlink(filepath.Base(m.ContainerPath), link); err != nil && !os.IsExist(err) {
			return "", nil, err
		}
	}
	if smi == "" {
		return "", nil, errors.New("the generated CDI spec mounts no nvidia-smi")
	}
	libs, err := neededLibraries(smiHost)
	if err != nil {
		return "", nil, fmt.Errorf("libraries of %s: %w", smiHost, err)
	}
	for _, lib := range libs {
		if err := copyFile(lib, filepath.Join(rootfs, lib)); err != nil {
			return "", nil, err
		}
	}
	fmt.Printf("rootfs: nvidia-smi at %s, %d host libraries copied, driver libraries in %v\n", smi, len(libs), libDirs)
	return smi, libDirs, nil
}

// libraryDirs are where the host's C library lives on the distributions
// NVIDIA drivers ship for.
var libraryDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// neededLibraries lists, by host path, the ELF interpreter and the shared
// libraries bin needs, transitively, except NVIDIA's own (CDI mounts those).
func neededLibraries(bin string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	var visit func(path string) error
	visit = func(path string) error {
		f, err := elf.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				b, err := io.ReadAll(p.Open())
				if err != nil {
					return err
				}
				interp := strings.TrimRight(string(b), "\x00")
				if !seen[interp] {
					seen[interp] = true
					out = append(out, interp)
				}
			}
		}
		needed, err := f.ImportedLibraries()
		if err != nil {
			return err
		}
		for _, name := range needed {
			if strings.HasPrefix(name, "libnvidia") || strings.HasPrefix(name, "libcuda") || seen[name] {
				continue
			}
			seen[name] = true
			found := ""
			for _, dir := range libraryDirs {
				if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
					found = filepath.Join(dir, name)
					break
				}
			}
			if found == "" {
				return fmt.Errorf("%s needs %s, not found in %v", path, name, libraryDirs)
			}
			out = append(out, found)
			if err := visit(found); err != nil {
				return err
			}
		}
		return nil
	}
	return out, visit(bin)
}

func sonameOf(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	names, err := f.DynString(elf.DT_SONAME)
	if err != nil || len(names) == 0 {
		return ""
	}
	return names[0]
}

// copyFile copies src's content (following links) to dst, making its dirs.
func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// runCheck runs lister in a task given gpus, exactly as nsn-run builds the
// task's spec, and returns the GPU UUIDs the task listed.
func runCheck(ctx context.Context, o options, in *gpu.Injector, id, gpus string, lister, env []string) ([]string, string, error) {
	defer in.Release(id)
	bundle := filepath.Join(o.work, "bundle")
	tasksDir := filepath.Join(o.work, "tasks")
	outDir := filepath.Join(tasksDir, id, "output", task.NewOutputKey()) // as the Manager makes it
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return nil, "", err
	}
	if err := os.Chown(outDir, task.NobodyID, task.NobodyID); err != nil {
		return nil, "", err
	}
	t := task.Task{ID: id, Image: "gpucheck", Command: lister, Env: env, GPUs: gpus}
	img := ocispec.ImageConfig{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
	so := spec.Options{OutputDir: outDir, CDI: in}
	if req, err := t.GPURequest(); err != nil {
		return nil, "", err
	} else if !req.Empty() {
		if so.GPUDevices, err = in.Allocate(id, req); err != nil {
			return nil, "", fmt.Errorf("allocate: %w", err)
		}
	}
	s, err := spec.Generate(namespaces.WithNamespace(ctx, "gpucheck"), t, img, so)
	if err != nil {
		return nil, "", fmt.Errorf("spec: %w", err)
	}
	// The check runs tasks with host ids, as before user namespaces: it is
	// about which GPUs a task sees.
	policy := audit.Policy{Namespace: "gpucheck", TasksDir: tasksDir, CDI: in, HostIdentity: true}
	if findings := audit.Check(ctx, s, policy); len(findings) > 0 {
		return nil, "", fmt.Errorf("audit: %v", findings)
	}
	b, err := spec.Marshal(s)
	if err != nil {
		return nil, "", err
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return nil, "", err
	}
	nodes := devicePaths(s.Linux.Devices)
	if gpus == "" && len(nodes) > 0 {
		return nil, "", fmt.Errorf("spec without GPUs has device nodes %v", nodes)
	}
	if gpus != "" {
		fmt.Printf("  --gpus %s: device nodes %s\n", gpus, strings.Join(nodes, " "))
	}
	runCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(runCtx, o.runc, "--root", filepath.Join(o.work, "runc"), "run", "--bundle", bundle, id)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()
	_ = exec.Command(o.runc, "--root", filepath.Join(o.work, "runc"), "delete", "--force", id).Run()
	// A task given no GPU cannot run nvidia-smi at all (CDI mounts it):
	// runc failing to exec it is what the "none" check expects.
	if runErr != nil && gpus != "" {
		return nil, out.String(), fmt.Errorf("runc run: %w", runErr)
	}
	return uuidPattern.FindAllString(out.String(), -1), out.String(), nil
}

var uuidPattern = regexp.MustCompile(`GPU-[0-9a-fA-F-]{36}`)

func devicePaths(ds []specs.LinuxDevice) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Path)
	}
	return out
}

func besideSelf(name string) string {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return name
}

func firstLine(cmd *exec.Cmd) string {
	b, err := cmd.CombinedOutput()
	if err != nil {
		return "error: " + err.Error()
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return line
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    | " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    | ") + "\n"
}
