package containerd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/runtime/containerd/images"
)

// TestPassedRootRecords: a root that passed in one Backend is known to
// have passed in another of the same ProbeDir, containerd, snapshotter and
// namespace (a later process of the same build and boot, which the key
// names), for the same image (its snapshot, by chain ID and commit time),
// working dir and mount points only;
// records in a directory others may write to, or reached through a link,
// count for nothing; the records are bounded.
func TestPassedRootRecords(t *testing.T) {
	ctx := context.Background()
	probe := filepath.Join(t.TempDir(), "probe")
	backend := func(uuid, snapshotter string) *Backend {
		return &Backend{cfg: Config{ProbeDir: probe, Snapshotter: snapshotter, Namespace: "nsn"}, serverUUID: uuid}
	}
	if rootChecks() == "" {
		t.Fatal("the checks' version is unknown in this process (no Go build ID or boot id): the records are not used")
	}
	spec := func(cwd string, dests ...string) *specs.Spec {
		s := &specs.Spec{Process: &specs.Process{Cwd: cwd}}
		for _, d := range dests {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: d})
		}
		return s
	}
	committed := time.Date(2026, 12, 3, 18, 0, 0, 123456789, time.UTC)
	parent := func(chainID string) images.Parent { return images.Parent{ChainID: chainID, Committed: committed} }
	b := backend("u1", "overlayfs")
	passed := b.passedRootKey(parent("sha256:aaa"), spec("/work", "/output", "/tmp"))
	for _, part := range []string{rootChecksVersion, goBuildID(), bootID()} {
		if part == "" || !strings.Contains(passed, part) {
			t.Errorf("the key %s does not name %q (the checks' version, this build, this boot)", passed, part)
		}
	}
	b.recordRootPassed(ctx, passed)
	if !backend("u1", "overlayfs").rootPassedBefore(passed) {
		t.Fatal("a later Backend does not see the root that passed")
	}
	otherNamespace := backend("u1", "overlayfs")
	otherNamespace.cfg.Namespace = "evil"
	for what, other := range map[string]*Backend{
		"another containerd":  backend("u2", "overlayfs"),
		"another snapshotter": backend("u1", "native"),
		"another namespace":   otherNamespace,
	} {
		if other.rootPassedBefore(other.passedRootKey(parent("sha256:aaa"), spec("/work", "/output", "/tmp"))) {
			t.Errorf("%s sees the root that passed", what)
		}
	}
	if noProbe := (&Backend{cfg: Config{Snapshotter: "overlayfs", Namespace: "nsn"}, serverUUID: "u1"}); noProbe.rootPassedBefore(passed) {
		t.Error("a Backend without a ProbeDir sees the root that passed")
	}
	for what, key := range map[string]string{
		"another image":                b.passedRootKey(parent("sha256:bbb"), spec("/work", "/output", "/tmp")),
		"the chain ID committed again": b.passedRootKey(images.Parent{ChainID: "sha256:aaa", Committed: committed.Add(time.Nanosecond)}, spec("/work", "/output", "/tmp")),
		"another working dir":          b.passedRootKey(parent("sha256:aaa"), spec("/ps/root", "/output", "/tmp")),
		"another mount point":          b.passedRootKey(parent("sha256:aaa"), spec("/work", "/output", "/proc/x")),
		"a mount point fewer":          b.passedRootKey(parent("sha256:aaa"), spec("/work", "/output")),
		"the paths split otherwise":    b.passedRootKey(parent("sha256:aaa"), spec("/work", "/output/tmp")),
	} {
		if b.rootPassedBefore(key) {
			t.Errorf("%s: passes on the record of another root", what)
		}
	}

	dir := filepath.Join(probe, passedRootsDir)
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

	for i := range maxPassedRoots*2 + 1 {
		b.recordRootPassed(ctx, b.passedRootKey(parent("sha256:aaa"), spec("/", filepath.Join("/d", string(rune('a'+i%26)), filepath.Base(t.Name()), string(rune('a'+i/26))))))
		if entries, _ := os.ReadDir(dir); len(entries) > maxPassedRoots {
			t.Fatalf("after %d records the dir holds %d, want at most %d", i+1, len(entries), maxPassedRoots)
		}
	}
}
