package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"

	"github.com/nsn-run/nsn-run/gpu"
	"github.com/nsn-run/nsn-run/idmap"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/runtime/containerd/images"
	"github.com/nsn-run/nsn-run/runtime/docker"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/task"
)

func newSpecCommand(g *globalOptions) *cobra.Command {
	f := &taskFlags{}
	cmd := &cobra.Command{
		Use:   "spec [flags] IMAGE [--] CMD [ARG...]",
		Short: "Print the exact OCI runtime spec `run` would give a task",
		Long: `Print the exact OCI runtime spec that 'nsn-run run' with the same flags
would give the task, as indented JSON. The image must be present in
containerd (at --address, namespace --namespace): only its Env, Entrypoint,
a validated WorkingDir and a numeric non-root User are taken from it.

With --backend docker it prints the Docker Engine API create request
(container Config and HostConfig) instead, for an image present in dockerd
(DOCKER_HOST).

The task runs in its own user namespace (unless --user-namespaces off):
run allots it a free host id range of 65536 ids; the preview maps the first
range of the span (host ids 1048576-1114111). Where containerd idmaps the
image (2.x) that happens in the snapshot's mounts, not in the spec.

The spec is deterministic: the same flags, image and --id give identical
bytes (without --id a random id is generated, and it names the hostname,
cgroup path and output directory). Pipe it to 'nsn-run audit -' to check it.`,
		Example: `  nsn-run spec --memory 256m --cpus 0.5 --pids 64 busybox:latest -- echo hi
  nsn-run spec --id job1 alpine:latest -- sh -c 'id' | nsn-run audit -`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := f.task(args)
			if err != nil {
				return err
			}
			// As run would: a runtime the node does not allow is refused.
			if err := checkRuntimeAllowed(g, t); err != nil {
				return err
			}
			outDir, err := taskOutputDir(g.stateDir, t.ID)
			if err != nil {
				return err
			}
			switch g.backend {
			case "containerd":
			case "docker":
				return printDockerRequest(cmd, g, t, outDir)
			default:
				return fmt.Errorf("%w: backend %q: want containerd or docker", errdefs.ErrInvalidArgument, g.backend)
			}
			// The namespace names the cgroup path in the spec, as it will
			// when the backend creates the container there.
			ctx := namespaces.WithNamespace(cmd.Context(), g.namespace)
			c, err := containerd.Dial(ctx, g.address, g.namespace)
			if err != nil {
				return err
			}
			defer c.Close()
			img, err := images.Resolve(ctx, c, t.Image)
			if err != nil {
				return err
			}
			// GPUs are resolved as run would, but not allocated.
			gpus, err := gpu.New(gpu.Options{SpecDirs: g.cdiSpecDirs})
			if err != nil {
				return err
			}
			req, err := t.GPURequest()
			if err != nil {
				return err
			}
			o := spec.Options{OutputDir: outDir, CDI: gpus}
			userns, err := runtime.ParseUserNSMode(g.userns)
			if err != nil {
				return err
			}
			if userns != runtime.UserNSOff {
				// run allots a free range; the preview shows the first.
				first := idmap.DefaultSpan.RangeAt(0)
				o.UserNS = &first
			}
			if !req.Empty() {
				if o.GPUDevices, err = gpus.Resolve(req); err != nil {
					return err
				}
			}
			s, err := spec.Generate(ctx, t, img.Config, o)
			if err != nil {
				return err
			}
			b, err := spec.Marshal(s)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	cmd.Flags().SetInterspersed(false)
	f.register(cmd.Flags())
	return cmd
}

func printDockerRequest(cmd *cobra.Command, g *globalOptions, t task.Task, outDir string) error {
	c, err := docker.Dial(cmd.Context(), dockerHost())
	if err != nil {
		return err
	}
	defer c.Close()
	img, err := docker.ImageConfig(cmd.Context(), c, t.Image)
	if err != nil {
		return err
	}
	gpus, err := gpu.New(gpu.Options{SpecDirs: g.cdiSpecDirs})
	if err != nil {
		return err
	}
	req, err := t.GPURequest()
	if err != nil {
		return err
	}
	names, err := gpus.Resolve(req)
	if err != nil {
		return err
	}
	r, err := docker.CreateRequest(t, img, docker.RequestOptions{OutputDir: outDir, GPUs: names})
	if err != nil {
		return err
	}
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// checkRuntimeAllowed refuses a task naming a runtime outside the allowed
// ones, as the Manager does for run.
func checkRuntimeAllowed(g *globalOptions, t task.Task) error {
	allowed := g.allowedRuntimes
	if len(allowed) == 0 {
		allowed = runtime.DefaultAllowedRuntimes
	}
	if rt := t.WithDefaults().Runtime; !slices.Contains(allowed, rt) {
		return fmt.Errorf("%w: runtime %q is not allowed on this node (allowed: %s)", errdefs.ErrInvalidArgument, rt, strings.Join(allowed, ", "))
	}
	return nil
}
