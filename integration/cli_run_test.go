package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/nsn-run/nsn-run/docs"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

// cliEnv returns the global flags that point nsn-run at the containerd under
// test, with a state dir of the test's own.
func cliEnv(t *testing.T) []string {
	t.Helper()
	c, addr := containerdClient(t)
	importBusybox(t, c, addr)
	nsnRun(t)
	return []string{"--address", addr, "--namespace", testNamespace, "--state-dir", t.TempDir()}
}

func cli(t *testing.T, global []string, args ...string) cliResult {
	t.Helper()
	return runCLI(t, nil, slices.Concat(args[:1], global, args[1:])...)
}

// checkResultSchema fails the test unless out, what `nsn-run run --json`
// printed, is valid against docs/result.schema.json (embedded in package
// docs): the contract callers in other languages rely on.
func checkResultSchema(t *testing.T, out string) {
	t.Helper()
	if err := docs.ValidateResult([]byte(out)); err != nil {
		t.Errorf("run --json output: %v\n%s", err, out)
	}
}

// TestCLISeed: `nsn-run run --json alpine:latest -- echo hello` gives exit
// code 0, reason "exited", stdout "hello\n", and leaves no container.
func TestCLISeed(t *testing.T) {
	g := cliEnv(t)
	c, _ := containerdClient(t)
	r := cli(t, g, "run", "--json", "--memory", "512m", "alpine:latest", "--", "echo", "hello")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	var res task.Result
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("stdout is not a Result: %v\n%s", err, r.stdout)
	}
	checkResultSchema(t, r.stdout)
	if res.ExitCode != 0 || res.Reason != task.ReasonExited || res.Stdout != "hello\n" || res.Image != alpineRef {
		t.Errorf("result = %+v", res)
	}
	for _, key := range []string{`"id"`, `"started_at"`, `"finished_at"`, `"duration_ms"`, `"stdout_truncated"`, `"stderr_truncated"`, `"output_files": []`, `"peak_memory_bytes"`, `"cpu_usage_seconds"`, `"pids_peak"`, `"oom_kills"`} {
		if !strings.Contains(r.stdout, key) {
			t.Errorf("Result JSON lacks %s", key)
		}
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
}

func TestCLIForegroundRun(t *testing.T) {
	g := cliEnv(t)
	out := filepath.Join(t.TempDir(), "out")
	r := cli(t, g, "run", "--output-dir", out, "busybox:latest", "--", "sh", "-c", "echo out; echo err >&2; echo 42 > /output/answer; exit 5")
	if r.code != 5 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Errorf("exit %d stdout %q stderr %q; want 5, out, err", r.code, r.stdout, r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(out, "answer")); err != nil || string(b) != "42\n" {
		t.Errorf("output file = %q, %v", b, err)
	}
	if r := cli(t, g, "run", "--timeout", "1s", "--grace", "100ms", "busybox", "--", "sleep", "30"); r.code != 124 || !strings.Contains(r.stderr, "timed_out") {
		t.Errorf("timeout: exit %d stderr %q, want 124 and timed_out", r.code, r.stderr)
	}
}

// startCLI starts nsn-run with args, its stdout a pipe the test reads and
// may close, as `| head -1` does; it fails the test if nsn-run is still
// running two minutes on.
func startCLI(t *testing.T, args ...string) (*exec.Cmd, *bufio.Reader, io.Closer, *bytes.Buffer) {
	t.Helper()
	return startCommand(t, nsnRun(t), args...)
}

// startCommand is startCLI for any program.
func startCommand(t *testing.T, name string, args ...string) (*exec.Cmd, *bufio.Reader, io.Closer, *bytes.Buffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, name, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, bufio.NewReader(stdout), stdout, &stderr
}

// readLine reads the next line nsn-run wrote, failing the test on anything
// but want.
func readLine(t *testing.T, r *bufio.Reader, want string) {
	t.Helper()
	if line, err := r.ReadString('\n'); line != want || err != nil {
		t.Fatalf("nsn-run's first line: %q, %v; want %q", line, err, want)
	}
}

