package images

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/containerd/containerd/v2/core/content"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/internal/privdir"
)

// Bounds of a blob dir: blobs larger than maxDirBlob (layers) are never
// kept, and past maxDirBlobs files it starts again empty.
const (
	maxDirBlob  = 64 << 10
	maxDirBlobs = 256
)

// blobDir is a content.Provider that keeps what it reads of store (an
// image's index, manifest and config: small blobs) in dir, a file per
// blob named by its digest, and reads it there first. A file counts only
// if its bytes have the digest and size asked for: what dir holds is
// never trusted, so a file another process left half-written, or anyone
// changed, is read from store again (and replaced).
type blobDir struct {
	dir   string
	store content.Provider
}

func (d blobDir) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	name, keep := d.name(desc)
	if keep {
		if b, err := readKept(filepath.Join(d.dir, name), desc.Size); err == nil && matches(b, desc) {
			return bytesReaderAt(b), nil
		}
	}
	if !keep {
		return d.store.ReaderAt(ctx, desc)
	}
	// One read of the whole blob (containerd's remote reader opens a
	// stream for each ReadAt: io.ReadAll's growing reads made 6 of a 4
	// KB blob, 13 of 64 KB).
	b, err := content.ReadBlob(ctx, d.store, desc)
	if err != nil {
		return nil, err
	}
	if matches(b, desc) {
		d.save(name, b) // a failure only costs the next process a read
	}
	return bytesReaderAt(b), nil
}

// name is the file desc's blob is kept in, and whether it is kept at
// all: a digest that does not validate names no file (it could name any
// path).
func (d blobDir) name(desc ocispec.Descriptor) (string, bool) {
	if desc.Size <= 0 || desc.Size > maxDirBlob || desc.Digest.Validate() != nil {
		return "", false
	}
	return desc.Digest.Algorithm().String() + "-" + desc.Digest.Encoded(), true
}

// save keeps b as name in the dir, if the dir is private to this user
// (privdir): where another user could have put the dir, or a link to
// another, nothing is written and nothing emptied (an outside review
// linked it to a dir of 300 files, which the emptying at maxDirBlobs
// removed). What it lists, removes and writes it does through the dir it
// judged.
func (d blobDir) save(name string, b []byte) {
	if err := os.MkdirAll(d.dir, 0o700); err != nil || !privdir.Is(filepath.Dir(d.dir)) {
		return
	}
	root, err := privdir.Open(d.dir)
	if err != nil {
		return
	}
	defer root.Close()
	privdir.EmptyIfFull(root, maxDirBlobs)
	tmp := ".blob-" + rand.Text()
	f, err := root.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		_ = root.Remove(tmp)
	}
}

// readKept reads the file at path if it is a regular file (not a link, a
// fifo that would block the start, a device) of size bytes.
func readKept(path string, size int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() || info.Size() != size {
		return nil, fmt.Errorf("%s: not a regular file of %d bytes", path, size)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, err
	}
	return b, nil
}

// matches reports whether b is the blob desc names: its size and digest.
func matches(b []byte, desc ocispec.Descriptor) bool {
	return int64(len(b)) == desc.Size && desc.Digest.Algorithm().FromBytes(b) == desc.Digest
}

// memReaderAt is a blob in memory as a content.ReaderAt.
type memReaderAt struct{ *bytes.Reader }

func (memReaderAt) Close() error { return nil }

func bytesReaderAt(b []byte) content.ReaderAt { return memReaderAt{bytes.NewReader(b)} }
