package images

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	specsgo "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestUnpackedSizeCountsSparseFiles: a sparse tar entry (the outside
// review's layer bomb: a few KB claiming 2 GiB, which containerd writes
// out in full) counts its full size, in GNU tar's PAX and old GNU sparse
// formats, and the reading stops at the limit.
func TestUnpackedSizeCountsSparseFiles(t *testing.T) {
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		t.Skip("no tar to write sparse entries with")
	}
	src := t.TempDir()
	f, err := os.Create(filepath.Join(src, "holes"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ctx := context.Background()
	store, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"pax", "gnu"} {
		layer := filepath.Join(t.TempDir(), "layer.tar")
		if out, err := exec.Command(tarBin, "--sparse", "--format="+format, "-C", src, "-cf", layer, "holes").CombinedOutput(); err != nil {
			t.Fatalf("tar --format=%s: %v\n%s", format, err, out)
		}
		data, err := os.ReadFile(layer)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) > 64<<10 {
			t.Fatalf("%s: the sparse layer is %d bytes, not a bomb", format, len(data))
		}
		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(data), Size: int64(len(data))}
		if err := content.WriteBlob(ctx, store, format, bytes.NewReader(data), desc); err != nil {
			t.Fatal(err)
		}
		if n, err := unpackedSize(ctx, store, desc, UnpackLimit{Bytes: 2 << 30}, unpacked{}); err != nil || n.bytes < 1<<30 {
			t.Errorf("%s: a %d-byte layer unpacks to %d (%v), want its 1 GiB", format, len(data), n.bytes, err)
		}
		if _, err := unpackedSize(ctx, store, desc, UnpackLimit{Bytes: 64 << 20}, unpacked{}); !errors.Is(err, errTooLarge) {
			t.Errorf("%s: under a 64 MiB limit: %v, want errTooLarge", format, err)
		}
	}
}

// TestUnpackedSizeCountsEntries: every entry counts a block and an inode,
// so a layer of empty directories (an outside review's 60,000 took 243 MB
// of ext4 and counted 0) is bounded by both, and the layers before a layer
// count too.
func TestUnpackedSizeCountsEntries(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := range 1000 {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("d%d/", i), Mode: 0o755}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "one-byte", Size: 1, Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := content.WriteBlob(ctx, store, "dirs", bytes.NewReader(data), desc); err != nil {
		t.Fatal(err)
	}
	n, err := unpackedSize(ctx, store, desc, UnpackLimit{Bytes: 1 << 30}, unpacked{})
	if err != nil || n.inodes != 1001 || n.bytes != 1001*blockSize+blockSize {
		t.Errorf("1000 directories and a 1-byte file: %+v (%v), want 1001 inodes and %d bytes", n, err, 1002*blockSize)
	}
	for _, c := range []struct {
		limit UnpackLimit
		base  unpacked
	}{
		{UnpackLimit{Bytes: 1 << 30, Inodes: 500}, unpacked{}},
		{UnpackLimit{Bytes: 2 << 20}, unpacked{}},
		{UnpackLimit{Bytes: 1 << 30, Inodes: 1500}, unpacked{inodes: 1000}},
	} {
		if _, err := unpackedSize(ctx, store, desc, c.limit, c.base); !errors.Is(err, errTooLarge) {
			t.Errorf("limit %+v after %+v: %v, want errTooLarge", c.limit, c.base, err)
		}
	}
}

// guardedImage is a client.Image whose unpack is recorded: enough of one
// for Unpack and CheckUnpackedSize (its manifest and layer are real, in a
// local content store).
type guardedImage struct {
	client.Image
	store    content.Store
	target   ocispec.Descriptor
	mu       *sync.Mutex
	events   *[]string
	name     string
	unpacked bool
}

func (g *guardedImage) Name() string                      { return g.name }
func (g *guardedImage) Target() ocispec.Descriptor        { return g.target }
func (g *guardedImage) ContentStore() content.Store       { return g.store }
func (g *guardedImage) Platform() platforms.MatchComparer { return platforms.All }
func (g *guardedImage) RootFS(context.Context) ([]digest.Digest, error) {
	return []digest.Digest{digest.FromString(g.name)}, nil
}
func (g *guardedImage) IsUnpacked(context.Context, string) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.unpacked, nil
}
func (g *guardedImage) Unpack(context.Context, string, ...client.UnpackOpt) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	*g.events = append(*g.events, "unpack "+g.name)
	g.unpacked = true
	return nil
}

// TestUnpackOneAtATime: the guard's lock is held from the size check to
// the end of the unpack, so two first unpacks never check against the
// same free space (an outside review ran two at once, each within the
// bound, and together they filled the filesystem); an image another
// process unpacked meanwhile is not unpacked again.
func TestUnpackOneAtATime(t *testing.T) {
	ctx := context.Background()
	store, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	write := func(mediaType string, data []byte) ocispec.Descriptor {
		d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
		if err := content.WriteBlob(ctx, store, d.Digest.String(), bytes.NewReader(data), d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "d/", Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	config := write(ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	manifest, err := json.Marshal(ocispec.Manifest{Versioned: specsgo.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: config, Layers: []ocispec.Descriptor{write(ocispec.MediaTypeImageLayer, layer.Bytes())}})
	if err != nil {
		t.Fatal(err)
	}
	target := write(ocispec.MediaTypeImageManifest, manifest)

	var mu sync.Mutex
	var events []string
	record := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
	var lock sync.Mutex
	guard := UnpackGuard{
		Limit: func(context.Context) (UnpackLimit, error) { record("check"); return UnpackLimit{Bytes: 1 << 20}, nil },
		Lock: func(context.Context) (func(), error) {
			lock.Lock()
			record("lock")
			return func() { record("unlock"); lock.Unlock() }, nil
		},
	}
	var wg sync.WaitGroup
	for _, name := range []string{"a", "b"} {
		img := &guardedImage{store: store, target: target, mu: &mu, events: &events, name: name}
		wg.Go(func() {
			if _, err := Unpack(ctx, img, "overlayfs", guard); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// Each lock is followed by its own check and unpack before the unlock.
	for i := 0; i+3 < len(events); i += 4 {
		if got := events[i : i+4]; got[0] != "lock" || got[1] != "check" || !strings.HasPrefix(got[2], "unpack ") || got[3] != "unlock" {
			t.Errorf("events %v: a check and an unpack not under one hold of the lock", events)
		}
	}
	if len(events) != 8 {
		t.Errorf("events %v, want two lock-check-unpack-unlock runs", events)
	}
	// Unpacked by another process while this one waited: not again.
	events = nil
	done := &guardedImage{store: store, target: target, mu: &mu, events: &events, name: "c"}
	late := guard
	late.Lock = func(context.Context) (func(), error) { done.unpacked = true; return func() {}, nil }
	if _, err := Unpack(ctx, done, "overlayfs", late); err != nil || len(events) != 0 {
		t.Errorf("an image unpacked meanwhile: %v, events %v", err, events)
	}
}
