package integration

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nsn-run/nsn-run/idmap"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/task"
)

// backgroundManager is a test Manager with Config.ReleaseInBackground.
func backgroundManager(t *testing.T) (*runtime.Manager, func() string) {
	t.Helper()
	m, c := testManagerWith(t, func(cfg *runtime.Config) { cfg.ReleaseInBackground = true })
	return m, func() string { return leftovers(t, c) }
}

// runTraced runs tk and returns the phases Run went through.
func runTraced(t *testing.T, m *runtime.Manager, tk task.Task) (task.Result, map[string]bool) {
	t.Helper()
	var mu sync.Mutex
	phases := map[string]bool{}
	ctx := runtime.WithPhaseObserver(context.Background(), func(phase string, _ time.Duration) {
		mu.Lock()
		phases[phase] = true
		mu.Unlock()
	})
	res, err := m.Run(ctx, tk, runtime.RunOptions{})
	if err != nil {
		t.Fatalf("Run %s: %v", tk.ID, err)
	}
	mu.Lock()
	defer mu.Unlock()
	return res, phases
}

// TestBackgroundReleaseKeepsLogsWhole: with the release in the background,
// Run returns once the shim logger has drained the pipes (the task still in
// place), and the Result has every byte the task wrote, the last ones
// included; Drain then leaves nothing.
func TestBackgroundReleaseKeepsLogsWhole(t *testing.T) {
	m, left := backgroundManager(t)
	id := uniqueID("bgrel")
	// 300 000 bytes: several pipe buffers, so the logger is still reading
	// when the task exits.
	script := `head -c 300000 /dev/zero | tr '\0' x; echo END; echo err >&2; echo out > /output/f`
	res, phases := runTraced(t, m, seedTask(id, "sh", "-c", script))
	if !phases["wait/finish-logs"] || phases["wait/release"] {
		t.Errorf("phases %v: want the logs finished without a release", phases)
	}
	if res.ExitCode != 0 || len(res.Stdout) != 300004 || !strings.HasSuffix(res.Stdout, "xEND\n") || res.Stderr != "err\n" {
		t.Errorf("result: exit %d, stdout %d bytes ending %q, stderr %q; want 300004 bytes ending \"xEND\\n\", \"err\\n\"",
			res.ExitCode, len(res.Stdout), res.Stdout[max(0, len(res.Stdout)-8):], res.Stderr)
	}
	if len(res.OutputFiles) != 1 || res.OutputFiles[0].Path != "f" {
		t.Errorf("output files %+v, want f", res.OutputFiles)
	}
	if err := m.Drain(context.Background()); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if l := left(); l != "" {
		t.Errorf("left behind after Drain: %s", l)
	}
	if _, err := os.Stat(taskDir(m, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir left after Drain: %v", err)
	}
}

// TestBackgroundReleaseWithWritersLeft: a task whose init exits while a
// child it started in the background is still writing. The child dies
// with the pid namespace, Run returns with what was written, and the
// release leaves nothing; likewise a task killed at its deadline.
func TestBackgroundReleaseWithWritersLeft(t *testing.T) {
	m, left := backgroundManager(t)
	spammer := seedTask(uniqueID("bgspam"), "sh", "-c", `(while :; do echo spam; done) & sleep 0.2; echo main >&2`)
	res, _ := runTraced(t, m, spammer)
	if res.ExitCode != 0 || res.Stderr != "main\n" || !strings.HasPrefix(res.Stdout, "spam\n") {
		t.Errorf("spammer: exit %d, stderr %q, stdout starts %q", res.ExitCode, res.Stderr, res.Stdout[:min(len(res.Stdout), 10)])
	}
	late := seedTask(uniqueID("bglate"), "sh", "-c", `echo before; exec sleep 60`)
	late.Limits.Timeout = time.Second
	late.Limits.Grace = 100 * time.Millisecond
	res, phases := runTraced(t, m, late)
	if res.Reason != task.ReasonTimedOut || res.Stdout != "before\n" || !phases["wait/finish-logs"] {
		t.Errorf("timed-out task: reason %s, stdout %q, phases %v", res.Reason, res.Stdout, phases)
	}
	if err := m.Drain(context.Background()); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if l := left(); l != "" {
		t.Errorf("left behind after Drain: %s", l)
	}
}

// TestBackgroundReleaseIDReuse: the same id run twice in a row: the second
// Spawn waits for the first task's release instead of failing as a
// duplicate.
func TestBackgroundReleaseIDReuse(t *testing.T) {
	m, left := backgroundManager(t)
	id := uniqueID("bgreuse")
	for i := range 3 {
		res, err := m.Run(context.Background(), seedTask(id, "echo", "again"), runtime.RunOptions{})
		if err != nil || res.Stdout != "again\n" {
			t.Fatalf("run %d: %q, %v", i, res.Stdout, err)
		}
	}
	if err := m.Drain(context.Background()); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if l := left(); l != "" {
		t.Errorf("left behind after Drain: %s", l)
	}
}

// TestBackgroundReleaseKilled: the manager process dies (SIGKILL) as soon
// as Run has returned, its release in flight. Its task's container is still
// there; a plain gc by a new manager over the same state removes it and
// everything else the task had: snapshot, lease, mounts, host id range.
func TestBackgroundReleaseKilled(t *testing.T) {
	c, addr := containerdClient(t)
	importBusybox(t, c, addr)
	stateDir := t.TempDir()
	id := uniqueID("bgkill")
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), envHelper+"="+helperReleaseThenDie, "NSN_HELPER_ADDRESS="+addr,
		"NSN_HELPER_STATE="+stateDir, "NSN_HELPER_ID="+id, "NSN_HELPER_LOGGER="+nsnLogger(t))
	var stderr strings.Builder
	helper.Stderr = &stderr
	out, err := helper.Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper: %v, stderr %q; want it killed by SIGKILL after Run", err, stderr.String())
	}
	var res task.Result
	if err := json.Unmarshal(out, &res); err != nil || res.ExitCode != 0 || res.Stdout != "ok\n" {
		t.Fatalf("the helper's Result: %q (%v), want exit 0 and ok", out, err)
	}
	// The release needs a round trip to the shim and its task delete,
	// which the kill cut short: the container is still there.
	if l := leftovers(t, c); !strings.Contains(l, "container "+id) {
		t.Fatalf("after the kill the release should have been cut short, found: %q", l)
	}
	ids, err := idmap.New(idmap.Config{Owner: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	if held, _ := ids.Held(); len(held) != 1 {
		t.Errorf("id ranges held after the kill: %v, want the task's", held)
	}

	m, _ := testManagerWith(t, func(cfg *runtime.Config) { cfg.StateDir = stateDir })
	removed, err := m.CleanupOrphans(context.Background(), false)
	if err != nil {
		t.Fatalf("gc: %v", err)
	}
	if !slices.ContainsFunc(removed, func(r string) bool { return strings.Contains(r, id) }) {
		t.Errorf("gc removed %v, want task %s", removed, id)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind after gc: %s", l)
	}
	// The kill may cut containerd's task delete short: the task gone
	// from its list, its shim still running in its bundle (1 run in 5
	// here, on both containerds, before gc ended such shims).
	if pids := shimsOf(id); len(pids) > 0 {
		t.Errorf("shim of task %s still runs after gc: pids %v", id, pids)
	}
	if held, _ := ids.Held(); len(held) != 0 {
		t.Errorf("id ranges held after gc: %v", held)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), stateDir) {
		t.Errorf("mounts left under %s", stateDir)
	}
}

