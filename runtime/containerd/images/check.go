package images

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	securejoin "github.com/cyphar/filepath-securejoin"

	"github.com/nsn-run/nsn-run/task"
)

// CheckMountPoints refuses a root filesystem in which any component of a
// mount destination is a symlink. The image is attacker input: a /dev or
// /proc that links to a host path has made runtimes create files on the
// host while setting up the container (runc 1.1 follows a /dev symlink when
// it adds /dev/fd, /dev/stdin and friends). nsn-run does not rely on the
// runtime resolving such paths safely: it refuses the image. root is the
// image's root filesystem, mounted; dests are absolute container paths.
func CheckMountPoints(root string, dests []string) error {
	for _, dest := range dests {
		clean := path.Clean("/" + dest)
		prefix := ""
		for _, part := range strings.Split(strings.TrimPrefix(clean, "/"), "/") {
			if part == "" {
				continue
			}
			prefix += "/" + part
			// Every earlier component was checked to be no symlink, so
			// this join cannot leave root.
			info, err := os.Lstat(filepath.Join(root, prefix))
			if errors.Is(err, fs.ErrNotExist) {
				break // the runtime creates it, as a directory
			}
			if err != nil {
				return fmt.Errorf("check image path %s: %w", prefix, err)
			}
			if info.Mode()&fs.ModeSymlink != 0 {
				target, _ := os.Readlink(filepath.Join(root, prefix))
				return fmt.Errorf("%w: image has a symlink at %s (to %q) where the container mounts %s: refused", errdefs.ErrInvalidArgument, prefix, target, clean)
			}
		}
	}
	return nil
}

// CheckWorkingDir refuses a working dir that leads into /proc, /sys or
// /dev through the image's own symlinks (WORKDIR /ps/root with
// /ps -> /proc/self; an outside review ran one): task.ValidateWorkingDir
// reads the path as written, and on a runc older than 1.1.12 such a
// directory is the CVE-2024-21626 route to a leaked host fd. dir is
// resolved as the container would resolve it, inside root (securejoin:
// symlinks scoped to root, missing components as written), and the result
// must pass the same check.
func CheckWorkingDir(root, dir string) error {
	resolved, err := securejoin.SecureJoin(root, dir)
	if err != nil {
		return fmt.Errorf("%w: working dir %q: %w", errdefs.ErrInvalidArgument, dir, err)
	}
	rel, err := filepath.Rel(root, resolved)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("%w: working dir %q resolves outside the image", errdefs.ErrInvalidArgument, dir)
	}
	inImage := path.Clean("/" + filepath.ToSlash(rel))
	if err := task.ValidateWorkingDir(inImage); err != nil {
		return fmt.Errorf("%w: working dir %q resolves through the image's symlinks to %q: refused", errdefs.ErrInvalidArgument, dir, inImage)
	}
	return nil
}

// MountPoint is a place in the image where the task's spec mounts
// something, and whether it must be a file (a bind of a host file).
type MountPoint struct {
	Dest string
	File bool
}

// CreateMountPoints makes the missing mount points under root, the task's
// own writable snapshot, as the host's root: directories 0755 and empty
// files 0644. runc would create them itself, but inside a task's user
// namespace it acts as the task's root, which owns none of the image's
// directories (root's files map to the overflow id there). Every path is
// resolved inside root (os.Root), so a symlink cannot lead out; call
// CheckMountPoints first to refuse images with symlinked mount points.
func CreateMountPoints(root string, points []MountPoint) error {
	r, err := os.OpenRoot(root)
	if err != nil {
		return fmt.Errorf("open task root filesystem: %w", err)
	}
	defer r.Close()
	for _, p := range points {
		rel := strings.TrimPrefix(path.Clean("/"+p.Dest), "/")
		if rel == "" {
			continue
		}
		if _, err := r.Lstat(rel); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("mount point %s: %w", p.Dest, err)
		}
		dir := rel
		if p.File {
			dir = path.Dir(rel)
		}
		if dir != "." {
			if err := r.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("create mount point %s: %w", p.Dest, err)
			}
		}
		if p.File {
			f, err := r.OpenFile(rel, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return fmt.Errorf("create mount point %s: %w", p.Dest, err)
			}
			f.Close()
		}
	}
	return nil
}
