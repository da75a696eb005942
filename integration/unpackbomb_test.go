package integration

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/internal/imagebuild"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/task"
)

// bombSize is what the hostile layer's file of zeros claims; gzipped it is
// about a thousandth of that, beside busybox's megabyte.
const bombSize = 96 << 20

// TestImageUnpackBomb: an image's layers are attacker input, and what they
// unpack to is not what they weigh: an outside review's 1 MB archive (a
// sparse tar entry) wrote 2 GiB to containerd's root at its first run. Here
// a layer of 1.1 MB (busybox and compressed zeros) holds a 96 MiB file. Unpacked
// by containerd directly, the file takes its 96 MiB of disk; a backend
// allowed 64 MiB refuses the task before anything is unpacked, and one
// allowed 256 MiB runs it.
func TestImageUnpackBomb(t *testing.T) {
	c, _ := containerdClient(t)
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := imagebuild.BusyboxRootfs(rootfs, busyboxPath(t)); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(rootfs, "zeros"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(bombSize); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ref := "docker.io/library/hostile-unpack-bomb:" + strings.TrimPrefix(uniqueID("t"), "t-")
	importBomb := func() client.Image {
		t.Helper()
		if err := importImage(c, imagebuild.Image{Name: ref, RootfsDir: rootfs, Config: ocispec.ImageConfig{Env: []string{"PATH=/bin"}}}); err != nil {
			t.Fatal(err)
		}
		img, err := c.GetImage(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	img := importBomb()
	if n, err := img.Size(ctx); err != nil || n > bombSize/20 {
		t.Fatalf("the image weighs %d bytes (%v), want a small part of %d", n, err, bombSize)
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	chain := identity.ChainID(diffIDs).String()
	sn := c.SnapshotService(containerd.DefaultSnapshotter)
	removeImage := func() {
		_ = c.ImageService().Delete(ctx, ref)
		_ = sn.Remove(ctx, chain)
	}
	t.Cleanup(removeImage)

	// Without the check: containerd writes the whole file out.
	if err := img.Unpack(ctx, containerd.DefaultSnapshotter); err != nil {
		t.Fatal(err)
	}
	mounts, err := sn.View(ctx, "view-"+chain, chain)
	if err != nil {
		t.Fatal(err)
	}
	var blocks int64
	err = mount.WithReadonlyTempMount(ctx, mounts, func(root string) error {
		info, err := os.Stat(filepath.Join(root, "zeros"))
		if err == nil {
			blocks = info.Sys().(*syscall.Stat_t).Blocks
		}
		return err
	})
	_ = sn.Remove(ctx, "view-"+chain)
	if err != nil || blocks*512 < bombSize {
		t.Fatalf("unpacked by containerd: %d bytes on disk (%v), want the whole %d", blocks*512, err, bombSize)
	}
	t.Logf("unpacked by containerd: the %d KB layer took %d MiB of disk", mustSize(t, img)>>10, blocks*512>>20)
	removeImage()

	img = importBomb()
	run := func(limit int64) (task.Result, error) {
		m, _ := testManagerBackend(t, func(b *containerd.Config) { b.MaxUnpackedBytes = limit }, func(*runtime.Config) {})
		return m.Run(context.Background(), task.Task{ID: uniqueID("bomb"), Image: ref, Command: []string{"true"}}, runtime.RunOptions{})
	}
	_, err = run(64 << 20)
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "would unpack to more than") {
		t.Errorf("allowed 64 MiB: %v, want the image refused as too large", err)
	}
	if unpacked, err := img.IsUnpacked(ctx, containerd.DefaultSnapshotter); err != nil || unpacked {
		t.Errorf("after the refusal the image is unpacked: %v, %v", unpacked, err)
	}
	if res, err := run(256 << 20); err != nil || res.ExitCode != 0 {
		t.Errorf("allowed 256 MiB: %+v, %v", res, err)
	}
}

// TestImageUnpackDirectories: entries count, not only file bytes: an
// outside review's 60,000 empty directories took 243 MB of ext4 (a block
// each) and 120,126 inodes while counting 0 bytes. Here 5,000 empty
// directories beside busybox (about 1 MB of file bytes): containerd
// unpacks every one, and a backend allowed 16 MiB (under 5,000 blocks of
// 4 KiB) refuses the task, one allowed 64 MiB runs it.
func TestImageUnpackDirectories(t *testing.T) {
	const dirs = 5000
	c, _ := containerdClient(t)
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := imagebuild.BusyboxRootfs(rootfs, busyboxPath(t)); err != nil {
		t.Fatal(err)
	}
	for i := range dirs {
		if err := os.MkdirAll(filepath.Join(rootfs, "many", strconv.Itoa(i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ref := "docker.io/library/hostile-unpack-dirs:" + strings.TrimPrefix(uniqueID("t"), "t-")
	importDirs := func() client.Image {
		t.Helper()
		if err := importImage(c, imagebuild.Image{Name: ref, RootfsDir: rootfs, Config: ocispec.ImageConfig{Env: []string{"PATH=/bin"}}}); err != nil {
			t.Fatal(err)
		}
		img, err := c.GetImage(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	img := importDirs()
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	chain := identity.ChainID(diffIDs).String()
	sn := c.SnapshotService(containerd.DefaultSnapshotter)
	removeImage := func() {
		_ = c.ImageService().Delete(ctx, ref)
		_ = sn.Remove(ctx, chain)
	}
	t.Cleanup(removeImage)
	if err := img.Unpack(ctx, containerd.DefaultSnapshotter); err != nil {
		t.Fatal(err)
	}
	mounts, err := sn.View(ctx, "view-"+chain, chain)
	if err != nil {
		t.Fatal(err)
	}
	var made int
	err = mount.WithReadonlyTempMount(ctx, mounts, func(root string) error {
		entries, err := os.ReadDir(filepath.Join(root, "many"))
		made = len(entries)
		return err
	})
	_ = sn.Remove(ctx, "view-"+chain)
	if err != nil || made != dirs {
		t.Fatalf("unpacked by containerd: %d directories (%v), want %d", made, err, dirs)
	}
	t.Logf("unpacked by containerd: %d directories of a %d KB image", made, mustSize(t, img)>>10)
	removeImage()

	importDirs()
	run := func(limit int64) (task.Result, error) {
		m, _ := testManagerBackend(t, func(b *containerd.Config) { b.MaxUnpackedBytes = limit }, func(*runtime.Config) {})
		return m.Run(context.Background(), task.Task{ID: uniqueID("dirs"), Image: ref, Command: []string{"true"}}, runtime.RunOptions{})
	}
	if _, err := run(16 << 20); !errdefs.IsResourceExhausted(err) {
		t.Errorf("allowed 16 MiB: %v, want the image refused as too large", err)
	}
	if res, err := run(64 << 20); err != nil || res.ExitCode != 0 {
		t.Errorf("allowed 64 MiB: %+v, %v", res, err)
	}
}

func mustSize(t *testing.T, img client.Image) int64 {
	t.Helper()
	n, err := img.Size(namespaces.WithNamespace(context.Background(), testNamespace))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
