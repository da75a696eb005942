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
	if err := os.WriteFile(filepath.Join(bundle, "options.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := runc.WriteRuntime(bundle, "runc"); err != nil {
		t.Fatal(err)
	}
	if RuncForgot(bundle, "ns1", "task1", defRoot) {
		t.Error("unreadable options: forgotten")
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
	if err := UnmountRecursive(rootfs); err != nil {
		t.Fatal(err)
	}
	if m := mountsUnder(t, rootfs); len(m) != 0 {
		t.Errorf("left mounted: %v", m)
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
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
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
	want := min(read(os.Getppid())+1, 1000)
	if got := read(cmd.Process.Pid); got != want && os.Geteuid() == 0 {
		t.Errorf("score %d, want the parent's + 1 = %d", got, want)
	}
}
