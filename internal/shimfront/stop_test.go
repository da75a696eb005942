package shimfront

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/process"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/runc"
	cmount "github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// TestRuncRootIsContainerds: the default root is the runc shim's.
func TestRuncRootIsContainerds(t *testing.T) {
	if RuncRoot != process.RuncRoot {
		t.Errorf("RuncRoot %q, containerd's %q", RuncRoot, process.RuncRoot)
	}
}

// TestRuncForgot reads the bundle as the runc shim writes it (its own
// WriteOptions and WriteRuntime): only runc, with no state dir under the
// root in force, is certain.
func TestRuncForgot(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "task1")
	optRoot, defRoot := filepath.Join(dir, "opt-root"), filepath.Join(dir, "def-root")
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	if !RuncForgot(bundle, "ns1", "task1", defRoot) {
		t.Error("no runtime file, no options, no state: not certain")
	}
	if err := os.MkdirAll(filepath.Join(defRoot, "ns1", "task1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if RuncForgot(bundle, "ns1", "task1", defRoot) {
		t.Error("state under the default root: forgotten")
	}
	if err := runc.WriteOptions(bundle, &options.Options{Root: optRoot, BinaryName: "/usr/bin/runc"}); err != nil {
		t.Fatal(err)
	}
	if !RuncForgot(bundle, "ns1", "task1", defRoot) {
		t.Error("the options' root has no state (the default's has): not certain")
	}
	if err := os.MkdirAll(filepath.Join(optRoot, "ns1", "task1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if RuncForgot(bundle, "ns1", "task1", defRoot) {
		t.Error("state under the options' root: forgotten")
	}
	if err := os.RemoveAll(optRoot); err != nil {
		t.Fatal(err)
	}
	for rt, want := range map[string]bool{"/usr/local/sbin/runc": true, "/usr/bin/runsc": false, "crun": false} {
		if err := runc.WriteRuntime(bundle, rt); err != nil {
			t.Fatal(err)
		}
		if got := RuncForgot(bundle, "ns1", "task1", defRoot); got != want {
			t.Errorf("runtime %s: %v, want %v", rt, got, want)
		}
	}
	if err := runc.WriteRuntime(bundle, "runc"); err != nil {
		t.Fatal(err)
	}
	// Options containerd's ReadOptions refuses are no certainty either
	// (its Stop then fails as containerd's does).
	for _, bad := range []string{"{", `{"io_uid":"x"}`, `{"root":7}`, `{"systemd_cgroup":"yes"}`} {
		if err := os.WriteFile(filepath.Join(bundle, "options.json"), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := runc.ReadOptions(bundle); err == nil {
			t.Fatalf("containerd reads options %s; the test expects it to refuse them", bad)
		}
		if RuncForgot(bundle, "ns1", "task1", defRoot) {
			t.Errorf("options %s: forgotten", bad)
		}
	}
}

// TestValidNamespace: containerd's identifier rules.
func TestValidNamespace(t *testing.T) {
	for _, ns := range []string{"nsn", "nsn-it", "a.b_c-d", "A1", "-a", "a-", "a--b", "a/b", "", "a b", "ä", strings.Repeat("a", 76), strings.Repeat("a", 77), "k8s.io", "1"} {
		if got, want := ValidNamespace(ns), identifiers.Validate(ns) == nil; got != want {
			t.Errorf("%q: %v, containerd's %v", ns, got, want)
		}
	}
}

func mountsUnder(t *testing.T, dir string) []*mountinfo.Info {
	t.Helper()
	m, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestUnmountRecursive: every mount at and under the target goes, stacked
// ones too, deepest first; a missing target is no error.
func TestUnmountRecursive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	sub := filepath.Join(rootfs, "sub")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	mount := func(target string) {
		t.Helper()
		if err := unix.Mount("tmpfs", target, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = unix.Unmount(rootfs, unix.MNT_DETACH) })
	mount(rootfs)
	mount(rootfs) // stacked
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	mount(sub)
	if n := len(mountsUnder(t, rootfs)); n != 3 {
		t.Fatalf("%d mounts set up, want 3", n)
	}
	if HasFUSE(filepath.Dir(rootfs)) {
		t.Error("tmpfs mounts: HasFUSE")
	}
	// The same statfs check that finds FUSE finds these tmpfs mounts.
	if !hasMountOfType(rootfs, unix.TMPFS_MAGIC) || hasMountOfType(filepath.Join(t.TempDir(), "x"), unix.TMPFS_MAGIC) {
		t.Error("hasMountOfType does not tell a tmpfs mount from none")
	}
	if err := UnmountRecursive(rootfs); err != nil {
		t.Fatal(err)
	}
	if m := mountsUnder(t, rootfs); len(m) != 0 {
		t.Errorf("left mounted: %v", m)
	}
	// containerd's own leaves the same from the same stack.
	mount(rootfs)
	mount(rootfs)
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	mount(sub)
	if err := cmount.UnmountRecursive(rootfs, 0); err != nil {
		t.Fatal(err)
	}
	if m := mountsUnder(t, rootfs); len(m) != 0 {
		t.Errorf("containerd's left mounted: %v", m)
	}
	if err := UnmountRecursive(filepath.Join(rootfs, "missing")); err != nil {
		t.Errorf("a missing target: %v", err)
	}
	if HasFUSE(filepath.Join(t.TempDir(), "no-bundle")) {
		t.Error("no rootfs: HasFUSE")
	}
}

// TestAdjustOOMScore: the new process gets this one's parent's score plus
// one, as containerd's shim.AdjustOOMScore gives it.
func TestAdjustOOMScore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a score may be lowered only with CAP_SYS_RESOURCE")
	}
	sleeper := func() *exec.Cmd {
		t.Helper()
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	cmd, theirs := sleeper(), sleeper()
	read := func(pid int) int {
		t.Helper()
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/oom_score_adj")
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := AdjustOOMScore(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if err := shim.AdjustOOMScore(theirs.Process.Pid); err != nil {
		t.Fatal(err)
	}
	want := min(read(os.Getppid())+1, 1000)
	if got, c := read(cmd.Process.Pid), read(theirs.Process.Pid); got != want || got != c {
		t.Errorf("score %d, containerd's %d, want the parent's + 1 = %d", got, c, want)
	}
}

// TestDefaults: the paths containerd's shim uses by default.
func TestDefaults(t *testing.T) {
	if want := filepath.Join(defaults.DefaultStateDir, "s"); DefaultSocketDir != want {
		t.Errorf("DefaultSocketDir %q, containerd's %q", DefaultSocketDir, want)
	}
}
