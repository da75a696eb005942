package images

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/client"
	ctrimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"

	"github.com/nsn-run/nsn-run/task"
)

// Import reads an OCI image layout or `docker save` tarball into c's
// content store and creates the images it names, returning their names.
// Content is written under a lease, so an interrupted import leaves
// nothing that containerd's garbage collector keeps.
//
// The archive names its images itself, any names, as many as it likes:
// an image of that name already there with other content is refused
// unless replace is set (a task author's archive must not take over the
// image other tasks run from), and so is a name that is not a valid image
// reference (control characters would reach the operator's terminal
// through image ls). An archive refused part way keeps the images created
// before the refusal; none of them replaced one.
func Import(ctx context.Context, c *client.Client, r io.Reader, replace bool) ([]string, error) {
	conn, ok := c.Conn().(*grpc.ClientConn)
	if !ok {
		return nil, fmt.Errorf("import image archive: %w: no connection to containerd", errdefs.ErrUnavailable)
	}
	// containerd's own import, with its image store guarded. The client
	// shares c's connection: it must not be closed.
	guarded, err := client.NewWithConn(conn, client.WithServices(client.WithImageStore(&importGuard{Store: c.ImageService(), replace: replace})))
	if err != nil {
		return nil, fmt.Errorf("import image archive: %w", err)
	}
	imgs, err := guarded.Import(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("import image archive: %w", err)
	}
	names := make([]string, 0, len(imgs))
	for _, img := range imgs {
		names = append(names, img.Name)
	}
	slices.Sort(names)
	return names, nil
}

// importGuard is the image store an import writes through: it checks each
// image the archive names before it is created or updated.
type importGuard struct {
	ctrimages.Store
	replace bool
}

func (g *importGuard) check(ctx context.Context, img ctrimages.Image) error {
	ref, err := reference.ParseNormalizedNamed(img.Name)
	if err != nil {
		// Not err itself: it repeats the name unquoted.
		return fmt.Errorf("%w: the archive names an image %q, which is not a valid image reference", errdefs.ErrInvalidArgument, img.Name)
	}
	// Only names as run looks them up (task.NormalizeImage: a tag or a
	// digest, the domain in lower case): "busybox" or
	// "Docker.io/library/busybox:latest" beside the real one would list as
	// another image, one no task runs or one that sorts first.
	full, err := task.NormalizeImage(img.Name)
	if err != nil || full != img.Name || reference.Domain(ref) != strings.ToLower(reference.Domain(ref)) {
		return fmt.Errorf("%w: the archive names an image %q, not a full reference as run uses it (%s)", errdefs.ErrInvalidArgument, img.Name, full)
	}
	// The target is the archive's word too: a digest that does not
	// parse, or a media type that is no image's, would be stored as it
	// is (an outside review's had escape sequences, which errors then
	// printed) and break every task of the name.
	if err := img.Target.Digest.Validate(); err != nil {
		return fmt.Errorf("%w: the archive's image %s has a digest %q that is not one", errdefs.ErrInvalidArgument, img.Name, img.Target.Digest)
	}
	if !slices.Contains(imageMediaTypes, img.Target.MediaType) {
		return fmt.Errorf("%w: the archive's image %s is of media type %q, not an image manifest or index", errdefs.ErrInvalidArgument, img.Name, img.Target.MediaType)
	}
	// A name that pins a digest is a promise of that content: an outside
	// review imported docker.io/library/busybox@sha256:<busybox's> with
	// other content, and a task pinned to busybox's digest ran it.
	if d, ok := ref.(reference.Digested); ok && d.Digest() != img.Target.Digest {
		return fmt.Errorf("%w: the archive names an image %s whose content is %s, not the digest its name pins", errdefs.ErrInvalidArgument, img.Name, img.Target.Digest)
	}
	if g.replace {
		return nil
	}
	old, err := g.Store.Get(ctx, img.Name)
	switch {
	case errdefs.IsNotFound(err):
		return nil
	case err != nil:
		return err
	case old.Target.Digest != img.Target.Digest || old.Target.MediaType != img.Target.MediaType || old.Target.Size != img.Target.Size:
		// The whole target: the same digest with another media type or
		// size breaks the image as surely as other content.
		return fmt.Errorf("%w: image %s exists (%s, %s) and the archive's is other content (%s, %s): importing would replace it; remove it first, or import with --replace",
			errdefs.ErrAlreadyExists, img.Name, old.Target.Digest, old.Target.MediaType, img.Target.Digest, img.Target.MediaType)
	}
	return nil
}

// imageMediaTypes are what an image's target may be.
var imageMediaTypes = []string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, ctrimages.MediaTypeDockerSchema2Manifest, ctrimages.MediaTypeDockerSchema2ManifestList}

func (g *importGuard) Create(ctx context.Context, img ctrimages.Image) (ctrimages.Image, error) {
	if err := g.check(ctx, img); err != nil {
		return ctrimages.Image{}, err
	}
	return g.Store.Create(ctx, img)
}

func (g *importGuard) Update(ctx context.Context, img ctrimages.Image, fieldpaths ...string) (ctrimages.Image, error) {
	if err := g.check(ctx, img); err != nil {
		return ctrimages.Image{}, err
	}
	return g.Store.Update(ctx, img, fieldpaths...)
}

// List returns the images in c's default namespace, sorted by name.
func List(ctx context.Context, c *client.Client) ([]ctrimages.Image, error) {
	imgs, err := c.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	slices.SortFunc(imgs, func(a, b ctrimages.Image) int { return strings.Compare(a.Name, b.Name) })
	return imgs, nil
}
