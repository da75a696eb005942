package runtime_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

// finishingFake is a fakeBackend that can complete a task's logs without
// releasing it (runtime.LogFinisher), and whose Destroy can be held.
type finishingFake struct {
	*fakeBackend
	finishErr   error
	destroyErr  error
	finished    []string
	destroyGate chan string // if set, Destroy announces itself there and waits for a second send
	gateOnly    string      // if set, only Destroy of this id goes through the gate
}

func (f *finishingFake) FinishLogs(_ context.Context, id, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.finishErr != nil {
		return f.finishErr
	}
	f.finished = append(f.finished, id)
	return nil
}

func (f *finishingFake) Destroy(ctx context.Context, id string) error {
	if f.destroyGate != nil && (f.gateOnly == "" || f.gateOnly == id) {
		f.destroyGate <- id
		<-f.destroyGate
	}
	if err := f.fakeBackend.Destroy(ctx, id); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.destroyErr
}

func newReleasingManager(t *testing.T, f *finishingFake) *runtime.Manager {
	t.Helper()
	m, err := runtime.New(runtime.Config{Backend: f, StateDir: t.TempDir(), OutputFS: runtime.DirOutput{}, ReleaseInBackground: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = m.CleanupOrphans(context.Background(), true) })
	// Every task exits with 0 as soon as it runs.
	f.started = make(chan string)
	go func() {
		for id := range f.started {
			f.exit(id, 0)
		}
	}()
	t.Cleanup(func() { close(f.started) })
	return m
}

func TestRunReleasesInBackground(t *testing.T) {
	f := &finishingFake{fakeBackend: newFake(), destroyGate: make(chan string)}
	m := newReleasingManager(t, f)
	ctx := context.Background()
	type ran struct {
		err  error
		code int
	}
	returned := make(chan ran, 1)
	go func() {
		res, err := m.Run(ctx, job("bg"), runtime.RunOptions{})
		returned <- ran{err, res.ExitCode}
	}()
	// Run returns while the release is held inside Destroy.
	r := <-returned
	if r.err != nil || r.code != 0 {
		t.Fatalf("Run = exit %d, %v; want exit 0", r.code, r.err)
	}
	if id := <-f.destroyGate; id != "bg" {
		t.Fatalf("Destroy(%s), want bg", id)
	}
	if !slices.Contains(f.finished, "bg") {
		t.Error("Run returned without the backend completing the logs")
	}
	if _, err := os.Stat(runtime.TaskDir(m, "bg")); err != nil {
		t.Errorf("state dir gone before the release ran: %v", err)
	}
	// Everything that needs the task gone waits for the release.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := m.Drain(done); err == nil {
		t.Error("Drain returned with a release in flight")
	}
	if err := m.Cleanup(done, "bg"); err == nil {
		t.Error("Cleanup returned with the task's release in flight")
	}
	if _, err := m.Spawn(done, job("bg")); err == nil || !errors.Is(err, context.Canceled) {
		t.Errorf("Spawn of the id being released = %v, want to wait for the release", err)
	}
	f.destroyGate <- "bg"
	if err := m.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if _, err := os.Stat(runtime.TaskDir(m, "bg")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir left after Drain: %v", err)
	}
	if n := len(f.destroyed); n != 1 {
		t.Errorf("destroyed %v, want bg once", f.destroyed)
	}
}

