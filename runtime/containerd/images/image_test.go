package images

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/runtime"
)

// storedImage is a client.Image of a config in a local content store that
// counts its reads of the config's descriptor (each of which, against
// containerd, reads the manifest). Any other content method panics (the
// embedded image is nil): Resolve and Unpack of a resolved image must
// not reach containerd's image for its config or layers again.
type storedImage struct {
	client.Image
	name   string
	target ocispec.Descriptor
	store  content.Store
	config ocispec.Descriptor
	reads  *int
}

func (s *storedImage) Name() string                { return s.name }
func (s *storedImage) Target() ocispec.Descriptor  { return s.target }
func (s *storedImage) ContentStore() content.Store { return s.store }
func (s *storedImage) Config(context.Context) (ocispec.Descriptor, error) {
	*s.reads++
	return s.config, nil
}

// statSnapshotter is a snapshotter with only Stat: the keys it holds, and
// the keys it was asked for.
type statSnapshotter struct {
	snapshots.Snapshotter
	have    map[string]bool
	fail    error
	asked   []string
	created time.Time
}

func (s *statSnapshotter) Stat(_ context.Context, key string) (snapshots.Info, error) {
	s.asked = append(s.asked, key)
	switch {
	case s.fail != nil:
		return snapshots.Info{}, s.fail
	case !s.have[key]:
		return snapshots.Info{}, fmt.Errorf("snapshot %s: %w", key, errdefs.ErrNotFound)
	}
	return snapshots.Info{Name: key, Created: s.created}, nil
}

// imageStore holds images as containerd's image service would: a name
// points at a target, whose config is in a content store.
type imageStore struct {
	t      *testing.T
	store  content.Store
	names  map[string]*storedImage
	reads  int
	layers []digest.Digest
}

func newImageStore(t *testing.T) *imageStore {
	store, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &imageStore{t: t, store: store, names: map[string]*storedImage{},
		layers: []digest.Digest{digest.FromString("layer one"), digest.FromString("layer two")}}
}

func (s *imageStore) write(mediaType string, data []byte) ocispec.Descriptor {
	s.t.Helper()
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := content.WriteBlob(context.Background(), s.store, d.Digest.String(), bytes.NewReader(data), d); err != nil {
		s.t.Fatal(err)
	}
	return d
}

