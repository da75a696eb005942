package images

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/opencontainers/go-digest"
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
		if n, err := unpackedSize(ctx, store, desc, 2<<30); err != nil || n < 1<<30 {
			t.Errorf("%s: a %d-byte layer unpacks to %d (%v), want its 1 GiB", format, len(data), n, err)
		}
		if _, err := unpackedSize(ctx, store, desc, 64<<20); !errors.Is(err, errTooLarge) {
			t.Errorf("%s: under a 64 MiB limit: %v, want errTooLarge", format, err)
		}
	}
}
