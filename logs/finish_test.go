package logs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsn-run/nsn-run/internal/procstat"
)

// The test binary doubles as the shim logger: the shim runs
// `LOGGER shim-logger CONFIG`, and so do these tests.
func TestMain(m *testing.M) {
	if os.Getenv("NSN_LOGS_TEST_LOGGER") == "1" && len(os.Args) == 3 && os.Args[1] == ShimLoggerCommand {
		if err := RunShimLogger(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// shimLogger starts the logger as the runc shim does: the read ends of the
// task's stdout and stderr pipes on fds 3 and 4, fd 5 closed once ready.
// It returns the write ends, which the shim (here, the test) keeps open.
func shimLogger(t *testing.T, dir string) (cmd *exec.Cmd, stdout, stderr *os.File) {
	t.Helper()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var config string
	for _, v := range ShimLoggerArgs(dir, Limits{HeadBytes: 1 << 20, TailBytes: 1 << 20}) {
		config = v
	}
	cmd = exec.Command(os.Args[0], ShimLoggerCommand, config)
	cmd.Env = append(os.Environ(), "NSN_LOGS_TEST_LOGGER=1")
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []*os.File{outR, errR, readyW} {
		f.Close()
	}
	if _, err := io.ReadAll(readyR); err != nil {
		t.Fatal(err)
	}
	readyR.Close()
	t.Cleanup(func() {
		outW.Close()
		errW.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, outW, errW
}

func TestFinishShimLoggerCompletesWhilePipesStayOpen(t *testing.T) {
	dir := t.TempDir()
	cmd, stdout, stderr := shimLogger(t, dir)
	// More than a pipe holds, and the last bytes written just before the
	// finish: everything written before must reach the file.
	want := bytes.Repeat([]byte("0123456789abcdef"), 40<<10)
	want = append(want, "the last line\n"...)
	if _, err := stdout.Write(want); err != nil {
		t.Fatal(err)
	}
	if _, err := stderr.Write([]byte("oops\n")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := FinishShimLogger(ctx, dir); err != nil {
		t.Fatalf("FinishShimLogger: %v", err)
	}
	out, err := Read(filepath.Join(dir, StdoutFile))
	if err != nil {
		t.Fatal(err)
	}
	if !out.Complete || out.Data != string(want) {
		t.Errorf("stdout: complete=%v, %d bytes, want complete and %d bytes", out.Complete, len(out.Data), len(want))
	}
	errs, err := Read(filepath.Join(dir, StderrFile))
	if err != nil {
		t.Fatal(err)
	}
	if !errs.Complete || errs.Data != "oops\n" {
		t.Errorf("stderr: %+v, want complete %q", errs, "oops\n")
	}
	// Again: the logs are complete, nothing to do.
	if err := FinishShimLogger(ctx, dir); err != nil {
		t.Errorf("second FinishShimLogger: %v", err)
	}
	// The logger waits for the shim's SIGTERM at the task's delete, and
	// ends cleanly then.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("logger exit after SIGTERM: %v", err)
	}
}

// TestFinishShimLoggerChecksStartTime: a pid file whose pid is another
// task's logger, with a start time that is not that process's (the pid was
// reused), signals nothing: the other logger keeps capturing.
func TestFinishShimLoggerChecksStartTime(t *testing.T) {
	other := t.TempDir()
	_, stdout, _ := shimLogger(t, other)
	raw, err := os.ReadFile(filepath.Join(other, LoggerPIDFile))
	if err != nil {
		t.Fatal(err)
	}
	pid, _, _ := strings.Cut(string(raw), " ")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, LoggerPIDFile), []byte(pid+" 1"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := FinishShimLogger(ctx, dir); err == nil {
		t.Error("FinishShimLogger with a stale pid = nil, want an incomplete-logs error")
	}
	// Had it been signalled, the other logger would have stopped reading.
	if _, err := stdout.Write([]byte("still captured\n")); err != nil {
		t.Fatal(err)
	}
	if err := FinishShimLogger(ctx, other); err != nil {
		t.Fatal(err)
	}
	if out, _ := Read(filepath.Join(other, StdoutFile)); out.Data != "still captured\n" {
		t.Errorf("other logger's stdout = %q, want the line written after the stale finish", out.Data)
	}
}

func TestShimLoggerStillEndsAtEOF(t *testing.T) {
	dir := t.TempDir()
	cmd, stdout, stderr := shimLogger(t, dir)
	if _, err := stdout.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	stdout.Close()
	stderr.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("logger exit: %v", err)
	}
	out, err := Read(filepath.Join(dir, StdoutFile))
	if err != nil || !out.Complete || out.Data != "hello\n" {
		t.Errorf("stdout = %+v, %v; want complete %q", out, err, "hello\n")
	}
}

func TestFinishShimLoggerRefusesWhatIsNotALogger(t *testing.T) {
	dir := t.TempDir()
	// A pid file naming some other process (this test): no signal is
	// sent to it, and the logs are reported incomplete.
	start, err := procstat.StartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, LoggerPIDFile), fmt.Appendf(nil, "%d %s", os.Getpid(), start), 0o600); err != nil {
		t.Fatal(err)
	}
	err = FinishShimLogger(context.Background(), dir)
	if err == nil || !strings.Contains(err.Error(), "without completing") {
		t.Errorf("FinishShimLogger = %v, want an incomplete-logs error", err)
	}
	if err := FinishShimLogger(context.Background(), t.TempDir()); err == nil {
		t.Error("FinishShimLogger without a pid file = nil, want an error")
	}
}

// TestShimLoggerKeepsAnEarlySIGTERM: the shim's SIGTERM may come before the
// logger has got to wait for it (the release starts as soon as
// FinishShimLogger has seen the meta files). It ends the logger once the
// logs are complete; ignored until then, it was lost and the logger lived
// on (a fresh-clone CI run hung ten minutes on the test above).
func TestShimLoggerKeepsAnEarlySIGTERM(t *testing.T) {
	dir := t.TempDir()
	cmd, stdout, _ := shimLogger(t, dir)
	if _, err := stdout.Write([]byte("before the finish\n")); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := FinishShimLogger(ctx, dir); err != nil {
		t.Fatalf("FinishShimLogger after an early SIGTERM: %v", err)
	}
	if out, err := Read(filepath.Join(dir, StdoutFile)); err != nil || !out.Complete || out.Data != "before the finish\n" {
		t.Errorf("stdout: %+v %v", out, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("logger exit: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the logger did not exit: the SIGTERM that came before the finish was lost")
	}
}
