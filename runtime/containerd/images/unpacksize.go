package images

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	ctrimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// entryOverhead is what each tar entry counts for besides its data: the
// inode and directory entry the snapshotter's filesystem gives it.
const entryOverhead = 512

// CheckUnpackedSize refuses an image whose layers (for the client's
// platform) would unpack to more than limit bytes, before anything is
// unpacked. The layers are attacker input, and their size on the wire says
// nothing of what they expand to: a sparse tar entry (containerd writes its
// holes out) or a layer of compressed zeros claims gigabytes from a few
// kilobytes, and an outside review's 1 MB archive wrote 2 GiB to
// containerd's root at its first run. Each regular file counts its full
// size as its tar header gives it, and each entry entryOverhead; the
// reading stops as soon as the sum passes limit, so a bomb costs only what
// is read up to there.
func CheckUnpackedSize(ctx context.Context, img client.Image, limit int64) error {
	cs := img.ContentStore()
	manifest, err := ctrimages.Manifest(ctx, cs, img.Target(), img.Platform())
	if err != nil {
		return fmt.Errorf("read manifest of image %s: %w", img.Name(), err)
	}
	var total int64
	for _, layer := range manifest.Layers {
		n, err := unpackedSize(ctx, cs, layer, limit-total)
		total += n
		if errors.Is(err, errTooLarge) || total > limit {
			return fmt.Errorf("%w: image %s would unpack to more than %d bytes (%d MiB), what containerd's snapshotter may take: refused",
				errdefs.ErrResourceExhausted, img.Name(), limit, limit>>20)
		}
		if err != nil {
			return fmt.Errorf("read layer %s of image %s: %w", layer.Digest, img.Name(), err)
		}
	}
	return nil
}

var errTooLarge = errors.New("unpacks to more than the limit")

// unpackedSize sums what layer unpacks to, up to limit (errTooLarge past
// it).
func unpackedSize(ctx context.Context, cs content.Store, layer ocispec.Descriptor, limit int64) (int64, error) {
	ra, err := cs.ReaderAt(ctx, layer)
	if err != nil {
		return 0, err
	}
	defer ra.Close()
	ds, err := compression.DecompressStream(content.NewReader(ra))
	if err != nil {
		return 0, err
	}
	defer ds.Close()
	tr := tar.NewReader(ds)
	var total int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		total += entryOverhead
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeGNUSparse, '\x00': // '\x00': the old regular type
			total += hdr.Size // a sparse entry's full size
		}
		if total > limit {
			return total, errTooLarge
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}