// TestCLIReaderGoneStopsTheRun: a foreground run whose output's reader goes
// away (`nsn-run run IMAGE -- yes | head -1`), whose terminal hangs up, or
// that gets Ctrl-\'s SIGQUIT, stops its task and removes it, as an
// interrupt does; Ctrl-Z does not suspend it, so the deadline holds; a
// `logs -f` whose reader goes away ends at once. Before, nsn-run died of the signal (a
// shell saw 141 for the pipe) and the task ran on with nobody enforcing
// its --timeout until a gc: `ps` listed it running after the pipe closed.
func TestCLIReaderGoneStopsTheRun(t *testing.T) {
	g := cliEnv(t)
	c, _ := containerdClient(t)
	gone := func(t *testing.T, id string) {
		t.Helper()
		if r := cli(t, g, "ps"); r.code != 0 || strings.Contains(r.stdout, id) {
			t.Errorf("ps after nsn-run exited: exit %d, %q; want %s gone", r.code, r.stdout, id)
		}
		if l := leftovers(t, c); l != "" {
			t.Errorf("left behind: %s", l)
		}
	}
	t.Run("pipe closed", func(t *testing.T) {
		id := uniqueID("pipe")
		cmd, out, closeOut, stderr := startCLI(t, slices.Concat([]string{"run"}, g, []string{"--id", id, "--grace", "1s", "--timeout", "5m", "busybox", "--", "yes"})...)
		readLine(t, out, "y\n")
		_ = closeOut.Close()
		err := cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 141 || stderr.Len() != 0 {
			t.Errorf("nsn-run after its stdout's reader went: %v, exit %d, stderr %q; want 141 and nothing said", err, code, stderr)
		}
		gone(t, id)
	})
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGQUIT} {
		t.Run(sig.String(), func(t *testing.T) {
			id := uniqueID("sig")
			cmd, out, _, stderr := startCLI(t, slices.Concat([]string{"run"}, g, []string{"--id", id, "--grace", "1s", "--timeout", "5m", "busybox", "--", "sh", "-c", "echo up; exec sleep 300"})...)
			readLine(t, out, "up\n")
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			// sleep, the task's pid 1, has no SIGTERM handler: SIGKILL
			// after the grace.
			if code := cmd.ProcessState.ExitCode(); code != 137 || !strings.Contains(stderr.String(), "killed") {
				t.Errorf("nsn-run after %v: %v, exit %d, stderr %q; want 137, killed", sig, err, code, stderr)
			}
			gone(t, id)
		})
	}
	t.Run("suspended", func(t *testing.T) {
		// Ctrl-Z's SIGTSTP stopped nsn-run, the one process enforcing
		// the task's deadline: the task ran on past it. Ignored, the
		// deadline holds.
		id := uniqueID("tstp")
		cmd, out, _, stderr := startCLI(t, slices.Concat([]string{"run"}, g, []string{"--id", id, "--grace", "100ms", "--timeout", "2s", "busybox", "--", "sh", "-c", "echo up; exec sleep 300"})...)
		readLine(t, out, "up\n")
		if err := cmd.Process.Signal(syscall.SIGTSTP); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 124 || !strings.Contains(stderr.String(), "timed_out") {
			t.Errorf("nsn-run after SIGTSTP, its task's deadline 2 s away: %v, exit %d, stderr %q; want 124, timed_out", err, code, stderr)
		}
		gone(t, id)
	})
	t.Run("nohup", func(t *testing.T) {
		// Started with SIGHUP ignored, as nohup starts it: the run must
		// outlive the hang-up (a handler installed for SIGHUP would undo
		// the ignore, and stop the task).
		id := uniqueID("nohup")
		args := slices.Concat([]string{"-c", `trap "" HUP; exec "$0" "$@"`, nsnRun(t), "run"}, g, []string{"--id", id, "--grace", "100ms", "busybox", "--", "sh", "-c", "echo up; sleep 3; echo done"})
		cmd, out, _, stderr := startCommand(t, "sh", args...)
		readLine(t, out, "up\n")
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		rest, _ := io.ReadAll(out)
		err := cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 0 || string(rest) != "done\n" {
			t.Errorf("nsn-run started with SIGHUP ignored, after a SIGHUP: %v, exit %d, then %q, stderr %q; want the task's own end: 0, done", err, code, rest, stderr.String())
		}
		gone(t, id)
	})
	t.Run("disk full", func(t *testing.T) {
		// Not a reader gone: the stream stops, the task runs to its end
		// and its output is collected; nsn-run says why it failed.
		id := uniqueID("full")
		full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer full.Close()
		out := filepath.Join(t.TempDir(), "out")
		cmd := exec.Command(nsnRun(t), slices.Concat([]string{"run"}, g, []string{"--id", id, "--output-dir", out, "busybox", "--", "sh", "-c", "echo hi; echo done > /output/x; exit 3"})...)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = full, &stderr
		err = cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != 125 || !strings.Contains(stderr.String(), "no space left on device") {
			t.Errorf("nsn-run with its stdout on /dev/full: %v, exit %d, stderr %q; want 125 saying why", err, code, stderr.String())
		}
		if b, err := os.ReadFile(filepath.Join(out, "x")); err != nil || string(b) != "done\n" {
			t.Errorf("the task's /output/x: %q, %v; want it collected", b, err)
		}
		gone(t, id)
	})
	t.Run("logs -f", func(t *testing.T) {
		id := uniqueID("follow")
		if r := cli(t, g, "run", "-d", "--id", id, "busybox", "--", "sh", "-c", "while :; do echo x; sleep 0.1; done"); r.code != 0 {
			t.Fatalf("run -d: %d %q", r.code, r.stderr)
		}
		defer func() {
			if r := cli(t, g, "rm", "-f", id); r.code != 0 {
				t.Errorf("rm -f: exit %d: %s", r.code, r.stderr)
			}
		}()
		cmd, out, closeOut, stderr := startCLI(t, slices.Concat([]string{"logs"}, g, []string{"-f", id})...)
		readLine(t, out, "x\n")
		_ = closeOut.Close()
		err := cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 141 || stderr.Len() != 0 {
			t.Errorf("logs -f after its stdout's reader went: %v, exit %d, stderr %q; want 141 and nothing said", err, code, stderr)
		}
		if r := cli(t, g, "ps"); !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "running") {
			t.Errorf("ps: %q; want %s still running (logs -f ended, the task did not)", r.stdout, id)
		}
	})
}

