// Command nsn-shim is the shim program containerd 2.3+ runs for nsn-run's
// runc tasks and shim group anchors (containerd.Config.ShimBinary): a
// small front to nsn-shimd, containerd's runc shim with nsn-run's changes
// (cmd/nsn-shimd), which must lie beside it.
//
// containerd runs the shim program once per task to start or find the
// shim that will serve it (`start`), and once after each shim disconnect
// (`delete`); both are on the task's path, and each is a process start.
// nsn-shimd, like containerd's shim, is a 15-21 MB Go program whose start
// alone costs ~29 ms on a 2-CPU host, against ~12 ms for this one, which
// links nothing of containerd (internal/deps). So nsn-shim does the usual
// cases of both actions itself (internal/shimfront, each piece held to
// containerd's code by its tests): a start that joins a running group
// shim or starts nsn-shimd as a new one, and a delete after a clean task
// delete. Everything else it hands over, by exec, to nsn-shimd with the
// same arguments and input: serving tasks, -v, -info, a start that asks
// for debug logging, a shim cgroup or SCHED_CORE, a delete where runc may
// still know the container or a FUSE mount is left, and any input this
// front does not fully understand.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/internal/shimfront"
)

// daemonName is the full shim, beside this program.
const daemonName = "nsn-shimd"

// daemonProcs is the GOMAXPROCS of the nsn-shimd this front starts.
// containerd starts every shim with 4, sized for a shim serving many tasks
// (a Kubernetes pod's, a shim group's), and a group's shim keeps that. A
// shim that serves one task spends its life waiting on runc and on that
// task, and each processor more keeps its own cached heap spans, mark
// worker and thread: an idle task's shim held 2.9-3.3 MiB of anonymous
// memory with 4, 2.5-2.6 with 2 (pkg/shim's own default, "to reduce the
// number of Go stacks") and 2.3 with 1 (docs/performance.md, levers). The
// starts this front hands over (debug logging, a shim cgroup, SCHED_CORE)
// keep containerd's 4. runc, which the shim runs, inherits the value; the
// task's logger does not (containerd gives it an environment of its own).
func daemonProcs(grouped bool) string {
	if grouped {
		return "4"
	}
	return "1"
}

// shimName is how containerd's shim names itself in its errors.
const shimName = "io.containerd.runc.v2"

// joinPatience bounds the dial that decides whether a group's shim still
// runs (shimfront.Listening), as nsn-shimd's start does.
const joinPatience = 5 * time.Second

// flags are the shim's command line, as containerd's pkg/shim parses it.
type flags struct {
	debug, version, info               bool
	namespace, id, socket, debugSocket string
	bundle, address, publishBinary     string
	action                             string
}

func parseFlags(args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("nsn-shim", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&f.debug, "debug", false, "")
	fs.BoolVar(&f.version, "v", false, "")
	fs.BoolVar(&f.version, "version", false, "")
	fs.BoolVar(&f.info, "info", false, "")
	fs.StringVar(&f.namespace, "namespace", "", "")
	fs.StringVar(&f.id, "id", "", "")
	fs.StringVar(&f.socket, "socket", "", "")
	fs.StringVar(&f.debugSocket, "debug-socket", "", "")
	fs.StringVar(&f.bundle, "bundle", "", "")
	fs.StringVar(&f.address, "address", "", "")
	fs.StringVar(&f.publishBinary, "publish-binary", "", "")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	f.action = fs.Arg(0)
	return f, nil
}

func main() {
	daemon, err := daemonPath()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s", shimName, err)
		os.Exit(1)
	}
	f, err := parseFlags(os.Args[1:])
	if err != nil || f.version || f.info || !shimfront.ValidNamespace(f.namespace) || f.id == "" {
		handOver(daemon, nil)
	}
	switch f.action {
	case "start":
		input, err := io.ReadAll(io.LimitReader(os.Stdin, 10<<20))
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: failed to read stdin: %s", shimName, err)
			os.Exit(1)
		}
		result, err := start(f, input, daemon)
		if errors.Is(err, errHandOver) {
			handOver(daemon, input)
		}
		if err == nil {
			_, err = os.Stdout.Write(result)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %s", shimName, err)
			os.Exit(1)
		}
	case "delete":
		if _, err := os.Stdout.Write(deleteForgotten(f, daemon)); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %s", shimName, err)
			os.Exit(1)
		}
	default:
		handOver(daemon, nil)
	}
}

// errHandOver: nsn-shimd should do this start from the beginning.
var errHandOver = errors.New("hand over to " + daemonName)

