package images

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	ctrimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

// ProgressInterval is how often a pull reports its progress.
const ProgressInterval = 100 * time.Millisecond

// PullOptions configure Pull.
type PullOptions struct {
	// Progress, if set, is called every ProgressInterval while the pull
	// runs and once more, with Done set, when it has ended (Pull's error
	// says how). Calls come one at a time, from a goroutine of Pull's;
	// how to show them (a redrawn bar, a line per blob) is the caller's.
	Progress func(runtime.PullProgress)
}

// resolver talks HTTPS to registries, except loopback ones (a local test
// registry), which it reaches over plain HTTP.
func resolver() docker.ResolverOptions {
	return docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost))}
}

// Pull fetches ref from its registry for this platform and returns the
// image; the caller unpacks it (Unpack, whose size check needs the whole
// image first). Content is written under a lease, so an interrupted
// pull leaves nothing that garbage collection keeps.
func Pull(ctx context.Context, c *client.Client, ref string, o PullOptions) (Image, error) {
	name, err := task.NormalizeImage(ref)
	if err != nil {
		return Image{}, err
	}
	p := &pullProgress{c: c, name: name, blobs: map[digest.Digest]int64{}}
	stop := p.start(ctx, o.Progress)
	_, err = c.Pull(ctx, name,
		client.WithResolver(docker.NewResolver(resolver())),
		client.WithImageHandler(ctrimages.HandlerFunc(p.track)),
	)
	stop()
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", name, err)
	}
	return Resolve(ctx, c, name, nil)
}

// Push sends a local image to its registry (used to fill a test registry).
func Push(ctx context.Context, c *client.Client, ref string) error {
	img, err := c.GetImage(ctx, ref)
	if err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	if err := c.Push(ctx, ref, img.Target(), client.WithResolver(docker.NewResolver(resolver()))); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}

// pullProgress follows a pull: which blobs it needs (from the image
// handler), which are done (in the content store) and how far the active
// downloads are (containerd's ingest statuses).
type pullProgress struct {
	c    *client.Client
	name string

	mu    sync.Mutex
	blobs map[digest.Digest]int64
}

func (p *pullProgress) track(_ context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	p.mu.Lock()
	p.blobs[desc.Digest] = desc.Size
	p.mu.Unlock()
	return nil, nil
}

// start reports to report every ProgressInterval until the returned stop
// is called, which reports once more with Done set.
func (p *pullProgress) start(ctx context.Context, report func(runtime.PullProgress)) (stop func()) {
	if report == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		ticker := time.NewTicker(ProgressInterval)
		defer ticker.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-ticker.C:
				report(p.read(ctx))
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		last := p.read(ctx)
		last.Done = true
		report(last)
	}
}

// read takes a reading of the pull from containerd's content store.
func (p *pullProgress) read(ctx context.Context) runtime.PullProgress {
	active := map[digest.Digest]int64{}
	if statuses, err := p.c.ContentStore().ListStatuses(ctx); err == nil {
		for _, s := range statuses {
			if s.Expected != "" {
				active[s.Expected] = s.Offset
			}
		}
	}
	p.mu.Lock()
	sizes := maps.Clone(p.blobs)
	p.mu.Unlock()
	out := runtime.PullProgress{Name: p.name, Blobs: make([]runtime.BlobProgress, 0, len(sizes))}
	for d, size := range sizes {
		b := runtime.BlobProgress{ID: d.String(), Size: size}
		if off, ok := active[d]; ok {
			b.Fetched = off
		} else if _, err := p.c.ContentStore().Info(ctx, d); err == nil {
			b.Fetched, b.Complete = size, true
		}
		out.Blobs = append(out.Blobs, b)
	}
	slices.SortFunc(out.Blobs, func(a, b runtime.BlobProgress) int { return cmp.Compare(a.ID, b.ID) })
	return out
}
