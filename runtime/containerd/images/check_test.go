package images

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestCheckMountPoints(t *testing.T) {
	dests := []string{"/proc", "/dev", "/dev/pts", "/dev/shm", "/sys", "/tmp", "/output"}
	for _, c := range []struct {
		name   string
		layout func(root string) error
		want   string // "" for accepted
	}{
		{"plain dirs", func(root string) error { return os.MkdirAll(filepath.Join(root, "dev", "pts"), 0o755) }, ""},
		{"missing dirs", func(string) error { return nil }, ""},
		{"proc link", func(root string) error { return os.Symlink("/etc", filepath.Join(root, "proc")) }, "symlink at /proc"},
		{"dev link", func(root string) error { return os.Symlink("/tmp/host", filepath.Join(root, "dev")) }, "symlink at /dev"},
		{"relative link", func(root string) error { return os.Symlink("../../..", filepath.Join(root, "output")) }, "symlink at /output"},
		{"nested link", func(root string) error {
			if err := os.Mkdir(filepath.Join(root, "dev"), 0o755); err != nil {
				return err
			}
			return os.Symlink("/", filepath.Join(root, "dev", "shm"))
		}, "symlink at /dev/shm"},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			if err := c.layout(root); err != nil {
				t.Fatal(err)
			}
			err := CheckMountPoints(root, dests)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case c.want != "" && (!errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), c.want)):
				t.Errorf("err = %v, want an invalid-argument error about %q", err, c.want)
			}
		})
	}
}

// TestCheckWorkingDir: a working dir that reaches /proc, /sys or /dev only
// through the image's symlinks (an outside review's WORKDIR /ps/root with
// /ps -> /proc/self ran in /proc/self/root) is refused; one through a
// symlink to an ordinary directory, or one that does not exist yet, is not.
func TestCheckWorkingDir(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"proc", "dev", "sys", "srv/app", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"ps":       "/proc/self",
		"dv":       "../dev",
		"deep":     "srv/../../../../sys/kernel",
		"fd":       "/proc/self/fd/7",
		"app":      "/srv/app",
		"hop":      "app",
		"loop":     "loop",
		"etc/back": "../ps",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	for dir, ok := range map[string]bool{
		"/srv/app":       true,
		"/app":           true,
		"/hop/sub":       true, // not there yet: runc makes it
		"/new/dir":       true,
		"/ps/root":       false,
		"/ps":            false,
		"/dv":            false,
		"/deep":          false,
		"/fd":            false,
		"/etc/back/root": false,
		"/loop":          false,
	} {
		err := CheckWorkingDir(root, dir)
		if ok && err != nil {
			t.Errorf("%s: %v, want it allowed", dir, err)
		}
		if !ok && !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want it refused as invalid", dir, err)
		}
	}
}