// start is containerd's `start` action (pkg/shim's run, the runc shim's
// manager.Start, nsn-shimd's join of a live group shim) for the usual
// case; errHandOver for anything else, before anything lasting is done.
func start(f flags, input []byte, daemon string) ([]byte, error) {
	p, err := shimfront.ParseParams(input)
	if err != nil || p.InstanceID != f.id || p.Namespace != f.namespace ||
		p.LogLevel <= shimfront.LogLevelDebug || p.ShimCgroup != "" || os.Getenv("SCHED_CORE") != "" {
		return nil, errHandOver
	}
	if p.SocketDir != "" {
		// For the shim's cleanup, which gets no parameters: a link "s"
		// in the bundle (writeSocketDir).
		if err := os.Remove("s"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, errHandOver
		}
		if err := os.Symlink(p.SocketDir, "s"); err != nil {
			return nil, errHandOver
		}
	}
	grouping, grouped, err := shimfront.Grouping("config.json", p.InstanceID)
	if err != nil {
		return nil, errHandOver
	}
	dir := p.SocketDir
	if dir == "" {
		dir = shimfront.DefaultSocketDir
	}
	addr := shimfront.SocketAddress(dir, p.GRPCAddress, f.namespace, grouping)
	if grouped && shimfront.Listening(addr, joinPatience) {
		return shimfront.Result(addr), nil
	}
	sock, err := shimfront.Listen(addr)
	if errors.Is(err, shimfront.ErrInUse) {
		return shimfront.Result(addr), nil
	}
	if err != nil {
		return nil, errHandOver
	}
	defer sock.Close()
	cwd, err := os.Getwd()
	if err != nil {
		removeSocket(addr)
		return nil, errHandOver
	}
	// containerd's newCommand, with nsn-shimd for the program.
	cmd := exec.Command(daemon, "-namespace", f.namespace, "-id", p.InstanceID, "-address", p.GRPCAddress)
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+daemonProcs(grouped), "OTEL_SERVICE_NAME=containerd-shim-"+p.InstanceID)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.ExtraFiles = []*os.File{sock}
	if err := cmd.Start(); err != nil {
		removeSocket(addr)
		return nil, err
	}
	if err := shimfront.AdjustOOMScore(cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		removeSocket(addr)
		return nil, fmt.Errorf("failed to adjust OOM score for shim: %w", err)
	}
	return shimfront.Result(addr), nil
}

func removeSocket(addr string) {
	if path, ok := shimfront.SocketPath(addr); ok {
		_ = os.Remove(path)
	}
}

// deleteForgotten is containerd's `delete` action where runc has
// forgotten the container (the usual case: after a clean task delete),
// else it hands over; it returns the DeleteResponse to print.
func deleteForgotten(f flags, daemon string) []byte {
	cwd, err := os.Getwd()
	if err != nil {
		handOver(daemon, nil)
	}
	// The bundle containerd's Stop works on.
	bundle := filepath.Join(filepath.Dir(cwd), f.id)
	if !shimfront.RuncForgot(bundle, f.namespace, f.id, shimfront.RuncRoot) || shimfront.HasFUSE(bundle) {
		handOver(daemon, nil)
	}
	s := shimfront.StopForgotten(bundle, shimfront.UnmountRecursive, func(msg string, err error) {
		// As the shim's logger writes it to the stderr containerd logs.
		fmt.Fprintf(os.Stderr, "time=%q level=warning msg=%q error=%q runtime=%s\n", time.Now().Format(time.RFC3339Nano), msg, err.Error(), shimName)
	})
	return shimfront.DeleteResponse(s)
}

// daemonPath is nsn-shimd beside this program (its resolved path). As
// containerd runs this program as root, so this one runs nsn-shimd: it
// must be the owner's (root's) and writable by nobody else.
func daemonPath() (string, error) {
	self, err := os.Executable()
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	if err != nil {
		return "", fmt.Errorf("find %s: %w", daemonName, err)
	}
	p := filepath.Join(filepath.Dir(self), daemonName)
	info, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("%s must be installed beside %s: %w", daemonName, self, err)
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !info.Mode().IsRegular() || !ok || int(st.Uid) != os.Geteuid() && st.Uid != 0 || info.Mode().Perm()&0o022 != 0 {
		return "", fmt.Errorf("%s is not a regular file of root's (or this user's) that only its owner may write", p)
	}
	return p, nil
}

// handOver execs nsn-shimd with this program's arguments, and input on its
// stdin when this program has read its own (start's parameters).
func handOver(daemon string, input []byte) {
	if input != nil {
		if err := refeedStdin(input); err != nil {
			fmt.Fprintf(os.Stderr, "%s: hand over to %s: %s", shimName, daemonName, err)
			os.Exit(1)
		}
	}
	// argv[0] stays this program's: the shim names itself by it (-v).
	err := unix.Exec(daemon, os.Args, os.Environ())
	fmt.Fprintf(os.Stderr, "%s: exec %s: %s", shimName, daemon, err)
	os.Exit(1)
}

// refeedStdin makes fd 0 a file holding input, read from its start: a
// memory file, else (memfd_create refused: vm.memfd_noexec on some
// kernels, a seccomp filter) an unlinked temporary file.
func refeedStdin(input []byte) error {
	var f *os.File
	if fd, err := unix.MemfdCreate("nsn-shim-stdin", unix.MFD_CLOEXEC); err == nil {
		f = os.NewFile(uintptr(fd), "stdin")
	} else {
		if f, err = os.CreateTemp("", "nsn-shim-stdin-"); err != nil {
			return err
		}
		if err := os.Remove(f.Name()); err != nil {
			f.Close()
			return err
		}
	}
	defer f.Close()
	if _, err := f.Write(input); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	// dup3 without O_CLOEXEC: fd 0 survives the exec, f does not.
	return unix.Dup3(int(f.Fd()), 0, 0)
}
