package main

import (
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	shimapi "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/runc"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	runcC "github.com/containerd/go-runc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/nsn-run/nsn-run/internal/shimfront"
)

// TestMain runs this test binary as nsn-shim when asked to: a copy of it
// beside a stand-in nsn-shimd is the front under test.
func TestMain(m *testing.M) {
	if os.Getenv("NSN_SHIM_FRONT_TEST") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// standIn is nsn-shimd for the tests: it appends its arguments to calls,
// keeps a start's stdin, and as a daemon (no action) records what it was
// given and, where the test made the fifo "ready", says so there and
// waits to be killed.
const standIn = `#!/bin/sh
d="$NSN_STANDIN_DIR"
echo "$*" >> "$d/calls"
case "$*" in
*" start") cat > "$d/stdin" ;;
*" delete"|-v) ;;
*)
	{
		echo "fd3=$(readlink /proc/$$/fd/3)"
		echo "gomaxprocs=$GOMAXPROCS"
		echo "otel=$OTEL_SERVICE_NAME"
		echo "cwd=$(pwd)"
		echo "pgid=$(cut -d' ' -f5 /proc/$$/stat)"
		echo "pid=$$"
	} > "$d/daemon"
	if [ -p "$d/ready" ]; then
		echo ready > "$d/ready"
		exec sleep 600
	fi ;;
esac
`

type frontEnv struct {
	front, dir string
}

// newFront lays out nsn-shim (this test binary) with the stand-in beside.
func newFront(t *testing.T) frontEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("nsn-shim runs nsn-shimd only if it is root's")
	}
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	front := filepath.Join(bin, "nsn-shim")
	if err := os.WriteFile(front, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, daemonName), []byte(standIn), 0o755); err != nil {
		t.Fatal(err)
	}
	return frontEnv{front: front, dir: dir}
}

// run runs the front in cwd with args and stdin; it returns its stdout.
func (f frontEnv) run(t *testing.T, cwd string, stdin []byte, args ...string) []byte {
	t.Helper()
	return f.runEnv(t, nil, cwd, stdin, args...)
}

