package privdir

import (
	"os"
	"path/filepath"
	"testing"
)

// TestIs: a private dir is; one others or the group may write to, a link
// to a private dir, a file and a missing path are not.
func TestIs(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if !Is(dir) {
		t.Errorf("%s (0700, ours) is not private", dir)
	}
	for _, mode := range []os.FileMode{0o777, 0o720, 0o702} {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		if Is(dir) {
			t.Errorf("a dir of mode %o is private", mode)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if !Is(dir) {
		t.Error("a dir of mode 755 (ours) is not private")
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, file, filepath.Join(base, "missing")} {
		if Is(p) {
			t.Errorf("%s is private", p)
		}
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if Is(dir) {
			t.Error("a dir of uid 65534 is private to root")
		}
	}
}
