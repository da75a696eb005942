package runtime_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/stats"
	"github.com/nsn-run/nsn-run/task"
)

// fakeBackend is an in-memory Backend: tasks "run" until signalled. It lets
// the Manager's policy (timeouts, cleanup order, rollback) be tested without
// a daemon; the real backends have their own integration tests.
type fakeBackend struct {
	mu          sync.Mutex
	startErr    error
	waitErr     error
	honorTERM   bool
	running     map[string]bool
	exits       map[string]chan runtime.ExitStatus // kept after exit: Wait may come later
	stopped     map[string]bool
	signals     []string
	destroyed   []string
	cpu         float64
	gpuMemory   uint64              // reported by every sample
	samplesGPU  bool                // SamplesGPUUsage: whether a GPU memory limit is admitted
	scope       string              // Scope: where its tasks live
	gpus        map[string][]string // the GPUDevices each Start was given
	stdout      string              // what each task "writes" to stdout at start
	outputFile  string              // if set, each task "writes" this file to /output at start
	started     chan string         // if set, gets each task's id once it runs
	statsHang   chan struct{}       // if set, Stats announces itself there and never answers
	startGate   chan string         // if set, Start announces itself there and waits for a second send
	destroyGate chan string         // if set, Destroy announces itself there and waits until destroyGo is closed
	destroyGo   chan struct{}
	labels      map[string]map[string]string // each task's container labels, as Start set them
	unlabelled  bool                         // Start labels as nsn-run did before LabelStateDir
	stopErrs    []error                      // what the next Stops return, one each, before they work
	termErr     error                        // if set, what every SIGTERM returns
	termTries   int                          // SIGTERMs tried
	exitEarly   time.Duration                // if set, SIGKILL's exit says the task exited this long after its start
	created     map[string]time.Time         // when each task's container was made
	startLost   bool                         // Start runs the task and fails unavailable: its daemon's answer never came
}

func newFake() *fakeBackend {
	return &fakeBackend{running: map[string]bool{}, exits: map[string]chan runtime.ExitStatus{}, stopped: map[string]bool{},
		labels: map[string]map[string]string{}, created: map[string]time.Time{}}
}

func (f *fakeBackend) Name() string { return "fake" }

func (f *fakeBackend) SamplesGPUUsage() bool { return f.samplesGPU }

func (f *fakeBackend) Scope() string { return f.scope }

// Preview is the request itself, as JSON.
func (f *fakeBackend) Preview(_ context.Context, req runtime.StartRequest) ([]byte, error) {
	return json.Marshal(req)
}

func (f *fakeBackend) Start(_ context.Context, req runtime.StartRequest) (runtime.Handle, error) {
	if f.startGate != nil {
		f.startGate <- req.Task.ID // in Start
		<-f.startGate              // until the test lets it go on
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.startErr != nil {
		return runtime.Handle{}, f.startErr
	}
	if _, err := os.Stat(req.OutputDir); err != nil {
		return runtime.Handle{}, fmt.Errorf("output dir not prepared: %w", err)
	}
	if f.gpus == nil {
		f.gpus = map[string][]string{}
	}
	f.gpus[req.Task.ID] = req.GPUDevices
	if f.stdout != "" {
		if err := os.WriteFile(filepath.Join(req.StateDir, logs.StdoutFile), []byte(f.stdout), 0o600); err != nil {
			return runtime.Handle{}, err
		}
	}
	if f.outputFile != "" {
		if err := os.WriteFile(filepath.Join(req.OutputDir, f.outputFile), []byte("42\n"), 0o644); err != nil {
			return runtime.Handle{}, err
		}
	}
	f.running[req.Task.ID] = true
	f.exits[req.Task.ID] = make(chan runtime.ExitStatus, 1)
	f.labels[req.Task.ID] = runtime.Labels(req.Task.ID, req.Owner)
	f.created[req.Task.ID] = time.Now()
	if f.unlabelled {
		f.labels[req.Task.ID] = runtime.Labels(req.Task.ID, runtime.Owner{})
	}
	if f.started != nil {
		f.started <- req.Task.ID
	}
	if f.startLost {
		return runtime.Handle{}, fmt.Errorf("%w: the daemon did not answer the start", errdefs.ErrUnavailable)
	}
	return runtime.Handle{Version: runtime.HandleVersion, Backend: "fake", ID: req.Task.ID, Image: req.Task.Image, StartedAt: time.Now()}, nil
}

func (f *fakeBackend) exit(id string, code int) { f.exitAt(id, code, time.Now()) }

// exitAt ends task id with code, its exit status saying it exited at at.
func (f *fakeBackend) exitAt(id string, code int, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running[id] {
		f.exits[id] <- runtime.ExitStatus{Code: code, ExitedAt: at}
		delete(f.running, id)
		f.stopped[id] = true
	}
}

func (f *fakeBackend) Wait(ctx context.Context, id string) (runtime.ExitStatus, error) {
	f.mu.Lock()
	ch, err := f.exits[id], f.waitErr
	f.mu.Unlock()
	if err != nil {
		return runtime.ExitStatus{}, err
	}
	if ch == nil {
		return runtime.ExitStatus{}, fmt.Errorf("task %s: %w", id, errdefs.ErrNotFound)
	}
	select {
	case st := <-ch:
		return st, nil
	case <-ctx.Done():
		return runtime.ExitStatus{}, ctx.Err()
	}
}

func (f *fakeBackend) Stop(_ context.Context, id string, sig syscall.Signal, all bool) error {
	f.mu.Lock()
	if sig == syscall.SIGTERM {
		f.termTries++
		if f.termErr != nil {
			f.mu.Unlock()
			return f.termErr
		}
	}
	if len(f.stopErrs) > 0 {
		err := f.stopErrs[0]
		f.stopErrs = f.stopErrs[1:]
		f.mu.Unlock()
		return err
	}
	f.signals = append(f.signals, fmt.Sprintf("%s all=%v", sig, all))
	honor := f.honorTERM
	f.mu.Unlock()
	early := f.exitEarly
	switch {
	case sig == syscall.SIGKILL && all && early > 0:
		f.mu.Lock()
		if f.running[id] {
			f.exits[id] <- runtime.ExitStatus{Code: 0, ExitedAt: f.created[id].Add(early)}
			delete(f.running, id)
			f.stopped[id] = true
		}
		f.mu.Unlock()
	case sig == syscall.SIGKILL && all:
		f.exit(id, 137)
	case sig == syscall.SIGTERM && honor:
		f.exit(id, 143)
	}
	return nil
}

func (f *fakeBackend) Destroy(_ context.Context, id string) error {
	f.mu.Lock()
	gate, letGo := f.destroyGate, f.destroyGo
	f.mu.Unlock()
	if gate != nil {
		gate <- id // in Destroy
		<-letGo    // until the test lets it go on
	}
	f.exit(id, 137)
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.stopped, id)
	delete(f.exits, id)
	f.destroyed = append(f.destroyed, id)
	return nil
}

func (f *fakeBackend) Inspect(_ context.Context, id string) (runtime.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.running[id]:
		return runtime.Status{ID: id, Image: "busybox", State: runtime.StateRunning, CreatedAt: f.created[id], Labels: f.labels[id]}, nil
	case f.stopped[id]:
		return runtime.Status{ID: id, Image: "busybox", State: runtime.StateStopped, CreatedAt: f.created[id], Labels: f.labels[id]}, nil
	}
	return runtime.Status{}, fmt.Errorf("task %s: %w", id, errdefs.ErrNotFound)
}

func (f *fakeBackend) List(ctx context.Context) ([]runtime.Status, error) {
	f.mu.Lock()
	var ids []string
	for id := range f.running {
		ids = append(ids, id)
	}
	for id := range f.stopped {
		ids = append(ids, id)
	}
	f.mu.Unlock()
	var out []runtime.Status
	for _, id := range ids {
		st, err := f.Inspect(ctx, id)
		if err != nil {
			continue // removed meanwhile, as the real backends skip it
		}
		out = append(out, st)
	}
	return out, nil
}

