package images

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
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

// blobs is a content store of a few blobs, for the guard's content check.
type blobs struct {
	content.Store
	data map[digest.Digest][]byte
}

func (b blobs) Info(_ context.Context, d digest.Digest) (content.Info, error) {
	data, ok := b.data[d]
	if !ok {
		return content.Info{}, errdefs.ErrNotFound
	}
	return content.Info{Digest: d, Size: int64(len(data))}, nil
}

func (b blobs) ReaderAt(_ context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	data, ok := b.data[desc.Digest]
	if !ok {
		return nil, errdefs.ErrNotFound
	}
	return readerAt{bytes.NewReader(data)}, nil
}

type readerAt struct{ *bytes.Reader }

func (readerAt) Close() error { return nil }

// blob adds data to b and returns its descriptor as mediaType.
func (b blobs) blob(mediaType, data string) ocispec.Descriptor {
	d := digest.FromString(data)
	b.data[d] = []byte(data)
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

// TestImportGuard: what an archive may name, and what it may not replace.
// Each refusal was an outside review's way in (2026-11-30).
func TestImportGuard(t *testing.T) {
	const busybox = "docker.io/library/busybox:latest"
	cs := blobs{data: map[digest.Digest][]byte{}}
	real := cs.blob(ocispec.MediaTypeImageManifest, `{"schemaVersion":2,"config":{"digest":"sha256:1"},"layers":[]}`)
	other := cs.blob(ocispec.MediaTypeImageManifest, `{"schemaVersion":2,"config":{"digest":"sha256:2"},"layers":[]}`)
	index := cs.blob(ocispec.MediaTypeImageIndex, `{"schemaVersion":2,"manifests":[]}`)
	missing := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("never imported"), Size: 7}
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
		{"same digest, another size", ctrimages.Image{Name: busybox, Target: with(real, func(d *ocispec.Descriptor) { d.MediaType = ocispec.MediaTypeImageIndex; d.Size = 1 })}, false, "bytes; it is"},
		{"same digest, another manifest media type", ctrimages.Image{Name: busybox, Target: with(real, func(d *ocispec.Descriptor) { d.MediaType = ctrimages.MediaTypeDockerSchema2Manifest })}, false, "exists"},
		{"a media type that is no image's", ctrimages.Image{Name: busybox, Target: with(real, func(d *ocispec.Descriptor) { d.MediaType = "application/vnd.rev\x1b[7m" })}, true, "not an image manifest"},
		{"a digest that is not one", ctrimages.Image{Name: busybox, Target: with(real, func(d *ocispec.Descriptor) { d.Digest = "sha256:\x1b]0;PWNED\x07" })}, true, "not one"},
		{"a pinned digest with other content", ctrimages.Image{Name: "docker.io/library/busybox@" + real.Digest.String(), Target: other}, false, "not the digest its name pins"},
		{"a pinned digest, its own content", ctrimages.Image{Name: "docker.io/library/busybox@" + other.Digest.String(), Target: other}, false, ""},
		{"short name", ctrimages.Image{Name: "busybox", Target: other}, false, "not a full reference"},
		{"no tag", ctrimages.Image{Name: "docker.io/team/model", Target: other}, false, "not a full reference"},
		{"tag and digest", ctrimages.Image{Name: "docker.io/team/model:v1@" + other.Digest.String(), Target: other}, false, "not a full reference"},
		{"upper-case domain", ctrimages.Image{Name: "Docker.io/library/busybox:latest", Target: other}, false, "not a full reference"},
		{"escape sequences", ctrimages.Image{Name: "docker.io/library/rev\x1b]0;x\x07:latest", Target: other}, false, "not a valid image reference"},
		// The fourth round: an entry for another platform, whose blob
		// containerd never reads, names an image anyway.
		{"content the archive does not hold", ctrimages.Image{Name: "docker.io/team/ghost:v1", Target: missing}, true, "does not hold"},
		{"another size", ctrimages.Image{Name: "docker.io/team/model:v1", Target: with(other, func(d *ocispec.Descriptor) { d.Size = 1 })}, true, "bytes; it is"},
		{"a manifest called an index", ctrimages.Image{Name: "docker.io/library/busybox@" + real.Digest.String(), Target: with(real, func(d *ocispec.Descriptor) { d.MediaType = ocispec.MediaTypeImageIndex })}, true, "and it is not"},
		{"an index called a manifest", ctrimages.Image{Name: "docker.io/team/multi:v1", Target: with(index, func(d *ocispec.Descriptor) { d.MediaType = ocispec.MediaTypeImageManifest })}, true, "and it is not"},
		{"an index as itself", ctrimages.Image{Name: "docker.io/team/multi:v1", Target: index}, false, ""},
	} {
		g := &importGuard{Store: store, content: cs, replace: c.replace}
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
