package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/internal/imagebuild"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// probeScript reports, one key=value per line, what the process can see and
// do from inside the container.
const probeScript = `
echo "uid=$(id -u) gid=$(id -g)"
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status | tr -d ' \t' | tr ':' '='
echo "rootwrite=$(touch /probe 2>&1 || true)"
echo "etcwrite=$(touch /etc/pwned 2>&1 || true)"
echo "net=$(ls /sys/class/net | tr '\n' ' ')"
echo "tmpwrite=$(echo scratch > /tmp/s && cat /tmp/s)"
cp /bin/busybox /tmp/bb && echo "tmpexec=$(/tmp/bb true 2>&1 && echo ran)"
echo "home=$HOME"
echo "hostname=$(hostname)"
echo "nofile=$(ulimit -n)"
echo result > /output/result.txt && echo "outputwrite=ok"
`

// TestRuncAcceptsSpec proves runc runs the generated spec as is and that the
// isolation it describes holds from inside: non-root, no capabilities,
// no_new_privs, seccomp filter mode, read-only root, only lo, /tmp writable
// but not executable, /output writable.
func TestRuncAcceptsSpec(t *testing.T) {
	needRoot(t)
	runc := runcPath(t)
	busybox := busyboxPath(t)

	bundle := t.TempDir()
	if err := imagebuild.BusyboxRootfs(filepath.Join(bundle, spec.RootfsPath), busybox); err != nil {
		t.Fatal(err)
	}
	id := uniqueID("runc")
	tasksDir := t.TempDir()
	outDir := filepath.Join(tasksDir, id, "output", task.NewOutputKey())
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(outDir, task.NobodyID, task.NobodyID); err != nil {
		t.Fatal(err)
	}

	tk := task.Task{ID: id, Image: busyboxRef, Command: []string{"sh", "-c", probeScript}}
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)
	s, err := spec.Generate(ctx, tk, ocispec.ImageConfig{Env: []string{"PATH=/bin"}}, spec.Options{OutputDir: outDir})
	if err != nil {
		t.Fatal(err)
	}
	if f := audit.Check(ctx, s, audit.Policy{Namespace: testNamespace, TasksDir: tasksDir, HostIdentity: true}); len(f) != 0 {
		t.Fatalf("generated spec has findings: %v", f)
	}
	b, err := spec.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}

	runCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stateRoot := t.TempDir()
	cmd := exec.CommandContext(runCtx, runc, "--root", stateRoot, "run", "--bundle", bundle, id)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t.Cleanup(func() {
		// Only needed if the run was interrupted: runc run removes its
		// container when the process exits.
		_ = exec.Command(runc, "--root", stateRoot, "delete", "--force", id).Run()
	})
	if err := cmd.Run(); err != nil {
		t.Fatalf("runc run: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}

	got := map[string]string{}
	for line := range strings.Lines(stdout.String()) {
		if k, v, ok := strings.Cut(strings.TrimRight(line, "\n"), "="); ok {
			got[k] = strings.TrimSpace(v)
		}
	}
	want := map[string]string{
		"uid":         "65534 gid=65534",
		"CapInh":      "0000000000000000",
		"CapPrm":      "0000000000000000",
		"CapEff":      "0000000000000000",
		"CapBnd":      "0000000000000000",
		"CapAmb":      "0000000000000000",
		"NoNewPrivs":  "1",
		"Seccomp":     "2",
		"net":         "lo",
		"tmpwrite":    "scratch",
		"home":        "/tmp",
		"hostname":    id,
		"nofile":      "1024",
		"outputwrite": "ok",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for _, k := range []string{"rootwrite", "etcwrite"} {
		if !strings.Contains(got[k], "Read-only file system") {
			t.Errorf("%s = %q, want EROFS", k, got[k])
		}
	}
	if !strings.Contains(got["tmpexec"], "Permission denied") {
		t.Errorf("tmpexec = %q: a binary copied to /tmp ran or failed for the wrong reason (want noexec's EACCES)", got["tmpexec"])
	}
	if _, err := os.Stat(filepath.Join(bundle, spec.RootfsPath, "probe")); err == nil {
		t.Error("the write to / reached the host's rootfs directory")
	}
	if data, err := os.ReadFile(filepath.Join(outDir, "result.txt")); err != nil || string(data) != "result\n" {
		t.Errorf("output file on host = %q, %v", data, err)
	}
	t.Logf("container stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
}
