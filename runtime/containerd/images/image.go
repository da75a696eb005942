// Package images holds the containerd backend's images and what the task
// filesystems made from them must satisfy: resolving a reference to a local
// image and reading its config, unpacking it, import, pull (reporting
// progress to a callback; drawing it is the CLI's) and push, listing, and
// the checks of mount points in a task's root filesystem. It talks to
// containerd only, which is why it lives under the containerd backend.
package images

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	ctrimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
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
	// Image is containerd's handle, for unpacking and snapshots. Its
	// Spec, RootFS and IsUnpacked answer from the config Resolve read:
	// they read no content again.
	Image client.Image
}

// Resolve finds ref among c's images (in c's default namespace) and reads its
// config for the client's platform, through configs (nil: read it every
// time). A missing image is errdefs.ErrNotFound with a message that says
// how to get it.
func Resolve(ctx context.Context, c *client.Client, ref string, configs *Configs) (Image, error) {
	return resolve(ctx, c.GetImage, c.SnapshotService, ref, configs)
}

// resolve is Resolve with containerd's calls as functions: get reads the
// image record of a name, snapshots gives a snapshotter by name.
func resolve(ctx context.Context, get func(context.Context, string) (client.Image, error), snapshots func(string) snapshots.Snapshotter, ref string, configs *Configs) (Image, error) {
	name, err := task.NormalizeImage(ref)
	if err != nil {
		return Image{}, err
	}
	img, err := get(ctx, name)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return Image{}, &runtime.ImageNotFoundError{Name: name}
		}
		return Image{}, fmt.Errorf("look up image %s: %w", name, err)
	}
	blob, err := configs.read(ctx, img)
	if err != nil {
		return Image{}, fmt.Errorf("read config of image %s: %w", name, err)
	}
	spec, err := decodeConfig(blob)
	if err != nil {
		return Image{}, fmt.Errorf("read config of image %s: %w", name, err)
	}
	resolved := &resolvedImage{Image: img, config: blob, chainID: identity.ChainID(spec.RootFS.DiffIDs).String(), snapshots: snapshots}
	return Image{Name: name, Digest: img.Target().Digest.String(), Config: spec.Config, Image: resolved}, nil
}

// maxConfigs bounds a Configs: past it, it starts again empty.
const maxConfigs = 64

// Configs remembers the config blob of each image Resolve read, by the
// digest of the manifest or index the image's name pointed at. Content is
// addressed by its digest, so what a digest held then it holds now, for
// the one client platform a Backend resolves for: the name is still looked
// up every time (an image imported again under it, or removed, shows at
// once), but a long-lived Manager's next task of an image reads no manifest
// and no config (5 calls to containerd fewer per start). The blob is kept
// and decoded afresh for each caller, who may change what it gets. The
// zero value is ready; a nil *Configs reads every time.
type Configs struct {
	// Dir, if set, is a node-wide directory where the blobs read for a
	// config (an index, a manifest, the config) are kept for later
	// processes, each in a file named by its digest and read back only
	// if its bytes have that digest (blobDir): a new process, as each
	// CLI run is, then asks containerd's content store nothing (4 calls
	// of a new process, about 3 ms).
	Dir   string
	mu    sync.Mutex
	blobs map[digest.Digest][]byte
}

