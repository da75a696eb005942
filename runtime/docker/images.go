package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

var _ runtime.ImageStore = (*Backend)(nil)

// ImportImage implements runtime.ImageStore: `docker load` of a `docker
// save` tarball (or an OCI layout, where dockerd takes one), returning the
// names dockerd reports loading. dockerd's load moves a tag to the new
// image whatever it named before, and offers no way to refuse: without
// opts.Replace, a name that named another image before the load is moved
// back to it at once, the names the load made are removed, and the import
// fails with ErrAlreadyExists. Between the load and the move back the name
// is the archive's (the containerd backend refuses before the name is
// changed, and undoes the names it made before the refusal).
func (b *Backend) ImportImage(ctx context.Context, r io.Reader, opts runtime.ImportOptions) ([]string, error) {
	before := map[string]string{}
	if !opts.Replace {
		list, err := b.client.ImageList(ctx, client.ImageListOptions{})
		if err != nil {
			return nil, fmt.Errorf("import image: %w", err)
		}
		for _, s := range list.Items {
			for _, tag := range s.RepoTags {
				if name, err := task.NormalizeImage(tag); err == nil {
					before[name] = s.ID
				}
			}
		}
	}
	res, err := b.client.ImageLoad(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("import image: %w", err)
	}
	defer res.Close()
	names, err := loadedNames(res)
	if err != nil || opts.Replace {
		return names, err
	}
	var refused []error
	for _, name := range names {
		old, had := before[name]
		if !had {
			continue
		}
		info, err := b.client.ImageInspect(ctx, name)
		if err != nil {
			return names, fmt.Errorf("import image: %w", err)
		}
		if info.ID == old {
			continue
		}
		if _, err := b.client.ImageTag(ctx, client.ImageTagOptions{Source: old, Target: name}); err != nil {
			return names, fmt.Errorf("import image: %s replaced %s and could not be moved back: %w", name, old, err)
		}
		refused = append(refused, &runtime.ImageConflictError{Name: name, Have: old, Archive: info.ID})
	}
	if len(refused) > 0 {
		// All or nothing: the names the load made go too (a sixteenth
		// review's refused archive left its other name behind).
		for _, name := range names {
			if _, had := before[name]; had {
				continue
			}
			if _, err := b.client.ImageRemove(context.WithoutCancel(ctx), name, client.ImageRemoveOptions{PruneChildren: true}); err != nil && !errdefs.IsNotFound(err) {
				refused = append(refused, fmt.Errorf("undo the import of %s: %w", name, err))
			}
		}
		return nil, fmt.Errorf("import image: %w", errors.Join(refused...))
	}
	return names, nil
}

// loadedNames reads an image load's message stream: "Loaded image: NAME"
// lines name what was loaded; an error message fails the load.
func loadedNames(r io.Reader) ([]string, error) {
	var names []string
	dec := json.NewDecoder(r)
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("import image: read dockerd's answer: %w", err)
		}
		if m.Error != nil {
			return nil, fmt.Errorf("import image: %s", m.Error.Message)
		}
		if name, ok := strings.CutPrefix(strings.TrimSpace(m.Stream), "Loaded image: "); ok {
			if n, err := task.NormalizeImage(name); err == nil {
				name = n
			}
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil, errors.New("import image: dockerd loaded no named image")
	}
	return names, nil
}

