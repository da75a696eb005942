package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"
)

func newImageCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage the images tasks run from",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "import FILE|-",
		Short: "Import an OCI image layout or docker-save tarball",
		Long: `Import an OCI image layout tarball or a 'docker save' tarball into the
backend's image store (containerd's namespace --namespace, or with
--backend docker dockerd's) and print the names of the images it holds.`,
		Example: `  nsn-run image import busybox.tar
  docker save alpine:latest | nsn-run image import -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r := cmd.InOrStdin()
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			m, closeFn, err := openManager(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeFn()
			names, err := m.ImportImage(cmd.Context(), r)
			if err != nil {
				return err
			}
			for _, n := range names {
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return nil
		},
	}, &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from a registry and unpack it",
		Long: `Pull REF from its registry for this platform and unpack it, showing progress
(one redrawn line on a terminal, a line per blob otherwise). Registries on
localhost/127.0.0.1 are reached over plain HTTP, all others over HTTPS.
With --backend docker, dockerd pulls (its own registry settings apply) and
the progress is its per-layer report.`,
		Example: `  nsn-run image pull alpine:latest
  nsn-run image pull 127.0.0.1:5000/team/model-runner:v3`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, closeFn, err := openManager(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeFn()
			errOut := cmd.ErrOrStderr()
			progress := newPullPrinter(errOut, isTerminal(errOut))
			img, err := m.PullImage(cmd.Context(), args[0], progress.report)
			if err != nil {
				return err
			}
			fmt.Fprintf(errOut, "pulled %s\n", img.Name)
			fmt.Fprintln(cmd.OutOrStdout(), img.Name+"@"+img.Digest)
			return nil
		},
	}, &cobra.Command{
		Use:   "ls",
		Short: "List local images (the backend's: containerd's namespace, or dockerd's)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, closeFn, err := openManager(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeFn()
			imgs, err := m.ListImages(cmd.Context())
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tDIGEST\tSIZE")
			for _, img := range imgs {
				size := "-" // content for this platform is not all present
				if img.Size >= 0 {
					size = units.HumanSize(float64(img.Size))
				}
				fmt.Fprintf(w, "%s\t%s\t%s\n", img.Name, img.Digest, size)
			}
			return w.Flush()
		},
	})
	return cmd
}
