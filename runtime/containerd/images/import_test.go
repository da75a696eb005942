package images

import (
	"context"
	"strings"
	"testing"

	ctrimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// mapStore is an image store of one image, for the guard's checks.
type mapStore struct {
	ctrimages.Store
	images map[string]ctrimages.Image
}

func (m mapStore) Get(_ context.Context, name string) (ctrimages.Image, error) {
	img, ok := m.images[name]
	if !ok {
		return ctrimages.Image{}, errdefs.ErrNotFound
	}
	return img, nil
}

// TestImportGuard: what an archive may name, and what it may not replace.
// Each refusal was an outside review's way in (2026-11-30).
func TestImportGuard(t *testing.T) {
	const busybox = "docker.io/library/busybox:latest"
	real := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("busybox"), Size: 1000}
	other := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("hostile"), Size: 1000}
	store := mapStore{images: map[string]ctrimages.Image{busybox: {Name: busybox, Target: real}}}
	with := func(d ocispec.Descriptor, f func(*ocispec.Descriptor)) ocispec.Descriptor { f(&d); return d }
	for _, c := range []struct {
		name    string
		img     ctrimages.Image
		replace bool
		want    string // "" for allowed
	}{
		{"same image again", ctrimages.Image{Name: busybox, Target: real}, false, ""},
		{"a new name", ctrimages.Image{Name: "docker.io/team/model:v1", Target: other}, false, ""},
		{"other content under the name", ctrimages.Image{Name: busybox, Target: other}, false, "exists"},
		{"other content, --replace", ctrimages.Image{Name: busybox, Target: other}, true, ""},
		{"same digest, another media type", ctrimages.Image{Name: busybox, Target: with(real, func(d *ocispec.Descriptor) { d.MediaType = ocispec.MediaTypeImageIndex; d.Size = 1 })}, false, "exists"},
		{"a media type that is no image's", ctrimages.Image{Name: busybox, Target: with(real, func(d *ocispec.Descriptor) { d.MediaType = "application/vnd.rev\x1b[7m" })}, true, "not an image manifest"},
		{"a digest that is not one", ctrimages.Image{Name: busybox, Target: with(real, func(d *ocispec.Descriptor) { d.Digest = "sha256:\x1b]0;PWNED\x07" })}, true, "not one"},
		{"a pinned digest with other content", ctrimages.Image{Name: "docker.io/library/busybox@" + real.Digest.String(), Target: other}, false, "not the digest its name pins"},
		{"a pinned digest, its own content", ctrimages.Image{Name: "docker.io/library/busybox@" + other.Digest.String(), Target: other}, false, ""},
		{"short name", ctrimages.Image{Name: "busybox", Target: other}, false, "not a full reference"},
		{"no tag", ctrimages.Image{Name: "docker.io/team/model", Target: other}, false, "not a full reference"},
		{"tag and digest", ctrimages.Image{Name: "docker.io/team/model:v1@" + other.Digest.String(), Target: other}, false, "not a full reference"},
		{"upper-case domain", ctrimages.Image{Name: "Docker.io/library/busybox:latest", Target: other}, false, "not a full reference"},
		{"escape sequences", ctrimages.Image{Name: "docker.io/library/rev\x1b]0;x\x07:latest", Target: other}, false, "not a valid image reference"},
	} {
		g := &importGuard{Store: store, replace: c.replace}
		err := g.check(context.Background(), c.img)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want a refusal saying %q", c.name, err, c.want)
		case err != nil && strings.ContainsAny(err.Error(), "\x1b\x07"):
			t.Errorf("%s: the refusal carries a raw control character: %q", c.name, err)
		}
	}
}
