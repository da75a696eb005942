package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/idmap"
	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/task"
)

// TestOutputLinksNotFollowed: /output holding links to a host file by
// absolute path, by ../ climbing and to /, a link to a directory, and a fifo:
// nothing of the host is copied, each is listed as skipped, the regular file
// is collected.
func TestOutputLinksNotFollowed(t *testing.T) {
	m, _ := testManager(t)
	dest := t.TempDir()
	script := `cd /output && echo data > ok.txt &&
ln -s /etc/passwd abs && ln -s ../../../../../../../etc/passwd climb && ln -s / root &&
ln -s /etc dirlink && mkfifo pipe && mkdir sub && ln -s ../../.. sub/up`
	res, err := m.Run(context.Background(), seedTask(uniqueID("links"), "sh", "-c", script), runtime.RunOptions{OutputDir: dest})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("exit %d stderr %q", res.ExitCode, res.Stderr)
	}
	if len(res.OutputFiles) != 1 || res.OutputFiles[0].Path != "ok.txt" {
		t.Errorf("collected %+v, want only ok.txt", res.OutputFiles)
	}
	skipped := map[string]string{}
	for _, s := range res.OutputSkipped {
		skipped[s.Path] = s.Reason
	}
	want := map[string]string{"abs": "symlink", "climb": "symlink", "root": "symlink", "dirlink": "symlink", "pipe": "fifo", "sub/up": "symlink"}
	for p, reason := range want {
		if skipped[p] != reason {
			t.Errorf("%s: skipped as %q, want %q (all skipped: %v)", p, skipped[p], reason, skipped)
		}
	}
	var copied []string
	_ = filepath.WalkDir(dest, func(p string, d os.DirEntry, err error) error {
		if err == nil && p != dest {
			rel, _ := filepath.Rel(dest, p)
			copied = append(copied, rel)
		}
		return nil
	})
	slices.Sort(copied)
	if !slices.Equal(copied, []string{"ok.txt", "sub"}) {
		t.Errorf("destination holds %v, want ok.txt and the empty dir sub", copied)
	}
}

// TestOutputCapENOSPC: writing past the output cap fails inside the task
// with ENOSPC, and the host's disk does not pay for it.
// TestOutputRepositoryNotCollected: a task's /output holding a .git
// directory whose config sets core.fsmonitor: git runs that command on the
// host at the operator's next `git status` in the copy (a git-aware shell
// prompt runs one on cd). Taken naively (cp -r of the task's output, as an
// operator would), `git status` in the copy runs the task's command on the
// host; collected by nsn-run, the .git is listed as skipped, not copied,
// and `git status` there runs nothing.
func TestOutputRepositoryNotCollected(t *testing.T) {
	gitBin, err := exec.LookPath("git")
	need(t, err == nil, "git is needed to show the attack: %v", err)
	m, _ := testManager(t)
	ctx := context.Background()
	hostDir := t.TempDir()
	marker := filepath.Join(hostDir, "fsmonitor-ran")
	id := uniqueID("repo")
	script := `cd /output && mkdir -p .git/objects .git/refs/heads && echo 'ref: refs/heads/main' > .git/HEAD &&
printf '[core]\n\trepositoryformatversion = 0\n\tfsmonitor = touch ` + marker + `; false\n' > .git/config && echo data > report.txt`
	if _, err := m.Spawn(ctx, seedTask(id, "sh", "-c", script)); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Cleanup(ctx, id) }()
	res, err := m.Wait(ctx, id)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("the task: %+v, %v", res, err)
	}
	gitStatus := func(dir string) string {
		out, _ := exec.Command(gitBin, "-C", dir, "status", "--short").CombinedOutput()
		return strings.TrimSpace(string(out))
	}

	naive := filepath.Join(t.TempDir(), "naive")
	if out, err := exec.Command("cp", "-r", taskOutput(t, m.StateDir(), id), naive).CombinedOutput(); err != nil {
		t.Fatalf("cp -r of the task's output: %v: %s", err, out)
	}
	out := gitStatus(naive)
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("bypass: git status in a naive copy ran no command of the task's (%v): %s", err, out)
	}
	t.Logf("bypass: git status in a naive copy of the output ran the task's fsmonitor command on the host")
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}

	dest := t.TempDir()
	if err := m.CollectOutput(ctx, id, dest, &res); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(res.OutputSkipped, func(s task.SkippedFile) bool { return s.Path == ".git" }) {
		t.Errorf("skipped %+v; want .git listed", res.OutputSkipped)
	}
	if !slices.ContainsFunc(res.OutputFiles, func(f task.OutputFile) bool { return f.Path == "report.txt" }) {
		t.Errorf("collected %+v; want report.txt", res.OutputFiles)
	}
	if _, err := os.Stat(filepath.Join(dest, ".git")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the collected output has a .git: %v", err)
	}
	out = gitStatus(dest)
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("git status in nsn-run's copy ran the task's command: %s", out)
	}
}

