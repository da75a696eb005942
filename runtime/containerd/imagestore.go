package containerd

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	ctrimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/internal/flock"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd/images"
	"github.com/nsn-run/nsn-run/task"
)

var _ runtime.ImageStore = (*Backend)(nil)

// ImportImage implements runtime.ImageStore: an OCI layout or `docker
// save` tarball into the backend's namespace.
func (b *Backend) ImportImage(ctx context.Context, r io.Reader, opts runtime.ImportOptions) ([]string, error) {
	return images.Import(b.ns(ctx), b.client, r, opts.Replace)
}

// PullImage implements runtime.ImageStore: pulled and unpacked with the
// backend's snapshotter, so a task starts from it without unpacking.
func (b *Backend) PullImage(ctx context.Context, ref string, progress func(runtime.PullProgress)) (runtime.Image, error) {
	ctx = b.ns(ctx)
	var before *ctrimages.Image // the name's image before the pull, if any
	if name, err := task.NormalizeImage(ref); err == nil {
		if prev, err := b.client.ImageService().Get(ctx, name); err == nil {
			before = &prev
		}
	}
	img, err := images.Pull(ctx, b.client, ref, images.PullOptions{Progress: progress})
	if err != nil {
		return runtime.Image{}, err
	}
	if _, err := images.Unpack(ctx, img.Image, b.cfg.Snapshotter, b.unpackGuard()); err != nil {
		// Refused (or failed): the name is as it was before the pull,
		// so that a pull that failed leaves no image to run and takes
		// none away.
		restore := context.WithoutCancel(ctx)
		if before != nil {
			_, _ = b.client.ImageService().Update(restore, *before)
		} else {
			_ = b.client.ImageService().Delete(restore, img.Name)
		}
		return runtime.Image{}, err
	}
	out := runtime.Image{Name: img.Name, Digest: img.Digest, Size: -1}
	if n, err := img.Image.Size(ctx); err == nil {
		out.Size = n
	}
	return out, nil
}

// ListImages implements runtime.ImageStore: the namespace's images with
// their manifest digests and, where all content for this platform is
// present, sizes.
func (b *Backend) ListImages(ctx context.Context) ([]runtime.Image, error) {
	ctx = b.ns(ctx)
	imgs, err := images.List(ctx, b.client)
	if err != nil {
		return nil, err
	}
	out := make([]runtime.Image, 0, len(imgs))
	for _, img := range imgs {
		size := int64(-1) // content for this platform is not all present
		if n, err := img.Size(ctx, b.client.ContentStore(), platforms.Default()); err == nil {
			size = n
		}
		out = append(out, runtime.Image{Name: img.Name, Digest: img.Target.Digest.String(), Size: size})
	}
	return out, nil
}

// RemoveImage implements runtime.ImageStore: the name goes, and
// containerd's garbage collector runs before it returns (SynchronousDelete),
// so the content and unpacked snapshots no other image, container or lease
// references are gone by then. A container's own snapshot keeps its
// parents: a task still running from the image runs on. containerd keeps
// no record of which containers use an image, so force changes nothing
// here; the Manager refuses an image its tasks use.
func (b *Backend) RemoveImage(ctx context.Context, name string, _ bool) (runtime.Image, error) {
	ctx = b.ns(ctx)
	img, err := b.client.ImageService().Get(ctx, name)
	if errdefs.IsNotFound(err) {
		return runtime.Image{}, fmt.Errorf("image %s: %w", name, errdefs.ErrNotFound)
	}
	if err != nil {
		return runtime.Image{}, fmt.Errorf("image %s: %w", name, err)
	}
	// Only the image looked at: one imported under the name meanwhile
	// stays (containerd 2.0 and later check the target; 1.x ignores it).
	if err := b.client.ImageService().Delete(ctx, name, ctrimages.DeleteTarget(&img.Target), ctrimages.SynchronousDelete()); err != nil {
		return runtime.Image{}, fmt.Errorf("remove image %s: %w", name, err)
	}
	return runtime.Image{Name: img.Name, Digest: img.Target.Digest.String(), Size: -1}, nil
}

// unpackGuard is the guard of an image's first unpack: unpackLimit, under
// a node-wide lock in ProbeDir (none without one).
func (b *Backend) unpackGuard() images.UnpackGuard {
	g := images.UnpackGuard{Limit: b.unpackLimit}
	if b.cfg.ProbeDir != "" {
		g.Lock = func(ctx context.Context) (func(), error) {
			if err := os.MkdirAll(b.cfg.ProbeDir, 0o700); err != nil {
				return nil, err
			}
			return flock.Path(ctx, filepath.Join(b.cfg.ProbeDir, "unpack.lock"), unix.LOCK_EX)
		}
	}
	return g
}

// unpackLimit is what an image not yet unpacked may unpack to:
// Config.MaxUnpackedBytes, else what the snapshotter's filesystem has
// free, less a reserve of 5% of its size (the reserve at most 8 GiB), and
// its free inodes less 5% of them (at most a million), so that no image
// can fill the disk or its inode table under containerd and every task on
// it.
func (b *Backend) unpackLimit(ctx context.Context) (images.UnpackLimit, error) {
	if b.cfg.MaxUnpackedBytes > 0 {
		return images.UnpackLimit{Bytes: b.cfg.MaxUnpackedBytes}, nil
	}
	root, err := b.snapshotterRoot(ctx)
	if err != nil {
		return images.UnpackLimit{}, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return images.UnpackLimit{}, fmt.Errorf("free space of snapshotter %s at %s (set containerd.Config.MaxUnpackedBytes where nsn-run cannot see it): %w", b.cfg.Snapshotter, root, err)
	}
	size, free := int64(st.Blocks)*st.Bsize, int64(st.Bavail)*st.Bsize
	limit := images.UnpackLimit{Bytes: max(free-min(size/20, maxUnpackReserve), 0)}
	if st.Files > 0 { // a filesystem without an inode table (btrfs) says 0
		limit.Inodes = max(int64(st.Ffree)-min(int64(st.Files)/20, maxUnpackInodeReserve), 1)
	}
	return limit, nil
}

// maxUnpackReserve and maxUnpackInodeReserve cap the free space and inodes
// an unpack must leave.
const (
	maxUnpackReserve      = 8 << 30
	maxUnpackInodeReserve = 1 << 20
)

// snapshotterRoot is the directory the snapshotter keeps its snapshots in,
// from containerd's plugin introspection (its "root" export).
func (b *Backend) snapshotterRoot(ctx context.Context) (string, error) {
	resp, err := b.client.IntrospectionService().Plugins(b.ns(ctx), fmt.Sprintf("type==%s,id==%s", plugins.SnapshotPlugin, b.cfg.Snapshotter))
	if err != nil {
		return "", fmt.Errorf("find snapshotter %s: %w", b.cfg.Snapshotter, err)
	}
	for _, p := range resp.Plugins {
		if root := p.Exports["root"]; root != "" {
			return root, nil
		}
	}
	return "", fmt.Errorf("%w: snapshotter %s exports no root (set containerd.Config.MaxUnpackedBytes)", errdefs.ErrFailedPrecondition, b.cfg.Snapshotter)
}
