package images

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/client"
	ctrimages "github.com/containerd/containerd/v2/core/images"
)

// Import reads an OCI image layout or `docker save` tarball into c's
// content store and creates (or replaces) the images it names, returning
// their names. Content is written under a lease, so an interrupted import
// leaves nothing that containerd's garbage collector keeps.
func Import(ctx context.Context, c *client.Client, r io.Reader) ([]string, error) {
	imgs, err := c.Import(ctx, r)
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

// List returns the images in c's default namespace, sorted by name.
func List(ctx context.Context, c *client.Client) ([]ctrimages.Image, error) {
	imgs, err := c.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	slices.SortFunc(imgs, func(a, b ctrimages.Image) int { return strings.Compare(a.Name, b.Name) })
	return imgs, nil
}