// PullImage implements runtime.ImageStore: dockerd pulls; its progress
// messages (one per layer id) become the report.
func (b *Backend) PullImage(ctx context.Context, ref string, progress func(runtime.PullProgress)) (runtime.Image, error) {
	name, err := task.NormalizeImage(ref)
	if err != nil {
		return runtime.Image{}, err
	}
	res, err := b.client.ImagePull(ctx, name, client.ImagePullOptions{})
	if err != nil {
		return runtime.Image{}, fmt.Errorf("pull %s: %w", name, err)
	}
	p := runtime.PullProgress{Name: name}
	var pullErr error
	for m, err := range res.JSONMessages(ctx) {
		if err != nil {
			pullErr = err
			break
		}
		if m.Error != nil {
			pullErr = errors.New(m.Error.Message)
			break
		}
		if progress != nil && applyPullMessage(&p, m) {
			progress(p)
		}
	}
	if progress != nil {
		p.Done = true
		progress(p)
	}
	if pullErr != nil {
		return runtime.Image{}, fmt.Errorf("pull %s: %w", name, pullErr)
	}
	info, err := b.client.ImageInspect(ctx, name)
	if err != nil {
		return runtime.Image{}, fmt.Errorf("pull %s: %w", name, err)
	}
	return runtime.Image{Name: name, Digest: info.ID, Size: info.Size}, nil
}

// layerStatuses are the statuses dockerd reports a layer with.
var layerStatuses = map[string]bool{
	"Pulling fs layer": true, "Waiting": true, "Downloading": true, "Verifying Checksum": true,
	"Download complete": true, "Extracting": true, "Pull complete": true, "Already exists": true,
}

// applyPullMessage folds one of dockerd's per-layer messages into p and
// says whether it changed.
func applyPullMessage(p *runtime.PullProgress, m jsonstream.Message) bool {
	if m.ID == "" || !layerStatuses[m.Status] { // "Pulling from library/busybox", "Digest: ..."
		return false
	}
	i := slices.IndexFunc(p.Blobs, func(b runtime.BlobProgress) bool { return b.ID == m.ID })
	if i < 0 {
		p.Blobs = append(p.Blobs, runtime.BlobProgress{ID: m.ID})
		i = len(p.Blobs) - 1
	}
	b := &p.Blobs[i]
	switch m.Status {
	case "Downloading":
		if m.Progress != nil {
			b.Size, b.Fetched = m.Progress.Total, m.Progress.Current
		}
	case "Download complete", "Pull complete", "Already exists":
		b.Fetched, b.Complete = max(b.Fetched, b.Size), true
	}
	return true
}

// ListImages implements runtime.ImageStore: one entry per tag, with the
// image id as digest.
func (b *Backend) ListImages(ctx context.Context) ([]runtime.Image, error) {
	res, err := b.client.ImageList(ctx, client.ImageListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var out []runtime.Image
	for _, s := range res.Items {
		for _, tag := range s.RepoTags {
			if tag == "<none>:<none>" {
				continue
			}
			name := tag
			if n, err := task.NormalizeImage(tag); err == nil {
				name = n
			}
			out = append(out, runtime.Image{Name: name, Digest: s.ID, Size: s.Size})
		}
	}
	slices.SortFunc(out, func(a, b runtime.Image) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// RemoveImage implements runtime.ImageStore: `docker rmi` of the name
// (dockerd untags it, and deletes the image and its untagged parents once
// no other tag names it). Without force dockerd refuses an image one of
// its containers uses, nsn-run's or not (errdefs.ErrFailedPrecondition);
// with force it untags it anyway and keeps the layers those containers run
// on.
func (b *Backend) RemoveImage(ctx context.Context, name string, force bool) (runtime.Image, error) {
	insp, err := b.client.ImageInspect(ctx, name)
	if err != nil {
		return runtime.Image{}, fmt.Errorf("image %s: %w", name, dockerErr(err))
	}
	if _, err := b.client.ImageRemove(ctx, name, client.ImageRemoveOptions{Force: force, PruneChildren: true}); err != nil {
		return runtime.Image{}, fmt.Errorf("remove image %s: %w", name, dockerErr(err))
	}
	return runtime.Image{Name: name, Digest: insp.ID, Size: insp.Size}, nil
}

// dockerErr keeps an Engine API error's kind as errdefs sees it, with a
// conflict (an image a container uses) as a failed precondition: the
// operator's next step is to remove the container.
func dockerErr(err error) error {
	if errdefs.IsConflict(err) {
		return fmt.Errorf("%w: %w", errdefs.ErrFailedPrecondition, err)
	}
	return err
}
