// Command nsn-imagebuild makes nsn-run's demo and test images without a
// registry: it lays out a root filesystem from Debian's static busybox and
// packs it as an OCI image layout tarball for `nsn-run image import`.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/internal/imagebuild"
)

func main() {
	name := flag.String("name", "docker.io/library/busybox:latest", "image reference to record in the layout")
	busybox := flag.String("busybox", "/bin/busybox", "static busybox binary")
	rootfs := flag.String("rootfs", "", "directory to lay the root filesystem out in (default: a temp dir, removed)")
	out := flag.String("o", "", "output OCI layout tarball (required)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: nsn-imagebuild -o IMAGE.tar [-name REF] [-busybox PATH] [-rootfs DIR]\n\n"+
			"Builds a busybox image as an OCI layout tarball (import it with nsn-run image import).\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *out == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := build(*name, *busybox, *rootfs, *out); err != nil {
		fmt.Fprintln(os.Stderr, "nsn-imagebuild:", err)
		os.Exit(1)
	}
}

func build(name, busybox, rootfs, out string) error {
	if rootfs == "" {
		tmp, err := os.MkdirTemp("", "nsn-imagebuild-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		rootfs = filepath.Join(tmp, "rootfs")
	}
	if err := imagebuild.BusyboxRootfs(rootfs, busybox); err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	err = imagebuild.WriteOCILayout(f, imagebuild.Image{
		Name:      name,
		RootfsDir: rootfs,
		Config:    ocispec.ImageConfig{Env: []string{"PATH=/bin"}, Cmd: []string{"sh"}},
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}