// name points name at a new target whose config has env, over the
// store's two layers.
func (s *imageStore) name(name string, env ...string) {
	s.t.Helper()
	cfg := ocispec.Image{Config: ocispec.ImageConfig{Env: env}, RootFS: ocispec.RootFS{Type: "layers", DiffIDs: s.layers}}
	data, err := json.Marshal(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	config := s.write(ocispec.MediaTypeImageConfig, data)
	// The target only needs a digest of its own: the manifest's bytes
	// name the config.
	target := s.write(ocispec.MediaTypeImageManifest, []byte(`{"config":"`+config.Digest.String()+`"}`))
	s.names[name] = &storedImage{name: name, target: target, store: s.store, config: config, reads: &s.reads}
}

func (s *imageStore) get(_ context.Context, name string) (client.Image, error) {
	img, ok := s.names[name]
	if !ok {
		return nil, fmt.Errorf("image %q: %w", name, errdefs.ErrNotFound)
	}
	return img, nil
}

// TestResolveReadsAConfigOnce: a Configs reads an image's config once;
// each caller gets a config of its own, so one that changes what it got
// changes nobody else's; without one every Resolve reads.
func TestResolveReadsAConfigOnce(t *testing.T) {
	ctx := context.Background()
	s := newImageStore(t)
	const name = "docker.io/library/app:v1"
	s.name(name, "MARK=one")
	sn := &statSnapshotter{}
	snapshotsOf := func(string) snapshots.Snapshotter { return sn }
	var configs Configs
	first, err := resolve(ctx, s.get, snapshotsOf, "app:v1", &configs)
	if err != nil {
		t.Fatal(err)
	}
	first.Config.Env[0] = "MARK=changed"
	spec, err := first.Image.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	spec.Config.Env[0] = "MARK=changed too"
	for i := range 3 {
		img, err := resolve(ctx, s.get, snapshotsOf, "app:v1", &configs)
		if err != nil {
			t.Fatal(err)
		}
		if img.Name != name || img.Digest != s.names[name].target.Digest.String() || !slices.Equal(img.Config.Env, []string{"MARK=one"}) {
			t.Errorf("resolve %d: %s %s env %q, want %s %s [MARK=one]", i+2, img.Name, img.Digest, img.Config.Env, name, s.names[name].target.Digest)
		}
	}
	if s.reads != 1 {
		t.Errorf("four resolves of one image read its config %d times, want 1", s.reads)
	}
	for range 2 {
		if _, err := resolve(ctx, s.get, snapshotsOf, "app:v1", nil); err != nil {
			t.Fatal(err)
		}
	}
	if s.reads != 3 {
		t.Errorf("two resolves without Configs read the config %d times in all, want 3", s.reads)
	}
	if _, err := resolve(ctx, s.get, snapshotsOf, "gone:v1", &configs); !errors.As(err, new(*runtime.ImageNotFoundError)) {
		t.Errorf("a name that is not there: %v, want ImageNotFoundError", err)
	}
}

// TestResolveFollowsTheName: the name is looked up every time, so an
// image imported again under a name (other content, another digest) is
// what the next task of the name gets, and its config is read.
func TestResolveFollowsTheName(t *testing.T) {
	ctx := context.Background()
	s := newImageStore(t)
	const name = "docker.io/library/app:v1"
	var configs Configs
	snapshotsOf := func(string) snapshots.Snapshotter { return &statSnapshotter{} }
	for _, mark := range []string{"MARK=one", "MARK=two", "MARK=one"} {
		s.name(name, mark)
		img, err := resolve(ctx, s.get, snapshotsOf, name, &configs)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(img.Config.Env, []string{mark}) {
			t.Errorf("the name now points at the image of %s; resolved %q", mark, img.Config.Env)
		}
	}
	// The third image is the first again (the same bytes, the same
	// digest): kept from the first read.
	if s.reads != 2 {
		t.Errorf("three resolves of two images read %d configs, want 2", s.reads)
	}
}

// TestResolvedImageIsUnpacked: a resolved image's unpack check is
// containerd's (the snapshot named by its layers' chain ID is there) and
// reads no content: Unpack of an unpacked image asks the snapshotter
// once and returns the chain ID.
func TestResolvedImageIsUnpacked(t *testing.T) {
	ctx := context.Background()
	s := newImageStore(t)
	s.name("docker.io/library/app:v1")
	chainID := identity.ChainID(s.layers).String()
	committed := time.Date(2026, 12, 3, 18, 0, 0, 1, time.UTC)
	sn := &statSnapshotter{have: map[string]bool{chainID: true}, created: committed}
	img, err := resolve(ctx, s.get, func(name string) snapshots.Snapshotter {
		if name != "overlayfs" {
			t.Errorf("snapshotter %q, want overlayfs", name)
		}
		return sn
	}, "app:v1", &Configs{})
	if err != nil {
		t.Fatal(err)
	}
	reads := s.reads
	parent, err := Unpack(ctx, img.Image, "overlayfs", UnpackGuard{})
	if err != nil || parent != (Parent{ChainID: chainID, Committed: committed}) {
		t.Fatalf("Unpack: %+v, %v; want %s committed at %s", parent, err, chainID, committed)
	}
	if s.reads != reads || !slices.Equal(sn.asked, []string{chainID}) {
		t.Errorf("Unpack of an unpacked image read %d configs and asked for snapshots %q; want none and [%s]", s.reads-reads, sn.asked, chainID)
	}
	sn.have = nil
	if unpacked, err := img.Image.IsUnpacked(ctx, "overlayfs"); err != nil || unpacked {
		t.Errorf("without the snapshot: unpacked %v, %v; want false", unpacked, err)
	}
	sn.fail = errors.New("snapshotter down")
	if _, err := img.Image.IsUnpacked(ctx, "overlayfs"); err == nil {
		t.Error("a snapshotter that fails: no error")
	}
	diffIDs, err := img.Image.RootFS(ctx)
	if err != nil || !slices.Equal(diffIDs, s.layers) {
		t.Errorf("RootFS: %v, %v; want %v", diffIDs, err, s.layers)
	}
}

// TestConfigsBounded: a Configs holds at most maxConfigs configs.
func TestConfigsBounded(t *testing.T) {
	ctx := context.Background()
	s := newImageStore(t)
	var configs Configs
	snapshotsOf := func(string) snapshots.Snapshotter { return &statSnapshotter{} }
	for i := range maxConfigs*2 + 1 {
		name := fmt.Sprintf("docker.io/library/app:v%d", i)
		s.name(name, fmt.Sprintf("N=%d", i))
		if _, err := resolve(ctx, s.get, snapshotsOf, name, &configs); err != nil {
			t.Fatal(err)
		}
		if n := len(configs.blobs); n > maxConfigs {
			t.Fatalf("after %d images Configs holds %d, want at most %d", i+1, n, maxConfigs)
		}
	}
	last := s.names[fmt.Sprintf("docker.io/library/app:v%d", maxConfigs*2)].target.Digest
	if _, ok := configs.blobs[last]; !ok {
		t.Error("the image read last is not held")
	}
}
