package shimfront

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
)

// TestSocketAddress: the address containerd's start computes.
func TestSocketAddress(t *testing.T) {
	for _, c := range []struct{ dir, grpc, ns, group string }{
		{"/run/containerd/s", "/run/containerd/containerd.sock", "default", "task1"},
		{"/tmp/nss", "/var/run/x.sock", "nsn", "g-a"},
	} {
		want, err := shim.CreateSocketAddress(namespaces.WithNamespace(context.Background(), c.ns), c.dir, c.grpc, c.group, false)
		if err != nil {
			t.Fatal(err)
		}
		if got := SocketAddress(c.dir, c.grpc, c.ns, c.group); got != want {
			t.Errorf("%+v: %q, containerd's %q", c, got, want)
		}
	}
}

func TestGrouping(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "config.json")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for body, want := range map[string]struct {
		group   string
		grouped bool
	}{
		`{"ociVersion":"1.2.0","annotations":{"x":"y"}}`:                                             {"task1", false},
		`{"annotations":{"io.containerd.runc.v2.group":"g-a"}}`:                                      {"g-a", true},
		`{"annotations":{"io.kubernetes.cri.sandbox-id":"pod","io.containerd.runc.v2.group":"g-a"}}`: {"g-a", true},
		`{"annotations":{"io.kubernetes.cri.sandbox-id":"pod"}}`:                                     {"pod", true},
		`{"annotations":{"io.containerd.runc.v2.group":""}}`:                                         {"", true},
	} {
		g, grouped, err := Grouping(write(body), "task1")
		if err != nil || g != want.group || grouped != want.grouped {
			t.Errorf("%s: %q %v %v, want %q %v", body, g, grouped, err, want.group, want.grouped)
		}
	}
	if _, _, err := Grouping(write("{"), "task1"); err == nil {
		t.Error("a spec that is not JSON: no error")
	}
	if _, _, err := Grouping(filepath.Join(dir, "absent"), "task1"); err == nil {
		t.Error("no spec: no error")
	}
}

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
	if !Listening("unix://"+live, time.Second) {
		t.Error("a listening socket: not listening")
	}

	busy := filepath.Join(dir, "busy")
	busyListener(t, busy)
	if !Listening("unix://"+busy, time.Second) {
		t.Error("a live listener with a full queue: not listening (would start a second shim for the group)")
	}
	if Listening("unix://"+filepath.Join(dir, "missing"), time.Second) {
		t.Error("no socket file: listening")
	}
	dead := filepath.Join(dir, "dead")
	dl, err := net.Listen("unix", dead)
	if err != nil {
		t.Fatal(err)
	}
	dl.(*net.UnixListener).SetUnlinkOnClose(false)
	dl.Close() // the file stays, nobody listens
	if Listening("unix://"+dead, time.Second) {
		t.Error("a socket file without a listener: listening")
	}
	// A path too long for a sockaddr cannot be a socket: no, and the
	// bind that follows says why.
	if Listening("unix://"+filepath.Join(dir, strings.Repeat("x", 120)), time.Second) {
		t.Error("a path too long for a socket: listening")
	}
	if Listening("abstract-name", time.Second) || Listening("unix://\x00abstract", time.Second) {
		t.Error("an abstract address: listening (containerd's start must decide)")
	}
}

// TestListen: the socket containerd's newShimSocket makes (0700 dir, 0600
// socket, listening on the file passed to the shim); a live shim's socket
// is ErrInUse; a dead one's file is replaced.
func TestListen(t *testing.T) {
	// Short: a sockaddr holds about 108 bytes.
	root, err := os.MkdirTemp("/tmp", "nss")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(root)
	addr := SocketAddress(filepath.Join(root, "s"), "/run/c.sock", "ns1", "task1")
	path := strings.TrimPrefix(addr, "unix://")

	f, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket dir: %v %v, want 0700", fi.Mode(), err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket: %v %v, want a 0600 socket", fi.Mode(), err)
	}
	// The file is what the shim serves on: a connection reaches it.
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !Listening(addr, time.Second) {
		t.Error("nothing listens on the new socket")
	}
	if _, err := Listen(addr); !errors.Is(err, ErrInUse) {
		t.Errorf("a second Listen while the shim listens: %v, want ErrInUse", err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	f2, err := Listen(addr) // the dead shim's file stays: replaced
	if err != nil {
		t.Fatalf("Listen over a dead shim's socket file: %v", err)
	}
	f2.Close()
	if _, err := Listen("unix://\x00abstract"); err == nil {
		t.Error("an abstract socket: no error")
	}
}
