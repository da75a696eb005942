package containerd

import (
	"context"
	"io"

	"github.com/containerd/platforms"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd/images"
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
	img, err := images.Pull(ctx, b.client, ref, images.PullOptions{Snapshotter: b.cfg.Snapshotter, Progress: progress})
	if err != nil {
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
