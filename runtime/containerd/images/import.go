package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	ctrimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"

	"github.com/nsn-run/nsn-run/runtime"
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
	guard := &importGuard{Store: c.ImageService(), content: c.ContentStore(), replace: replace}
	guarded, err := client.NewWithConn(conn, client.WithServices(client.WithImageStore(guard)))
	if err != nil {
		return nil, fmt.Errorf("import image archive: %w", err)
	}
	imgs, err := guarded.Import(ctx, r)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("import image archive: %w", err), guard.undo(context.WithoutCancel(ctx)))
	}
	names := make([]string, 0, len(imgs))
	for _, img := range imgs {
		names = append(names, img.Name)
	}
	slices.Sort(names)
	return names, nil
}

// importGuard is the image store an import writes through: it checks each
// image the archive names before it is created or updated, and keeps what
// it changed, so that an import refused midway changes nothing (undo): a
// sixteenth review's archive named busybox, refused, and another name,
// which stayed while the import said it failed.
type importGuard struct {
	ctrimages.Store
	// content is where the import put the archive's blobs.
	content content.Store
	replace bool
	mu      sync.Mutex
	// done is what the import changed, in order: each name, and what it
	// named before (nil: nothing).
	done []importChange
}

type importChange struct {
	name   string
	before *ctrimages.Image
}

// undo puts back the names the import changed, last first.
func (g *importGuard) undo(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var errs []error
	for i := len(g.done) - 1; i >= 0; i-- {
		c := g.done[i]
		var err error
		if c.before == nil {
			err = g.Store.Delete(ctx, c.name)
		} else {
			_, err = g.Store.Update(ctx, *c.before)
		}
		if err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("undo the import of %s: %w", c.name, err))
		}
	}
	g.done = nil
	return errors.Join(errs...)
}

// maxManifestSize bounds the target an image name may point at: an image
// manifest or index is a few KiB; a name pointing at a layer would have
// the guard read the layer.
const maxManifestSize = 4 << 20

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
	// And the target must be what the archive holds: containerd names an
	// image after every entry of the archive's index, also one for
	// another platform whose blob it never reads (an outside review
	// named busybox's pinned digest with an index's media type so, and
	// every task of the name failed).
	if err := g.checkContent(ctx, img); err != nil {
		return err
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
		return &runtime.ImageConflictError{Name: img.Name,
			Have:    fmt.Sprintf("%s, %s", old.Target.Digest, old.Target.MediaType),
			Archive: fmt.Sprintf("%s, %s", img.Target.Digest, img.Target.MediaType)}
	}
	return nil
}

// checkContent checks that the content store holds img's target, of the
// size it says, and that the blob is the kind of document its media type
// says (a manifest, or an index).
func (g *importGuard) checkContent(ctx context.Context, img ctrimages.Image) error {
	info, err := g.content.Info(ctx, img.Target.Digest)
	if err != nil {
		return fmt.Errorf("%w: the archive's image %s points at content %s it does not hold: %w", errdefs.ErrInvalidArgument, img.Name, img.Target.Digest, err)
	}
	if info.Size != img.Target.Size || info.Size > maxManifestSize {
		return fmt.Errorf("%w: the archive's image %s says its content is %d bytes; it is %d", errdefs.ErrInvalidArgument, img.Name, img.Target.Size, info.Size)
	}
	b, err := content.ReadBlob(ctx, g.content, img.Target)
	if err != nil {
		return fmt.Errorf("%w: the archive's image %s: %w", errdefs.ErrInvalidArgument, img.Name, err)
	}
	// As containerd's own check when it reads a manifest (images'
	// validateMediaType, unexported): a document of the other kind.
	var doc struct {
		MediaType string          `json:"mediaType,omitempty"`
		Config    json.RawMessage `json:"config,omitempty"`
		Layers    json.RawMessage `json:"layers,omitempty"`
		Manifests json.RawMessage `json:"manifests,omitempty"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("%w: the archive's image %s: its content is not an image manifest or index", errdefs.ErrInvalidArgument, img.Name)
	}
	mt := img.Target.MediaType
	if ctrimages.IsManifestType(mt) && (len(doc.Manifests) != 0 || ctrimages.IsIndexType(doc.MediaType)) ||
		ctrimages.IsIndexType(mt) && (len(doc.Config) != 0 || len(doc.Layers) != 0 || ctrimages.IsManifestType(doc.MediaType)) {
		return fmt.Errorf("%w: the archive's image %s says its content is %s, and it is not", errdefs.ErrInvalidArgument, img.Name, mt)
	}
	return nil
}

// imageMediaTypes are what an image's target may be.
var imageMediaTypes = []string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, ctrimages.MediaTypeDockerSchema2Manifest, ctrimages.MediaTypeDockerSchema2ManifestList}

func (g *importGuard) Create(ctx context.Context, img ctrimages.Image) (ctrimages.Image, error) {
	if err := g.check(ctx, img); err != nil {
		return ctrimages.Image{}, err
	}
	created, err := g.Store.Create(ctx, img)
	if err == nil {
		g.mu.Lock()
		g.done = append(g.done, importChange{name: img.Name})
		g.mu.Unlock()
	}
	return created, err
}

func (g *importGuard) Update(ctx context.Context, img ctrimages.Image, fieldpaths ...string) (ctrimages.Image, error) {
	if err := g.check(ctx, img); err != nil {
		return ctrimages.Image{}, err
	}
	before, err := g.Store.Get(ctx, img.Name)
	if err != nil {
		return ctrimages.Image{}, err
	}
	updated, err := g.Store.Update(ctx, img, fieldpaths...)
	if err == nil {
		g.mu.Lock()
		g.done = append(g.done, importChange{name: img.Name, before: &before})
		g.mu.Unlock()
	}
	return updated, err
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