func (f *fakeBackend) Stats(ctx context.Context, id string) (stats.Sample, error) {
	if f.statsHang != nil {
		// A daemon that does not answer: only the caller giving up ends it.
		select {
		case f.statsHang <- struct{}{}:
		default: // announced already
		}
		<-ctx.Done()
		return stats.Sample{}, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running[id] || f.stopped[id] {
		f.cpu += 0.5 // every sample sees half a CPU second more
		return stats.Sample{Time: time.Now(), MemoryCurrentBytes: 1 << 20, CPUUsageSeconds: f.cpu, PidsCurrent: 3, GPUMemoryBytes: f.gpuMemory}, nil
	}
	return stats.Sample{}, fmt.Errorf("task %s: %w", id, errdefs.ErrNotFound)
}

func (f *fakeBackend) Recover(context.Context, runtime.Handle) error { return nil }

func newManager(t *testing.T, f *fakeBackend) *runtime.Manager {
	t.Helper()
	m, err := runtime.New(runtime.Config{Backend: f, StateDir: t.TempDir(), OutputFS: runtime.DirOutput{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = m.CleanupOrphans(context.Background(), true) })
	return m
}

func job(id string) task.Task {
	return task.Task{ID: id, Image: "busybox", Command: []string{"true"}}
}

func TestSpawnFailureRemovesStateDir(t *testing.T) {
	f := newFake()
	f.startErr = fmt.Errorf("image busybox: %w", errdefs.ErrNotFound)
	m := newManager(t, f)
	_, err := m.Spawn(context.Background(), job("a"))
	if !errdefs.IsNotFound(err) {
		t.Fatalf("Spawn = %v, want the backend's NotFound", err)
	}
	if _, err := os.Stat(runtime.TaskDir(m, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir left after a failed spawn: %v", err)
	}
}

// TestFailedRunResult: a Run that fails before its task has a Result of
// its own returns reason failed with the exit code `nsn-run run` exits
// with (127 for a missing command, 125 for the rest) and the error: with
// exit code 0, a node agent that read the Result alone took the failure
// for a success (a node-core review).
func TestFailedRunResult(t *testing.T) {
	f := newFake()
	m := newManager(t, f)
	ctx := context.Background()
	for _, c := range []struct {
		startErr error
		tk       task.Task
		code     int
	}{
		{&runtime.CommandError{Command: "/missing", Image: "busybox", NotFound: true}, job("missing-command"), 127},
		{&runtime.CommandError{Command: "/etc/passwd", Image: "busybox"}, job("not-executable"), 126},
		{fmt.Errorf("image busybox: %w", errdefs.ErrNotFound), job("unknown-image"), runtime.ExitFailed},
		{nil, task.Task{ID: "../bad", Image: "busybox", Command: []string{"true"}}, runtime.ExitFailed},
	} {
		f.startErr = c.startErr
		res, err := m.Run(ctx, c.tk, runtime.RunOptions{})
		if err == nil || res.Reason != task.ReasonFailed || res.ExitCode != c.code || res.Error != err.Error() || runtime.ExitCode(err) != c.code {
			t.Errorf("run %s: %+v, %v; want failed %d with the error", c.tk.ID, res, err, c.code)
		}
	}
	f.startErr = nil
}

// TestLeaveRunningOnCancel: a Wait or Run whose context ends stops the
// task, unless the context says to leave it (an agent shutting down for
// an upgrade, a node-core review: every task was killed): then they
// return the context's error, the task runs on, and a later Wait gets its
// Result.
func TestLeaveRunningOnCancel(t *testing.T) {
	f := newFake()
	m := newManager(t, f)
	if _, err := m.Spawn(context.Background(), job("upgrade")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(runtime.LeaveRunningOnCancel(context.Background()))
	cancel()
	if _, err := m.Wait(ctx, "upgrade"); !errors.Is(err, context.Canceled) {
		t.Errorf("wait with its context ended: %v; want context.Canceled", err)
	}
	runCtx, cancelRun := context.WithCancel(runtime.LeaveRunningOnCancel(context.Background()))
	started := make(chan string, 1)
	f.started = started
	ran := make(chan error, 1)
	go func() {
		_, err := m.Run(runCtx, job("upgrade-run"), runtime.RunOptions{})
		ran <- err
	}()
	<-started
	cancelRun()
	if err := <-ran; !errors.Is(err, context.Canceled) {
		t.Errorf("run with its context ended: %v; want context.Canceled", err)
	}
	f.mu.Lock()
	running := f.running["upgrade"] && f.running["upgrade-run"]
	signals := slices.Clone(f.signals)
	f.mu.Unlock()
	if !running || len(signals) != 0 {
		t.Fatalf("after the waits gave up: both running %v, signals %v; want both running, none signalled", running, signals)
	}
	for _, id := range []string{"upgrade", "upgrade-run"} {
		f.exit(id, 4)
		if res, err := m.Wait(context.Background(), id); err != nil || res.ExitCode != 4 {
			t.Errorf("a later wait on %s: %+v, %v; want exit 4", id, res, err)
		}
	}
}

func TestSpawnRejectsBadInputAndDuplicates(t *testing.T) {
	f := newFake()
	m := newManager(t, f)
	if _, err := m.Spawn(context.Background(), task.Task{ID: "../x", Image: "busybox", Command: []string{"true"}}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad id: %v", err)
	}
	if _, err := m.Spawn(context.Background(), job("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Spawn(context.Background(), job("a")); !errdefs.IsAlreadyExists(err) {
		t.Errorf("duplicate: %v", err)
	}
	if len(f.running) != 1 {
		t.Errorf("backend has %d tasks, want 1", len(f.running))
	}
}

// TestSpawnRefusesRuntimesNotAllowed: a task naming a runtime the operator
// did not allow is refused as bad input before anything is created; by
// default only runc's shim is allowed, and an operator's list replaces it.
func TestSpawnRefusesRuntimesNotAllowed(t *testing.T) {
	ctx := context.Background()
	runsc := "io.containerd.runsc.v1"
	for _, c := range []struct {
		name    string
		allowed []string
		runtime string
		ok      bool
	}{
		{"default runtime by default", nil, "", true},
		{"runc shim named by default", nil, task.DefaultRuntime, true},
		{"another by default", nil, runsc, false},
		{"nvidia by default", nil, "nvidia", false},
		{"another allowed", []string{task.DefaultRuntime, runsc}, runsc, true},
		{"default not in the operator's list", []string{runsc}, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFake()
			m, err := runtime.New(runtime.Config{Backend: f, StateDir: t.TempDir(), OutputFS: runtime.DirOutput{}, AllowedRuntimes: c.allowed})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _, _ = m.CleanupOrphans(ctx, true) })
			tk := job("rt")
			tk.Runtime = c.runtime
			_, err = m.Spawn(ctx, tk)
			if c.ok {
				if err != nil {
					t.Fatalf("Spawn = %v, want it started", err)
				}
				return
			}
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "is not allowed") || strings.Contains(err.Error(), "\n") {
				t.Errorf("Spawn = %v, want one line of invalid argument: runtime not allowed", err)
			}
			if len(f.running) != 0 {
				t.Errorf("the backend started %v", f.running)
			}
			if _, err := os.Stat(runtime.TaskDir(m, "rt")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("state dir created for a refused task: %v", err)
			}
		})
	}
	if _, err := runtime.New(runtime.Config{Backend: newFake(), StateDir: t.TempDir(), AllowedRuntimes: []string{"/usr/bin/evil"}}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("allowing a path as a runtime: %v", err)
	}
}

func TestWaitTimeoutTermsThenKillsAll(t *testing.T) {
	f := newFake() // the task ignores SIGTERM
	m := newManager(t, f)
	tk := job("slow")
	tk.Limits.Timeout = time.Second
	tk.Limits.Grace = time.Millisecond
	if _, err := m.Spawn(context.Background(), tk); err != nil {
		t.Fatal(err)
	}
	res, err := m.Wait(context.Background(), "slow")
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != task.ReasonTimedOut || res.ExitCode != runtime.ExitTimedOut {
		t.Errorf("result = %s %d, want timed_out 124", res.Reason, res.ExitCode)
	}
	if want := []string{"terminated all=false", "killed all=true"}; !slices.Equal(f.signals, want) {
		t.Errorf("signals = %v, want %v", f.signals, want)
	}
	if !slices.Contains(f.destroyed, "slow") {
		t.Error("the task was not released after it exited")
	}
	again, err := m.Wait(context.Background(), "slow")
	if err != nil || again.Reason != res.Reason || again.ExitCode != res.ExitCode {
		t.Errorf("second Wait = %+v, %v; want the recorded result", again, err)
	}
}

// TestDeadlineOutlastsAnUnreachableDaemon: the daemon cannot be reached
// when the deadline comes (an outside review stopped containerd for 0.3 s
// then, and the task ran on with nobody watching it, its Run exiting
// 125): the SIGTERM and the SIGKILL are tried again until they are
// delivered, and the Result says timed_out. An error a retry cannot cure
// still ends the wait at once.
func TestDeadlineOutlastsAnUnreachableDaemon(t *testing.T) {
	f := newFake() // the task ignores SIGTERM
	unreachable := fmt.Errorf("connection refused: %w", errdefs.ErrUnavailable)
	f.stopErrs = []error{unreachable, unreachable, unreachable, unreachable}
	m := newManager(t, f)
	tk := job("late")
	// The four retries (10, 20, 40 and 80 ms apart) fit in the grace,
	// which starts with the first try.
	tk.Limits.Timeout, tk.Limits.Grace = time.Second, time.Second
	var retries atomic.Int32
	ctx := runtime.WithPhaseObserver(context.Background(), func(phase string, _ time.Duration) {
		if phase == "wait/stop-retry" {
			retries.Add(1)
		}
	})
	if _, err := m.Spawn(ctx, tk); err != nil {
		t.Fatal(err)
	}
	res, err := m.Wait(ctx, "late")
	if err != nil {
		t.Fatalf("wait with the daemon unreachable at the deadline: %v", err)
	}
	if res.Reason != task.ReasonTimedOut || res.ExitCode != runtime.ExitTimedOut {
		t.Errorf("result = %s %d, want timed_out 124", res.Reason, res.ExitCode)
	}
	if want := []string{"terminated all=false", "killed all=true"}; !slices.Equal(f.signals, want) {
		t.Errorf("signals delivered = %v, want %v", f.signals, want)
	}
	if n := retries.Load(); n != 4 {
		t.Errorf("%d retries reported, want 4", n)
	}

	f.stopErrs = []error{errors.New("the runtime refused the signal")}
	tk.ID = "refused"
	if _, err := m.Spawn(ctx, tk); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Wait(ctx, "refused"); err == nil || !strings.Contains(err.Error(), "the runtime refused the signal") {
		t.Errorf("wait after a signal refused for good: %v", err)
	}
	_ = m.Remove(ctx, "refused", true)
}

// TestGraceHoldsWithTheDaemonDown: the daemon cannot take the deadline's
// SIGTERM (down for longer than the task has left). The grace starts with
// the first try, and SIGKILL, which the containerd backend delivers
// through the task's cgroup without its daemon, goes when it ends. Until
// 2026-11-30 the SIGTERM was tried for stopRetryFor (two minutes) before
// the grace began: here an hour, which the test's bound catches.
func TestGraceHoldsWithTheDaemonDown(t *testing.T) {
	defer runtime.SetStopRetryFor(time.Hour)()
	f := newFake() // the task ignores SIGTERM
	f.termErr = fmt.Errorf("connection refused: %w", errdefs.ErrUnavailable)
	m := newManager(t, f)
	tk := job("down")
	tk.Limits.Timeout, tk.Limits.Grace = time.Second, 50*time.Millisecond
	ctx := context.Background()
	if _, err := m.Spawn(ctx, tk); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var res task.Result
	go func() {
		var err error
		res, err = m.Wait(ctx, "down")
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("no SIGKILL a minute after the deadline: the SIGTERM's retries held it back")
	}
	if res.Reason != task.ReasonTimedOut || res.ExitCode != runtime.ExitTimedOut {
		t.Errorf("result = %s %d, want timed_out 124", res.Reason, res.ExitCode)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if want := []string{"killed all=true"}; !slices.Equal(f.signals, want) {
		t.Errorf("signals delivered = %v, want %v", f.signals, want)
	}
	// Tried at 0, 10, 30 and 50 ms of a 50 ms grace at most; a loaded
	// machine tries fewer times, never more.
	if f.termTries < 1 || f.termTries > 4 {
		t.Errorf("SIGTERM tried %d times in a 50 ms grace, want 1 to 4", f.termTries)
	}
}

// TestExitBeforeTheDeadlineIsNotATimeout: the task exited 0 before its
// deadline, but the daemon, down, could not say so until after it: the
// deadline's kill finds it gone, and the exit that then comes says when it
// exited. An outside review saw such a task reported timed_out 124.
func TestExitBeforeTheDeadlineIsNotATimeout(t *testing.T) {
	f := newFake() // the task ignores SIGTERM
	f.exitEarly = 100 * time.Millisecond
	m := newManager(t, f)
	tk := job("early")
	tk.Limits.Timeout, tk.Limits.Grace = time.Second, 10*time.Millisecond
	ctx := context.Background()
	if _, err := m.Spawn(ctx, tk); err != nil {
		t.Fatal(err)
	}
	res, err := m.Wait(ctx, "early")
	if err != nil || res.Reason != task.ReasonExited || res.ExitCode != 0 {
		t.Errorf("wait: %s %d, %v; want exited 0", res.Reason, res.ExitCode, err)
	}
}

// TestExitPastTheDeadlineIsATimeout: an exit at or past the task's
// deadline is reported timed_out 124 whichever the Wait sees first, the
// exit or its own deadline timer. A Wait that starts with both there (the
// run that killed the task at its deadline gave up, its daemon hung; this
// Wait came once the daemon answered) took the exit at random: "exited
// 137" in CI (TestRunWithContainerdHung). Here the exit, stamped past the
// deadline, is there before the timer fires: the order CI's Wait met.
func TestExitPastTheDeadlineIsATimeout(t *testing.T) {
	f := newFake()
	m := newManager(t, f)
	ctx := context.Background()
	tk := job("past")
	tk.Limits.Timeout = time.Hour
	h, err := m.Spawn(ctx, tk)
	if err != nil {
		t.Fatal(err)
	}
	f.exitAt("past", 137, h.StartedAt.Add(tk.Limits.Timeout+time.Second))
	res, err := m.Wait(ctx, "past")
	if err != nil || res.Reason != task.ReasonTimedOut || res.ExitCode != runtime.ExitTimedOut {
		t.Fatalf("wait: %s %d, %v; want timed_out 124", res.Reason, res.ExitCode, err)
	}
}

// dropRecordedHandle rewrites task id's record as it was written before
// the backend's Start returned: without its handle (a spawner that died
// in between).
func dropRecordedHandle(t *testing.T, m *runtime.Manager, id string) {
	t.Helper()
	path := filepath.Join(runtime.TaskDir(m, id), "task.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]json.RawMessage
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	delete(rec, "handle")
	if b, err = json.Marshal(rec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestWaitAdoptsAnUnrecordedHandle: the spawner died after the backend
// started the task but before it recorded the handle; the Wait that ends
// it (gc's, for an overdue task) records the Result with the task's image
// and start from the backend. An outside review's gc recorded "image": "",
// a start in year 1 and a duration of 292 years.
func TestWaitAdoptsAnUnrecordedHandle(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	m := newManager(t, f)
	if _, err := m.Spawn(ctx, job("orphan")); err != nil {
		t.Fatal(err)
	}
	dropRecordedHandle(t, m, "orphan")
	f.exit("orphan", 0)
	res, err := m.Wait(ctx, "orphan")
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	created := f.created["orphan"]
	f.mu.Unlock()
	if res.Image != "busybox" || !res.StartedAt.Equal(created.UTC()) || res.DurationMS < 0 || res.DurationMS > time.Hour.Milliseconds() {
		t.Errorf("Result of a task without a recorded handle: image %q, started %s (container made %s), %d ms", res.Image, res.StartedAt, created, res.DurationMS)
	}
}

// TestWaitReportsALostExit: the backend finds the task gone without its
// exit status (containerd 2.x, restarted after the task exited while it
// was down, removes it as a leaked shim's; before, the wait failed with
// "no running task found", and run exited 125 with the task's logs and
// output deleted). The Result says failed, 125, and why; the logs are
// still read.
func TestWaitReportsALostExit(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	f.stdout = "bye\n"
	f.waitErr = fmt.Errorf("task lost: no running task found: %w", errdefs.ErrNotFound)
	m := newManager(t, f)
	res, err := m.Run(ctx, job("lost"), runtime.RunOptions{})
	if err != nil {
		t.Fatalf("run of a task whose exit was lost: %v", err)
	}
	if res.Reason != task.ReasonFailed || res.ExitCode != runtime.ExitLost || !strings.Contains(res.Error, "exit status was lost") || res.Stdout != "bye\n" {
		t.Errorf("Result = %s %d error %q stdout %q; want failed 125, why, and the logs", res.Reason, res.ExitCode, res.Error, res.Stdout)
	}
}

// TestStateDirAdoptsOnlyWhatIsItsOwn: New makes a new or empty directory a
// state dir, and refuses, changing nothing, a directory with other
// content or another user's (a sixteenth review's `--state-dir / ps`
// made the host's / mode 0700 and wrote /id and /tasks; an operator's
// project or home is the same mistake).
func TestStateDirAdoptsOnlyWhatIsItsOwn(t *testing.T) {
	open := func(dir string) error {
		_, err := runtime.New(runtime.Config{Backend: newFake(), StateDir: dir, OutputFS: runtime.DirOutput{}})
		return err
	}
	project := t.TempDir()
	if err := os.Chmod(project, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(project, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := open(project); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `other content ("notes.txt")`) {
		t.Errorf("a directory with other content: %v; want refused", err)
	}
	if info, err := os.Stat(project); err != nil || info.Mode().Perm() != 0o755 {
		t.Errorf("the refused directory's mode is now %v (%v), was 0755", info.Mode().Perm(), err)
	}
	if entries, _ := os.ReadDir(project); len(entries) != 1 {
		t.Errorf("the refused directory now holds %v", entries)
	}
	if err := open(filepath.Join(project, "notes.txt")); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a file: %v; want refused", err)
	}

	theirs := t.TempDir()
	if err := os.Chown(theirs, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := open(theirs); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Errorf("another user's empty directory: %v; want refused", err)
	}
	// Through another user's link to an empty root-owned directory.
	target, link := t.TempDir(), filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(link, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := open(link); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "symlink that uid 65534 owns") {
		t.Errorf("a state dir through another user's link: %v; want refused", err)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Errorf("the link's target now holds %v", entries)
	}

	empty := t.TempDir()
	if err := os.Chmod(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := open(empty); err != nil {
		t.Fatalf("an empty directory: %v", err)
	}
	if info, err := os.Stat(empty); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("the adopted directory's mode is %v (%v), want 0700", info.Mode().Perm(), err)
	}
	if err := open(empty); err != nil {
		t.Errorf("the state dir opened again: %v", err)
	}
	if err := open(filepath.Join(t.TempDir(), "new", "state")); err != nil {
		t.Errorf("a new directory: %v", err)
	}
}

// TestPlantedStateDirAboveIsIgnored: a directory another user can write
// (as /tmp) that they made look like a state dir (id file and tasks
// directory) does not make the state dirs under it "inside" one: a
// sixteenth review locked every state dir under a 1777 directory out so.
func TestPlantedStateDirAboveIsIgnored(t *testing.T) {
	shared := t.TempDir()
	if err := os.Chmod(shared, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(shared, "state")
	if _, err := runtime.New(runtime.Config{Backend: newFake(), StateDir: state, OutputFS: runtime.DirOutput{}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(shared, "id"), []byte("0123456789abcdef0123456789abcdef 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(shared, "tasks"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"id", "tasks"} {
		if err := os.Chown(filepath.Join(shared, p), 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := runtime.New(runtime.Config{Backend: newFake(), StateDir: state, OutputFS: runtime.DirOutput{}}); err != nil {
		t.Errorf("the state dir under a planted one: %v; want it opened", err)
	}
}

// TestNestedStateDirRefused: a state dir inside another's is refused, and
// not made: the outer one's gc takes what lies in its tasks directory for
// its own (an outside review's nested state dir lost a running task's
// record and logs to it). Its id is made once and kept.
func TestNestedStateDirRefused(t *testing.T) {
	outer := t.TempDir()
	m, err := runtime.New(runtime.Config{Backend: newFake(), StateDir: outer, OutputFS: runtime.DirOutput{}})
	if err != nil {
		t.Fatal(err)
	}
	inner := filepath.Join(outer, "tasks", "y")
	if _, err := runtime.New(runtime.Config{Backend: newFake(), StateDir: inner, OutputFS: runtime.DirOutput{}}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "lies inside the state dir "+outer) {
		t.Errorf("a state dir inside another: %v; want refused", err)
	}
	if _, err := os.Stat(inner); !os.IsNotExist(err) {
		t.Errorf("the refused state dir was made: %v", err)
	}
	again, err := runtime.New(runtime.Config{Backend: newFake(), StateDir: outer, OutputFS: runtime.DirOutput{}})
	if err != nil || again.Owner() != m.Owner() || len(m.Owner().ID) != 32 {
		t.Errorf("owner of the state dir opened again: %+v, %v; first %+v", again.Owner(), err, m.Owner())
	}
}

// TestStateDirIdentity: an outside review's third round on the state
// dir's id. A copy of a state dir (cp -a) is refused until its id file is
// removed (it had been the original's owner, and its gc --force killed the
// original's task); a state dir that lost its id file, whose records carry
// the id, is refused with the id to restore (it had been silently given a
// new one, and its running task was out of its reach); an outer state dir
// made around an existing one is refused (its gc deleted the inner one's
// records); and the id file is read only as a small regular file (a fifo
// there hung the CLI, /dev/zero grew it to 1.6 GB, a symlink adopted
// another's id).
func TestStateDirIdentity(t *testing.T) {
	ctx := context.Background()
	open := func(dir string) (*runtime.Manager, error) {
		return runtime.New(runtime.Config{Backend: newFake(), StateDir: dir, OutputFS: runtime.DirOutput{}})
	}
	root := t.TempDir()
	orig := filepath.Join(root, "orig")
	m, err := open(orig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Spawn(ctx, job("kept")); err != nil {
		t.Fatal(err)
	}

	cp := filepath.Join(root, "copy")
	if out, err := exec.Command("cp", "-a", orig, cp).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v: %s", err, out)
	}
	if _, err := open(cp); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "made for another directory") {
		t.Errorf("a copy of a state dir: %v; want refused as a copy", err)
	}

	lost := filepath.Join(root, "lost")
	if err := os.Rename(cp, lost); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(lost, "id")); err != nil {
		t.Fatal(err)
	}
	if _, err := open(lost); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "lost its id file") || !strings.Contains(err.Error(), m.Owner().ID) {
		t.Errorf("a state dir without its id file, with records: %v; want refused naming the id %s", err, m.Owner().ID)
	}
	if _, err := os.Stat(filepath.Join(lost, "id")); !os.IsNotExist(err) {
		t.Errorf("an id was made for the state dir that lost its own: %v", err)
	}

	outer := filepath.Join(root, "outer")
	if _, err := open(filepath.Join(outer, "tasks", "inner")); err != nil {
		t.Fatal(err)
	}
	if _, err := open(outer); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "holds the state dir") {
		t.Errorf("a state dir around an existing one: %v; want refused", err)
	}

	for name, mk := range map[string]func(path string) error{
		"fifo":    func(p string) error { return unix.Mkfifo(p, 0o600) },
		"symlink": func(p string) error { return os.Symlink(filepath.Join(orig, "id"), p) },
		"huge":    func(p string) error { return os.WriteFile(p, bytes.Repeat([]byte("a"), 1<<20), 0o600) },
	} {
		dir := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Join(dir, "tasks"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := mk(filepath.Join(dir, "id")); err != nil {
			t.Fatal(err)
		}
		// Refused as not nsn-run's own entry (a fifo or a link is no
		// id file it makes), or, for the huge one, as no id.
		if _, err := open(dir); !errdefs.IsFailedPrecondition(err) && !errdefs.IsInvalidArgument(err) {
			t.Errorf("an id file that is a %s: %v; want refused", name, err)
		}
	}
}

// TestSlowSamplesNeverDelayEnforcement: a backend whose stats call never
// answers (dockerd takes up to a second) must not hold up the deadline or
// cancellation. Before samples came from their own goroutine, Wait sat in
// the stats call and the task outlived its deadline.
func TestSlowSamplesNeverDelayEnforcement(t *testing.T) {
	for _, cancel := range []bool{false, true} {
		f := newFake() // the task ignores SIGTERM
		f.statsHang = make(chan struct{}, 1)
		m := newManager(t, f)
		tk := job(fmt.Sprintf("hang-%v", cancel))
		tk.Limits.Timeout = time.Hour
		if !cancel {
			tk.Limits.Timeout = time.Second // the shortest a task may have
		}
		tk.Limits.Grace = time.Millisecond
		if _, err := m.Spawn(context.Background(), tk); err != nil {
			t.Fatal(err)
		}
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan task.Result, 1)
		go func() {
			res, err := m.Wait(ctx, tk.ID)
			if err != nil {
				t.Error(err)
			}
			done <- res
		}()
		<-f.statsHang // Wait is inside a stats call that will not return
		if cancel {
			stop()
		}
		select {
		case res := <-done:
			want := task.ReasonTimedOut
			if cancel {
				want = task.ReasonKilled
			}
			if res.Reason != want {
				t.Errorf("reason %s, want %s", res.Reason, want)
			}
		case <-time.After(time.Minute): // a hang guard, not a timing check
			t.Fatalf("cancel=%v: Wait is stuck behind a stats call", cancel)
		}
		stop()
	}
}

func TestWaitCancelStopsWithinGrace(t *testing.T) {
	f := newFake()
	f.honorTERM = true
	m := newManager(t, f)
	if _, err := m.Spawn(context.Background(), job("c")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := m.Wait(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != task.ReasonKilled || res.ExitCode != 143 || len(f.signals) != 1 {
		t.Errorf("result %s %d signals %v; want killed 143 after SIGTERM alone", res.Reason, res.ExitCode, f.signals)
	}
}

// TestKillIsReportedAsKilled: a task ended by Kill's SIGKILL (nsn-run
// kill) has reason killed; one that ends with 137 on its own (it killed
// itself) has reason exited. An outside review's `nsn-run kill` was
// recorded as exited 137.
func TestKillIsReportedAsKilled(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	m := newManager(t, f)
	for _, id := range []string{"killed", "self"} {
		if _, err := m.Spawn(ctx, job(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Kill(ctx, "killed", syscall.SIGKILL, true); err != nil {
		t.Fatal(err)
	}
	f.exit("self", 137)
	for id, want := range map[string]task.Reason{"killed": task.ReasonKilled, "self": task.ReasonExited} {
		res, err := m.Wait(ctx, id)
		if err != nil || res.Reason != want || res.ExitCode != 137 {
			t.Errorf("%s: %s %d, %v; want %s 137", id, res.Reason, res.ExitCode, err, want)
		}
	}
}

func TestRunCleansUpWhenWaitFails(t *testing.T) {
	f := newFake()
	f.waitErr = errors.New("shim died")
	m := newManager(t, f)
	res, err := m.Run(context.Background(), job("w"), runtime.RunOptions{})
	if err == nil || res.Reason != task.ReasonFailed {
		t.Fatalf("Run = %+v, %v; want a failed result", res, err)
	}
	if !slices.Contains(f.destroyed, "w") {
		t.Error("backend objects not destroyed")
	}
	if _, err := os.Stat(runtime.TaskDir(m, "w")); !errors.Is(err, os.ErrNotExist) {
		t.Error("state dir not removed")
	}
}

func TestCleanupOrphans(t *testing.T) {
	f := newFake()
	m := newManager(t, f)
	for _, id := range []string{"live", "dead"} {
		if _, err := m.Spawn(context.Background(), job(id)); err != nil {
			t.Fatal(err)
		}
	}
	f.exit("dead", 0)
	if err := os.Mkdir(runtime.TaskDir(m, "stray"), 0o700); err != nil {
		t.Fatal(err)
	}
	removed, err := m.CleanupOrphans(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if want := []string{"state stray", "task dead (stopped)"}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	if st, err := m.Inspect(context.Background(), "live"); err != nil || st.State != runtime.StateRunning {
		t.Errorf("running task touched: %+v %v", st, err)
	}
	if _, err := os.Stat(runtime.TaskDir(m, "live")); err != nil {
		t.Errorf("running task's state removed: %v", err)
	}
}

// TestCleanupOrphansEndsUnrecordedTasks: a start the daemon ran but did
// not answer in time fails, and its state goes with it; dockerd may then
// start the task once it answers. Nobody can wait on a task without a
// record, so even a plain gc ends it; a running task with its record stays.
func TestCleanupOrphansEndsUnrecordedTasks(t *testing.T) {
	f := newFake()
	m := newManager(t, f)
	if _, err := m.Spawn(context.Background(), job("kept")); err != nil {
		t.Fatal(err)
	}
	f.startLost = true
	if _, err := m.Spawn(context.Background(), job("lost")); !errdefs.IsUnavailable(err) {
		t.Fatalf("spawn whose answer was lost: %v", err)
	}
	if _, err := os.Stat(runtime.TaskDir(m, "lost")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the failed spawn's state: %v; want it removed", err)
	}
	if st, err := m.Inspect(context.Background(), "lost"); err != nil || st.State != runtime.StateRunning {
		t.Fatalf("the lost start's task on the backend: %+v, %v; want running", st, err)
	}
	removed, err := m.CleanupOrphans(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"task lost (running, no record)"}; !slices.Equal(removed, want) {
		t.Errorf("plain gc removed %v, want %v", removed, want)
	}
	if !slices.Contains(f.destroyed, "lost") || slices.Contains(f.destroyed, "kept") {
		t.Errorf("destroyed %v; want lost alone", f.destroyed)
	}
	if st, err := m.Inspect(context.Background(), "kept"); err != nil || st.State != runtime.StateRunning {
		t.Errorf("the recorded running task after gc: %+v, %v", st, err)
	}
}

func TestCPUTimeLimitKillsAtOnce(t *testing.T) {
	f := newFake()
	m, err := runtime.New(runtime.Config{Backend: f, StateDir: t.TempDir(), OutputFS: runtime.DirOutput{}, SampleInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = m.CleanupOrphans(context.Background(), true) })
	tk := job("hog")
	tk.Limits.CPUTime = 2 * time.Second
	if _, err := m.Spawn(context.Background(), tk); err != nil {
		t.Fatal(err)
	}
	res, err := m.Wait(context.Background(), "hog")
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != task.ReasonCPUTimeExceeded || res.ExitCode != runtime.ExitTimedOut {
		t.Errorf("result %s %d, want cpu_time_exceeded 124", res.Reason, res.ExitCode)
	}
	if want := []string{"killed all=true"}; !slices.Equal(f.signals, want) {
		t.Errorf("signals %v, want %v: no grace for a CPU hog", f.signals, want)
	}
	if res.Stats.CPUUsageSeconds < 2 || res.Stats.PidsPeak != 3 || res.Stats.PeakMemoryBytes != 1<<20 {
		t.Errorf("stats = %+v", res.Stats)
	}
}

func TestMonitorStreamsUntilTaskIsGone(t *testing.T) {
	f := newFake()
	m := newManager(t, f)
	if _, err := m.Spawn(context.Background(), job("mon")); err != nil {
		t.Fatal(err)
	}
	samples, err := m.Monitor(context.Background(), "mon", time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	first, second := <-samples, <-samples
	if first.CPUPercent != 0 || second.CPUPercent <= 0 {
		t.Errorf("cpu percent first %v second %v: want 0 then positive", first.CPUPercent, second.CPUPercent)
	}
	if err := m.Cleanup(context.Background(), "mon"); err != nil {
		t.Fatal(err)
	}
	for range samples { // drains, then ends: the channel must close
	}
	if _, err := m.Monitor(context.Background(), "none", time.Second); !errdefs.IsNotFound(err) {
		t.Errorf("monitor of a missing task: %v", err)
	}
}

// needRoot skips where a test mounts (TmpfsOutput). CI runs as root, so
// these tests always run there; the Manager's own tests use DirOutput.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounts a tmpfs: needs root")
	}
}

func TestCleanupOrphansForce(t *testing.T) {
	f := newFake()
	m := newManager(t, f)
	if _, err := m.Spawn(context.Background(), job("live")); err != nil {
		t.Fatal(err)
	}
	removed, err := m.CleanupOrphans(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"task live (running)"}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	if again, err := m.CleanupOrphans(context.Background(), true); err != nil || len(again) != 0 {
		t.Errorf("second gc removed %v, %v: want nothing", again, err)
	}
}

// TestWaitingHoldGoesBeforeTheNextSweep: a hold (what every Spawn, Wait
// and Run takes first) that found a sweep in progress is in before the
// next sweep begins. flock(2) keeps no queue: before the mark, the next
// sweep took the lock back between two polls of the waiting hold, and an
// outside review's CleanupOrphans in a loop kept every Run out for 120 s.
func TestWaitingHoldGoesBeforeTheNextSweep(t *testing.T) {
	m := newManager(t, newFake())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for round := range 3 {
		sweeping, err := runtime.LockForSweep(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("held-%d", round)
		held := make(chan error, 1)
		done := make(chan struct{})
		go func() {
			release, err := runtime.HoldWithin(ctx, m, id)
			held <- err
			if err == nil {
				<-done
				release()
			}
		}()
		// The hold found the sweep's lock taken and marked itself waiting.
		for !runtime.HoldsWaiting(m) {
			select {
			case err := <-held:
				t.Fatalf("round %d: the hold got in during a sweep (%v)", round, err)
			case <-ctx.Done():
				t.Fatal("the hold never marked itself waiting")
			case <-time.After(time.Millisecond):
			}
		}
		sweeping()
		next, err := runtime.LockForSweep(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		busy, err := runtime.BusyTasks(m)
		if err != nil {
			t.Fatal(err)
		}
		if !busy[id] {
			t.Errorf("round %d: the next sweep began before the waiting hold was in (busy: %v)", round, busy)
		}
		next()
		if err := <-held; err != nil {
			t.Fatalf("round %d: hold: %v", round, err)
		}
		close(done)
	}
}

// TestStartsGoOnWhileASweepRemoves: while a sweep removes what it found
// (a stopped task nobody holds), a start of another task goes on, and a
// start of the removed task's id waits until the removal is done, then
// starts. Before, the sweep held the state dir's lock through its
// removals, and every start waited for all of them (20 stopped tasks: 0.7
// s on containerd 2.4.2).
func TestStartsGoOnWhileASweepRemoves(t *testing.T) {
	f := newFake()
	m := newManager(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.Spawn(ctx, job("orphan")); err != nil {
		t.Fatal(err)
	}
	f.exit("orphan", 0) // stopped, and nobody waits on it
	f.mu.Lock()
	f.destroyGate, f.destroyGo = make(chan string), make(chan struct{})
	f.mu.Unlock()
	letGo := sync.OnceFunc(func() {
		f.mu.Lock()
		f.destroyGate = nil // later Destroys (the test's cleanup) go on at once
		f.mu.Unlock()
		close(f.destroyGo)
	})
	defer letGo() // a failure below must not leave the sweep stuck
	type sweepResult struct {
		removed []string
		err     error
	}
	swept := make(chan sweepResult, 1)
	go func() {
		removed, err := m.CleanupOrphans(ctx, false)
		swept <- sweepResult{removed, err}
	}()
	if id := <-f.destroyGate; id != "orphan" {
		t.Fatalf("the sweep destroys %s, want orphan", id)
	}
	// The removal is in flight: another task starts.
	if _, err := m.Spawn(ctx, job("other")); err != nil {
		t.Fatalf("a start beside a sweep's removal: %v", err)
	}
	// A start of the orphan's own id waits for the removal: it has opened
	// the orphan's busy mark, which the sweep holds.
	again := make(chan error, 1)
	go func() {
		_, err := m.Spawn(ctx, job("orphan"))
		again <- err
	}()
	mark := filepath.Join(m.StateDir(), "busy", "orphan")
	for openCount(t, mark) < 2 {
		select {
		case err := <-again:
			t.Fatalf("a start of the orphan's id got through during its removal: %v", err)
		case <-ctx.Done():
			t.Fatal("the start of the orphan's id never reached its busy mark")
		case <-time.After(time.Millisecond):
		}
	}
	select {
	case err := <-again:
		t.Fatalf("a start of the orphan's id got through during its removal: %v", err)
	default:
	}
	letGo() // the removal goes on
	res := <-swept
	if res.err != nil {
		t.Fatal(res.err)
	}
	if want := []string{"task orphan (stopped)"}; !slices.Equal(res.removed, want) {
		t.Errorf("the sweep removed %v, want %v", res.removed, want)
	}
	if err := <-again; err != nil {
		t.Fatalf("the start of the orphan's id after its removal: %v", err)
	}
	for _, id := range []string{"orphan", "other"} {
		if st, err := m.Inspect(ctx, id); err != nil || st.State != runtime.StateRunning {
			t.Errorf("task %s after the sweep: %v, %v; want running", id, st.State, err)
		}
	}
}

// listedTwice lists every container twice, as the Docker backend's List
// can where two containers carry one task's label.
type listedTwice struct{ *fakeBackend }

func (d listedTwice) List(ctx context.Context) ([]runtime.Status, error) {
	l, err := d.fakeBackend.List(ctx)
	return append(l, l...), err
}

// TestSweepOfAnOrphanListedTwice: a stopped task the backend lists twice
// is claimed and removed once, and the sweep ends. An outside review:
// the second claim waited on the first with the sweep lock held, so the
// sweep (and every start) waited until gc's context ended.
func TestSweepOfAnOrphanListedTwice(t *testing.T) {
	f := newFake()
	m, err := runtime.New(runtime.Config{Backend: listedTwice{f}, StateDir: t.TempDir(), OutputFS: runtime.DirOutput{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.Spawn(ctx, job("twice")); err != nil {
		t.Fatal(err)
	}
	f.exit("twice", 0)
	removed, err := m.CleanupOrphans(ctx, false)
	if err != nil {
		t.Fatalf("a sweep of a task listed twice: %v", err)
	}
	if want := []string{"task twice (stopped)"}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
}

// TestRecoverGoesOnPastATaskASweepRemoves: a restarted agent's Recover
// meets a stopped task that a sweep (another process's gc) is removing:
// it leaves that one to gc and reattaches the running task after it. An
// outside review: Recover returned the stopped task's NotFound and never
// reached the running one, whose deadline then nobody enforced.
func TestRecoverGoesOnPastATaskASweepRemoves(t *testing.T) {
	f := newFake()
	dir := t.TempDir()
	open := func() *runtime.Manager {
		m, err := runtime.New(runtime.Config{Backend: f, StateDir: dir, OutputFS: runtime.DirOutput{}})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	crashed, sweeper, agent := open(), open(), open()
	t.Cleanup(func() { _, _ = agent.CleanupOrphans(context.Background(), true) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range []string{"a-stopped", "b-running"} {
		if _, err := crashed.Spawn(ctx, job(id)); err != nil {
			t.Fatal(err)
		}
	}
	f.exit("a-stopped", 0) // while its agent was down
	f.mu.Lock()
	f.destroyGate, f.destroyGo = make(chan string), make(chan struct{})
	f.mu.Unlock()
	letGo := sync.OnceFunc(func() {
		f.mu.Lock()
		f.destroyGate = nil
		f.mu.Unlock()
		close(f.destroyGo)
	})
	defer letGo()
	swept := make(chan error, 1)
	go func() {
		_, err := sweeper.CleanupOrphans(ctx, false)
		swept <- err
	}()
	if id := <-f.destroyGate; id != "a-stopped" {
		t.Fatalf("the sweep destroys %s, want a-stopped", id)
	}
	type recovery struct {
		handles []runtime.Handle
		err     error
	}
	recovered := make(chan recovery, 1)
	go func() {
		hs, err := agent.Recover(ctx)
		recovered <- recovery{hs, err}
	}()
	// Recover's wait on a-stopped has reached its busy mark, which the
	// sweep holds.
	for openCount(t, filepath.Join(dir, "busy", "a-stopped")) < 2 {
		select {
		case r := <-recovered:
			t.Fatalf("Recover ended during the removal: %v, %v", r.handles, r.err)
		case <-ctx.Done():
			t.Fatal("Recover never reached a-stopped's busy mark")
		case <-time.After(time.Millisecond):
		}
	}
	letGo()
	r := <-recovered
	if err := <-swept; err != nil {
		t.Fatalf("gc: %v", err)
	}
	if r.err != nil {
		t.Fatalf("Recover: %v", r.err)
	}
	if len(r.handles) != 1 || r.handles[0].ID != "b-running" {
		t.Errorf("Recover returned %v, want b-running's handle", r.handles)
	}
}

// openCount is how many of this process's file descriptors have path's
// file open.
func openCount(t *testing.T, path string) int {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		return 0
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if fi, err := os.Stat(filepath.Join("/proc/self/fd", e.Name())); err == nil && os.SameFile(fi, info) {
			n++
		}
	}
	return n
}

func TestRecover(t *testing.T) {
	f := newFake()
	dir := t.TempDir()
	first, err := runtime.New(runtime.Config{Backend: f, StateDir: dir, OutputFS: runtime.DirOutput{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"running", "exited"} {
		if _, err := first.Spawn(context.Background(), job(id)); err != nil {
			t.Fatal(err)
		}
	}
	f.exit("exited", 3)
	// The first manager is gone; a new one over the same state and backend.
	second, err := runtime.New(runtime.Config{Backend: f, StateDir: dir, OutputFS: runtime.DirOutput{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = second.CleanupOrphans(context.Background(), true) })
	handles, err := second.Recover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, h := range handles {
		ids = append(ids, h.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"exited", "running"}) {
		t.Fatalf("recovered %v", ids)
	}
	if !slices.Contains(f.destroyed, "exited") {
		t.Error("the exited task was not finished")
	}
	res, err := second.Wait(context.Background(), "exited")
	if err != nil || res.ExitCode != 3 {
		t.Errorf("exited task: %+v %v", res, err)
	}
	f.exit("running", 0)
	res, err = second.Wait(context.Background(), "running")
	if err != nil || res.ExitCode != 0 || res.Reason != task.ReasonExited {
		t.Errorf("running task: %+v %v", res, err)
	}
}

// TestGPUMemoryLimitNeedsSampling: where the backend samples no GPU usage,
// a task with a GPU memory limit is refused (spawn, run and spec alike)
// before anything is made for it, rather than run with a limit nobody
// checks.
func TestGPUMemoryLimitNeedsSampling(t *testing.T) {
	f := newFake()
	dir := t.TempDir()
	m, err := runtime.New(runtime.Config{Backend: f, StateDir: dir, OutputFS: runtime.DirOutput{}})
	if err != nil {
		t.Fatal(err)
	}
	tk := job("gpu-unchecked")
	tk.Limits.GPUMemoryBytes = 2 << 30
	ctx := context.Background()
	if _, err := m.Spawn(ctx, tk); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "GPU memory limit cannot be enforced") {
		t.Errorf("spawn: %v, want a failed precondition naming the unenforceable limit", err)
	}
	if _, err := m.Run(ctx, tk, runtime.RunOptions{}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("run: %v, want a failed precondition", err)
	}
	if _, err := m.Preview(ctx, tk); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("preview: %v, want a failed precondition", err)
	}
	if len(f.running) != 0 {
		t.Errorf("backend started %v", f.running)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "tasks")); len(entries) != 0 {
		t.Errorf("state left: %v", entries)
	}
	tk.Limits.GPUMemoryBytes = 0 // the same task without the limit starts
	t.Cleanup(func() { _, _ = m.CleanupOrphans(context.Background(), true) })
	if _, err := m.Spawn(ctx, tk); err != nil {
		t.Errorf("without the limit: %v", err)
	}
}

func TestGPUMemoryLimitKills(t *testing.T) {
	f := newFake()
	f.gpuMemory, f.samplesGPU = 3<<30, true
	m, err := runtime.New(runtime.Config{Backend: f, StateDir: t.TempDir(), OutputFS: runtime.DirOutput{}, SampleInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = m.CleanupOrphans(context.Background(), true) })
	tk := job("gpu-hog")
	tk.Limits.GPUMemoryBytes = 2 << 30
	if _, err := m.Spawn(context.Background(), tk); err != nil {
		t.Fatal(err)
	}
	res, err := m.Wait(context.Background(), "gpu-hog")
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != task.ReasonGPUMemoryExceeded || res.ExitCode != runtime.ExitOOMKilled || res.Stats.PeakGPUMemoryBytes != 3<<30 {
		t.Errorf("result %s %d peak gpu %d, want gpu_memory_exceeded 137 with the 3 GiB peak", res.Reason, res.ExitCode, res.Stats.PeakGPUMemoryBytes)
	}
	if want := []string{"killed all=true"}; !slices.Equal(f.signals, want) {
		t.Errorf("signals %v, want %v", f.signals, want)
	}
	// Under the limit nothing happens.
	f2 := newFake()
	f2.gpuMemory, f2.samplesGPU = 1<<30, true
	m2 := newManager(t, f2)
	tk2 := job("gpu-ok")
	tk2.Limits.GPUMemoryBytes = 2 << 30
	if _, err := m2.Spawn(context.Background(), tk2); err != nil {
		t.Fatal(err)
	}
	done := make(chan task.Result, 1)
	go func() { r, _ := m2.Wait(context.Background(), "gpu-ok"); done <- r }()
	samples, err := m2.Monitor(context.Background(), "gpu-ok", time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // the task runs on, sampled, under its limit
		<-samples
	}
	f2.exit("gpu-ok", 0)
	if r := <-done; r.Reason != task.ReasonExited || len(f2.signals) != 0 {
		t.Errorf("under the limit: %s, signals %v", r.Reason, f2.signals)
	}
}

// TestRecoverWithoutHandle: the manager died after the backend started the
// task but before it recorded the handle; Recover rebuilds the handle from
// the backend and the task still gets its Result.
func TestRecoverWithoutHandle(t *testing.T) {
	f := newFake()
	dir := t.TempDir()
	first, err := runtime.New(runtime.Config{Backend: f, StateDir: dir, OutputFS: runtime.DirOutput{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = first.CleanupOrphans(context.Background(), true) })
	if _, err := first.Spawn(context.Background(), job("early")); err != nil {
		t.Fatal(err)
	}
	dropRecordedHandle(t, first, "early")
	second, err := runtime.New(runtime.Config{Backend: f, StateDir: dir, OutputFS: runtime.DirOutput{}})
	if err != nil {
		t.Fatal(err)
	}
	handles, err := second.Recover(context.Background())
	if err != nil || len(handles) != 1 || handles[0].ID != "early" || handles[0].Backend != "fake" {
		t.Fatalf("Recover = %+v, %v", handles, err)
	}
	f.exit("early", 5)
	if res, err := second.Wait(context.Background(), "early"); err != nil || res.ExitCode != 5 {
		t.Errorf("Wait after recovery: %+v %v", res, err)
	}
}

// TestCollectOutputSkipsUnsafeNames: through the Manager and the task's real
// output tmpfs, a file with an escape sequence in its name and one with a
// non-UTF-8 directory are listed as skipped, not copied; the rest is.
func TestCollectOutputSkipsUnsafeNames(t *testing.T) {
	f := newFake()
	m := newManager(t, f)
	if _, err := m.Spawn(context.Background(), job("names")); err != nil {
		t.Fatal(err)
	}
	out := runtime.OutputOf(m, "names")
	for p, data := range map[string]string{"answer": "42", "\x1b]52;c;cHduZWQ=\x07": "x", "d\xff/f": "y"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(out, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f.exit("names", 0)
	res, err := m.Wait(context.Background(), "names")
	if err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	if err := m.CollectOutput(context.Background(), "names", dest, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.OutputFiles) != 1 || res.OutputFiles[0].Path != "answer" {
		t.Errorf("collected %+v, want answer alone", res.OutputFiles)
	}
	var skipped []string
	for _, s := range res.OutputSkipped {
		skipped = append(skipped, s.Path)
	}
	slices.Sort(skipped)
	if want := []string{`"\x1b]52;c;cHduZWQ=\a"`, `"d\xff"`}; !slices.Equal(skipped, want) {
		t.Errorf("skipped %q, want %q", skipped, want)
	}
	entries, err := os.ReadDir(dest)
	if err != nil || len(entries) != 1 || entries[0].Name() != "answer" {
		t.Errorf("dest holds %v (%v), want answer alone", entries, err)
	}
}

// fakeGPUs grants "gpu=N" names from a pool of two, exclusively.
type fakeGPUs struct {
	mu     sync.Mutex
	holder map[string]string // name -> task
}

func (g *fakeGPUs) Allocate(id string, req task.GPURequest) ([]string, error) {
	return g.grant(id, req, true)
}

func (g *fakeGPUs) Preview(id string, req task.GPURequest) ([]string, error) {
	return g.grant(id, req, false)
}

func (g *fakeGPUs) grant(id string, req task.GPURequest, take bool) ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holder == nil {
		g.holder = map[string]string{}
	}
	var got []string
	for _, n := range []string{"gpu=0", "gpu=1"} {
		if g.holder[n] == "" && len(got) < req.Count {
			got = append(got, n)
		}
	}
	if len(got) < req.Count {
		return nil, fmt.Errorf("%w: no free GPU", errdefs.ErrResourceExhausted)
	}
	if !take {
		return got, nil
	}
	for _, n := range got {
		g.holder[n] = id
	}
	return got, nil
}

func (g *fakeGPUs) Release(id string) error {
	return g.releaseIf(func(holder string) bool { return holder == id })
}

func (g *fakeGPUs) ReleaseExcept(keep map[string]bool) error {
	return g.releaseIf(func(holder string) bool { return !keep[holder] })
}

func (g *fakeGPUs) releaseIf(match func(holder string) bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	maps.DeleteFunc(g.holder, func(_, holder string) bool { return match(holder) })
	return nil
}

func (g *fakeGPUs) held() map[string]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return maps.Clone(g.holder)
}

// TestManagerAllocatesGPUs: the Manager grants GPUs before Backend.Start,
// hands the backend the names, records the grant, and releases it in
// Cleanup, on a failed start, and in CleanupOrphans for a task that is
// gone; a task asking for GPUs without an allocator is refused.
func TestManagerAllocatesGPUs(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	gpus := &fakeGPUs{}
	m, err := runtime.New(runtime.Config{Backend: f, StateDir: t.TempDir(), OutputFS: runtime.DirOutput{}, GPUs: gpus})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = m.CleanupOrphans(context.Background(), true) })
	withGPU := func(id string) task.Task { tk := job(id); tk.GPUs = "1"; return tk }

	if _, err := m.Spawn(ctx, withGPU("g1")); err != nil {
		t.Fatal(err)
	}
	if got := f.gpus["g1"]; !slices.Equal(got, []string{"gpu=0"}) {
		t.Errorf("backend got GPUs %v, want the grant [gpu=0]", got)
	}
	if got := gpus.held(); got["gpu=0"] != "g1" {
		t.Errorf("allocations %v", got)
	}

	f.startErr = errors.New("daemon down")
	if _, err := m.Spawn(ctx, withGPU("g2")); err == nil {
		t.Fatal("spawn with a failing backend succeeded")
	}
	if got := gpus.held(); len(got) != 1 {
		t.Errorf("a failed start kept its GPU: %v", got)
	}
	f.startErr = nil

	if err := m.Cleanup(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	if got := gpus.held(); len(got) != 0 {
		t.Errorf("Cleanup kept the grant: %v", got)
	}

	// A grant whose task is gone (a manager killed after allocating) is
	// released by gc; a running task's is kept.
	if _, err := m.Spawn(ctx, withGPU("g3")); err != nil {
		t.Fatal(err)
	}
	if _, err := gpus.Allocate("crashed", task.GPURequest{Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CleanupOrphans(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := gpus.held(); len(got) != 1 || got["gpu=0"] != "g3" {
		t.Errorf("after gc: %v, want only the running g3's", got)
	}

	noAlloc := newManager(t, newFake())
	if _, err := noAlloc.Spawn(ctx, withGPU("g4")); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("GPU task without an allocator: %v", err)
	}
}

// TestPreviewTakesNothing: Preview hands the backend the request Spawn
// would (the task completed with defaults, its state and output dirs, the
// GPUs free now) and takes nothing: no GPU, no task directory, and what it
// refuses Spawn refuses too.
func TestPreviewTakesNothing(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	gpus := &fakeGPUs{}
	m, err := runtime.New(runtime.Config{Backend: f, StateDir: t.TempDir(), OutputFS: runtime.DirOutput{}, GPUs: gpus})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = m.CleanupOrphans(context.Background(), true) })
	withGPU := func(id string) task.Task { tk := job(id); tk.GPUs = "1"; return tk }
	preview := func(id string) runtime.StartRequest {
		t.Helper()
		data, err := m.Preview(ctx, withGPU(id))
		if err != nil {
			t.Fatal(err)
		}
		var req runtime.StartRequest
		if err := json.Unmarshal(data, &req); err != nil {
			t.Fatal(err)
		}
		return req
	}

	req := preview("p1")
	if !slices.Equal(req.GPUDevices, []string{"gpu=0"}) || req.Task.Limits.MemoryBytes == 0 ||
		req.StateDir != runtime.TaskDir(m, "p1") || req.OutputDir != filepath.Join(runtime.TaskDir(m, "p1"), "output", task.PreviewOutputKey) {
		t.Errorf("preview request: %+v", req)
	}
	if got := gpus.held(); len(got) != 0 {
		t.Errorf("Preview allocated: %v", got)
	}
	if _, err := os.Stat(runtime.TaskDir(m, "p1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Preview created the task dir: %v", err)
	}
	// Another task holds gpu=0: the preview shows the one Spawn would get.
	if _, err := m.Spawn(ctx, withGPU("holder")); err != nil {
		t.Fatal(err)
	}
	if req := preview("p1"); !slices.Equal(req.GPUDevices, []string{"gpu=1"}) {
		t.Errorf("with gpu=0 held, preview shows %v, want [gpu=1]", req.GPUDevices)
	}
	bad := job("p2")
	bad.Runtime = "io.containerd.kata.v2"
	if _, err := m.Preview(ctx, bad); !errdefs.IsInvalidArgument(err) {
		t.Errorf("preview of a runtime the node does not allow: %v", err)
	}
}

// TestRunStreamsLogs: RunOptions.Stdout receives what the task wrote, and
// Logs prints it again until Cleanup; Logs of an unknown task is NotFound.
func TestRunStreamsLogs(t *testing.T) {
	f := newFake()
	f.stdout = "hello from the task\n"
	f.started = make(chan string, 1)
	m := newManager(t, f)
	ctx := context.Background()
	go func() {
		<-f.started
		var logged strings.Builder
		if err := m.Logs(ctx, "s1", runtime.LogOptions{Stdout: &logged}); err != nil || logged.String() != f.stdout {
			t.Errorf("Logs while running: %q, %v", logged.String(), err)
		}
		f.exit("s1", 0)
	}()
	var streamed strings.Builder
	res, err := m.Run(ctx, job("s1"), runtime.RunOptions{Stdout: &streamed})
	if err != nil {
		t.Fatal(err)
	}
	if streamed.String() != f.stdout || res.Stdout != f.stdout {
		t.Errorf("streamed %q, Result stdout %q, want %q", streamed.String(), res.Stdout, f.stdout)
	}
	if err := m.Logs(ctx, "s1", runtime.LogOptions{Stdout: &streamed}); !errdefs.IsNotFound(err) {
		t.Errorf("Logs after cleanup: %v, want NotFound", err)
	}
}

// brokenPipe is a writer whose reader has gone, as nsn-run's stdout is
// once `| head -1` has read its line.
type brokenPipe struct{ writes atomic.Int32 }

func (b *brokenPipe) Write([]byte) (int, error) {
	b.writes.Add(1)
	return 0, syscall.EPIPE
}

// TestRunStreamFailureKeepsTheResult: a stream writer that fails is not
// written to again, and costs the run nothing else: the task runs to its
// exit, its Result carries its stdout, its /output is collected and it is
// cleaned up; Run returns the writer's error with them. (Run returned the
// error before collecting: the task's output files were lost with it.)
func TestRunStreamFailureKeepsTheResult(t *testing.T) {
	f := newFake()
	f.stdout = "hello from the task\n"
	f.outputFile = "answer"
	f.started = make(chan string, 1)
	m := newManager(t, f)
	go func() { f.exit(<-f.started, 3) }()
	dest := filepath.Join(t.TempDir(), "out")
	out := &brokenPipe{}
	res, err := m.Run(context.Background(), job("pipe"), runtime.RunOptions{OutputDir: dest, Stdout: out})
	if !errors.Is(err, syscall.EPIPE) {
		t.Errorf("Run = %v; want the writer's EPIPE", err)
	}
	if res.ExitCode != 3 || res.Reason != task.ReasonExited || res.Stdout != f.stdout {
		t.Errorf("Result = exit %d reason %s stdout %q; want the task's own: exit 3, exited, %q", res.ExitCode, res.Reason, res.Stdout, f.stdout)
	}
	if b, err := os.ReadFile(filepath.Join(dest, "answer")); err != nil || string(b) != "42\n" {
		t.Errorf("the task's /output file in %s: %q, %v", dest, b, err)
	}
	if n := out.writes.Load(); n != 1 {
		t.Errorf("the failed writer was written %d times; want once", n)
	}
	if _, err := os.Stat(runtime.TaskDir(m, "pipe")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the task's state dir after Run: %v; want it removed", err)
	}
}

// TestLogsFollowEndsWhenItsWriterFails: `logs -f ID | head -1` ends once
// head has gone, not when the task exits: a follow whose writer fails
// returns the writer's error while the task still runs.
func TestLogsFollowEndsWhenItsWriterFails(t *testing.T) {
	f := newFake()
	f.stdout = "line one\n"
	m := newManager(t, f)
	ctx := context.Background()
	if _, err := m.Spawn(ctx, job("follow")); err != nil {
		t.Fatal(err)
	}
	defer f.exit("follow", 0)
	done := make(chan error, 1)
	go func() { done <- m.Logs(ctx, "follow", runtime.LogOptions{Stdout: &brokenPipe{}, Follow: true}) }()
	select {
	case err := <-done:
		if !errors.Is(err, syscall.EPIPE) {
			t.Errorf("Logs = %v; want the writer's EPIPE", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Logs still follows a running task 30 s after its writer failed")
	}
	f.mu.Lock()
	running := f.running["follow"]
	f.mu.Unlock()
	if !running {
		t.Error("the task is not running: the follow ended for another reason")
	}
}

// TestScopesShareAStateDir: two Managers over one state dir, each with a
// backend of its own scope (two containerd namespaces, or containerd and
// dockerd, all on the CLI's default state dir). The second cannot remove,
// wait on, read or sweep the first's running task, forced or not, and its
// gc keeps the task's state and GPU: an outside review had `rm` in one
// namespace delete another's running task's state and free its id range
// and GPU for the next task. The first Manager still owns it.
func TestScopesShareAStateDir(t *testing.T) {
	ctx := context.Background()
	state := t.TempDir()
	gpus := &fakeGPUs{}
	open := func(scope string) (*runtime.Manager, *fakeBackend) {
		f := newFake()
		f.scope = scope
		m, err := runtime.New(runtime.Config{Backend: f, StateDir: state, OutputFS: runtime.DirOutput{}, GPUs: gpus})
		if err != nil {
			t.Fatal(err)
		}
		return m, f
	}
	a, fa := open(`containerd namespace "a"`)
	b, _ := open(`containerd namespace "b"`)
	tk := job("coll")
	tk.GPUs = "1"
	if _, err := a.Spawn(ctx, tk); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Remove(context.Background(), "coll", true) })
	if got := gpus.held(); got["gpu=0"] != "coll" {
		t.Fatalf("GPUs of a's task: %v", got)
	}
	foreign := func(what string, err error) {
		t.Helper()
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(fmt.Sprint(err), `belongs to containerd namespace "a"`) {
			t.Errorf("%s from b: %v, want a refusal naming a's scope", what, err)
		}
	}
	_, err := b.Spawn(ctx, job("coll"))
	foreign("spawn", err)
	foreign("rm", b.Remove(ctx, "coll", false))
	foreign("rm -f", b.Remove(ctx, "coll", true))
	foreign("cleanup", b.Cleanup(ctx, "coll"))
	// a's waiter holds the task's turn (as its supervisor would): b's wait
	// is refused at once, not after a's turn.
	aWaited := make(chan error, 1)
	go func() { _, err := a.Wait(ctx, "coll"); aWaited <- err }()
	waitForFlockHeld(t, filepath.Join(state, "waiting", "coll"))
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = b.Wait(waitCtx, "coll")
	cancel()
	foreign("wait while a waits", err)
	foreign("logs", b.Logs(ctx, "coll", runtime.LogOptions{Stdout: io.Discard}))
	for _, force := range []bool{false, true} {
		removed, err := b.CleanupOrphans(ctx, force)
		if err != nil || len(removed) != 0 {
			t.Errorf("b's gc (force %v): removed %v, %v", force, removed, err)
		}
	}
	if _, err := os.Stat(filepath.Join(runtime.TaskDir(a, "coll"), "task.json")); err != nil {
		t.Errorf("a's task record after b's calls: %v", err)
	}
	if got := gpus.held(); got["gpu=0"] != "coll" {
		t.Errorf("a's GPU after b's gc: %v", got)
	}
	if sts, err := b.List(ctx); err != nil || len(sts) != 0 {
		t.Errorf("b lists %v, %v", sts, err)
	}
	// a still owns it: it ends and is removed as usual.
	fa.exit("coll", 0)
	if err := <-aWaited; err != nil {
		t.Errorf("a's wait: %v", err)
	}
	if res, err := a.Wait(ctx, "coll"); err != nil || res.ExitCode != 0 {
		t.Errorf("a's recorded result: %+v, %v", res, err)
	}
	if err := a.Remove(ctx, "coll", false); err != nil {
		t.Errorf("a's rm: %v", err)
	}
	if got := gpus.held(); len(got) != 0 {
		t.Errorf("GPUs after a's rm: %v", got)
	}
}

// TestStateDirsShareANamespace: two Managers over one backend namespace
// (one containerd namespace, or one dockerd) with state dirs of their own,
// as two node agents, or an agent and an operator's CLI with another
// --state-dir. Without the state-dir label (containers made as before it),
// the second's plain gc removes the first's exited, not yet waited-on
// task, and its rm -f kills the first's running one. With it, the second lists, inspects, kills, removes and sweeps
// neither, forced or not, and the first still owns both.
func TestStateDirsShareANamespace(t *testing.T) {
	ctx := context.Background()
	open := func(f *fakeBackend) *runtime.Manager {
		m, err := runtime.New(runtime.Config{Backend: f, StateDir: t.TempDir(), OutputFS: runtime.DirOutput{}})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	spawnBoth := func(a *runtime.Manager, f *fakeBackend) {
		t.Helper()
		for _, id := range []string{"busy", "done"} {
			if _, err := a.Spawn(ctx, job(id)); err != nil {
				t.Fatal(err)
			}
		}
		f.exit("done", 3) // nobody waits yet: a detached task whose supervisor died
	}

	t.Run("unlabelled", func(t *testing.T) {
		f := newFake()
		f.unlabelled = true
		a, b := open(f), open(f)
		spawnBoth(a, f)
		removed, err := b.CleanupOrphans(ctx, false)
		if err != nil || !slices.Contains(removed, "task done (stopped)") {
			t.Fatalf("b's gc removed %v, %v; want a's exited task (the attack)", removed, err)
		}
		if err := b.Remove(ctx, "busy", true); err != nil {
			t.Fatalf("b's rm -f of a's task: %v (the attack)", err)
		}
		f.mu.Lock()
		destroyed := slices.Clone(f.destroyed)
		f.mu.Unlock()
		if !slices.Equal(destroyed, []string{"done", "busy"}) {
			t.Errorf("b destroyed %v; want a's two tasks (the attack)", destroyed)
		}
	})

	f := newFake()
	a, b := open(f), open(f)
	spawnBoth(a, f)
	elsewhere := func(what string, err error) {
		t.Helper()
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(fmt.Sprint(err), "belongs to the state dir "+a.StateDir()) {
			t.Errorf("%s from b: %v, want a refusal naming a's state dir", what, err)
		}
	}
	for _, id := range []string{"busy", "done"} {
		_, err := b.Inspect(ctx, id)
		elsewhere("inspect "+id, err)
		elsewhere("rm -f "+id, b.Remove(ctx, id, true))
		elsewhere("rm "+id, b.Remove(ctx, id, false))
		elsewhere("cleanup "+id, b.Cleanup(ctx, id))
		elsewhere("kill "+id, b.Kill(ctx, id, syscall.SIGKILL, true))
	}
	if sts, err := b.List(ctx); err != nil || len(sts) != 0 {
		t.Errorf("b lists %+v, %v", sts, err)
	}
	for _, force := range []bool{false, true} {
		if removed, err := b.CleanupOrphans(ctx, force); err != nil || len(removed) != 0 {
			t.Errorf("b's gc (force %v): removed %v, %v", force, removed, err)
		}
	}
	if handles, err := b.Recover(ctx); err != nil || len(handles) != 0 {
		t.Errorf("b recovered %v, %v", handles, err)
	}
	f.mu.Lock()
	destroyed, signals := slices.Clone(f.destroyed), slices.Clone(f.signals)
	f.mu.Unlock()
	if len(destroyed) != 0 || len(signals) != 0 {
		t.Errorf("b destroyed %v and sent %v", destroyed, signals)
	}
	if sts, err := a.List(ctx); err != nil || len(sts) != 2 {
		t.Errorf("a lists %+v, %v; want its two tasks", sts, err)
	}
	if res, err := a.Wait(ctx, "done"); err != nil || res.ExitCode != 3 {
		t.Errorf("a's wait on its exited task: %+v, %v; want exit 3", res, err)
	}
	if removed, err := a.CleanupOrphans(ctx, true); err != nil || len(removed) != 2 {
		t.Errorf("a's gc --force: removed %v, %v; want its two tasks", removed, err)
	}
}

// TestFinishedTasksLeaveNoLockFiles: the lock files that mark a task busy,
// spawning or waited on go with the last holder, so a run, a refused run
// and a supervised task followed by wait and rm leave none (before, each
// task left three empty files until the next gc: a node that ran a
// million tasks between sweeps held three million). A file another holder
// still holds stays, and marks the task busy to a sweep.
func TestFinishedTasksLeaveNoLockFiles(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	f.started = make(chan string, 4)
	m := newManager(t, f)
	go func() {
		for id := range f.started {
			f.exit(id, 0)
		}
	}()
	locks := func() []string {
		t.Helper()
		var left []string
		for _, dir := range []string{"busy", "spawning", "waiting"} {
			entries, _ := os.ReadDir(filepath.Join(m.StateDir(), dir))
			for _, e := range entries {
				if dir == "busy" && e.Name() == ".sweep-wait" {
					continue // the state dir's own, as sweep.lock
				}
				left = append(left, dir+"/"+e.Name())
			}
		}
		return left
	}
	if _, err := m.Run(ctx, job("ran"), runtime.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	if left := locks(); len(left) != 0 {
		t.Errorf("after a run: %v", left)
	}
	f.mu.Lock()
	f.startErr = errors.New("the daemon refused it")
	f.mu.Unlock()
	if _, err := m.Run(ctx, job("refused"), runtime.RunOptions{}); err == nil {
		t.Fatal("a refused start ran")
	}
	f.mu.Lock()
	f.startErr = nil
	f.mu.Unlock()
	if left := locks(); len(left) != 0 {
		t.Errorf("after a refused run: %v", left)
	}
	if _, err := m.Supervise(ctx, job("detached"), func(runtime.Handle, error) {}); err != nil {
		t.Fatal(err)
	}
	if res, err := m.Wait(ctx, "detached"); err != nil || res.ExitCode != 0 {
		t.Fatalf("wait after its supervisor: %+v, %v", res, err)
	}
	if err := m.Remove(ctx, "detached", false); err != nil {
		t.Fatal(err)
	}
	if left := locks(); len(left) != 0 {
		t.Errorf("after a supervised task, wait and rm: %v", left)
	}

	// Two holders: the first to let go leaves the mark to the second.
	first, err := runtime.Hold(m, "held")
	if err != nil {
		t.Fatal(err)
	}
	second, err := runtime.Hold(m, "held")
	if err != nil {
		t.Fatal(err)
	}
	first()
	requireLocked(t, filepath.Join(m.StateDir(), "busy", "held"))
	second()
	if left := locks(); len(left) != 0 {
		t.Errorf("after both holders let go: %v", left)
	}
}

// requireLocked fails the test unless someone holds a lock on path
// that an exclusive lock conflicts with.
func requireLocked(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("the busy mark of a task still held: %v", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("the busy mark of a task still held is not locked: %v", err)
	}
}

// waitForFlockHeld returns once another holder has an exclusive flock on
// path (polling: flock has no notification).
func waitForFlockHeld(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if f, err := os.Open(path); err == nil {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("nobody took the lock on %s", path)
}

// TestLogsRefusesBadIDs: Logs takes a task id as every other call does, so
// one that climbs out of the tasks directory reads no file there: here the
// state dir's own stdout.log, which ".." would name.
func TestLogsRefusesBadIDs(t *testing.T) {
	dir := t.TempDir()
	m, err := runtime.New(runtime.Config{Backend: newFake(), StateDir: dir, OutputFS: runtime.DirOutput{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stdout.log"), []byte("not a task's\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"..", "../tasks", "", "A"} {
		var out strings.Builder
		err := m.Logs(context.Background(), id, runtime.LogOptions{Stdout: &out, Stderr: &out})
		if !errdefs.IsInvalidArgument(err) || out.Len() > 0 {
			t.Errorf("Logs(%q): %v, printed %q; want invalid argument, nothing printed", id, err, out.String())
		}
	}
}

// TestCleanupOrphansLeavesSpawnsInFlight: gc from another Manager over the
// same state dir (as `nsn-run gc` beside a node agent) while a spawn sits
// in the backend's Start: its state dir and GPU grant stay, and the spawn
// succeeds. A spawn lock whose process died is swept; force takes a spawn
// in flight too.
func TestCleanupOrphansLeavesSpawnsInFlight(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	f.startGate = make(chan string)
	gpus := &fakeGPUs{}
	state := t.TempDir()
	agent, err := runtime.New(runtime.Config{Backend: f, StateDir: state, OutputFS: runtime.DirOutput{}, GPUs: gpus})
	if err != nil {
		t.Fatal(err)
	}
	gc, err := runtime.New(runtime.Config{Backend: f, StateDir: state, OutputFS: runtime.DirOutput{}, GPUs: gpus})
	if err != nil {
		t.Fatal(err)
	}
	tk := job("inflight")
	tk.GPUs = "1"
	spawned := make(chan error, 1)
	go func() {
		_, err := agent.Spawn(ctx, tk)
		spawned <- err
	}()
	<-f.startGate // the spawn is inside Start: dir, record and grant exist, no container yet
	removed, err := gc.CleanupOrphans(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 0 {
		t.Errorf("gc removed %v from a spawn in flight", removed)
	}
	if _, err := os.Stat(runtime.TaskDir(agent, "inflight")); err != nil {
		t.Errorf("the spawn's state dir: %v", err)
	}
	if got := gpus.held(); got["gpu=0"] != "inflight" {
		t.Errorf("the spawn's GPU grant: %v", got)
	}
	f.startGate <- "" // let Start finish
	if err := <-spawned; err != nil {
		t.Fatalf("the spawn gc ran beside: %v", err)
	}

	// A lock file nobody holds is a spawn that died: swept.
	stale := filepath.Join(state, "busy", "dead")
	if err := os.WriteFile(stale, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := gc.CleanupOrphans(ctx, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a dead spawn's lock file: %v", err)
	}
	f.startGate = nil
	if err := agent.Remove(ctx, "inflight", true); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentWaitersTakeTurns: a supervisor and `nsn-run wait` (two
// Managers over one state dir) wait on the same task: one enforces and
// records, the other reads the Result; the container is released once.
func TestConcurrentWaitersTakeTurns(t *testing.T) {
	f := newFake()
	state := t.TempDir()
	a, err := runtime.New(runtime.Config{Backend: f, StateDir: state, OutputFS: runtime.DirOutput{}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := runtime.New(runtime.Config{Backend: f, StateDir: state, OutputFS: runtime.DirOutput{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Spawn(context.Background(), job("two")); err != nil {
		t.Fatal(err)
	}
	results := make(chan task.Result, 2)
	for _, m := range []*runtime.Manager{a, b} {
		go func() {
			res, err := m.Wait(context.Background(), "two")
			if err != nil {
				t.Error(err)
			}
			results <- res
		}()
	}
	f.exit("two", 3)
	r1, r2 := <-results, <-results
	if r1.ExitCode != 3 || r2.ExitCode != 3 || !r1.FinishedAt.Equal(r2.FinishedAt) {
		t.Errorf("the waiters disagree: %+v / %+v", r1, r2)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(slices.DeleteFunc(slices.Clone(f.destroyed), func(id string) bool { return id != "two" })); n != 1 {
		t.Errorf("released %d times, want once", n)
	}
}

// TestWaitGivesUpItsTurn: a waiter whose turn has not come (another
// process holds the task's waiter lock: a supervisor waiting on it) ends
// when its context does, and neither stops the task nor takes the lock
// later; the waiter whose turn it is then finishes as usual.
func TestWaitGivesUpItsTurn(t *testing.T) {
	f := newFake()
	state := t.TempDir()
	a, err := runtime.New(runtime.Config{Backend: f, StateDir: state, OutputFS: runtime.DirOutput{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Spawn(context.Background(), job("turn")); err != nil {
		t.Fatal(err)
	}
	// The other process's waiter, as it holds its turn.
	if err := os.MkdirAll(filepath.Join(state, "waiting"), 0o700); err != nil {
		t.Fatal(err)
	}
	other, err := os.OpenFile(filepath.Join(state, "waiting", "turn"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := syscall.Flock(int(other.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() {
		_, err := a.Wait(ctx, "turn")
		gaveUp <- err
	}()
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want context.Canceled", err)
	}
	f.mu.Lock()
	running, signals := f.running["turn"], slices.Clone(f.signals)
	f.mu.Unlock()
	if !running || len(signals) != 0 {
		t.Fatalf("the waiter that gave up touched the task: running %v, signals %v", running, signals)
	}
	// Its lock attempt is over: the turn passes straight to the next.
	if err := syscall.Flock(int(other.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	again, err := os.Open(filepath.Join(state, "waiting", "turn"))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := syscall.Flock(int(again.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("the waiter lock is still taken after the waiter gave up: %v", err)
	}
	if err := syscall.Flock(int(again.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	done := make(chan task.Result, 1)
	go func() {
		res, err := a.Wait(context.Background(), "turn")
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	f.exit("turn", 4)
	if res := <-done; res.ExitCode != 4 || res.Reason != task.ReasonExited {
		t.Errorf("the next waiter's Result = %+v, want exit 4", res)
	}
}

// TestOutputDestMustBeNewOrEmpty: the task names its output files, so they
// never land beside the operator's own files (an outside review had a
// task's file replace an executable git hook in a project checkout): a
// destination that holds anything is refused, by Run before the task
// starts, and by CollectOutput, which copies nothing then and leaves the
// output in place for another destination.
func TestOutputDestMustBeNewOrEmpty(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	m := newManager(t, f)
	project := t.TempDir()
	hook := filepath.Join(project, "pre-commit")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\necho original\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A context already ended: Run must refuse the destination before it
	// looks at anything else (a Run that started the task would wait on
	// it, and the fake's task never ends by itself).
	ended, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Run(ended, job("late"), runtime.RunOptions{OutputDir: project}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("Run into a directory that holds a file: %v, want InvalidArgument", err)
	}
	refusedLeftNothing(t, f, m, "late")

	// Nor one the copy could not create: found only after the task ran,
	// its output would go with its cleanup.
	dangling := filepath.Join(t.TempDir(), "dangling")
	if err := os.Symlink(filepath.Join(t.TempDir(), "gone"), dangling); err != nil {
		t.Fatal(err)
	}
	underFile := filepath.Join(hook, "out")
	for _, dest := range []string{dangling, filepath.Join(dangling, "out"), underFile, filepath.Join(underFile, "deeper")} {
		if _, err := m.Run(ended, job("late"), runtime.RunOptions{OutputDir: dest}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Run into %s: %v, want InvalidArgument", dest, err)
		}
	}

	// One the kernel will not let anyone make (procfs): found as the task
	// starts, which stops it and leaves nothing.
	if _, err := m.Run(ctx, job("proc"), runtime.RunOptions{OutputDir: "/proc/nsn-run-test-output"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Run into /proc: %v, want InvalidArgument", err)
	}
	refusedLeftNothing(t, f, m, "proc")

	if _, err := m.Spawn(ctx, job("hook")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(runtime.OutputOf(m, "hook"), "pre-commit"), []byte("#!/bin/sh\necho task\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.exit("hook", 0)
	res, err := m.Wait(ctx, "hook")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.CollectOutput(ctx, "hook", project, &res); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("CollectOutput into a directory that holds a file: %v, want InvalidArgument", err)
	}
	if b, err := os.ReadFile(hook); err != nil || string(b) != "#!/bin/sh\necho original\n" {
		t.Errorf("the operator's hook is now %q (%v)", b, err)
	}
	for _, dest := range []string{filepath.Join(t.TempDir(), "new"), t.TempDir()} {
		res := task.Result{}
		if err := m.CollectOutput(ctx, "hook", dest, &res); err != nil {
			t.Fatalf("CollectOutput into %s: %v", dest, err)
		}
		if b, err := os.ReadFile(filepath.Join(dest, "pre-commit")); err != nil || string(b) != "#!/bin/sh\necho task\n" {
			t.Errorf("%s/pre-commit: %q (%v)", dest, b, err)
		}
	}
}

// TestRecordedResultListsNoOutputAsEmpty: the Result Wait records, before
// CollectOutput, is what inspect prints: output_files is [] there as the
// schema says (an outside review found null), also for a record written
// with null by an older nsn-run.
func TestRecordedResultListsNoOutputAsEmpty(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	m := newManager(t, f)
	if _, err := m.Spawn(ctx, job("rec")); err != nil {
		t.Fatal(err)
	}
	f.exit("rec", 0)
	if _, err := m.Wait(ctx, "rec"); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		st, err := m.Inspect(ctx, "rec")
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"output_files":[]`) {
			t.Errorf("%s: inspect prints %s, want output_files []", when, b)
		}
	}
	check("recorded by Wait")
	path := filepath.Join(runtime.TaskDir(m, "rec"), "task.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old := strings.Replace(string(b), `"output_files": []`, `"output_files": null`, 1)
	if old == string(b) {
		t.Fatalf("the record has no output_files []: %s", b)
	}
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	check("recorded with null")
}

// TestOutputDestIsOneRunsAlone: a second run given the directory another
// run holds is refused as its task starts, and stopped (an outside review
// had two runs collect into one directory, the second's files under the
// first's names); once the first is done, the directory is anyone's again.
func TestOutputDestIsOneRunsAlone(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	m := newManager(t, f)
	dest := filepath.Join(t.TempDir(), "shared")
	release, err := runtime.TakeOutputDest(dest) // the first run's, as it runs
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Run(ctx, job("second"), runtime.RunOptions{OutputDir: dest}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "another run's") {
		t.Fatalf("a second run into the held directory: %v, want InvalidArgument, another run's", err)
	}
	refusedLeftNothing(t, f, m, "second")
	release()
	again, err := runtime.TakeOutputDest(dest)
	if err != nil {
		t.Fatalf("the directory once released: %v", err)
	}
	again()
}

// refusedLeftNothing checks that a Run refused over its output dir left
// no task running on the backend and no state dir.
func refusedLeftNothing(t *testing.T, f *fakeBackend, m *runtime.Manager, id string) {
	t.Helper()
	f.mu.Lock()
	running := maps.Clone(f.running)
	f.mu.Unlock()
	if len(running) != 0 {
		t.Errorf("after the refused run of %s the backend runs %v", id, running)
	}
	if _, err := os.Stat(runtime.TaskDir(m, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused run of %s left its state dir: %v", id, err)
	}
}

// TestOutputDirInTheStateDirRefused: a task's output copied into the state
// dir would land in another task's /output (a sixteenth review's running
// task read a tenant's files so) or in a "task" directory gc removes. It
// is refused before anything starts, also through a symlink.
func TestOutputDirInTheStateDirRefused(t *testing.T) {
	f := newFake()
	m := newManager(t, f)
	// The fake's tasks run until signalled: without the refusal, Run
	// would wait for this one until the context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(filepath.Join(m.StateDir(), "tasks"), link); err != nil {
		t.Fatal(err)
	}
	for _, dest := range []string{
		filepath.Join(m.StateDir(), "tasks", "victim", "output"),
		filepath.Join(m.StateDir(), "tasks", "new"),
		m.StateDir(),
		filepath.Join(link, "new"),
	} {
		if _, err := m.Run(ctx, job("out"), runtime.RunOptions{OutputDir: dest}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "is in the state dir") {
			t.Errorf("output dir %s: %v, want refused", dest, err)
		}
		var res task.Result
		if err := m.CollectOutput(ctx, "out", dest, &res); !errdefs.IsInvalidArgument(err) {
			t.Errorf("CollectOutput to %s: %v, want refused", dest, err)
		}
	}
	f.mu.Lock()
	started := len(f.labels)
	f.mu.Unlock()
	if started != 0 {
		t.Errorf("%d tasks started", started)
	}
	if _, err := os.Stat(filepath.Join(m.StateDir(), "tasks", "new")); !os.IsNotExist(err) {
		t.Errorf("the refused output dir was made: %v", err)
	}
}

// TestWaitAndCollect: a destination in the state dir is refused before the
// wait, not after the task ends (the CLI's own check of `wait
// --output-dir` did not know the state dir, and waited the task out
// first); a task that ends gets its Result with its logs, and its /output
// copied, as `nsn-run wait --output-dir` prints and copies them.
func TestWaitAndCollect(t *testing.T) {
	f := newFake()
	f.stdout = "done\n"
	f.outputFile = "answer"
	m := newManager(t, f)
	// The fake's task runs until the test ends it: a wait before the
	// refusal would last until the context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.Spawn(ctx, job("wc")); err != nil {
		t.Fatal(err)
	}
	inState := filepath.Join(m.StateDir(), "tasks", "new")
	if _, err := m.WaitAndCollect(ctx, "wc", inState); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "is in the state dir") {
		t.Fatalf("WaitAndCollect into the state dir: %v; want refused before the wait", err)
	}
	f.mu.Lock()
	running := f.running["wc"]
	f.mu.Unlock()
	if !running {
		t.Fatal("the task ended: the refusal came after the wait")
	}
	f.exit("wc", 7)
	dest := filepath.Join(t.TempDir(), "out")
	res, err := m.WaitAndCollect(ctx, "wc", dest)
	if err != nil || res.ExitCode != 7 || res.Stdout != "done\n" || len(res.OutputFiles) != 1 || res.OutputFiles[0].Path != "answer" {
		t.Fatalf("WaitAndCollect = exit %d stdout %q files %+v, %v; want 7, done, answer", res.ExitCode, res.Stdout, res.OutputFiles, err)
	}
	if b, err := os.ReadFile(filepath.Join(dest, "answer")); err != nil || string(b) != "42\n" {
		t.Errorf("the copied answer: %q, %v", b, err)
	}
	nowhere := filepath.Join(t.TempDir(), "nowhere")
	if _, err := m.WaitAndCollect(ctx, "nosuch", nowhere); !errdefs.IsNotFound(err) {
		t.Errorf("WaitAndCollect of a task that does not exist: %v; want NotFound", err)
	}
	if _, err := os.Stat(nowhere); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused wait made its destination: %v", err)
	}
}

// TestWaitAndCollectTakesItsDestination: the destination is taken before
// the wait, as Run takes its own: one another run holds is refused while
// the task still runs, not once it has ended.
func TestWaitAndCollectTakesItsDestination(t *testing.T) {
	f := newFake()
	m := newManager(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.Spawn(ctx, job("held")); err != nil {
		t.Fatal(err)
	}
	defer f.exit("held", 0)
	dest := filepath.Join(t.TempDir(), "out")
	release, err := runtime.TakeOutputDest(dest)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if _, err := m.WaitAndCollect(ctx, "held", dest); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "another run's") {
		t.Fatalf("WaitAndCollect into a held destination: %v; want refused before the wait", err)
	}
}

// TestWaitAndCollectAfterCancel: a wait cancelled while it enforces the
// task's limits stops the task (reason killed) and still collects its
// output, as Run does: the task's Result comes with its files, not an
// error that leaves them in the state dir.
func TestWaitAndCollectAfterCancel(t *testing.T) {
	f := newFake()
	f.honorTERM = true
	f.outputFile = "answer"
	f.statsHang = make(chan struct{}, 1)
	m := newManager(t, f)
	if _, err := m.Spawn(context.Background(), job("cancelled")); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var res task.Result
	dest := filepath.Join(t.TempDir(), "out")
	go func() {
		var err error
		res, err = m.WaitAndCollect(ctx, "cancelled", dest)
		done <- err
	}()
	<-f.statsHang // the wait is in progress, inside a sample
	stop()
	if err := <-done; err != nil || res.Reason != task.ReasonKilled || len(res.OutputFiles) != 1 {
		t.Fatalf("WaitAndCollect cancelled: reason %s files %+v, %v; want killed, its answer, no error", res.Reason, res.OutputFiles, err)
	}
	if _, err := os.Stat(filepath.Join(dest, "answer")); err != nil {
		t.Errorf("the cancelled wait's copy: %v", err)
	}
}

// TestOutputDirThroughAnotherUsersSymlinkRefused: the directory an
// operator collects into may lie in a job submitter's tree, and a symlink
// of theirs there aimed the copy, made as root, at an empty root-owned
// directory (a sixteenth review's stand-in for /etc/tmpfiles.d). A link of
// another user on the way is refused before anything starts; root's own
// links are followed.
func TestOutputDirThroughAnotherUsersSymlinkRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the links are another user's")
	}
	f := newFake()
	m := newManager(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := t.TempDir()
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	alice, rootOwned := filepath.Join(base, "alice"), filepath.Join(base, "etc-stand-in")
	for _, d := range []string{alice, rootOwned} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(alice, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(alice, "results")
	if err := os.Symlink(rootOwned, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(link, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	for _, dest := range []string{link, filepath.Join(link, "out")} {
		if _, err := m.Run(ctx, job("planted"), runtime.RunOptions{OutputDir: dest}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "symlink that uid 65534 owns") {
			t.Errorf("output dir %s: %v, want refused", dest, err)
		}
		var res task.Result
		if err := m.CollectOutput(ctx, "planted", dest, &res); !errdefs.IsInvalidArgument(err) {
			t.Errorf("CollectOutput to %s: %v, want refused", dest, err)
		}
	}
	if entries, _ := os.ReadDir(rootOwned); len(entries) != 0 {
		t.Errorf("the root-owned directory now holds %v", entries)
	}

	// Root's own link is followed.
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(rootOwned, link); err != nil {
		t.Fatal(err)
	}
	f.started = make(chan string, 1)
	go func() { f.exit(<-f.started, 0) }()
	if _, err := m.Run(ctx, job("root-link"), runtime.RunOptions{OutputDir: link}); err != nil {
		t.Errorf("output dir through root's own link: %v", err)
	}
}

// TestReadOnlyOutputDirRefusedBeforeTheStart: an existing output dir that
// cannot be written (a read-only filesystem) is refused before the task
// runs: found only at the copy, a sixteenth review's task was removed
// with its only copy of the results.
func TestReadOnlyOutputDirRefusedBeforeTheStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a read-only tmpfs")
	}
	f := newFake()
	m := newManager(t, f)
	ro := t.TempDir()
	if err := unix.Mount("tmpfs", ro, "tmpfs", unix.MS_RDONLY, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(ro, unix.MNT_DETACH) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.Run(ctx, job("ro"), runtime.RunOptions{OutputDir: ro}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "cannot be written") {
		t.Errorf("a read-only output dir: %v, want refused", err)
	}
	refusedLeftNothing(t, f, m, "ro")
}

// TestKillRefusesANonSignal: a number that is no Linux signal is refused
// before anything is sent (a review's `kill -s 99` reached runc, whose
// error said only "invalid argument").
func TestKillRefusesANonSignal(t *testing.T) {
	f := newFake()
	m := newManager(t, f)
	for _, sig := range []syscall.Signal{0, -9, 65, 99} {
		if err := m.Kill(context.Background(), "x", sig, false); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "1 to 64") {
			t.Errorf("signal %d: %v, want refused", int(sig), err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.signals) != 0 {
		t.Errorf("signals sent: %v", f.signals)
	}
}

// TestOutputDirRaceRefused: a user who owns a directory on the output
// path swaps it for a link of theirs while nsn-run makes the output dir (a
// seventeenth review won the race in 2 of 85 runs with a
// RENAME_EXCHANGE loop, and MkdirAll made a root-owned directory where
// the link pointed). Swapped after the check, before the open, and after
// a missing directory is made, before it is opened: refused each time,
// and nothing is made where the link points.
func TestOutputDirRaceRefused(t *testing.T) {
	for _, step := range []string{"resolved", "made out"} {
		t.Run(step, func(t *testing.T) {
			base := t.TempDir()
			mid, victim := filepath.Join(base, "mid"), filepath.Join(base, "victim")
			for _, d := range []string{mid, victim} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			// The swap: the directory the check saw becomes a link to the
			// victim (at "made out", the directory just made, itself).
			swapped := mid
			if step == "made out" {
				swapped = filepath.Join(mid, "out")
			}
			runtime.SetOutputDestRaceHook(t, func(s string) {
				if s != step {
					return
				}
				if err := os.Rename(swapped, swapped+".moved"); err != nil {
					t.Error(err)
				}
				if err := os.Symlink(victim, swapped); err != nil {
					t.Error(err)
				}
			})
			release, err := runtime.TakeOutputDest(filepath.Join(mid, "out"))
			if err == nil {
				release()
				t.Fatal("the output dir was taken through the swapped-in link")
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("refusal: %v, want invalid argument", err)
			}
			if entries, _ := os.ReadDir(victim); len(entries) != 0 {
				t.Errorf("made where the link points: %v", entries)
			}
		})
	}
}

// TestStateDirWithPlantedEntriesRefused: a directory others can write to,
// or holding entries that are not nsn-run's own, is no state dir: a
// seventeenth review planted tasks -> another directory in a root-owned
// 1777 one, nsn-run adopted it (and made it 0700), and gc removed every
// entry of the directory the link named. Each variant is refused, and a
// gc (run only if New let it) finds nothing to remove in the victim.
func TestStateDirWithPlantedEntriesRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the planted entries are another user's")
	}
	for _, c := range []struct {
		name  string
		mode  os.FileMode
		plant func(dir, victim string) error
	}{
		{"another user's link in a 1777 dir", 0o777 | os.ModeSticky, func(dir, victim string) error {
			if err := os.Symlink(victim, filepath.Join(dir, "tasks")); err != nil {
				return err
			}
			return os.Lchown(filepath.Join(dir, "tasks"), 65534, 65534)
		}},
		{"root's own link", 0o755, func(dir, victim string) error { return os.Symlink(victim, filepath.Join(dir, "tasks")) }},
		{"another user's tasks dir", 0o755, func(dir, _ string) error {
			if err := os.Mkdir(filepath.Join(dir, "tasks"), 0o755); err != nil {
				return err
			}
			return os.Chown(filepath.Join(dir, "tasks"), 65534, 65534)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			dir, victim := filepath.Join(base, "shared"), filepath.Join(base, "victim")
			if err := os.MkdirAll(filepath.Join(victim, "important"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, c.mode); err != nil {
				t.Fatal(err)
			}
			if err := c.plant(dir, victim); err != nil {
				t.Fatal(err)
			}
			m, err := runtime.New(runtime.Config{Backend: newFake(), StateDir: dir, OutputFS: runtime.DirOutput{}})
			if err == nil {
				_, _ = m.CleanupOrphans(context.Background(), false)
				t.Error("adopted")
			} else if !errdefs.IsInvalidArgument(err) {
				t.Errorf("refusal: %v, want invalid argument", err)
			}
			if entries, _ := os.ReadDir(victim); len(entries) != 1 {
				t.Errorf("the victim now holds %v", entries)
			}
			if info, err := os.Stat(dir); err != nil || info.Mode()&(os.ModePerm|os.ModeSticky) != c.mode {
				t.Errorf("the shared dir's mode is now %v (%v), was %v", info.Mode(), err, c.mode)
			}
		})
	}
}
