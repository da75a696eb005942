package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"google.golang.org/protobuf/proto"
)

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

// TestStartJoinsLikeContainerd: where a group's shim answers, nsn-shimd's
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
		t.Fatalf("nsn-shimd's start: %v", err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("nsn-shimd's start = %v, containerd's = %v", got, want)
	}
	if got.GetAddress() != addr {
		t.Errorf("joined %q, want the group's socket %q", got.GetAddress(), addr)
	}
}