// TestConcurrentDestroy: two processes release the same running task at
// once (`nsn-run rm -f` while the task's supervisor, seeing it killed,
// releases it too). Both Destroys succeed, whichever delete lands second,
// and nothing is left: a Destroy that failed there returned before the
// caller unmounted the task's output. Before Destroy re-checked, the
// second delete failed within 20 rounds here ("failed to delete task:
// ttrpc: closed", round 19).
func TestConcurrentDestroy(t *testing.T) {
	ctx := context.Background()
	m, c := testManager(t)
	_, addr := containerdClient(t)
	backends := make([]*containerd.Backend, 2)
	for i := range backends {
		b, err := containerd.New(ctx, containerd.Config{Address: addr, Namespace: testNamespace, LoggerBinary: nsnLogger(t), ShimBinary: nsnShim(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		backends[i] = b
	}
	for round := range 20 {
		id := uniqueID("twice")
		if _, err := m.Spawn(ctx, task.Task{ID: id, Image: busyboxRef, Command: []string{"sleep", "60"}}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, len(backends))
		for i, b := range backends {
			wg.Go(func() { errs[i] = b.Destroy(ctx, id) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d: Destroy %d: %v", round, i, err)
			}
		}
		if err := m.Remove(ctx, id, true); err != nil {
			t.Errorf("round %d: Remove after both: %v", round, err)
		}
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
}

// shimsOf lists the processes running as the shim of task id.
func shimsOf(id string) []int {
	return processesWhere(func(args []string) bool {
		i := slices.Index(args, "-id")
		return i > 0 && i+1 < len(args) && args[i+1] == id && strings.Contains(filepath.Base(args[0]), "shim")
	})
}

// processesWhere lists the processes whose arguments match.
func processesWhere(match func(args []string) bool) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		if match(strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			pids = append(pids, pid)
		}
	}
	return pids
}
