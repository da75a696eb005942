// Command nsn-init is pid 1 of a task started with --init (task.Task.Init):
// nsn-run bind-mounts it read-only at /dev/nsn-init and runs
// `/dev/nsn-init -- CMD ARG...`.
//
// A task's own command as pid 1 of its pid namespace gets no default
// signal actions: without a handler it ignores the SIGTERM the deadline
// sends and always waits out the grace period for SIGKILL, and it does not
// reap the orphans the kernel hands it. nsn-init starts the command as its
// child in a process group of its own, forwards every signal it can catch
// to that group, reaps every child, and exits as the command did (its code,
// or 128+signal). It is static (CGO_ENABLED=0) so it runs in any image.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() { os.Exit(run(os.Args[1:])) }

// Exit codes of its own, as a shell has them.
const (
	exitUsage      = 2
	exitCannotExec = 126
	exitNotFound   = 127
)

// pauseFlag makes nsn-init hold still until SIGTERM or SIGINT: the idle
// process of the shim group's anchor container (runtime/containerd).
const pauseFlag = "--pause"

func run(args []string) int {
	if len(args) == 1 && args[0] == pauseFlag {
		return pause()
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: nsn-init [--] CMD [ARG...]")
		return exitUsage
	}
	// Outside a pid namespace of its own (its tests), adopt orphans as
	// pid 1 would.
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	debug := os.Getenv("NSN_INIT_DEBUG") == "1"

	// Every catchable signal, before the child exists: none is lost.
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs)

	path, err := lookPath(args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "nsn-init: %s: %v\n", args[0], err)
		if os.IsNotExist(err) {
			return exitNotFound
		}
		return exitCannotExec
	}
	pid, err := syscall.ForkExec(path, args, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "nsn-init: exec %s: %v\n", args[0], err)
		if os.IsNotExist(err) {
			return exitNotFound
		}
		return exitCannotExec
	}
	for sig := range sigs {
		s, ok := sig.(syscall.Signal)
		if !ok {
			continue
		}
		if s != syscall.SIGCHLD {
			// To the command's whole group: its children end with it.
			_ = syscall.Kill(-pid, s)
			continue
		}
		if code, done := reap(pid, debug); done {
			return code
		}
	}
	return exitCannotExec // not reached: sigs is never closed
}

// reap collects every child that has exited; done is set once the command
// itself has, with the exit code nsn-init takes on.
func reap(main int, debug bool) (code int, done bool) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return code, done
		}
		if debug {
			fmt.Fprintf(os.Stderr, "nsn-init: reaped %d\n", pid)
		}
		if pid != main {
			continue
		}
		done = true
		switch {
		case ws.Exited():
			code = ws.ExitStatus()
		case ws.Signaled():
			code = 128 + int(ws.Signal())
		}
	}
}

// lookPath finds cmd as a shell would: a name with a slash as is, else
// along PATH.
func lookPath(cmd string) (string, error) {
	if strings.Contains(cmd, "/") {
		return cmd, executable(cmd)
	}
	var firstErr error
	for dir := range strings.SplitSeq(os.Getenv("PATH"), ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + cmd
		err := executable(p)
		if err == nil {
			return p, nil
		}
		if firstErr == nil && !os.IsNotExist(err) {
			firstErr = err
		}
	}
	if firstErr != nil {
		return "", firstErr
	}
	return "", os.ErrNotExist
}

func executable(p string) error {
	info, err := os.Stat(p)
	switch {
	case err != nil:
		return err
	case info.IsDir():
		return fmt.Errorf("is a directory: %w", os.ErrPermission)
	case info.Mode().Perm()&0o111 == 0:
		return os.ErrPermission
	}
	return nil
}

// pause waits for SIGTERM or SIGINT, reaping whatever the kernel hands it
// meanwhile, and exits 0.
func pause() int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	if os.Getenv("NSN_INIT_DEBUG") == "1" {
		fmt.Fprintln(os.Stderr, "nsn-init: paused")
	}
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			return 0
		}
		reap(-1, false)
	}
	return 0
}
