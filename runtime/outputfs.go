package runtime

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/internal/mountinfo"
	"github.com/nsn-run/nsn-run/task"
)

// mountOutput mounts a tmpfs at dir sized by the task's output limits, so
// the kernel stops a task that writes too much (ENOSPC) before the host's
// disk is touched at all. The task's writes are charged to its memory
// cgroup. nsuid, nodev, noexec: nothing in it is trusted.
func mountOutput(dir string, l task.Limits) error {
	data := fmt.Sprintf("size=%d,nr_inodes=%d,mode=0700", l.OutputBytes, l.OutputFiles+1) // +1: the root dir
	if err := unix.Mount("nsn-output", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, data); err != nil {
		return fmt.Errorf("mount output tmpfs at %s: %w", dir, err)
	}
	return nil
}

// unmountAll detaches every mount at or below dir, deepest first. Not
// being mounted is not an error.
func unmountAll(dir string) error {
	points, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for i := len(points) - 1; i >= 0; i-- {
		if err := unix.Unmount(points[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", points[i], err))
		}
	}
	return errors.Join(errs...)
}

// mountsUnder lists the mount points at or below dir, in mount order.
func mountsUnder(dir string) ([]string, error) {
	mounts, err := mountinfo.Read(mountinfo.Self)
	if err != nil {
		return nil, err
	}
	var points []string
	for _, m := range mounts {
		if m.MountPoint == dir || strings.HasPrefix(m.MountPoint, dir+"/") {
			points = append(points, m.MountPoint)
		}
	}
	return points, nil
}