func TestOutputCapENOSPC(t *testing.T) {
	m, _ := testManager(t)
	var before unix.Statfs_t
	if err := unix.Statfs(os.TempDir(), &before); err != nil {
		t.Fatal(err)
	}
	tk := seedTask(uniqueID("enospc"), "sh", "-c", "dd if=/dev/zero of=/output/big bs=1M count=100; echo dd=$?")
	tk.Limits.OutputBytes = 8 * task.MiB
	res, err := m.Run(context.Background(), tk, runtime.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Stderr, "No space left on device") || !strings.Contains(res.Stdout, "dd=1") {
		t.Errorf("stdout %q stderr %q: want dd to fail with ENOSPC", res.Stdout, res.Stderr)
	}
	if len(res.OutputFiles) != 1 || res.OutputFiles[0].Size > 8<<20 || res.OutputFiles[0].Size < 7<<20 {
		t.Errorf("output files %+v: want the one file, cut at the 8 MiB cap", res.OutputFiles)
	}
	var after unix.Statfs_t
	if err := unix.Statfs(os.TempDir(), &after); err != nil {
		t.Fatal(err)
	}
	used := (int64(before.Bavail) - int64(after.Bavail)) * before.Bsize
	if used > 50<<20 {
		t.Errorf("the host's disk lost %d bytes to a task whose output is capped at 8 MiB", used)
	}
	tk = seedTask(uniqueID("inodes"), "sh", "-c", "i=0; while [ $i -lt 100 ]; do touch /output/f$i || exit 7; i=$((i+1)); done")
	tk.Limits.OutputFiles = 10
	res, err = m.Run(context.Background(), tk, runtime.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 7 || !strings.Contains(res.Stderr, "No space left on device") || len(res.OutputFiles) != 10 {
		t.Errorf("file cap: exit %d stderr %q files %d; want exit 7 at ENOSPC with 10 files", res.ExitCode, res.Stderr, len(res.OutputFiles))
	}
}

// TestOutputDirFull: --output-dir on a filesystem too small for the
// task's files. An outside review's run exited 125 and left a third of one
// file and all of another there, with no Result to say the first was cut:
// a cut-off copy could be taken for the task's file. Now the run fails
// naming the error, and nothing it copied is left in the directory.
func TestOutputDirFull(t *testing.T) {
	m, _ := testManager(t)
	dest := t.TempDir()
	if err := unix.Mount("tmpfs", dest, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dest, 0) })
	tk := seedTask(uniqueID("full"), "sh", "-c", "echo small > /output/a; mkdir /output/d; dd if=/dev/zero of=/output/d/big bs=1M count=3")
	_, err := m.Run(context.Background(), tk, runtime.RunOptions{OutputDir: filepath.Join(dest, "out")})
	if err == nil || !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), "partial copy") {
		t.Fatalf("run into a full output dir: %v; want the error, saying the partial copy was removed", err)
	}
	entries, err := os.ReadDir(filepath.Join(dest, "out"))
	if err != nil || len(entries) != 0 {
		t.Errorf("the output dir after the failed copy: %v, %v; want it empty", entries, err)
	}
}

