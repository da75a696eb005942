package runtime_test

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/runtime"
)

// TestParseCommandError: the exec failures runc reports, in the shapes
// containerd's shim and dockerd pass them on, map to 127 (not found) and
// 126 (not executable); any other start failure, however close its words,
// is not the command's.
func TestParseCommandError(t *testing.T) {
	const (
		// containerd 1.6/1.7 and 2.x over the runc v2 shim.
		shim = "failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: "
		// containerd 2.x with runc 1.2+.
		shimInit = shim + "error during container init: "
		// dockerd 20.10 and later (over containerd's shim).
		dockerd = "Error response from daemon: " + shim
		// dockerd over runc 1.0.
		dockerdRunc10 = "Error response from daemon: OCI runtime create failed: container_linux.go:380: starting container process caused: "
	)
	const notCommand, notFound, notExecutable = 0, runtime.ExitCommandNotFound, runtime.ExitCommandNotExecutable
	for _, c := range []struct {
		name, command, msg string
		want               int
	}{
		{"containerd: not on PATH", "nosuch", shim + `exec: "nosuch": executable file not found in $PATH: unknown`, notFound},
		{"containerd: no such path", "/no/such/binary", shim + `exec: "/no/such/binary": stat /no/such/binary: no such file or directory: unknown`, notFound},
		{"containerd 2: no such path", "/no/such/binary", shimInit + `exec: "/no/such/binary": stat /no/such/binary: no such file or directory`, notFound},
		{"containerd, runc 1.1: a directory", "/etc", shim + `exec: "/etc": permission denied: unknown`, notExecutable},
		{"containerd, runc 1.5: a directory", "/etc", shimInit + `exec: "/etc": is a directory`, notExecutable},
		{"containerd: execve of the path refused", "/bin/owned", shim + `exec /bin/owned: permission denied: unknown`, notExecutable},
		{"containerd: execve of a directory", "/etc", shimInit + `exec /etc: is a directory`, notExecutable},
		{"containerd: execve finds no interpreter", "/bin/dyn", shim + `exec /bin/dyn: no such file or directory: unknown`, notFound},
		{"dockerd: not on PATH", "nosuch", dockerd + `exec: "nosuch": executable file not found in $PATH: unknown`, notFound},
		{"dockerd: no such path", "/no/such/binary", dockerd + `exec: "/no/such/binary": stat /no/such/binary: no such file or directory: unknown`, notFound},
		{"dockerd: a directory", "/etc", dockerd + `exec: "/etc": permission denied: unknown`, notExecutable},
		{"dockerd, runc 1.0: a directory", "/etc", dockerdRunc10 + `exec: "/etc": permission denied: unknown`, notExecutable},
		{"dockerd: execve of the path refused", "/bin/owned", dockerd + `exec /bin/owned: permission denied: unknown`, notExecutable},

		// Not the command's failure.
		{"a mount refused", "/bin/true", shimInit + `error mounting "/var/lib/nsn-run/tasks/t/output" to rootfs at "/output": permission denied`, notCommand},
		{"dockerd: a mount refused", "/bin/true", dockerd + `error during container init: error mounting "proc" to rootfs at "/proc": no such file or directory: unknown`, notCommand},
		{"a hook that cannot run", "/bin/true", shim + `error running hook #0: fork/exec /usr/bin/nvidia-cdi-hook: permission denied: unknown`, notCommand},
		{"another path's execve", "/bin/true", shim + `exec /bin/other: permission denied: unknown`, notCommand},
		{"exec fifo", "/bin/true", shim + `write exec fifo: no such file or directory`, notCommand},
		{"exec failure of another kind", "/bin/true", shim + `exec: "/bin/true": exec format error: unknown`, notCommand},
		{"daemon down", "/bin/true", "connection error: desc = \"transport: Error while dialing: dial unix /run/containerd/containerd.sock: connect: no such file or directory\"", notCommand},
	} {
		t.Run(c.name, func(t *testing.T) {
			ce := runtime.ParseCommandError(errors.New(c.msg), c.command, "docker.io/library/busybox:latest")
			switch {
			case c.want == notCommand:
				if ce != nil {
					t.Errorf("%q is a command error (%d); want none", c.msg, ce.ExitCode())
				}
			case ce == nil:
				t.Errorf("%q is no command error; want %d", c.msg, c.want)
			case ce.ExitCode() != c.want || ce.Command != c.command || ce.Image != "docker.io/library/busybox:latest":
				t.Errorf("%q = %+v (exit %d); want exit %d", c.msg, ce, ce.ExitCode(), c.want)
			case c.want == notFound && !errdefs.IsNotFound(ce), c.want == notExecutable && !errdefs.IsPermissionDenied(ce):
				t.Errorf("%q = %v: wrong errdefs kind", c.msg, ce)
			}
		})
	}
}

