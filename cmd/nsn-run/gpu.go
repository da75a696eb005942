package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/spf13/cobra"

	"github.com/nsn-run/nsn-run/gpu"
	"github.com/nsn-run/nsn-run/gpu/cdigen"
	"github.com/nsn-run/nsn-run/node"
)

func newGPUCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gpu",
		Short: "Manage the GPUs tasks are given",
	}
	var outDir, driverRoot, hookPath string
	var cudaCompat, noHooks bool
	var libDirs []string
	gen := &cobra.Command{
		Use:   "cdi-generate",
		Short: "Write the CDI spec of this node's NVIDIA GPUs",
		Long: `Generate the CDI spec of this node's NVIDIA GPUs with NVIDIA's nvcdi over NVML
(full GPUs and MIG devices, named by index and UUID, plus "all") and write it
to --output-dir/nvidia.yaml, root-owned 0644. NVIDIA's enable-cuda-compat hook
is left out unless --enable-cuda-compat; every hook gets an explicit minimal
env. Needs the NVIDIA driver (libnvidia-ml.so.1).

The other hooks (driver library symlinks, ld.so cache) run NVIDIA's
nvidia-cdi-hook, from nvidia-container-toolkit-base; generation fails where it
is missing, since every GPU task would then fail to start. --no-hooks leaves
all hooks out: tasks get the device nodes and driver files, and their images
must find the libraries themselves (LD_LIBRARY_PATH).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := cdigen.Generate(cdigen.GenerateOptions{
				Nvml: nvml.New(), DriverRoot: driverRoot, EnableCUDACompat: cudaCompat,
				NoHooks: noHooks, HookPath: hookPath, LibrarySearchPaths: libDirs,
			})
			if err != nil {
				return err
			}
			path, err := cdigen.WriteSpec(s, outDir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %d devices\n", path, len(s.Devices))
			return nil
		},
	}
	gen.Flags().StringVar(&outDir, "output-dir", "/var/run/cdi", "directory to write nvidia.yaml to")
	gen.Flags().StringVar(&driverRoot, "driver-root", "/", "where the NVIDIA driver's files are")
	gen.Flags().BoolVar(&cudaCompat, "enable-cuda-compat", false, "keep NVIDIA's enable-cuda-compat hook")
	gen.Flags().BoolVar(&noHooks, "no-hooks", false, "leave every NVIDIA hook out (hosts without nvidia-cdi-hook)")
	gen.Flags().StringVar(&hookPath, "nvidia-cdi-hook", "", "the nvidia-cdi-hook binary hooks run (default: /usr/bin or /usr/local/bin); nsn-run's auditor allows only those two")
	gen.Flags().StringArrayVar(&libDirs, "library-search-path", nil, "directory searched for driver libraries besides the ld.so cache (repeatable), e.g. /usr/local/nvidia/lib64")
	cmd.AddCommand(gen, newGPULsCommand(g))

	return cmd
}

func newGPULsCommand(g *globalOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the GPUs the CDI specs define and the tasks holding them",
		Long: `List each GPU (or MIG slice) the CDI specs define, once, with every name
that reaches it (index, UUID), and the task holding it alone or the tasks
sharing it (--gpu-shared). Allocations of tasks that are gone are freed by
'nsn-run gc'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			gpus, err := node.GPUs(g.nodeOptions())
			if err != nil {
				return err
			}
			devices := gpus.Devices()
			out := cmd.OutOrStdout()
			if asJSON {
				if devices == nil {
					devices = []gpu.Device{}
				}
				return printJSON(out, devices)
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "GPU\tNAMES\tHELD BY")
			for _, d := range devices {
				held := "-"
				switch {
				case d.Exclusive != "":
					held = d.Exclusive
				case len(d.Sharers) > 0:
					held = "shared: " + strings.Join(d.Sharers, ",")
				}
				var names []string
				for _, n := range d.Names[1:] {
					names = append(names, strings.TrimPrefix(n, gpu.Kind+"="))
				}
				fmt.Fprintf(w, "%s\t%s\t%s\n", strings.TrimPrefix(d.Names[0], gpu.Kind+"="), strings.Join(names, ","), held)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
