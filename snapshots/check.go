package snapshots

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
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