func TestRunReleasesFirstWhenLogsCannotFinish(t *testing.T) {
	f := &finishingFake{fakeBackend: newFake(), finishErr: errors.New("no logger")}
	m := newReleasingManager(t, f)
	if _, err := m.Run(context.Background(), job("sync"), runtime.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	// No Drain: Run itself released the task.
	if !slices.Contains(f.destroyed, "sync") {
		t.Error("task not released when Run returned")
	}
	if _, err := os.Stat(runtime.TaskDir(m, "sync")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir left when Run returned: %v", err)
	}
}

func TestDrainReportsFailedReleasesOnce(t *testing.T) {
	f := &finishingFake{fakeBackend: newFake(), destroyErr: errors.New("daemon gone")}
	m := newReleasingManager(t, f)
	if _, err := m.Run(context.Background(), job("fails"), runtime.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	err := m.Drain(context.Background())
	if err == nil || !strings.Contains(err.Error(), "daemon gone") {
		t.Fatalf("Drain = %v, want the release's error", err)
	}
	if err := m.Drain(context.Background()); err != nil {
		t.Errorf("second Drain = %v, want nil (reported once)", err)
	}
	// What the failed release left, Cleanup removes.
	f.mu.Lock()
	f.destroyErr = nil
	f.mu.Unlock()
	if err := m.Cleanup(context.Background(), "fails"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(runtime.TaskDir(m, "fails")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir left: %v", err)
	}
}

func TestReleaseInBackgroundNeedsALogFinisher(t *testing.T) {
	// The plain fake cannot complete logs without a release: Run
	// releases before it returns, as without the option.
	f := newFake()
	m, err := runtime.New(runtime.Config{Backend: f, StateDir: t.TempDir(), OutputFS: runtime.DirOutput{}, ReleaseInBackground: true})
	if err != nil {
		t.Fatal(err)
	}
	f.started = make(chan string, 1)
	go func() { f.exit(<-f.started, 0) }()
	if _, err := m.Run(context.Background(), job("plain"), runtime.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(f.destroyed, "plain") {
		t.Error("task not released when Run returned")
	}
}

func TestBackgroundReleasesAreBounded(t *testing.T) {
	defer runtime.SetMaxBackgroundReleases(1)()
	f := &finishingFake{fakeBackend: newFake(), destroyGate: make(chan string), gateOnly: "first"}
	m := newReleasingManager(t, f)
	ctx := context.Background()
	if _, err := m.Run(ctx, job("first"), runtime.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	<-f.destroyGate // the first release is in flight, held
	// At the bound, Run releases its own task before it returns.
	if _, err := m.Run(ctx, job("second"), runtime.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	destroyed := slices.Clone(f.destroyed)
	f.mu.Unlock()
	if !slices.Equal(destroyed, []string{"second"}) {
		t.Errorf("destroyed %v when the second Run returned, want [second]", destroyed)
	}
	if _, err := os.Stat(runtime.TaskDir(m, "second")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("second task's state left when its Run returned: %v", err)
	}
	f.destroyGate <- "first"
	if err := m.Drain(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestBackgroundReleaseFreesGPUsFirst: the GPUs of a task whose release
// runs in the background are free when Run returns: the next task gets
// them while the first is still being released.
func TestBackgroundReleaseFreesGPUsFirst(t *testing.T) {
	f := &finishingFake{fakeBackend: newFake(), destroyGate: make(chan string), gateOnly: "first"}
	gpus := &fakeGPUs{}
	m, err := runtime.New(runtime.Config{Backend: f, StateDir: t.TempDir(), OutputFS: runtime.DirOutput{}, GPUs: gpus, ReleaseInBackground: true})
	if err != nil {
		t.Fatal(err)
	}
	f.started = make(chan string)
	go func() {
		for id := range f.started {
			f.exit(id, 0)
		}
	}()
	t.Cleanup(func() { close(f.started) })
	ctx := context.Background()
	withGPU := func(id string) task.Task { tk := job(id); tk.GPUs = "1"; return tk }
	if _, err := m.Run(ctx, withGPU("first"), runtime.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	<-f.destroyGate // the first task's release is in flight, held
	if got := gpus.held(); len(got) != 0 {
		t.Errorf("GPUs held %v after Run returned, want none", got)
	}
	// Both of the node's two GPUs, the first task's included.
	second := withGPU("second")
	second.GPUs = "2"
	if _, err := m.Run(ctx, second, runtime.RunOptions{}); err != nil {
		t.Errorf("the next task, on both GPUs: %v", err)
	}
	f.destroyGate <- "first"
	if err := m.Drain(ctx); err != nil {
		t.Fatal(err)
	}
}
