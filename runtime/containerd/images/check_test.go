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