func TestLabels(t *testing.T) {
	o := runtime.Owner{StateDir: "/s", ID: "0123456789abcdef0123456789abcdef"}
	want := map[string]string{"nsn.task-id": "job-1", "nsn.manager": "nsn-run", "nsn.state-dir": "/s/tasks/job-1", "nsn.state-dir-id": o.ID}
	if got := runtime.Labels("job-1", o); !maps.Equal(got, want) {
		t.Errorf("Labels = %v; want %v", got, want)
	}
	if got := runtime.Labels("job-1", runtime.Owner{}); len(got) != 2 {
		t.Errorf("Labels without an owner = %v", got)
	}
	a := runtime.Labels("a", o)
	a["x"] = "y"
	if _, ok := runtime.Labels("a", o)["x"]; ok {
		t.Error("Labels returns a shared map")
	}
}

// TestOwnerDisowns: an object is another Manager's when it carries another
// state dir's id, whatever its path says (the same path in another mount
// namespace is another directory); labelled with a path alone (made before
// the id), when that path is another directory that exists (a symlink to
// mine, as a bind mount, is mine); without either label, everyone's.
func TestOwnerDisowns(t *testing.T) {
	root := t.TempDir()
	mine, theirs := filepath.Join(root, "mine"), filepath.Join(root, "theirs")
	for _, d := range []string{mine, theirs} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	alias := filepath.Join(root, "alias")
	if err := os.Symlink(mine, alias); err != nil {
		t.Fatal(err)
	}
	me := runtime.Owner{StateDir: mine, ID: "11111111111111111111111111111111"}
	pathOnly := func(dir string) map[string]string { return runtime.Labels("x", runtime.Owner{StateDir: dir}) }
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   bool
	}{
		{"my id", runtime.Labels("x", me), false},
		{"my path, another id (another mount namespace's directory)", runtime.Labels("x", runtime.Owner{StateDir: mine, ID: "22222222222222222222222222222222"}), true},
		{"another path, my id (a bind mount's path)", runtime.Labels("x", runtime.Owner{StateDir: filepath.Join(root, "gone"), ID: me.ID}), false},
		{"path only: mine", pathOnly(mine), false},
		{"path only: mine through a symlink", pathOnly(alias), false},
		{"path only: another", pathOnly(theirs), true},
		{"path only: gone", pathOnly(filepath.Join(root, "gone")), false},
		{"no state dir labels", runtime.Labels("x", runtime.Owner{}), false},
		{"no labels", nil, false},
	} {
		if got := me.Disowns(c.labels); got != c.want {
			t.Errorf("%s: Disowns(%v) = %v; want %v", c.name, c.labels, got, c.want)
		}
	}
}

func TestHandleCheckBackend(t *testing.T) {
	h := runtime.Handle{Version: runtime.HandleVersion, Backend: "docker", ID: "job-1"}
	if err := h.CheckBackend("docker"); err != nil {
		t.Errorf("own handle refused: %v", err)
	}
	if err := h.CheckBackend("containerd"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("another backend's handle = %v; want invalid argument", err)
	}
}
