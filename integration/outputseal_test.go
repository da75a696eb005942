package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

// TestOutputWriterAcrossTheEnd: a task that shares host ids (user
// namespaces off on containerd, every Docker task) runs as host uid 65534,
// the host's own nobody, and a host process of that uid reaches the task's
// /output through /proc/PID/root while the task runs (review 27). The
// attack first: such a process opens the task's result for writing while
// the task runs, keeps it open across the task's end (the seal at the end
// fails, EBUSY), writes after the end and closes it: the file changed
// after the Result was recorded, and the next collection's seal would
// work. The control: the failed seal is recorded, and the output is never
// handed over as the task's (failed precondition), by CollectOutput nor by
// `wait --output-dir`.
func TestOutputWriterAcrossTheEnd(t *testing.T) {
	t.Run("containerd", func(t *testing.T) {
		m, _ := testManagerUserNS(t, runtime.UserNSOff)
		outputWriterAcrossTheEnd(t, m)
	})
	t.Run("docker", func(t *testing.T) {
		outputWriterAcrossTheEnd(t, dockerManagerUserNS(t, runtime.UserNSOff))
	})
}

func outputWriterAcrossTheEnd(t *testing.T, m *runtime.Manager) {
	ctx := context.Background()
	id := uniqueID("late-writer")
	if _, err := m.Spawn(ctx, task.Task{ID: id, Image: busyboxRef, Command: []string{"sh", "-c", "echo genuine > /output/result && exec sleep 300"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Remove(context.Background(), id, true) })
	st, err := m.Inspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	result := fmt.Sprintf("/proc/%d/root/output/result", st.Pid)
	// Host nobody: waits for the task's line, opens the file for
	// appending, says so, and appends its line when told (after the end).
	writer := exec.Command(busyboxPath(t), "sh", "-c", `until [ -s "$1" ]; do sleep 0.05; done; exec 3>>"$1" && echo held && read x && echo forged >&3 && echo wrote`, "sh", result)
	writer.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	stdin, err := writer.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := writer.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	writer.Stderr = &stderr
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = writer.Process.Kill(); _ = writer.Wait() }()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "held" {
		t.Fatalf("host nobody could not open the running task's result for writing: %q %s", lines.Text(), stderr.String())
	}
	if err := m.Kill(ctx, id, syscall.SIGKILL, true); err != nil {
		t.Fatal(err)
	}
	res, err := m.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if !lines.Scan() || lines.Text() != "wrote" {
		t.Fatalf("host nobody's write after the end: %q %s", lines.Text(), stderr.String())
	}
	stdin.Close()
	if err := writer.Wait(); err != nil {
		t.Fatalf("host nobody: %v %s", err, stderr.String())
	}
	// The attack: the task's result changed after its end.
	// (STATE/tasks/ID/output/KEY/result: the key is the only entry.)
	found, err := filepath.Glob(filepath.Join(m.StateDir(), "tasks", id, "output", "*", "result"))
	if err != nil || len(found) != 1 {
		t.Fatalf("the task's result in its state dir: %v %v", found, err)
	}
	out, err := os.ReadFile(found[0])
	if err != nil || string(out) != "genuine\nforged\n" {
		t.Fatalf("the result after the end: %q (%v), want the late line in it", out, err)
	}
	t.Logf("attack: host nobody wrote into the ended task's result: %q", out)
	// The control.
	dest := filepath.Join(t.TempDir(), "out")
	if err := m.CollectOutput(ctx, id, dest, &res); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("CollectOutput: %v, want failed precondition", err)
	} else {
		t.Logf("CollectOutput: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dest, "result")); !os.IsNotExist(err) {
		t.Errorf("the forged result was handed over: %v", err)
	}
	// wait and inspect without a copy: the Result, no file, and why.
	if err := m.CollectOutput(ctx, id, "", &res); err != nil || len(res.OutputFiles) != 0 || len(res.OutputSkipped) != 1 || res.OutputSkipped[0].Path != "." {
		t.Errorf("the Result's lists: %v, files %+v, skipped %+v", err, res.OutputFiles, res.OutputSkipped)
	}
}
