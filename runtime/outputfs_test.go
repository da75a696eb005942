package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/containerd/errdefs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/nsn-run/nsn-run/internal/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

// mountsBelow counts the mounts at or below dir.
func mountsBelow(t *testing.T, dir string) int {
	t.Helper()
	mounts, err := mountinfo.Read(mountinfo.Self)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range mounts {
		if m.MountPoint == dir || strings.HasPrefix(m.MountPoint, dir+"/") {
			n++
		}
	}
	return n
}

// TestTmpfsOutputSeal: once sealed, the output tmpfs refuses writes
// (EROFS) through its own mount and through a read-write bind of it made
// afterwards (what a container created later under the task's id gets);
// what it held stays readable, its mount options stay, and Release
// removes it.
func TestTmpfsOutputSeal(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "output")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	fs := runtime.TmpfsOutput{}
	if err := fs.Prepare(dir, task.Limits{OutputBytes: 64 << 10, OutputFiles: 4}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fs.Release(dir) })
	result := filepath.Join(dir, "result")
	if err := os.WriteFile(result, []byte("genuine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := fs.Seal(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(result, []byte("forged\n"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("a write after the seal: %v, want EROFS", err)
	}
	bind := filepath.Join(t.TempDir(), "bind")
	if err := os.Mkdir(bind, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dir, bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(bind, unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(bind, "result"), []byte("forged\n"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("a write through a read-write bind made after the seal: %v, want EROFS", err)
	}
	if got, err := os.ReadFile(result); err != nil || string(got) != "genuine\n" {
		t.Errorf("after the seal the result reads %q, %v", got, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	for _, f := range []int64{unix.ST_RDONLY, unix.ST_NOSUID, unix.ST_NODEV, unix.ST_NOEXEC} {
		if st.Flags&f == 0 {
			t.Errorf("sealed output's flags %#x lack %#x", st.Flags, f)
		}
	}
	if err := fs.Release(dir); err != nil {
		t.Fatal(err)
	}
}

// TestTmpfsOutputCapsAndReleases: the output tmpfs refuses writes past the
// task's byte limit (ENOSPC) and files past its file limit, and Release
// leaves nothing mounted, twice over.
func TestTmpfsOutputCapsAndReleases(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "output")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	fs := runtime.TmpfsOutput{}
	if err := fs.Prepare(dir, task.Limits{OutputBytes: 64 << 10, OutputFiles: 2}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fs.Release(dir) })
	// The task's keyed directory, as the Manager makes it: the files
	// count under it.
	files := filepath.Join(dir, "key")
	if err := os.Mkdir(files, 0o700); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(filepath.Join(files, "big"), make([]byte, 128<<10), 0o600)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("128 KiB into a 64 KiB output: %v, want ENOSPC", err)
	}
	_ = os.Remove(filepath.Join(files, "big"))
	var created int
	for i := range 4 {
		if err := os.WriteFile(filepath.Join(files, fmt.Sprint(i)), nil, 0o600); err != nil {
			break
		}
		created++
	}
	if created != 2 {
		t.Errorf("created %d files under a limit of 2", created)
	}
	for range 2 {
		if err := fs.Release(dir); err != nil {
			t.Fatal(err)
		}
		if n := mountsBelow(t, dir); n != 0 {
			t.Fatalf("%d mounts left after Release", n)
		}
	}
}

// TestTmpfsOutputReleaseUnderChurn: 64 tasks' output dirs prepared and
// released at once, over and over, beside a long mount table that changes
// under every read of it. Nothing may stay mounted, and every state dir
// must be removable.
func TestTmpfsOutputReleaseUnderChurn(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	const workers, rounds = 64, 20
	fs := runtime.TmpfsOutput{}
	// A host running 64 tasks has a long mount table (each task's root
	// overlay, its shm, its output): reads of it take many pages, and an
	// entry can be missed between two of them.
	ballast := filepath.Join(base, "ballast")
	for i := range 256 {
		dir := filepath.Join(ballast, fmt.Sprint(i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := fs.Prepare(dir, task.Limits{OutputBytes: 4096, OutputFiles: 1}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for i := range 256 {
			_ = fs.Release(filepath.Join(ballast, fmt.Sprint(i)))
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				dir := filepath.Join(base, fmt.Sprintf("t%d-%d", w, r), "output")
				if err := os.MkdirAll(dir, 0o700); err != nil {
					errs <- err
					return
				}
				if err := fs.Prepare(dir, task.Limits{OutputBytes: 1 << 20, OutputFiles: 16}); err != nil {
					errs <- err
					return
				}
				if err := fs.Release(dir); err != nil {
					errs <- err
					return
				}
				// The state dir's removal is what a leftover mount breaks.
				if err := os.RemoveAll(filepath.Dir(dir)); err != nil {
					errs <- fmt.Errorf("remove after release: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := mountsBelow(t, base) - mountsBelow(t, ballast); n != 0 {
		t.Errorf("%d output mounts left after %d prepare/release cycles", n, workers*rounds)
	}
}

// TestCollectRefusesAnUnsealableOutput: a file of an ended task's output
// held open for writing (by no process of the task's: they are gone)
// keeps the seal from taking; collection then refuses to hand anything
// over as the task's, and goes ahead once the writer is gone.
func TestCollectRefusesAnUnsealableOutput(t *testing.T) {
	m, f := tmpfsOutputManager(t)
	ctx := context.Background()
	if _, err := m.Spawn(ctx, job("held")); err != nil {
		t.Fatal(err)
	}
	writer, err := os.OpenFile(filepath.Join(runtime.OutputOf(m, "held"), "answer"), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	f.exit("held", 0)
	res, err := m.Wait(ctx, "held")
	if err != nil {
		t.Fatal(err)
	}
	dest := func() string { return filepath.Join(t.TempDir(), "out") }
	if err := m.CollectOutput(ctx, "held", dest(), &res); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("CollectOutput with a writer left: %v, want failed precondition", err)
	}
	if _, err := writer.WriteString("late\n"); err != nil {
		t.Fatal(err)
	}
	writer.Close()
	// The writer wrote after the task's end and is gone: the seal would
	// work now, but what it would seal is not the task's (review 27).
	if err := m.CollectOutput(ctx, "held", dest(), &res); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "when the task ended") {
		t.Fatalf("CollectOutput once the late writer is gone: %v, %+v, want failed precondition", err, res.OutputFiles)
	}
	// The Result's lists only (wait and inspect without a copy): the
	// Result, no file, and why (review 28).
	res.OutputFiles = nil
	if err := m.CollectOutput(ctx, "held", "", &res); err != nil || res.OutputFiles == nil || len(res.OutputFiles) != 0 ||
		len(res.OutputSkipped) != 1 || res.OutputSkipped[0].Path != "." || !strings.Contains(res.OutputSkipped[0].Reason, "when the task ended") {
		t.Errorf("the Result's lists of the refused output: %v, files %+v, skipped %+v", err, res.OutputFiles, res.OutputSkipped)
	}
	if _, err := m.Inspect(ctx, "held"); err != nil {
		t.Errorf("Inspect of the refused task: %v", err)
	}
	if err := m.Remove(ctx, "held", false); err != nil {
		t.Errorf("Remove of the refused task: %v", err)
	}
}

// TestCollectSealsAnUnsealedEnd: a task whose end was recorded without a
// seal (its supervisor killed before the seal; here a record without one)
// is sealed at its collection, and then collected.
func TestCollectSealsAnUnsealedEnd(t *testing.T) {
	m, f := tmpfsOutputManager(t)
	ctx := context.Background()
	if _, err := m.Spawn(ctx, job("plain")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(runtime.OutputOf(m, "plain"), "answer"), []byte("42\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.exit("plain", 0)
	res, err := m.Wait(ctx, "plain")
	if err != nil {
		t.Fatal(err)
	}
	// Undo the seal, as a record whose end was never sealed has it.
	dir := filepath.Dir(runtime.OutputOf(m, "plain"))
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		t.Fatal(err)
	}
	if err := m.CollectOutput(ctx, "plain", "", &res); err != nil || len(res.OutputFiles) != 1 || res.OutputFiles[0].Size != 3 {
		t.Fatalf("CollectOutput: %v, %+v", err, res.OutputFiles)
	}
	if err := os.WriteFile(filepath.Join(runtime.OutputOf(m, "plain"), "answer"), []byte("forged\n"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("a write after the collection: %v, want EROFS", err)
	}
}

// tmpfsOutputManager is a Manager over the fake backend with the real
// output tmpfs (root only).
func tmpfsOutputManager(t *testing.T) (*runtime.Manager, *fakeBackend) {
	t.Helper()
	needRoot(t)
	f := newFake()
	m, err := runtime.New(runtime.Config{Backend: f, StateDir: t.TempDir(), OutputFS: runtime.TmpfsOutput{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = m.CleanupOrphans(context.Background(), true) })
	return m, f
}
