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
	"github.com/containerd/containerd/v2/core/snapshots"
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

// hostileImage is an image built from a busybox root the test filled, in
// the test namespace under a name of this run.
type hostileImage struct {
	t      *testing.T
	c      *client.Client
	ctx    context.Context
	ref    string
	rootfs string
}

// newHostileImage makes a busybox root for fill to add to; import makes
// the image of it.
func newHostileImage(t *testing.T, name string, fill func(rootfs string) error) *hostileImage {
	c, _ := containerdClient(t)
	h := &hostileImage{t: t, c: c, ctx: namespaces.WithNamespace(context.Background(), testNamespace),
		ref: "docker.io/library/" + name + ":" + strings.TrimPrefix(uniqueID("t"), "t-"), rootfs: filepath.Join(t.TempDir(), "rootfs")}
	if err := imagebuild.BusyboxRootfs(h.rootfs, busyboxPath(t)); err != nil {
		t.Fatal(err)
	}
	if err := fill(h.rootfs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.remove)
	return h
}

func (h *hostileImage) importIt() client.Image {
	h.t.Helper()
	if err := importImage(h.c, imagebuild.Image{Name: h.ref, RootfsDir: h.rootfs, Config: ocispec.ImageConfig{Env: []string{"PATH=/bin"}}}); err != nil {
		h.t.Fatal(err)
	}
	img, err := h.c.GetImage(h.ctx, h.ref)
	if err != nil {
		h.t.Fatal(err)
	}
	return img
}

// chain is the chain id of img's top layer: its unpacked snapshot.
func (h *hostileImage) chain(img client.Image) string {
	h.t.Helper()
	diffIDs, err := img.RootFS(h.ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return identity.ChainID(diffIDs).String()
}

// remove deletes the image and its unpacked snapshot, if any, and fails
// the test when the snapshot stays: the image imported again would then
// count as unpacked, and its next run would skip the size check (a run
// once found a 16 MiB bound not applied, cause unseen).
func (h *hostileImage) remove() {
	h.t.Helper()
	img, err := h.c.GetImage(h.ctx, h.ref)
	if errdefs.IsNotFound(err) {
		return
	}
	if err != nil {
		h.t.Errorf("look up %s to remove it: %v", h.ref, err)
		return
	}
	diffIDs, err := img.RootFS(h.ctx)
	if err != nil {
		h.t.Errorf("layers of %s: %v", h.ref, err)
	}
	if err := h.c.ImageService().Delete(h.ctx, h.ref); err != nil && !errdefs.IsNotFound(err) {
		h.t.Errorf("remove image %s: %v", h.ref, err)
	}
	if diffIDs == nil {
		return
	}
	sn := h.c.SnapshotService(containerd.DefaultSnapshotter)
	chain := identity.ChainID(diffIDs).String()
	// Its children first: the test's own views of it (CI once found one
	// left, "cannot remove snapshot with child"; named here if it recurs).
	var children []snapshots.Info
	if err := sn.Walk(h.ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Parent == chain {
			children = append(children, info)
		}
		return nil
	}); err != nil {
		h.t.Errorf("list the snapshots of %s: %v", h.ref, err)
	}
	for _, c := range children {
		h.t.Logf("the unpacked snapshot of %s has a child: %s (%v)", h.ref, c.Name, c.Kind)
		if err := sn.Remove(h.ctx, c.Name); err != nil && !errdefs.IsNotFound(err) {
			h.t.Errorf("remove the child %s (%v) of %s's snapshot: %v", c.Name, c.Kind, h.ref, err)
		}
	}
	if err := sn.Remove(h.ctx, chain); err != nil && !errdefs.IsNotFound(err) {
		h.t.Errorf("remove the unpacked snapshot %s of %s: %v", chain, h.ref, err)
	}
	if _, err := sn.Stat(h.ctx, chain); !errdefs.IsNotFound(err) {
		h.t.Errorf("the unpacked snapshot %s of %s is still there after its removal (%v)", chain, h.ref, err)
	}
}