// read returns the config blob of img for its platform: from c where it
// has img's target, else from the content store (and kept in c).
func (c *Configs) read(ctx context.Context, img client.Image) ([]byte, error) {
	target := img.Target().Digest
	if c != nil {
		c.mu.Lock()
		blob, ok := c.blobs[target]
		c.mu.Unlock()
		if ok {
			return blob, nil
		}
	}
	var provider content.Provider = img.ContentStore()
	var desc ocispec.Descriptor
	var err error
	if c != nil && c.Dir != "" {
		// What img.Config reads, through the kept blobs.
		provider = blobDir{dir: c.Dir, store: provider}
		desc, err = ctrimages.Config(ctx, provider, img.Target(), img.Platform())
	} else {
		desc, err = img.Config(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("get image config descriptor: %w", err)
	}
	blob, err := content.ReadBlob(ctx, provider, desc)
	if err != nil {
		return nil, fmt.Errorf("read image config from content store: %w", err)
	}
	if c != nil {
		c.mu.Lock()
		if c.blobs == nil || len(c.blobs) >= maxConfigs {
			c.blobs = make(map[digest.Digest][]byte)
		}
		c.blobs[target] = blob
		c.mu.Unlock()
	}
	return blob, nil
}

func decodeConfig(blob []byte) (ocispec.Image, error) {
	var spec ocispec.Image
	if err := json.Unmarshal(blob, &spec); err != nil {
		return ocispec.Image{}, fmt.Errorf("decode image config: %w", err)
	}
	return spec, nil
}

// resolvedImage is a client.Image whose config Resolve has read: Spec,
// RootFS and IsUnpacked answer from it, where containerd's image reads
// the manifest and the config again for each (the unpack check of every
// start did).
type resolvedImage struct {
	client.Image
	config    []byte
	chainID   string
	snapshots func(string) snapshots.Snapshotter
	// committed is when the snapshot of chainID was committed, as its
	// last IsUnpacked found it (zero: not found yet).
	committed time.Time
}

func (i *resolvedImage) Spec(context.Context) (ocispec.Image, error) {
	return decodeConfig(i.config)
}

func (i *resolvedImage) RootFS(context.Context) ([]digest.Digest, error) {
	spec, err := decodeConfig(i.config)
	if err != nil {
		return nil, err
	}
	return spec.RootFS.DiffIDs, nil
}

// IsUnpacked is containerd's check (the snapshot named by the layers'
// chain ID exists in snapshotter) with the chain ID already known.
func (i *resolvedImage) IsUnpacked(ctx context.Context, snapshotter string) (bool, error) {
	if snapshotter == "" {
		return i.Image.IsUnpacked(ctx, snapshotter) // containerd resolves its default
	}
	info, err := i.snapshots(snapshotter).Stat(ctx, i.chainID)
	if err != nil {
		i.committed = time.Time{}
		if errdefs.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	i.committed = info.Created
	return true, nil
}

// Parent is the snapshot a task's snapshot is prepared on: the one named
// by the image's layers' chain ID, and when containerd committed it (zero
// where unknown). A name says what was asked for; containerd commits a
// snapshot under any name a client gives, so two snapshots of one name
// at different times need not hold the same files, while one snapshot's
// commit time stays as long as it does.
type Parent struct {
	ChainID   string
	Committed time.Time
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
// the snapshot of its top layer: the parent of every container snapshot
// (its commit time only for an image Resolve gave). An image not unpacked
// yet must pass g first.
func Unpack(ctx context.Context, img client.Image, snapshotter string, g UnpackGuard) (Parent, error) {
	unpacked, err := img.IsUnpacked(ctx, snapshotter)
	if err != nil {
		return Parent{}, fmt.Errorf("check unpack of image %s: %w", img.Name(), err)
	}
	if !unpacked && g.Unbounded != nil {
		ctx = g.Unbounded(ctx)
	}
	if !unpacked && g.Lock != nil {
		unlock, err := g.Lock(ctx)
		if err != nil {
			return Parent{}, fmt.Errorf("wait for other images' unpacks: %w", err)
		}
		defer unlock()
		// Another process may have unpacked it meanwhile.
		if unpacked, err = img.IsUnpacked(ctx, snapshotter); err != nil {
			return Parent{}, fmt.Errorf("check unpack of image %s: %w", img.Name(), err)
		}
	}
	if !unpacked {
		bound, err := g.Limit(ctx)
		if err != nil {
			return Parent{}, err
		}
		if err := CheckUnpackedSize(ctx, img, bound); err != nil {
			return Parent{}, err
		}
		if err := img.Unpack(ctx, snapshotter); err != nil {
			return Parent{}, fmt.Errorf("unpack image %s into %s: %w", img.Name(), snapshotter, err)
		}
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return Parent{}, fmt.Errorf("read layers of image %s: %w", img.Name(), err)
	}
	p := Parent{ChainID: identity.ChainID(diffIDs).String()}
	if r, ok := img.(*resolvedImage); ok {
		if r.committed.IsZero() && snapshotter != "" {
			// Unpacked just now: one more look for its commit time.
			if _, err := r.IsUnpacked(ctx, snapshotter); err != nil {
				return Parent{}, fmt.Errorf("check unpack of image %s: %w", img.Name(), err)
			}
		}
		p.Committed = r.committed
	}
	return p, nil
}
