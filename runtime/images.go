package runtime

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/task"
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
	// RemoveImage removes the image name (normalised) and returns what it
	// named; the store then frees what no other name, task or lease
	// holds. A name that is not there is errdefs.ErrNotFound. Without
	// force a backend may refuse an image its own containers use
	// (errdefs.ErrFailedPrecondition); the Manager checks its tasks first.
	RemoveImage(ctx context.Context, name string, force bool) (Image, error)
}

// RemoveImageOptions are the options of RemoveImage.
type RemoveImageOptions struct {
	// Force removes an image that tasks still run from. A running task is
	// unaffected (its container keeps the snapshot it runs on); a new
	// task of the name is refused until the image is imported or pulled
	// again.
	Force bool
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

// RemoveImage removes the local image ref names (as image ls lists it,
// or in any form task.NormalizeImage accepts) from the backend's store,
// which frees its content and unpacked layers unless another name or a
// task holds them, and returns what the name pointed at. An image that a
// task of nsn-run's in the namespace (or dockerd) still runs from, in any
// state dir and any state, is refused with errdefs.ErrFailedPrecondition
// unless opts.Force: remove the tasks first. A malformed ref is
// errdefs.ErrInvalidArgument, one that is not there errdefs.ErrNotFound.
func (m *Manager) RemoveImage(ctx context.Context, ref string, opts RemoveImageOptions) (Image, error) {
	s, err := m.images()
	if err != nil {
		return Image{}, err
	}
	// A bare digest or image id would read as a name ("sha256" with a
	// tag) and be "not found" under a name nobody gave.
	if hex := strings.TrimPrefix(ref, "sha256:"); len(hex) >= 12 && strings.Trim(hex, "0123456789abcdef") == "" {
		return Image{}, fmt.Errorf("%w: image %q: give the image's name, as image ls prints it, not its digest or id", errdefs.ErrInvalidArgument, ref)
	}
	name, err := task.NormalizeImage(ref)
	if err != nil {
		return Image{}, err
	}
	if !opts.Force {
		sts, err := m.backend.List(ctx)
		if err != nil {
			return Image{}, fmt.Errorf("list the tasks that may use image %s: %w", name, err)
		}
		var users []string
		for _, st := range sts {
			if st.Image == name {
				users = append(users, st.ID)
			}
		}
		if len(users) > 0 {
			slices.Sort(users)
			return Image{}, fmt.Errorf("%w: image %s is in use by task %s: remove the task first, or force",
				errdefs.ErrFailedPrecondition, name, strings.Join(users, ", "))
		}
	}
	return s.RemoveImage(ctx, name, opts.Force)
}

// ListImages lists the images tasks can run from, sorted by name.
func (m *Manager) ListImages(ctx context.Context) ([]Image, error) {
	s, err := m.images()
	if err != nil {
		return nil, err
	}
	return s.ListImages(ctx)
}
