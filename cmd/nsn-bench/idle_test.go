package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGrowthCountsNoDrop: a daemon that shrank while the idle tasks
// started adds nothing to their memory, each measure on its own; one that
// grew adds what it grew by. Run 39 had subtracted such drops.
func TestGrowthCountsNoDrop(t *testing.T) {
	for _, c := range []struct{ before, after, want memKiB }{
		{memKiB{1000, 500}, memKiB{1300, 600}, memKiB{300, 100}},
		{memKiB{28000, 9000}, memKiB{1000, 800}, memKiB{0, 0}},
		{memKiB{1000, 900}, memKiB{1200, 700}, memKiB{200, 0}},
	} {
		if got := growth(c.before, c.after); got != c.want {
			t.Errorf("growth(%v, %v) = %v, want %v", c.before, c.after, got, c.want)
		}
	}
}

// TestContainerdPIDFindsTheSocketsHolder: the process named containerd
// that holds the listening socket is found; the test process, which
// holds it too, is not taken for it, and a socket nobody listens on
// gives 0.
func TestContainerdPIDFindsTheSocketsHolder(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if pid := containerdPID(sock); pid != 0 {
		t.Fatalf("containerdPID = %d with only the test process (%d) holding the socket, want 0", pid, os.Getpid())
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	// A copy of sleep named containerd, the listening socket among its
	// descriptors.
	fake := filepath.Join(dir, "containerd")
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fake, b, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := l.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(fake, "60")
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if pid := containerdPID("unix://" + sock); pid != cmd.Process.Pid {
		t.Errorf("containerdPID = %d, want the fake containerd %d", pid, cmd.Process.Pid)
	}
	if pid := containerdPID(filepath.Join(dir, "other.sock")); pid != 0 {
		t.Errorf("containerdPID of a path nobody listens on = %d, want 0", pid)
	}
}