// TestCLIDetachedLifecycle: run -d, ps, logs, kill, rm, gc.
func TestCLIDetachedLifecycle(t *testing.T) {
	g := cliEnv(t)
	c, _ := containerdClient(t)

	short := uniqueID("det")
	if r := cli(t, g, "run", "-d", "--id", short, "busybox", "--", "sh", "-c", "echo ready; echo oops >&2"); r.code != 0 || r.stdout != short+"\n" {
		t.Fatalf("run -d: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	// logs -f returns once the task has exited, with all it wrote.
	if r := cli(t, g, "logs", "-f", short); r.code != 0 || r.stdout != "ready\n" || r.stderr != "oops\n" {
		t.Errorf("logs -f: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}

	long := uniqueID("det")
	if r := cli(t, g, "run", "-d", "--id", long, "busybox", "--", "sleep", "60"); r.code != 0 {
		t.Fatalf("run -d: exit %d stderr %q", r.code, r.stderr)
	}
	states := psStates(t, g)
	if states[short] != "stopped:0" || states[long] != "running" {
		t.Errorf("ps = %v, want %s stopped:0 and %s running", states, short, long)
	}
	if r := cli(t, g, "rm", long); r.code != 125 || !strings.Contains(r.stderr, "is running") {
		t.Errorf("rm of a running task: exit %d stderr %q", r.code, r.stderr)
	}
	if r := cli(t, g, "run", "-d", "--id", long, "busybox", "--", "true"); r.code != 125 || !strings.Contains(r.stderr, "already exists: remove it first (nsn-run rm "+long+")") {
		t.Errorf("duplicate id: exit %d stderr %q; want the error and the CLI's command for it", r.code, r.stderr)
	}
	if r := cli(t, g, "kill", long); r.code != 0 {
		t.Errorf("kill: exit %d stderr %q", r.code, r.stderr)
	}
	cli(t, g, "logs", "-f", long) // waits for the exit
	if st := psStates(t, g)[long]; st != "stopped:137" {
		t.Errorf("after kill: %s", st)
	}
	var killed task.Result
	if r := cli(t, g, "wait", long); r.code != 137 || json.Unmarshal([]byte(r.stdout), &killed) != nil || killed.Reason != task.ReasonKilled {
		t.Errorf("wait after kill: exit %d stdout %q; want 137 with reason killed", r.code, r.stdout)
	}
	if r := cli(t, g, "rm", long); r.code != 0 || r.stdout != long+"\n" {
		t.Errorf("rm: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	// Its supervisor released the container when it ended: gc removes
	// its state (or the container, if the supervisor is not done yet).
	if r := cli(t, g, "gc"); r.code != 0 || !(strings.Contains(r.stdout, "removed state "+short) || strings.Contains(r.stdout, "removed task "+short+" (stopped)")) {
		t.Errorf("gc: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if states := psStates(t, g); len(states) != 0 {
		t.Errorf("ps after rm and gc = %v", states)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
}

func psStates(t *testing.T, g []string) map[string]string {
	t.Helper()
	r := cli(t, g, "ps", "--json")
	if r.code != 0 {
		t.Fatalf("ps: exit %d stderr %q", r.code, r.stderr)
	}
	var list []runtime.Status
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("ps --json: %v", err)
	}
	states := map[string]string{}
	for _, st := range list {
		s := string(st.State)
		if st.State == runtime.StateStopped {
			s += ":" + strconv.Itoa(st.ExitCode)
		}
		states[st.ID] = s
	}
	return states
}

// TestCLIRunFailures: nsn-run's own failures exit 125 (a missing command 127,
// a non-executable one 126) with one line, and leave no container.
func TestCLIRunFailures(t *testing.T) {
	g := cliEnv(t)
	c, _ := containerdClient(t)
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "mine"), []byte("operator's\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown image", []string{"run", "nosuchimage:1", "--", "true"}, 125, "not found locally: import or pull it first (nsn-run image import|pull)"},
		{"missing binary", []string{"run", "busybox", "--", "/no/such/bin"}, 127, `command "/no/such/bin" not found`},
		{"not executable", []string{"run", "busybox", "--", "/etc"}, 126, "is not executable"},
		{"bad input", []string{"run", "--cpus", "-1", "busybox", "--", "true"}, 125, "cpus"},
		{"bad env", []string{"run", "-e", "1X=y", "busybox", "--", "true"}, 125, "env key"},
		{"output dir not empty", []string{"run", "--output-dir", full, "busybox", "--", "sh", "-c", "echo task > /output/mine"}, 125, "is not empty"},
		{"output dir detached", []string{"run", "-d", "--output-dir", t.TempDir(), "busybox", "--", "true"}, 125, "output-dir"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cli(t, g, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("exit %d stderr %q; want %d and one line with %q", r.code, r.stderr, tc.code, tc.want)
			}
		})
	}
	if b, err := os.ReadFile(filepath.Join(full, "mine")); err != nil || string(b) != "operator's\n" {
		t.Errorf("the operator's file in the output dir is now %q (%v)", b, err)
	}
	down := runCLI(t, nil, "run", "--address", filepath.Join(t.TempDir(), "no.sock"), "busybox", "--", "true")
	if down.code != 125 || !strings.Contains(down.stderr, "containerd is not running") || !strings.Contains(down.stderr, "NSN_ADDRESS") {
		t.Errorf("daemon down: exit %d stderr %q", down.code, down.stderr)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
}

// TestCLIDetachedTimeoutWithoutWaiter: run -d --timeout 2s of a task that
// would sleep 300 s, and nobody waits on it: its supervisor ends it at the
// deadline, and inspect and wait show the Result (timed_out, 124). Before
// the supervisor, a detached task's timeout held only while an nsn-run
// process waited on it.
func TestCLIDetachedTimeoutWithoutWaiter(t *testing.T) {
	g := cliEnv(t)
	c, _ := containerdClient(t)
	id := uniqueID("det")
	if r := cli(t, g, "run", "-d", "--id", id, "--timeout", "2s", "--grace", "1s", "busybox", "--", "sleep", "300"); r.code != 0 {
		t.Fatalf("run -d: exit %d stderr %q", r.code, r.stderr)
	}
	// Watch the exit through containerd itself: no nsn-run process waits.
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), testNamespace), 2*time.Minute)
	defer cancel()
	if ctr, err := c.LoadContainer(ctx, id); err == nil {
		if tk, err := ctr.Task(ctx, nil); err == nil {
			if exited, err := tk.Wait(ctx); err == nil {
				select {
				case <-exited:
				case <-ctx.Done(): // a hang guard: the task would sleep 300 s
					t.Fatal("the detached task outlived its deadline by two minutes: nothing enforced it")
				}
			}
		}
	} // else: already ended and released by its supervisor
	var st runtime.Status
	for st.Result == nil && ctx.Err() == nil { // the supervisor records the Result right after the exit
		r := cli(t, g, "inspect", id)
		if r.code != 0 {
			t.Fatalf("inspect: exit %d stderr %q", r.code, r.stderr)
		}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("inspect: %v: %s", err, r.stdout)
		}
	}
	if st.Result == nil || st.Result.Reason != task.ReasonTimedOut || st.Result.ExitCode != runtime.ExitTimedOut || st.State != runtime.StateStopped {
		t.Fatalf("inspect after the deadline: %+v (result %+v)", st, st.Result)
	}
	w := cli(t, g, "wait", id)
	var res task.Result
	if w.code != runtime.ExitTimedOut || json.Unmarshal([]byte(w.stdout), &res) != nil || res.Reason != task.ReasonTimedOut {
		t.Errorf("wait: exit %d stdout %q stderr %q", w.code, w.stdout, w.stderr)
	}
	if r := cli(t, g, "rm", id); r.code != 0 {
		t.Errorf("rm: exit %d stderr %q", r.code, r.stderr)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
}

// TestGCEndsOverdueUnwatchedTasks: a detached task whose supervisor was
// killed (SIGKILL: nothing it can catch) runs past its deadline with
// nobody waiting; the next gc ends it as its Wait would have (timed_out)
// and says so.
func TestGCEndsOverdueUnwatchedTasks(t *testing.T) {
	g := cliEnv(t)
	c, _ := containerdClient(t)
	state := g[slices.Index(g, "--state-dir")+1]
	id := uniqueID("orphaned")
	if r := cli(t, g, "run", "-d", "--id", id, "--timeout", "1s", "--grace", "1s", "busybox", "--", "sleep", "300"); r.code != 0 {
		t.Fatalf("run -d: exit %d stderr %q", r.code, r.stderr)
	}
	t.Cleanup(func() { cli(t, g, "rm", "-f", id) }) // whatever happens below
	killed := 0
	for _, pid := range processesWhere(func(args []string) bool {
		return slices.Contains(args, "supervise") && slices.Contains(args, state)
	}) {
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			killed++
		}
	}
	if killed != 1 {
		t.Fatalf("killed %d supervisors of state dir %s, want 1", killed, state)
	}
	// The scenario needs the deadline and grace to pass with nobody
	// waiting: 2 s of wall-clock time.
	time.Sleep(2500 * time.Millisecond)
	if st := psStates(t, g)[id]; st != "running" {
		t.Fatalf("before gc the unwatched task is %q, want still running", st)
	}
	r := cli(t, g, "gc")
	if r.code != 0 || !strings.Contains(r.stdout, "ended task "+id+": past its deadline") {
		t.Fatalf("gc: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	var st runtime.Status
	if r := cli(t, g, "inspect", id); r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || st.Result == nil || st.Result.Reason != task.ReasonTimedOut {
		t.Errorf("inspect after gc: exit %d %q", r.code, r.stdout)
	}
	if r := cli(t, g, "rm", id); r.code != 0 {
		t.Errorf("rm: exit %d stderr %q", r.code, r.stderr)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
}

// TestCLINamespacesShareStateDir: two containerd namespaces on one state
// dir (the CLI's default for both). An outside review ran `rm`, `rm -f` and
// `gc --force` in the second namespace on the first's running task: its
// state dir went, and its host id range and GPU went to the next task
// while it ran. Now each is refused or passed over, naming the task's
// namespace, and the task keeps its record and host ids.
func TestCLINamespacesShareStateDir(t *testing.T) {
	a := cliEnv(t)
	b := slices.Clone(a)
	b[slices.Index(b, "--namespace")+1] = testNamespace + "-b"
	id := uniqueID("scope")
	if r := cli(t, a, "run", "-d", "--id", id, "busybox", "--", "sleep", "60"); r.code != 0 {
		t.Fatalf("run -d: exit %d stderr %q", r.code, r.stderr)
	}
	t.Cleanup(func() { cli(t, a, "rm", "-f", id) })
	hostIDs := func() string {
		r := cli(t, a, "ps", "--json")
		var sts []struct {
			ID       string         `json:"id"`
			State    string         `json:"state"`
			Identity *task.Identity `json:"identity"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &sts); err != nil {
			t.Fatalf("ps --json: %v: %s", err, r.stdout)
		}
		for _, st := range sts {
			if st.ID == id && st.Identity != nil && st.Identity.Range != nil {
				return fmt.Sprintf("%s %d", st.State, st.Identity.Range.HostID)
			}
		}
		return "absent"
	}
	// The attack first, without the control: a record that names no
	// scope (as records did before 2026-11-30) counts as every scope's,
	// and the other namespace's rm -f takes a running task's record,
	// state and id range.
	legacy := uniqueID("noscope")
	if r := cli(t, a, "run", "-d", "--id", legacy, "busybox", "--", "sleep", "60"); r.code != 0 {
		t.Fatalf("run -d: exit %d stderr %q", r.code, r.stderr)
	}
	t.Cleanup(func() { cli(t, a, "gc", "--force") }) // its container, once its record is gone
	recordPath := filepath.Join(a[slices.Index(a, "--state-dir")+1], "tasks", legacy, "task.json")
	raw, err := os.ReadFile(recordPath)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	if rec["scope"] == nil {
		t.Fatalf("the record of %s names no scope: %s", legacy, raw)
	}
	delete(rec, "scope")
	if raw, err = json.Marshal(rec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(recordPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, b, "rm", "-f", legacy); r.code != 0 {
		t.Fatalf("the attack: rm -f of an unscoped record from the other namespace: exit %d stderr %q; want it removed", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Dir(recordPath)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the attack: the unscoped task's state after the other namespace's rm -f: %v; want it gone", err)
	}
	t.Logf("the attack: the other namespace's rm -f took %s's state while it ran in %s", legacy, testNamespace)

	before := hostIDs()
	want := `belongs to containerd namespace "` + testNamespace + `"`
	for _, args := range [][]string{{"rm", id}, {"rm", "-f", id}, {"run", "--id", id, "busybox", "--", "true"}, {"logs", id}} {
		if r := cli(t, b, args...); r.code != 125 || !strings.Contains(r.stderr, want) {
			t.Errorf("%v in the other namespace: exit %d stderr %q; want 125 naming the task's namespace", args, r.code, r.stderr)
		}
	}
	if r := cli(t, b, "gc", "--force"); r.code != 0 || strings.Contains(r.stdout, id) {
		t.Errorf("gc --force in the other namespace: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if after := hostIDs(); !strings.HasPrefix(before, "running ") || after != before {
		t.Errorf("the task in its own namespace: %q before, %q after; want running with the same host ids", before, after)
	}
	// The scope is the containerd's (its UUID), not the socket's path:
	// another spelling of the same socket is the same scope.
	other := slices.Clone(a)
	link := filepath.Join(t.TempDir(), "containerd.sock")
	if err := os.Symlink(a[slices.Index(a, "--address")+1], link); err != nil {
		t.Fatal(err)
	}
	other[slices.Index(other, "--address")+1] = link
	if r := cli(t, other, "rm", "-f", id); r.code != 0 {
		t.Errorf("rm -f in its own namespace, through a symlink to the socket: exit %d stderr %q", r.code, r.stderr)
	}
}

// TestCLIWaitCollectsOutput: `wait --output-dir` takes a detached task's
// /output files as run --output-dir does (a sixteenth review found no
// safe way to: reading STATE/tasks/ID/output as root followed the task's
// link to /etc/shadow), and inspect's Result carries the logs wait's does.
func TestCLIWaitCollectsOutput(t *testing.T) {
	g := cliEnv(t)
	id := uniqueID("waitout")
	t.Cleanup(func() { cli(t, g, "rm", "-f", id) })
	if r := cli(t, g, "run", "-d", "--id", id, "busybox", "--", "sh", "-c", "echo real > /output/data.txt; ln -s /etc/shadow /output/answer.txt; echo OUT"); r.code != 0 {
		t.Fatalf("run -d: exit %d stderr %q", r.code, r.stderr)
	}
	dest := filepath.Join(t.TempDir(), "out")
	r := cli(t, g, "wait", "--output-dir", dest, id)
	if r.code != 0 || !strings.Contains(r.stdout, `"stdout": "OUT\n"`) {
		t.Fatalf("wait --output-dir: exit %d stdout %s stderr %q", r.code, r.stdout, r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dest, "data.txt")); err != nil || string(b) != "real\n" {
		t.Errorf("data.txt in the output dir: %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(dest, "answer.txt")); !os.IsNotExist(err) {
		t.Errorf("the task's symlink reached the output dir: %v", err)
	}
	if ins := cli(t, g, "inspect", id); ins.code != 0 || !strings.Contains(ins.stdout, `"stdout": "OUT\n"`) {
		t.Errorf("inspect: exit %d stdout %s", ins.code, ins.stdout)
	}
	again := cli(t, g, "wait", "--output-dir", dest, id)
	if again.code != 125 || strings.Count(again.stderr, "\n") != 1 || !strings.Contains(again.stderr, "not empty") {
		t.Errorf("wait into the filled dir: exit %d stderr %q", again.code, again.stderr)
	}
}
