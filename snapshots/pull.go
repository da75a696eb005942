package snapshots

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/docker/go-units"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/task"
)

// progressInterval is how often pull progress is redrawn on a terminal.
const progressInterval = 100 * time.Millisecond

// PullOptions configure Pull.
type PullOptions struct {
	// Snapshotter to unpack into.
	Snapshotter string
	// Progress receives progress reports; nil for none.
	Progress io.Writer
	// Terminal redraws one progress line in place; otherwise a line is
	// printed per finished blob.
	Terminal bool
}

// resolver talks HTTPS to registries, except loopback ones (a local test
// registry), which it reaches over plain HTTP.
func resolver() docker.ResolverOptions {
	return docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost))}
}

// Pull fetches ref from its registry for this platform, unpacks it and
// returns the image. Content is written under a lease, so an interrupted
// pull leaves nothing that garbage collection keeps.
func Pull(ctx context.Context, c *client.Client, ref string, o PullOptions) (Image, error) {
	name, err := task.NormalizeImage(ref)
	if err != nil {
		return Image{}, err
	}
	p := newPullProgress(c, name, o)
	stop := p.start(ctx)
	_, err = c.Pull(ctx, name,
		client.WithResolver(docker.NewResolver(resolver())),
		client.WithPullUnpack,
		client.WithPullSnapshotter(o.Snapshotter),
		client.WithImageHandler(images.HandlerFunc(p.track)),
	)
	stop(err == nil)
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", name, err)
	}
	return Resolve(ctx, c, name)
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

// pullProgress reports a pull: which blobs it needs (from the image
// handler), which are done (in the content store) and how far the active
// downloads are (containerd's ingest statuses).
type pullProgress struct {
	c    *client.Client
	name string
	o    PullOptions

	mu       sync.Mutex
	blobs    map[digest.Digest]int64
	reported map[digest.Digest]bool
}

func newPullProgress(c *client.Client, name string, o PullOptions) *pullProgress {
	return &pullProgress{c: c, name: name, o: o, blobs: map[digest.Digest]int64{}, reported: map[digest.Digest]bool{}}
}

func (p *pullProgress) track(_ context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	p.mu.Lock()
	p.blobs[desc.Digest] = desc.Size
	p.mu.Unlock()
	return nil, nil
}

// start reports progress until the returned stop is called.
func (p *pullProgress) start(ctx context.Context) func(ok bool) {
	if p.o.Progress == nil {
		return func(bool) {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		ticker := time.NewTicker(progressInterval)
		defer ticker.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-ticker.C:
				p.report(ctx)
			}
		}
	})
	return func(ok bool) {
		close(done)
		wg.Wait()
		p.report(ctx)
		if p.o.Terminal {
			fmt.Fprintln(p.o.Progress)
		}
		if ok {
			fmt.Fprintf(p.o.Progress, "pulled %s\n", p.name)
		}
	}
}

func (p *pullProgress) report(ctx context.Context) {
	active := map[digest.Digest]int64{}
	if statuses, err := p.c.ContentStore().ListStatuses(ctx); err == nil {
		for _, s := range statuses {
			if s.Expected != "" {
				active[s.Expected] = s.Offset
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var doneBytes, totalBytes int64
	var doneBlobs int
	digests := make([]digest.Digest, 0, len(p.blobs))
	for d := range p.blobs {
		digests = append(digests, d)
	}
	slices.Sort(digests)
	for _, d := range digests {
		size := p.blobs[d]
		totalBytes += size
		if off, ok := active[d]; ok {
			doneBytes += off
			continue
		}
		if _, err := p.c.ContentStore().Info(ctx, d); err != nil {
			continue
		}
		doneBytes += size
		doneBlobs++
		if !p.o.Terminal && !p.reported[d] {
			p.reported[d] = true
			fmt.Fprintf(p.o.Progress, "fetched %s (%s)\n", d.Encoded()[:12], units.HumanSize(float64(size)))
		}
	}
	if p.o.Terminal {
		fmt.Fprintf(p.o.Progress, "\r\x1b[Kpulling %s: %s %d/%d blobs, %s/%s",
			p.name, bar(doneBytes, totalBytes, 20), doneBlobs, len(p.blobs),
			units.HumanSize(float64(doneBytes)), units.HumanSize(float64(totalBytes)))
	}
}

// bar draws a fixed-width progress bar.
func bar(done, total int64, width int) string {
	filled := 0
	if total > 0 {
		filled = int(int64(width) * min(done, total) / total)
	}
	b := make([]byte, width+2)
	b[0], b[width+1] = '[', ']'
	for i := range width {
		b[i+1] = ' '
		if i < filled {
			b[i+1] = '='
		}
	}
	return string(b)
}
