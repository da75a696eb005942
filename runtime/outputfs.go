package runtime

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/internal/mountinfo"
	"github.com/nsn-run/nsn-run/task"
)

// OutputFS provides each task's output directory on the host, the one host
// path its container binds (at /output).
type OutputFS interface {
	// Prepare readies dir (it exists and is empty) to receive at most
	// the task's output limits.
	Prepare(dir string, l task.Limits) error
	// Release undoes Prepare. When it returns nil nothing of dir's is
	// mounted any more; releasing what was never prepared is no error.
	Release(dir string) error
}

// OutputSealer is an OutputFS that can make a task's output directory
// read-only for everyone once the task has ended: what the task wrote is
// then its result, and nothing run later under its id (a spec or create
// request audited before the task existed, then run with its /output bind)
// can change it before it is collected or removed.
type OutputSealer interface {
	Seal(dir string) error
}

// TmpfsOutput is the default OutputFS: a tmpfs per task, sized by its
// output limits, so the kernel stops a task that writes too much (ENOSPC)
// before the host's disk is touched at all. The task's writes are charged
// to its memory cgroup. nosuid, nodev, noexec: nothing in it is trusted.
// It needs CAP_SYS_ADMIN (root).
type TmpfsOutput struct{}

// Prepare mounts the tmpfs at dir, for the task's keyed directory in it
// (task.NewOutputKey) and its files.
func (TmpfsOutput) Prepare(dir string, l task.Limits) error {
	// +2: the root dir, and the task's keyed directory in it.
	data := fmt.Sprintf("size=%d,nr_inodes=%d,mode=0700", l.OutputBytes, l.OutputFiles+2)
	if err := unix.Mount("nsn-output", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, data); err != nil {
		return fmt.Errorf("mount output tmpfs at %s: %w", dir, err)
	}
	return nil
}

// Seal remounts dir's tmpfs read-only: its superblock, so every bind of
// it, those made later included, refuses writes (EROFS). An outside
// review created a Docker request audited before a task existed after that
// task had ended, and it overwrote the task's /output, which `wait
// --output-dir` then handed over as the task's.
func (TmpfsOutput) Seal(dir string) error {
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("seal output tmpfs at %s: %w", dir, err)
	}
	return nil
}

// Release unmounts dir itself, by its known path, until nothing is
// mounted there, then anything else the mount table lists below it. The
// known path comes first: it does not depend on a read of the mount table
// while dozens of other tasks mount and unmount (kernels before 5.8 could
// skip entries in such a read).
func (TmpfsOutput) Release(dir string) error {
	if err := unmountAt(dir); err != nil {
		return err
	}
	return unmountBelow(dir)
}

// maxStacked bounds how many mounts unmountAt peels off one point.
const maxStacked = 16

// unmountAt detaches every mount stacked at dir: EINVAL says dir is no
// longer a mount point, ENOENT that it does not exist.
func unmountAt(dir string) error {
	for range maxStacked {
		err := unix.Unmount(dir, unix.MNT_DETACH)
		switch {
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		case err != nil:
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	return fmt.Errorf("unmount %s: still a mount point after %d unmounts", dir, maxStacked)
}

// unmountBelow detaches every mount strictly below dir, deepest first,
// as the mount table lists them.
func unmountBelow(dir string) error {
	mounts, err := mountinfo.Read(mountinfo.Self)
	if err != nil {
		return err
	}
	var errs []error
	for i := len(mounts) - 1; i >= 0; i-- {
		if p := mounts[i].MountPoint; strings.HasPrefix(p, dir+"/") {
			if err := unmountAt(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
