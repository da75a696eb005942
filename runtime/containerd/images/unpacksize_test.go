package images

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
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
