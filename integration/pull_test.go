package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/internal/imagebuild"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	nsnimages "github.com/nsn-run/nsn-run/runtime/containerd/images"
	"github.com/nsn-run/nsn-run/task"
)

// startRegistry runs Debian's docker-registry on a free loopback port for the
// test and returns its host:port once it answers.
func startRegistry(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	need(t, err == nil, "no docker-registry binary (apt-get install docker-registry)")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	config := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	logFile, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	// Poll the API root until the registry answers: a readiness check.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			t.Fatalf("docker-registry exited: %v\n%s", err, b)
		default:
		}
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("docker-registry at %s did not answer within 30s", addr)
	return ""
}

// TestImagePull pushes the busybox test image to a local registry, removes
// it locally, pulls it back with the CLI (progress on stderr) and runs it.
func TestImagePull(t *testing.T) {
	g := cliEnv(t)
	c, _ := containerdClient(t)
	registry := startRegistry(t)
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)

	ref := registry + "/test/busybox:v1"
	src, err := c.ImageService().Get(ctx, busyboxRef)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ImageService().Create(ctx, images.Image{Name: ref, Target: src.Target}); err != nil {
		t.Fatal(err)
	}
	if err := nsnimages.Push(ctx, c, ref); err != nil {
		t.Fatal(err)
	}
	if err := c.ImageService().Delete(ctx, ref); err != nil {
		t.Fatal(err)
	}

	r := cli(t, g, "image", "pull", ref)
	if r.code != 0 {
		t.Fatalf("pull: exit %d stderr %q", r.code, r.stderr)
	}
	if r.stdout != ref+"@"+src.Target.Digest.String()+"\n" {
		t.Errorf("pull stdout = %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "fetched ") || !strings.Contains(r.stderr, "pulled "+ref) {
		t.Errorf("pull progress on stderr = %q", r.stderr)
	}
	if ls := cli(t, g, "image", "ls"); !strings.Contains(ls.stdout, ref) {
		t.Errorf("image ls does not list the pulled image:\n%s", ls.stdout)
	}
	run := cli(t, g, "run", "--json", ref, "--", "echo", "from the registry")
	var res task.Result
	if err := json.Unmarshal([]byte(run.stdout), &res); err != nil || res.Stdout != "from the registry\n" {
		t.Errorf("run of the pulled image: exit %d %v %q %q", run.code, err, run.stdout, run.stderr)
	}

	missing := cli(t, g, "image", "pull", registry+"/test/busybox:nosuchtag")
	if missing.code != 125 || !strings.Contains(missing.stderr, "not found") || strings.Count(missing.stderr, "\n") != 1 {
		t.Errorf("pull of a missing tag: exit %d stderr %q", missing.code, missing.stderr)
	}
	_ = c.ImageService().Delete(ctx, ref)
}

// TestPullRefusedLeavesTheName: a pulled image that would unpack past the
// bound is refused, and the name is as it was before the pull: absent if
// it was, and still the earlier image's if it named one (the pull had
// moved it to the refused image).
func TestPullRefusedLeavesTheName(t *testing.T) {
	c, _ := containerdClient(t)
	registry := startRegistry(t)
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := imagebuild.BusyboxRootfs(rootfs, busyboxPath(t)); err != nil {
		t.Fatal(err)
	}
	// Content of this run only: never unpacked before.
	if err := os.WriteFile(filepath.Join(rootfs, "run-id"), []byte(uniqueID("pull")), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := registry + "/test/fresh:v1"
	if err := importImage(c, imagebuild.Image{Name: ref, RootfsDir: rootfs, Config: ocispec.ImageConfig{Env: []string{"PATH=/bin"}}}); err != nil {
		t.Fatal(err)
	}
	if err := nsnimages.Push(ctx, c, ref); err != nil {
		t.Fatal(err)
	}
	if err := c.ImageService().Delete(ctx, ref); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.ImageService().Delete(ctx, ref) })
	m, _ := testManagerBackend(t, func(b *containerd.Config) { b.MaxUnpackedBytes = 64 << 10 }, func(*runtime.Config) {})

	if _, err := m.PullImage(context.Background(), ref, nil); !errdefs.IsResourceExhausted(err) {
		t.Errorf("pull past the bound: %v, want it refused", err)
	}
	if _, err := c.ImageService().Get(ctx, ref); !errdefs.IsNotFound(err) {
		t.Errorf("after a refused pull of a new name, the name: %v, want none", err)
	}
	busybox, err := c.ImageService().Get(ctx, busyboxRef)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ImageService().Create(ctx, images.Image{Name: ref, Target: busybox.Target}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.PullImage(context.Background(), ref, nil); !errdefs.IsResourceExhausted(err) {
		t.Errorf("pull past the bound over a name: %v, want it refused", err)
	}
	if img, err := c.ImageService().Get(ctx, ref); err != nil || img.Target.Digest != busybox.Target.Digest {
		t.Errorf("after a refused pull over busybox's name, it names %v (%v), want busybox's %s", img.Target.Digest, err, busybox.Target.Digest)
	}
}