// unpackDirectly unpacks the image with containerd alone, as without
// nsn-run's check, and calls look with its root mounted read-only.
func (h *hostileImage) unpackDirectly(img client.Image, look func(root string) error) error {
	h.t.Helper()
	if err := img.Unpack(h.ctx, containerd.DefaultSnapshotter); err != nil {
		h.t.Fatal(err)
	}
	sn := h.c.SnapshotService(containerd.DefaultSnapshotter)
	chain := h.chain(img)
	// The view under a lease of its own, let go once it is removed:
	// containerd's garbage collector removes a snapshot no lease holds
	// (the unpack's own lease ending starts a collection), and CI's
	// containerd 2.4.2 once had the view gone before its removal here
	// and the unpacked snapshot then refusing its removal for a child.
	lctx, done, err := h.c.WithLease(h.ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	defer func() { _ = done(h.ctx) }()
	mounts, err := sn.View(lctx, "view-"+chain, chain)
	if err != nil {
		h.t.Fatal(err)
	}
	defer func() {
		if err := sn.Remove(lctx, "view-"+chain); err != nil {
			// remove() takes it with the image, and fails if it cannot.
			h.t.Logf("remove the view of %s: %v", h.ref, err)
		}
	}()
	return mount.WithReadonlyTempMount(h.ctx, mounts, look)
}

// run runs the image's first task on a backend allowed limit bytes.
func (h *hostileImage) run(limit int64) (task.Result, error) {
	m, _ := testManagerBackend(h.t, func(b *containerd.Config) { b.MaxUnpackedBytes = limit }, func(*runtime.Config) {})
	return m.Run(context.Background(), task.Task{ID: uniqueID("unpack"), Image: h.ref, Command: []string{"true"}}, runtime.RunOptions{})
}

// TestImageUnpackBomb: an image's layers are attacker input, and what they
// unpack to is not what they weigh: an outside review's 1 MB archive (a
// sparse tar entry) wrote 2 GiB to containerd's root at its first run. Here
// a layer of 1.1 MB (busybox and compressed zeros) holds a 96 MiB file. Unpacked
// by containerd directly, the file takes its 96 MiB of disk; a backend
// allowed 64 MiB refuses the task before anything is unpacked, and one
// allowed 256 MiB runs it.
func TestImageUnpackBomb(t *testing.T) {
	h := newHostileImage(t, "hostile-unpack-bomb", func(rootfs string) error {
		f, err := os.Create(filepath.Join(rootfs, "zeros"))
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Truncate(bombSize)
	})
	img := h.importIt()
	size, err := img.Size(h.ctx)
	if err != nil || size > bombSize/20 {
		t.Fatalf("the image weighs %d bytes (%v), want a small part of %d", size, err, bombSize)
	}
	var blocks int64
	err = h.unpackDirectly(img, func(root string) error {
		info, err := os.Stat(filepath.Join(root, "zeros"))
		if err == nil {
			blocks = info.Sys().(*syscall.Stat_t).Blocks
		}
		return err
	})
	if err != nil || blocks*512 < bombSize {
		t.Fatalf("unpacked by containerd: %d bytes on disk (%v), want the whole %d", blocks*512, err, bombSize)
	}
	t.Logf("unpacked by containerd: the %d KB image took %d MiB of disk", size>>10, blocks*512>>20)
	h.remove()

	img = h.importIt()
	_, err = h.run(64 << 20)
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "would unpack to more than") {
		t.Errorf("allowed 64 MiB: %v, want the image refused as too large", err)
	}
	if unpacked, err := img.IsUnpacked(h.ctx, containerd.DefaultSnapshotter); err != nil || unpacked {
		t.Errorf("after the refusal the image is unpacked: %v, %v", unpacked, err)
	}
	if res, err := h.run(256 << 20); err != nil || res.ExitCode != 0 {
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
	h := newHostileImage(t, "hostile-unpack-dirs", func(rootfs string) error {
		for i := range dirs {
			if err := os.MkdirAll(filepath.Join(rootfs, "many", strconv.Itoa(i)), 0o755); err != nil {
				return err
			}
		}
		return nil
	})
	img := h.importIt()
	var made int
	err := h.unpackDirectly(img, func(root string) error {
		entries, err := os.ReadDir(filepath.Join(root, "many"))
		made = len(entries)
		return err
	})
	if err != nil || made != dirs {
		t.Fatalf("unpacked by containerd: %d directories (%v), want %d", made, err, dirs)
	}
	t.Logf("unpacked by containerd: %d directories", made)
	h.remove()

	h.importIt()
	if _, err := h.run(16 << 20); !errdefs.IsResourceExhausted(err) {
		t.Errorf("allowed 16 MiB: %v, want the image refused as too large", err)
	}
	if res, err := h.run(64 << 20); err != nil || res.ExitCode != 0 {
		t.Errorf("allowed 64 MiB: %+v, %v", res, err)
	}
}
