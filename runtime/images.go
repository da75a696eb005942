package runtime

import (
	"context"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
)

// ImageStore is a Backend feature: the images tasks run from, in the
// backend's own store (containerd's namespace, or dockerd's). The Manager
// refuses image operations on a backend without it.
type ImageStore interface {
	// ImportImage loads an OCI image layout or `docker save` tarball and
	// returns the names of the images it held. An image of one of those
	// names already there with other content is refused
	// (errdefs.ErrAlreadyExists) unless opts.Replace.
	ImportImage(ctx context.Context, r io.Reader, opts ImportOptions) ([]string, error)
	// PullImage fetches ref from its registry, ready to run, reporting
	// progress (if set) while it runs and once more when done.
	PullImage(ctx context.Context, ref string, progress func(PullProgress)) (Image, error)
	// ListImages lists the local images, sorted by name.
	ListImages(ctx context.Context) ([]Image, error)
}

// ImportOptions are the options of ImportImage.
type ImportOptions struct {
	// Replace lets the archive's images replace local images of the same
	// names with other content. Without it such an import is refused:
	// the archive chooses its names, and an archive from a task's author
	// must not take over the image other tasks run from.
	Replace bool
}

// Image is a local image.
type Image struct {
	// Name is the normalised reference ("docker.io/library/busybox:latest").
	Name string `json:"name"`
	// Digest identifies the content: the manifest's digest (containerd)
	// or the image id (dockerd).
	Digest string `json:"digest"`
	// Size is the image's size on this platform in bytes; -1 when not all
	// of its content is present.
	Size int64 `json:"size"`
}

// PullProgress is where a pull stands.
type PullProgress struct {
	// Name is the normalised reference being pulled.
	Name string
	// Blobs are the blobs (layers) the pull needs so far: it learns of
	// more as it reads manifests.
	Blobs []BlobProgress
	// Done is set on the last report, after the pull ended.
	Done bool
}

// BlobProgress is one blob of a pull.
type BlobProgress struct {
	// ID is the blob's digest (containerd) or layer id (dockerd).
	ID string
	// Size is the blob's size, 0 while unknown; Fetched how much of it
	// is here.
	Size, Fetched int64
	// Complete is set once the blob is stored.
	Complete bool
}

// Totals sums the blobs: bytes fetched, bytes needed, blobs complete.
func (p PullProgress) Totals() (fetched, total int64, complete int) {
	for _, b := range p.Blobs {
		fetched += b.Fetched
		total += b.Size
		if b.Complete {
			complete++
		}
	}
	return fetched, total, complete
}

// images is the backend's ImageStore, or an error saying it has none.
func (m *Manager) images() (ImageStore, error) {
	s, ok := m.backend.(ImageStore)
	if !ok {
		return nil, fmt.Errorf("%w: the %s backend does not manage images", errdefs.ErrNotImplemented, m.backend.Name())
	}
	return s, nil
}

// ImportImage loads an OCI image layout or `docker save` tarball into the
// backend's image store and returns the names of the images it held. It
// replaces no local image with other content unless opts.Replace
// (ImageStore).
func (m *Manager) ImportImage(ctx context.Context, r io.Reader, opts ImportOptions) ([]string, error) {
	s, err := m.images()
	if err != nil {
		return nil, err
	}
	return s.ImportImage(ctx, r, opts)
}

// PullImage fetches ref from its registry into the backend's image store,
// reporting progress (if set) while it runs.
func (m *Manager) PullImage(ctx context.Context, ref string, progress func(PullProgress)) (Image, error) {
	s, err := m.images()
	if err != nil {
		return Image{}, err
	}
	return s.PullImage(ctx, ref, progress)
}

// ListImages lists the images tasks can run from, sorted by name.
func (m *Manager) ListImages(ctx context.Context) ([]Image, error) {
	s, err := m.images()
	if err != nil {
		return nil, err
	}
	return s.ListImages(ctx)
}
