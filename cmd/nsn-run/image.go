package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/nsn-run/nsn-run/runtime"
)

func newImageCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage the images tasks run from",
	}
	var replace bool
	importCmd := &cobra.Command{
		Use:   "import FILE|-",
		Short: "Import an OCI image layout or docker-save tarball",
		Long: `Import an OCI image layout tarball or a 'docker save' tarball into the
backend's image store (containerd's namespace --namespace, or with
--backend docker dockerd's) and print the names of the images it holds.

The archive names its images itself. An image of one of those names that is
already here with other content is not replaced (exit 125) unless
--replace: an archive a task's author hands you must not take over the
image other tasks run from. A name that is not a full, valid image
reference (docker.io/library/busybox:latest, not busybox), that pins a
digest (NAME@sha256:...) other than its content's, or whose target is not
an image manifest or index the archive holds, is refused.`,
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
			names, err := m.ImportImage(cmd.Context(), r, runtime.ImportOptions{Replace: replace})
			if err != nil {
				return err
			}
			for _, n := range names {
				fmt.Fprintln(cmd.OutOrStdout(), printableName(n))
			}
			return nil
		},
	}
	importCmd.Flags().BoolVar(&replace, "replace", false, "let the archive's images replace local images of the same names with other content")
	cmd.AddCommand(importCmd, &cobra.Command{
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
				fmt.Fprintf(w, "%s\t%s\t%s\n", printableName(img.Name), img.Digest, size)
			}
			return w.Flush()
		},
	}, newImageRmCommand(g))
	return cmd
}

func newImageRmCommand(g *globalOptions) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [--force] REF...",
		Aliases: []string{"remove"},
		Short:   "Remove local images",
		Long: `Remove each image from the backend's store (containerd's namespace, or with
--backend docker dockerd's) and print its name. The store then frees its
layers and unpacked snapshots unless another name or a task still holds
them (containerd collects them before rm returns).

An image that a task of nsn-run's still runs from, in this namespace (or
dockerd) and any state, is refused (exit 125, naming the tasks): remove
the tasks first, or --force, which removes the name anyway; a running
task is unaffected, and a new task of the name is refused until the image
is imported or pulled again. REF is a name as image ls prints it, or a
short form (busybox means docker.io/library/busybox:latest); a digest or
image id alone is refused.`,
		Example: `  nsn-run image rm docker.io/library/busybox:latest
  nsn-run image rm alpine:3.20 team/model-runner:v2`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, closeFn, err := openManager(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeFn()
			return eachArg(cmd.OutOrStdout(), args, func(ref string) (string, error) {
				img, err := m.RemoveImage(cmd.Context(), ref, runtime.RemoveImageOptions{Force: force})
				return printableName(img.Name), err
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove images that tasks still run from")
	return cmd
}

// printableName is an image name as the CLI prints it: quoted, with its
// control characters and bytes that are not UTF-8 escaped, where it has
// any. nsn-run refuses such names on import, but an image another tool
// created can carry one to the operator's terminal.
func printableName(name string) string {
	if !utf8.ValidString(name) || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) }) {
		return strconv.QuoteToASCII(name)
	}
	return name
}