// runEnv is run with env added to the environment.
func (f frontEnv) runEnv(t *testing.T, env []string, cwd string, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(f.front, args...)
	cmd.Dir = cwd
	cmd.Env = append(append(os.Environ(), "NSN_SHIM_FRONT_TEST=1", "NSN_STANDIN_DIR="+f.dir), env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("nsn-shim %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// calls is what the stand-in nsn-shimd was run with, one line a run.
func (f frontEnv) calls(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "calls"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

func params(t *testing.T, p *bootapi.BootstrapParams) []byte {
	t.Helper()
	b, err := proto.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func bundleWith(t *testing.T, spec string) string {
	t.Helper()
	b := filepath.Join(t.TempDir(), "task1")
	if err := os.Mkdir(b, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b, "config.json"), []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

func shortDir(t *testing.T) string {
	t.Helper()
	// A sockaddr holds about 108 bytes: DIR/64 hex digits must fit.
	d, err := os.MkdirTemp("/tmp", "nss")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

var startArgs = []string{"-namespace", "ns1", "-address", "/run/c.sock", "-publish-binary", "/usr/bin/containerd", "-id", "task1", "start"}

// TestFrontHandsOver: what the front does not do itself reaches nsn-shimd
// with the same arguments, and a start's parameters on its stdin byte for
// byte although the front has read them, with nothing made before.
func TestFrontHandsOver(t *testing.T) {
	f := newFront(t)
	bundle := bundleWith(t, `{}`)
	socketDir := shortDir(t)
	f.run(t, bundle, nil, "-v")
	shimCgroup, err := anypb.New(&options.Options{ShimCgroup: "/shims"})
	if err != nil {
		t.Fatal(err)
	}
	plain := params(t, &bootapi.BootstrapParams{InstanceID: "task1", Namespace: "ns1", ContainerdGrpcAddress: "/run/c.sock", SocketDir: &socketDir})
	for name, c := range map[string]struct {
		in  []byte
		env []string
	}{
		"debug logging": {in: params(t, &bootapi.BootstrapParams{InstanceID: "task1", Namespace: "ns1", LogLevel: bootapi.LogLevel_LOG_LEVEL_DEBUG, ContainerdGrpcAddress: "/run/c.sock", SocketDir: &socketDir})},
		"a shim cgroup": {in: params(t, &bootapi.BootstrapParams{InstanceID: "task1", Namespace: "ns1", ContainerdGrpcAddress: "/run/c.sock", SocketDir: &socketDir, Extensions: []*bootapi.Extension{{Value: shimCgroup}}})},
		"another id":    {in: params(t, &bootapi.BootstrapParams{InstanceID: "task2", Namespace: "ns1", ContainerdGrpcAddress: "/run/c.sock", SocketDir: &socketDir})},
		"SCHED_CORE":    {in: plain, env: []string{"SCHED_CORE=1"}},
		"not protobuf":  {in: []byte{0xff, 0x00, 0x01}},
	} {
		if out := f.runEnv(t, c.env, bundle, c.in, startArgs...); len(out) != 0 {
			t.Errorf("%s: the front answered %q itself", name, out)
		}
		got, err := os.ReadFile(filepath.Join(f.dir, "stdin"))
		if err != nil || !bytes.Equal(got, c.in) {
			t.Errorf("%s: nsn-shimd's stdin % x (%v), want the parameters % x", name, got, err, c.in)
		}
		os.Remove(filepath.Join(f.dir, "stdin"))
		if _, err := os.Lstat(filepath.Join(bundle, "s")); err == nil {
			t.Errorf("%s: the front made the socket dir link before handing over", name)
		}
		if entries, _ := os.ReadDir(socketDir); len(entries) != 0 {
			t.Errorf("%s: the front made %v in the socket dir before handing over", name, entries)
		}
	}
	f.run(t, bundle, nil, "-namespace", "ns1", "-id", "task1", "-address", "/run/c.sock")
	f.run(t, bundle, nil, "-namespace", "bad/ns", "-id", "task1", "-bundle", bundle, "delete")
	want := "-v\n" + strings.Repeat(strings.Join(startArgs, " ")+"\n", 5) + "-namespace ns1 -id task1 -address /run/c.sock\n" +
		"-namespace bad/ns -id task1 -bundle " + bundle + " delete\n"
	if got := f.calls(t); got != want {
		t.Errorf("nsn-shimd ran with\n%s\nwant\n%s", got, want)
	}
}

// TestFrontStartsShim: a start with no shim to join makes the socket and
// starts nsn-shimd as the shim, as containerd's start does: on the socket
// as fd 3, in the bundle, in a process group of its own, and an OOM score
// one above containerd's (the front's parent: here, the test). The
// address goes back to containerd. A group's shim gets containerd's
// GOMAXPROCS=4; a shim for one task 1 (daemonProcs).
func TestFrontStartsShim(t *testing.T) {
	for name, c := range map[string]struct {
		config, grouping, procs string
	}{
		"a task alone":    {config: `{"ociVersion":"1.2.0"}`, grouping: "task1", procs: "1"},
		"a group's first": {config: `{"annotations":{"io.containerd.runc.v2.group":"g1"}}`, grouping: "g1", procs: "4"},
	} {
		t.Run(name, func(t *testing.T) { testFrontStartsShim(t, c.config, c.grouping, c.procs) })
	}
}

func testFrontStartsShim(t *testing.T, config, grouping, procs string) {
	f := newFront(t)
	if err := syscall.Mkfifo(filepath.Join(f.dir, "ready"), 0o600); err != nil {
		t.Fatal(err)
	}
	bundle := bundleWith(t, config)
	socketDir := shortDir(t)
	out := f.run(t, bundle, params(t, &bootapi.BootstrapParams{InstanceID: "task1", Namespace: "ns1", ContainerdGrpcAddress: "/run/c.sock", SocketDir: &socketDir}), startArgs...)

	ready, err := os.Open(filepath.Join(f.dir, "ready")) // until the daemon has recorded
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(ready); err != nil {
		t.Fatal(err)
	}
	ready.Close()
	rec, err := os.ReadFile(filepath.Join(f.dir, "daemon"))
	if err != nil {
		t.Fatal(err)
	}
	daemon := map[string]string{}
	for line := range strings.Lines(string(rec)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		daemon[k] = v
	}
	pid, err := strconv.Atoi(daemon["pid"])
	if err != nil {
		t.Fatalf("daemon record %q", rec)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)

	addr := shimfront.SocketAddress(socketDir, "/run/c.sock", "ns1", grouping)
	var res bootapi.BootstrapResult
	if err := proto.Unmarshal(out, &res); err != nil || res.GetAddress() != addr || res.GetVersion() != 3 || res.GetProtocol() != "ttrpc" {
		t.Errorf("start answered %v (%v), want version 3, ttrpc, %s", &res, err, addr)
	}
	if want := f.calls(t); want != "-namespace ns1 -id task1 -address /run/c.sock\n" {
		t.Errorf("nsn-shimd ran with %q, want containerd's daemon arguments", want)
	}
	if !strings.HasPrefix(daemon["fd3"], "socket:") || daemon["gomaxprocs"] != procs || daemon["otel"] != "containerd-shim-task1" || daemon["cwd"] != bundle || daemon["pgid"] != daemon["pid"] {
		t.Errorf("the shim was started with %v", daemon)
	}
	if !shimfront.Listening(addr, time.Second) {
		t.Error("nothing listens on the shim's socket")
	}
	if link, err := os.Readlink(filepath.Join(bundle, "s")); err != nil || link != socketDir {
		t.Errorf("socket dir link %q %v, want %s", link, err, socketDir)
	}
	score := func(pid int) string {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/oom_score_adj")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	own, _ := strconv.Atoi(score(os.Getpid()))
	if got := score(pid); got != strconv.Itoa(min(own+1, 1000)) {
		t.Errorf("the shim's OOM score adjustment %s, want %d + 1", got, own)
	}

	// The next start of the same task finds the socket in use and joins.
	out = f.run(t, bundle, params(t, &bootapi.BootstrapParams{InstanceID: "task1", Namespace: "ns1", ContainerdGrpcAddress: "/run/c.sock", SocketDir: &socketDir}), startArgs...)
	if err := proto.Unmarshal(out, &res); err != nil || res.GetAddress() != addr {
		t.Errorf("second start answered %v (%v), want %s", &res, err, addr)
	}
	if n := strings.Count(f.calls(t), "\n"); n != 1 {
		t.Errorf("nsn-shimd ran %d times, want once", n)
	}
}

// TestFrontJoinsGroup: a grouped task whose group's shim listens joins it;
// no shim starts.
func TestFrontJoinsGroup(t *testing.T) {
	f := newFront(t)
	bundle := bundleWith(t, `{"annotations":{"io.containerd.runc.v2.group":"g1"}}`)
	socketDir := shortDir(t)
	addr := shimfront.SocketAddress(socketDir, "/run/c.sock", "ns1", "g1")
	l, err := net.Listen("unix", strings.TrimPrefix(addr, "unix://"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	out := f.run(t, bundle, params(t, &bootapi.BootstrapParams{InstanceID: "task1", Namespace: "ns1", ContainerdGrpcAddress: "/run/c.sock", SocketDir: &socketDir}), startArgs...)
	want := &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc", Address: addr}
	var got bootapi.BootstrapResult
	if err := proto.Unmarshal(out, &got); err != nil || !proto.Equal(&got, want) {
		t.Errorf("start answered %v (%v), want %v", &got, err, want)
	}
	if c := f.calls(t); c != "" {
		t.Errorf("nsn-shimd ran: %q", c)
	}
}

// TestFrontDelete: after a clean delete (runc keeps no state) the front
// answers containerd's delete itself with the recorded exit; where runc
// still knows the container, nsn-shimd does it (containerd's Stop, with
// its forced runc delete).
func TestFrontDelete(t *testing.T) {
	f := newFront(t)
	bundle := bundleWith(t, `{}`)
	root := filepath.Join(t.TempDir(), "runc")
	if err := runc.WriteOptions(bundle, &options.Options{Root: root}); err != nil {
		t.Fatal(err)
	}
	exitedAt := time.Date(2026, 11, 30, 5, 0, 0, 42, time.UTC)
	if err := runc.WriteExitStatus(bundle, runcC.Exit{Pid: 42, Status: 3, Timestamp: exitedAt}); err != nil {
		t.Fatal(err)
	}
	args := []string{"-namespace", "ns1", "-address", "/run/c.sock", "-publish-binary", "/usr/bin/containerd", "-id", "task1", "-bundle", bundle, "delete"}
	out := f.run(t, bundle, nil, args...)
	var got shimapi.DeleteResponse
	want := &shimapi.DeleteResponse{Pid: 42, ExitStatus: 3, ExitedAt: protobuf.ToTimestamp(exitedAt)}
	if err := proto.Unmarshal(out, &got); err != nil || !proto.Equal(&got, want) {
		t.Errorf("delete answered %v (%v), want %v", &got, err, want)
	}
	if c := f.calls(t); c != "" {
		t.Errorf("nsn-shimd ran: %q", c)
	}
	if err := os.MkdirAll(filepath.Join(root, "ns1", "task1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if out := f.run(t, bundle, nil, args...); len(out) != 0 {
		t.Errorf("runc knows the container, and the front answered %q itself", out)
	}
	if c := f.calls(t); c != strings.Join(args, " ")+"\n" {
		t.Errorf("nsn-shimd ran with %q, want the delete's arguments", c)
	}
}

// TestFrontRefusesUnsafeDaemon: nsn-shimd that others may write is not run.
func TestFrontRefusesUnsafeDaemon(t *testing.T) {
	f := newFront(t)
	if err := os.Chmod(filepath.Join(filepath.Dir(f.front), daemonName), 0o757); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(f.front, "-v")
	cmd.Env = append(os.Environ(), "NSN_SHIM_FRONT_TEST=1", "NSN_STANDIN_DIR="+f.dir)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "only its owner may write") {
		t.Errorf("nsn-shim with a world-writable nsn-shimd: %v %q", err, out)
	}
	if c := f.calls(t); c != "" {
		t.Errorf("nsn-shimd ran: %q", c)
	}
}
