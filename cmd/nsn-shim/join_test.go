package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"google.golang.org/protobuf/proto"
)

// busyListener is a unix socket that listens but never accepts, with a
// listen queue of one that a first connection fills: the state of a shim
// too busy to take the next connection (or starved of CPU) yet alive.
func busyListener(t *testing.T, path string) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", path) // fills the queue
	if err != nil {
		t.Fatalf("first connection: %v", err)
	}
	t.Cleanup(func() { c.Close() })
}

func TestListening(t *testing.T) {
	dir := t.TempDir()

	live := filepath.Join(dir, "live")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !listening("unix://"+live, time.Second) {
		t.Error("a listening socket: not listening")
	}

	busy := filepath.Join(dir, "busy")
	busyListener(t, busy)
	// containerd's own check (what its start runs) takes the live,
	// busy listener for dead: the case that split a group.
	if shim.CanConnect("unix://" + busy) {
		t.Fatal("containerd's CanConnect reached a full listen queue; the test no longer shows its failure")
	}
	if !listening("unix://"+busy, time.Second) {
		t.Error("a live listener with a full queue: not listening (would start a second shim for the group)")
	}

	if listening("unix://"+filepath.Join(dir, "missing"), time.Second) {
		t.Error("no socket file: listening")
	}

	// A socket file nobody listens on any more (a shim that died).
	dead := filepath.Join(dir, "dead")
	dl, err := net.Listen("unix", dead)
	if err != nil {
		t.Fatal(err)
	}
	dl.(*net.UnixListener).SetUnlinkOnClose(false)
	dl.Close()
	if _, err := os.Stat(dead); err != nil {
		t.Fatalf("socket file gone: %v", err)
	}
	if listening("unix://"+dead, time.Second) {
		t.Error("a socket file without a listener: listening")
	}
	if listening("abstract-name", time.Second) {
		t.Error("an abstract address: listening (containerd's start must decide)")
	}
}

func TestGroupSocket(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), "ns1")
	dir := t.TempDir()
	params := &bootapi.BootstrapParams{ContainerdGrpcAddress: "/run/containerd/containerd.sock"}
	params.SocketDir = &[]string{"/run/x/s"}[0]
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	none, err := groupSocket(ctx, params, write("none.json", `{"ociVersion":"1.2.0","annotations":{"x":"y"}}`))
	if err != nil || none != "" {
		t.Errorf("no group annotation: %q, %v; want \"\"", none, err)
	}
	a, err := groupSocket(ctx, params, write("a.json", `{"annotations":{"io.containerd.runc.v2.group":"g-a"}}`))
	if err != nil {
		t.Fatal(err)
	}
	// The address containerd's start gives the group's shim.
	want, _ := shim.CreateSocketAddress(ctx, "/run/x/s", params.ContainerdGrpcAddress, "g-a", false)
	if a != want {
		t.Errorf("group g-a: %q, want %q", a, want)
	}
	b, _ := groupSocket(ctx, params, write("b.json", `{"annotations":{"io.containerd.runc.v2.group":"g-b"}}`))
	if b == a || b == "" {
		t.Errorf("groups g-a and g-b: %q and %q", a, b)
	}
	other, _ := groupSocket(namespaces.WithNamespace(context.Background(), "ns2"), params, filepath.Join(dir, "a.json"))
	if other == a {
		t.Error("the same group in another namespace has the same socket")
	}
	if _, err := groupSocket(ctx, params, write("bad.json", `{`)); err == nil {
		t.Error("a spec that is not JSON: no error")
	}
	if _, err := groupSocket(ctx, params, filepath.Join(dir, "absent.json")); err == nil {
		t.Error("no spec: no error")
	}
}

// TestStartJoinsLikeContainerd: where a group's shim answers, nsn-shim's
// start returns what containerd's own start returns on finding it (so
// containerd cannot tell them apart). TestListening covers the busy
// shim, which containerd's check would take for dead.
func TestStartJoinsLikeContainerd(t *testing.T) {
	// Short: the socket path (dir + 64 hex digits) must fit a sockaddr.
	sockDir, err := os.MkdirTemp("/tmp", "nss")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	bundle := t.TempDir()
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"ociVersion":"1.2.0","annotations":{"io.containerd.runc.v2.group":"g1"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(bundle) // containerd starts `start` in the bundle
	ctx := namespaces.WithNamespace(context.Background(), "ns1")
	params := &bootapi.BootstrapParams{InstanceID: "task1", Namespace: "ns1", ContainerdGrpcAddress: "/run/containerd/containerd.sock", SocketDir: &sockDir}
	addr, err := shim.CreateSocketAddress(ctx, sockDir, params.ContainerdGrpcAddress, "g1", false)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", strings.TrimPrefix(addr, "unix://"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	upstream := manager.NewShimManager("io.containerd.runc.v2")
	want, err := upstream.Start(ctx, params)
	if err != nil {
		t.Fatalf("containerd's start: %v", err)
	}
	got, err := (&nsnShim{Shim: upstream}).Start(ctx, params)
	if err != nil {
		t.Fatalf("nsn-shim's start: %v", err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("nsn-shim's start = %v, containerd's = %v", got, want)
	}
	if got.GetAddress() != addr {
		t.Errorf("joined %q, want the group's socket %q", got.GetAddress(), addr)
	}
}
