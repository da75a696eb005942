package main

import (
	"github.com/spf13/cobra"
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

It is what run would send now, through the same code and the same audit,
with nothing created or allocated: the GPUs and the host id range are
those the node would grant the task at this moment (a task run later may
get others). The task runs in its own user namespace (unless
--user-namespaces off) over a free range of 65536 host ids; where containerd
idmaps the image (2.x) that happens in the snapshot's mounts, not in the
spec.

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
			m, closeFn, err := openManager(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeFn()
			// The Manager's own preview: the request Start would send,
			// through the same generation and audit, allocating nothing.
			b, err := m.Preview(cmd.Context(), t)
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
