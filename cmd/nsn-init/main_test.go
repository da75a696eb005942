package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// initBinary builds nsn-init as the task gets it (static).
func initBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nsn-init")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if err == nil {
		return 0
	}
	if !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return ee.ExitCode()
}

// TestInit: the command's exit code passes through; a missing command is
// 127; SIGTERM to nsn-init reaches a command with no handler of its own
// (it dies of it: 143); an orphan the command leaves behind is reaped.
func TestInit(t *testing.T) {
	bin := initBinary(t)
	if code := exitCode(t, exec.Command(bin, "--", "sh", "-c", "exit 3").Run()); code != 3 {
		t.Errorf("exit code %d, want 3", code)
	}
	if code := exitCode(t, exec.Command(bin, "--", "no-such-command").Run()); code != exitNotFound {
		t.Errorf("missing command: %d, want %d", code, exitNotFound)
	}

	term := exec.Command(bin, "--", "sh", "-c", "echo up; exec sleep 300")
	out, err := term.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := term.Start(); err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "up\n" {
		t.Fatalf("command did not start: %q", line)
	}
	if err := term.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, term.Wait()); code != 128+int(syscall.SIGTERM) {
		t.Errorf("after SIGTERM: exit %d, want 143 (the command died of the forwarded SIGTERM)", code)
	}

	// The command starts a child in the background, prints its pid and
	// leaves it (sh exits): the orphan goes to nsn-init, which must reap
	// it. The main command then waits on stdin so nsn-init stays up.
	orphan := exec.Command(bin, "--", "sh", "-c", `sh -c 'sleep 0.1 & echo $!'; cat >/dev/null`)
	orphan.Env = append(os.Environ(), "NSN_INIT_DEBUG=1")
	stdin, _ := orphan.StdinPipe()
	stdout, _ := orphan.StdoutPipe()
	stderr, _ := orphan.StderrPipe()
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	pid, _ := bufio.NewReader(stdout).ReadString('\n')
	pid = strings.TrimSpace(pid)
	reaped := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if sc.Text() == "nsn-init: reaped "+pid {
				reaped <- true
				return
			}
		}
		reaped <- false
	}()
	select {
	case ok := <-reaped:
		if !ok {
			t.Errorf("orphan %s was never reaped", pid)
		}
	case <-time.After(time.Minute): // a hang guard, not a timing check
		t.Errorf("orphan %s was never reaped", pid)
	}
	stdin.Close()
	if code := exitCode(t, orphan.Wait()); code != 0 {
		t.Errorf("exit %d", code)
	}
}

// TestPause: --pause holds still until SIGTERM, then exits 0.
func TestPause(t *testing.T) {
	bin := initBinary(t)
	p := exec.Command(bin, "--pause")
	p.Env = append(os.Environ(), "NSN_INIT_DEBUG=1")
	stderr, err := p.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	// It says so once its handler is in place: SIGTERM is then caught.
	if line, _ := bufio.NewReader(stderr).ReadString('\n'); line != "nsn-init: paused\n" {
		t.Fatalf("not paused: %q", line)
	}
	if err := p.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, p.Wait()); code != 0 {
		t.Errorf("after SIGTERM: exit %d, want 0", code)
	}
}
