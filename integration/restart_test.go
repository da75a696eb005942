package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/task"
)

// envContainerdBin names the containerd binary the restart test starts a
// daemon of its own with (scripts/ci.sh sets it for each suite).
const envContainerdBin = "NSN_TEST_CONTAINERD_BIN"

// privateContainerd is a containerd the test owns, so it can restart it.
type privateContainerd struct {
	bin, dir, address string
	cmd               *exec.Cmd
	exited            chan error
}

func startPrivateContainerd(t *testing.T, p *privateContainerd) {
	t.Helper()
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(p.dir, "root"), filepath.Join(p.dir, "state"), p.address, p.address+".ttrpc")
	if err := os.WriteFile(filepath.Join(p.dir, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.OpenFile(filepath.Join(p.dir, "containerd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(p.bin, "--config", filepath.Join(p.dir, "config.toml"))
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.exited = make(chan error, 1)
	go func(cmd *exec.Cmd, ch chan error) { ch <- cmd.Wait() }(p.cmd, p.exited)
	// Poll until it answers: a readiness check, bounded.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := containerd.Dial(context.Background(), p.address, testNamespace); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(filepath.Join(p.dir, "containerd.log"))
	t.Fatalf("private containerd did not answer within 30s:\n%s", b)
}

func (p *privateContainerd) stop() {
	if p.cmd != nil && p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(os.Interrupt)
		<-p.exited
	}
}

// TestContainerdRestart: containerd restarts while a task runs; the task is
// not killed, and the manager's Wait reconnects and returns its full Result.
func TestContainerdRestart(t *testing.T) {
	needRoot(t)
	bin := os.Getenv(envContainerdBin)
	if bin == "" {
		bin, _ = exec.LookPath("containerd")
	}
	need(t, bin != "", "no containerd binary (set %s)", envContainerdBin)
	dir, err := os.MkdirTemp("", "nsn-restart-")
	if err == nil {
		// runc sets up a task's root inside its user namespace: the
		// path to containerd's state must be searchable (as /run is).
		err = os.Chmod(dir, 0o711)
	}
	if err != nil {
		t.Fatal(err)
	}
	p := &privateContainerd{bin: bin, dir: dir, address: filepath.Join(dir, "containerd.sock")}
	startPrivateContainerd(t, p)
	var m *runtime.Manager
	t.Cleanup(func() {
		if m != nil {
			_, _ = m.CleanupOrphans(context.Background(), true)
		}
		p.stop()
		_ = os.RemoveAll(dir)
	})

	c, err := client.New(p.address, client.WithDefaultNamespace(testNamespace))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	importBusybox(t, c, p.address)
	b, err := containerd.New(context.Background(), containerd.Config{Address: p.address, Namespace: testNamespace, LoggerBinary: nsnRun(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if m, err = runtime.New(runtime.Config{Backend: b, StateDir: filepath.Join(dir, "nsn-state")}); err != nil {
		t.Fatal(err)
	}

	id := uniqueID("restart")
	if _, err := m.Spawn(context.Background(), seedTask(id, "sh", "-c", "echo before; sleep 3; echo after")); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	var res task.Result
	go func() {
		var err error
		res, err = m.Wait(context.Background(), id)
		waited <- err
	}()
	p.stop()
	startPrivateContainerd(t, p)

	if err := <-waited; err != nil {
		t.Fatalf("Wait across a containerd restart: %v", err)
	}
	if err := m.CollectOutput(context.Background(), id, "", &res); err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || res.Reason != task.ReasonExited || res.Stdout != "before\nafter\n" {
		t.Errorf("result across a restart = exit %d reason %s stdout %q", res.ExitCode, res.Reason, res.Stdout)
	}
	if err := m.Cleanup(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}
