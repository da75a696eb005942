package containerd

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestPassedRootRecords: a root that passed in one Backend is known to
// have passed in another of the same ProbeDir, containerd and snapshotter (a
// later process), for the same image, working dir and mount points only;
// records in a directory others may write to, or reached through a link,
// count for nothing; the records are bounded.
func TestPassedRootRecords(t *testing.T) {
	ctx := context.Background()
	probe := filepath.Join(t.TempDir(), "probe")
	backend := func(uuid, snapshotter string) *Backend {
		return &Backend{cfg: Config{ProbeDir: probe, Snapshotter: snapshotter}, serverUUID: uuid}
	}
	spec := func(cwd string, dests ...string) *specs.Spec {
		s := &specs.Spec{Process: &specs.Process{Cwd: cwd}}
		for _, d := range dests {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: d})
		}
		return s
	}
	passed := passedRootKey("sha256:aaa", spec("/work", "/output", "/tmp"))
	backend("u1", "overlayfs").recordRootPassed(ctx, passed)
	if !backend("u1", "overlayfs").rootPassedBefore(passed) {
		t.Fatal("a later Backend does not see the root that passed")
	}
	for what, b := range map[string]*Backend{
		"another containerd":  backend("u2", "overlayfs"),
		"another snapshotter": backend("u1", "native"),
		"no ProbeDir":         {cfg: Config{Snapshotter: "overlayfs"}, serverUUID: "u1"},
	} {
		if b.rootPassedBefore(passed) {
			t.Errorf("%s sees the root that passed", what)
		}
	}
	for what, key := range map[string]string{
		"another image":             passedRootKey("sha256:bbb", spec("/work", "/output", "/tmp")),
		"another working dir":       passedRootKey("sha256:aaa", spec("/ps/root", "/output", "/tmp")),
		"another mount point":       passedRootKey("sha256:aaa", spec("/work", "/output", "/proc/x")),
		"a mount point fewer":       passedRootKey("sha256:aaa", spec("/work", "/output")),
		"the paths split otherwise": passedRootKey("sha256:aaa", spec("/work", "/output/tmp")),
	} {
		if backend("u1", "overlayfs").rootPassedBefore(key) {
			t.Errorf("%s: passes on the record of another root", what)
		}
	}

	dir := backend("u1", "overlayfs").passedRootsDir()
	for _, mode := range []os.FileMode{0o777, 0o720, 0o702} {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		if backend("u1", "overlayfs").rootPassedBefore(passed) {
			t.Errorf("records in a dir of mode %o are believed", mode)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(probe, 0o777); err != nil {
		t.Fatal(err)
	}
	if backend("u1", "overlayfs").rootPassedBefore(passed) {
		t.Error("records in a ProbeDir anyone may write to are believed")
	}
	if err := os.Chmod(probe, 0o700); err != nil {
		t.Fatal(err)
	}
	// A link in the records dir's place, to a dir of records made elsewhere.
	elsewhere := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Rename(dir, elsewhere); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, dir); err != nil {
		t.Fatal(err)
	}
	if backend("u1", "overlayfs").rootPassedBefore(passed) {
		t.Error("records reached through a link are believed")
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}

	b := backend("u1", "overlayfs")
	for i := range maxPassedRoots*2 + 1 {
		b.recordRootPassed(ctx, passedRootKey("sha256:aaa", spec("/", filepath.Join("/d", string(rune('a'+i%26)), filepath.Base(t.Name()), string(rune('a'+i/26))))))
		if entries, _ := os.ReadDir(dir); len(entries) > maxPassedRoots {
			t.Fatalf("after %d records the dir holds %d, want at most %d", i+1, len(entries), maxPassedRoots)
		}
	}
}
