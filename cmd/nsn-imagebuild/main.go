// Command nsn-imagebuild makes nsn-run's demo and test images without a
// registry: it lays out a root filesystem from Debian's static busybox and
// packs it as an OCI image layout tarball for `nsn-run image import`.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/internal/imagebuild"
)

func main() {
	name := flag.String("name", "docker.io/library/busybox:latest", "image reference to record in the layout")
	busybox := flag.String("busybox", "/bin/busybox", "static busybox binary")
	rootfs := flag.String("rootfs", "", "directory to lay the root filesystem out in (default: a temp dir, removed)")
	out := flag.String("o", "", "output OCI layout tarball (required)")
	var adds addFlags
	flag.Var(&adds, "add", "SRC:DEST: copy host file SRC into the image at DEST, mode kept (repeatable)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: nsn-imagebuild -o IMAGE.tar [-name REF] [-busybox PATH] [-rootfs DIR] [-add SRC:DEST]...\n\n"+
			"Builds a busybox image as an OCI layout tarball (import it with nsn-run image import).\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *out == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := build(*name, *busybox, *rootfs, *out, adds); err != nil {
		fmt.Fprintln(os.Stderr, "nsn-imagebuild:", err)
		os.Exit(1)
	}
}

// addFlags collects -add SRC:DEST values.
type addFlags []string

func (a *addFlags) String() string     { return strings.Join(*a, ",") }
func (a *addFlags) Set(v string) error { *a = append(*a, v); return nil }

func build(name, busybox, rootfs, out string, adds []string) error {
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
	for _, add := range adds {
		src, dest, ok := strings.Cut(add, ":")
		if !ok || !filepath.IsAbs(dest) {
			return fmt.Errorf("-add %q: want SRC:/ABSOLUTE/DEST", add)
		}
		if err := imagebuild.AddFile(rootfs, src, dest); err != nil {
			return err
		}
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