// TestLogFlood: 300 MB on stdout: truncated, the Result's stdout bounded,
// and nsn-run's own memory well under 200 MB.
func TestLogFlood(t *testing.T) {
	g := cliEnv(t)
	args := slices.Concat([]string{"run"}, g, []string{"--json", "busybox", "--", "sh", "-c", "yes 0123456789abcdef0123456789abcdef | head -c 300000000; echo done >&2"})
	cmd := exec.Command(nsnRun(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("run: %v, stderr %q", err, stderr.String())
	}
	var res task.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	limit := logs.DefaultLimits.HeadBytes + logs.DefaultLimits.TailBytes + 100
	if !res.StdoutTruncated || int64(len(res.Stdout)) > limit || res.StderrTruncated || res.Stderr != "done\n" {
		t.Errorf("stdout truncated=%v len=%d (limit %d), stderr %q truncated=%v", res.StdoutTruncated, len(res.Stdout), limit, res.Stderr, res.StderrTruncated)
	}
	if !strings.HasPrefix(res.Stdout, "0123456789abcdef") || !strings.Contains(res.Stdout, "bytes dropped]") {
		t.Errorf("stdout does not keep the head and mark the cut: %q...", res.Stdout[:min(80, len(res.Stdout))])
	}
	maxRSS := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10 // KiB on Linux
	if maxRSS > 200<<20 {
		t.Errorf("nsn-run's peak resident memory was %d MiB", maxRSS>>20)
	}
	t.Logf("nsn-run peak RSS %d MiB for a 300 MB stdout", maxRSS>>20)
}

// startForeground starts `nsn-run run` for a task in the background and
// returns once the task has written marker to stdout (read from the shim
// logger's file: a condition, polled with a bound).
func startForeground(t *testing.T, g []string, stateDir, id, marker string, cmdline ...string) *exec.Cmd {
	t.Helper()
	args := slices.Concat([]string{"run"}, g, []string{"--id", id, "busybox", "--"}, cmdline)
	cmd := exec.Command(nsnRun(t), args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	log := filepath.Join(stateDir, "tasks", id, logs.StdoutFile)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, _ := os.ReadFile(log); strings.Contains(string(b), marker) {
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s did not print %q within 30s", id, marker)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stateDirOf(g []string) string { return g[slices.Index(g, "--state-dir")+1] }

// TestKill9ThenGCForce: kill -9 of a foreground `nsn-run run` while its
// task runs, then `nsn-run gc --force`: zero containers, tasks and leases,
// no mounts left.
func TestKill9ThenGCForce(t *testing.T) {
	g := cliEnv(t)
	c, _ := containerdClient(t)
	stateDir := stateDirOf(g)
	id := uniqueID("kill9")
	cmd := startForeground(t, g, stateDir, id, "started", "sh", "-c", "echo started; sleep 300")
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if l := leftovers(t, c); !strings.Contains(l, "container "+id) {
		t.Fatalf("after kill -9 the task should still be there, found: %q", l)
	}
	// The task's host id range is held, and so is one whose task never got
	// a record (a manager killed between allocating and recording).
	ids, err := idmap.New(idmap.Config{Owner: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ids.Allocate("never-recorded"); err != nil {
		t.Fatal(err)
	}
	if held, _ := ids.Held(); len(held) != 2 {
		t.Fatalf("id ranges held after kill -9: %v, want the task's and the unrecorded one", held)
	}
	r := cli(t, g, "gc", "--force")
	if r.code != 0 || !strings.Contains(r.stdout, "removed task "+id+" (running)") {
		t.Errorf("gc --force: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind after gc --force: %s", l)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), stateDir) {
		t.Errorf("mounts left under %s", stateDir)
	}
	if held, _ := ids.Held(); len(held) != 0 {
		t.Errorf("id ranges held after gc: %v", held)
	}
	if r := cli(t, g, "gc", "--force"); r.code != 0 || r.stdout != "" {
		t.Errorf("second gc: exit %d stdout %q: want nothing left to remove", r.code, r.stdout)
	}
}

// TestManagerRestartRecovers: the manager is killed while its task runs; a
// new manager over the same state recovers the task and returns its full
// Result, logs included.
func TestManagerRestartRecovers(t *testing.T) {
	g := cliEnv(t)
	c, addr := containerdClient(t)
	stateDir := stateDirOf(g)
	id := uniqueID("recover")
	cmd := startForeground(t, g, stateDir, id, "started", "sh", "-c", "echo started; sleep 2; echo finished; exit 3")
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	b, err := containerd.New(context.Background(), containerd.Config{Address: addr, Namespace: testNamespace, LoggerBinary: nsnRun(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	m, err := runtime.New(runtime.Config{Backend: b, StateDir: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	handles, err := m.Recover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(handles) != 1 || handles[0].ID != id {
		t.Fatalf("recovered %+v, want task %s", handles, id)
	}
	res, err := m.Wait(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.CollectOutput(context.Background(), id, "", &res); err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 3 || res.Reason != task.ReasonExited || res.Stdout != "started\nfinished\n" || res.Stats.CPUUsageSeconds <= 0 {
		t.Errorf("recovered result = exit %d reason %s stdout %q stats %+v", res.ExitCode, res.Reason, res.Stdout, res.Stats)
	}
	if err := m.Cleanup(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
}
