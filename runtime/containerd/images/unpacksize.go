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

// blockSize is what each tar entry counts for besides its data, and what
// a file's data is rounded up to: the block a directory, a symlink or a
// small file takes on the snapshotter's filesystem (an outside review's
// 60,000 empty directories took 243 MB of ext4, one 4 KiB block each).
const blockSize = 4096

// UnpackLimit bounds what an image may unpack to: bytes of disk, and
// inodes (0: no bound but Bytes', as every entry counts a block).
type UnpackLimit struct {
	Bytes, Inodes int64
}

// CheckUnpackedSize refuses an image whose layers (for the client's
// platform) would unpack to more than limit, before anything is unpacked. The layers are attacker input, and their size on the wire says
// nothing of what they expand to: a sparse tar entry (containerd writes its
// holes out) or a layer of compressed zeros claims gigabytes from a few
// kilobytes, and an outside review's 1 MB archive wrote 2 GiB to
// containerd's root at its first run. Each entry counts a block and an
// inode, and a regular file its full size as its tar header gives it,
// rounded up to blocks; the reading stops as soon as a sum passes its
// bound, so a bomb costs only what is read up to there.
func CheckUnpackedSize(ctx context.Context, img client.Image, limit UnpackLimit) error {
	cs := img.ContentStore()
	manifest, err := ctrimages.Manifest(ctx, cs, img.Target(), img.Platform())
	if err != nil {
		return fmt.Errorf("read manifest of image %s: %w", img.Name(), err)
	}
	var total unpacked
	for _, layer := range manifest.Layers {
		var err error
		total, err = unpackedSize(ctx, cs, layer, limit, total)
		if errors.Is(err, errTooLarge) {
			inodes := ""
			if limit.Inodes > 0 {
				inodes = fmt.Sprintf(" or %d inodes", limit.Inodes)
			}
			return fmt.Errorf("%w: image %s would unpack to more than %d bytes (%d MiB)%s, what containerd's snapshotter may take: refused",
				errdefs.ErrResourceExhausted, img.Name(), limit.Bytes, limit.Bytes>>20, inodes)
		}
		if err != nil {
			return fmt.Errorf("read layer %s of image %s: %w", layer.Digest, img.Name(), err)
		}
	}
	return nil
}

var errTooLarge = errors.New("unpacks to more than the limit")

// unpacked is what layers unpack to.
type unpacked struct{ bytes, inodes int64 }

// unpackedSize adds what layer unpacks to to total (the layers before
// it), up to limit (errTooLarge past it).
func unpackedSize(ctx context.Context, cs content.Store, layer ocispec.Descriptor, limit UnpackLimit, total unpacked) (unpacked, error) {
	ra, err := cs.ReaderAt(ctx, layer)
	if err != nil {
		return total, err
	}
	defer ra.Close()
	ds, err := compression.DecompressStream(content.NewReader(ra))
	if err != nil {
		return total, err
	}
	defer ds.Close()
	tr := tar.NewReader(ds)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		total.inodes++
		total.bytes += blockSize
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeGNUSparse, '\x00': // '\x00': the old regular type
			// A sparse entry's full size, in blocks.
			total.bytes += (max(hdr.Size, 0) + blockSize - 1) / blockSize * blockSize
		}
		if total.bytes > limit.Bytes || (limit.Inodes > 0 && total.inodes > limit.Inodes) {
			return total, errTooLarge
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}
