// Package images holds the containerd backend's images and what the task
// filesystems made from them must satisfy: resolving a reference to a local
// image and reading its config, unpacking it, import, pull (reporting
// progress to a callback; drawing it is the CLI's) and push, listing, and
// the checks of mount points in a task's root filesystem. It talks to
// containerd only, which is why it lives under the containerd backend.
package images

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

// Image is a resolved local image.
type Image struct {
	Name   string // normalised reference, e.g. docker.io/library/busybox:latest
	Digest string // digest of the manifest or index the name points at
	Config ocispec.ImageConfig
	// Image is containerd's handle, for unpacking and snapshots.
	Image client.Image
}

// Resolve finds ref among c's images (in c's default namespace) and reads its
// config for the client's platform. A missing image is errdefs.ErrNotFound
// with a message that says how to get it.
func Resolve(ctx context.Context, c *client.Client, ref string) (Image, error) {
	name, err := task.NormalizeImage(ref)
	if err != nil {
		return Image{}, err
	}
	img, err := c.GetImage(ctx, name)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return Image{}, &runtime.ImageNotFoundError{Name: name}
		}
		return Image{}, fmt.Errorf("look up image %s: %w", name, err)
	}
	spec, err := img.Spec(ctx)
	if err != nil {
		return Image{}, fmt.Errorf("read config of image %s: %w", name, err)
	}
	return Image{Name: name, Digest: img.Target().Digest.String(), Config: spec.Config, Image: img}, nil
}

// UnpackGuard is what an image's first unpack must pass.
type UnpackGuard struct {
	// Limit is what the image may unpack to (CheckUnpackedSize), read
	// once Lock is held.
	Limit func(context.Context) (UnpackLimit, error)
	// Lock, if set, is held from the check to the end of the unpack, so
	// that first unpacks happen one at a time on the node: each checked
	// against the space the ones before it left (an outside review ran
	// two at once, each within the bound, and together they filled the
	// filesystem, reserve and all).
	Lock func(context.Context) (unlock func(), err error)
	// Unbounded, if set, gives the context an unpack the image needs
	// runs under, from the wait for Lock to the end (a start bounds its
	// calls to containerd, but the time an unpack takes grows with the
	// image); nil keeps the caller's.
	Unbounded func(context.Context) context.Context
}

// Unpack makes sure img's layers are unpacked into snapshotter and returns
// the chain ID of its top layer: the parent of every container snapshot.
// An image not unpacked yet must pass g first.
func Unpack(ctx context.Context, img client.Image, snapshotter string, g UnpackGuard) (string, error) {
	unpacked, err := img.IsUnpacked(ctx, snapshotter)
	if err != nil {
		return "", fmt.Errorf("check unpack of image %s: %w", img.Name(), err)
	}
	if !unpacked && g.Unbounded != nil {
		ctx = g.Unbounded(ctx)
	}
	if !unpacked && g.Lock != nil {
		unlock, err := g.Lock(ctx)
		if err != nil {
			return "", fmt.Errorf("wait for other images' unpacks: %w", err)
		}
		defer unlock()
		// Another process may have unpacked it meanwhile.
		if unpacked, err = img.IsUnpacked(ctx, snapshotter); err != nil {
			return "", fmt.Errorf("check unpack of image %s: %w", img.Name(), err)
		}
	}
	if !unpacked {
		bound, err := g.Limit(ctx)
		if err != nil {
			return "", err
		}
		if err := CheckUnpackedSize(ctx, img, bound); err != nil {
			return "", err
		}
		if err := img.Unpack(ctx, snapshotter); err != nil {
			return "", fmt.Errorf("unpack image %s into %s: %w", img.Name(), snapshotter, err)
		}
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return "", fmt.Errorf("read layers of image %s: %w", img.Name(), err)
	}
	return identity.ChainID(diffIDs).String(), nil
}
