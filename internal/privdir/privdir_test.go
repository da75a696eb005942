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

// TestOpen: a private dir opens as a Root; a link to one, a dir others may
// write to and a file do not.
func TestOpen(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	root, err := Open(dir)
	if err != nil {
		t.Fatalf("a private dir: %v", err)
	}
	if err := root.WriteFile("f", nil, 0o600); err != nil {
		t.Error(err)
	}
	root.Close()
	link := filepath.Join(base, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, open, filepath.Join(dir, "f")} {
		if r, err := Open(p); err == nil {
			r.Close()
			t.Errorf("%s opened as private", p)
		}
	}
}

// TestEmptyIfFull: below max nothing is removed; at max the regular files
// go and a subdirectory stays.
func TestEmptyIfFull(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := os.WriteFile(filepath.Join(dir, string(rune('a'+i))), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	EmptyIfFull(root, 5)
	if entries, _ := os.ReadDir(dir); len(entries) != 4 {
		t.Errorf("below max: %d entries left, want 4", len(entries))
	}
	EmptyIfFull(root, 4)
	if entries, _ := os.ReadDir(dir); len(entries) != 1 || entries[0].Name() != "sub" {
		t.Errorf("at max: %v left, want [sub]", entries)
	}
}
