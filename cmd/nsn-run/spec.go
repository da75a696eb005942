package main

import (
	"fmt"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"

	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/snapshots"
	"github.com/nsn-run/nsn-run/spec"
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
			if g.backend != "containerd" {
				return fmt.Errorf("%w: backend %q: only containerd is available", errdefs.ErrInvalidArgument, g.backend)
			}
			outDir, err := taskOutputDir(g.stateDir, t.ID)
			if err != nil {
				return err
			}
			// The namespace names the cgroup path in the spec, as it will
			// when the backend creates the container there.
			ctx := namespaces.WithNamespace(cmd.Context(), g.namespace)
			c, err := containerd.Dial(ctx, g.address, g.namespace)
			if err != nil {
				return err
			}
			defer c.Close()
			img, err := snapshots.Resolve(ctx, c, t.Image)
			if err != nil {
				return err
			}
			s, err := spec.Generate(ctx, t, img.Config, spec.Options{OutputDir: outDir})
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
