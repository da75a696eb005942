package containerd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// sweepShims ends the shims of this containerd and namespace that serve
// nothing: their id names no container of this containerd, and nothing
// runs under them but task loggers. A create given up on midway leaves one
// (an outside review: an nsn-shimd of about 16 MB and its logger per leak,
// which no gc removed), and so, now and then, do two deletes of one task at
// once (TestConcurrentDestroy) and a manager killed during a task's delete
// (TestBackgroundReleaseKilled). A shim that serves a task has the task's
// container, and the task's processes under it. It returns one line per
// shim ended.
func (b *Backend) sweepShims(ctx context.Context) []string {
	ours, err := os.Stat(strings.TrimPrefix(b.cfg.Address, "unix://"))
	if err != nil {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		pids = append(pids, pid)
		if ppid := parentOf(pid); ppid > 0 {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var ended []string
	for _, pid := range pids {
		// A pidfd first: what is checked below is the process that is
		// signalled, even if the pid were reused meanwhile.
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		id, loggers, ok := b.idleShim(ctx, pid, ours, children[pid])
		if ok && unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil {
			for _, logger := range loggers {
				_ = unix.PidfdSendSignal(logger, unix.SIGKILL, nil, 0)
			}
			ended = append(ended, fmt.Sprintf("shim %s (pid %d)", id, pid))
		}
		closeFDs(loggers)
		unix.Close(fd)
	}
	return ended
}

// idleShim reports whether process pid is a shim of this containerd
// (whose socket is ours) and namespace that serves nothing, its id, and
// pidfds of the task loggers under it (the caller closes them).
func (b *Backend) idleShim(ctx context.Context, pid int, ours os.FileInfo, kids []int) (id string, loggers []int, idle bool) {
	args := cmdlineOf(pid)
	if len(args) < 2 || !slices.ContainsFunc(args[:2], func(a string) bool { return strings.Contains(filepath.Base(a), "shim") }) {
		return "", nil, false
	}
	// The shim binary's actions, which containerd runs with the same
	// flags (`start`; `delete` after a task's connection closes, in the
	// bundle, which it may still be cleaning up), are not a shim serving
	// anything, and not gc's to end.
	if action := args[len(args)-1]; action == "start" || action == "delete" {
		return "", nil, false
	}
	flag := func(name string) string {
		if i := slices.Index(args, name); i >= 0 && i+1 < len(args) {
			return args[i+1]
		}
		return ""
	}
	id, address := flag("-id"), strings.TrimPrefix(flag("-address"), "unix://")
	if flag("-namespace") != b.cfg.Namespace || id == "" || address == "" {
		return "", nil, false
	}
	if theirs, err := os.Stat(address); err != nil || !os.SameFile(ours, theirs) {
		return "", nil, false
	}
	// Its working directory is its bundle, containerd's directory for
	// id: removed with the task (containerd renames it to ".ID" before
	// removing it), or still there where containerd's delete of the task
	// was cut short. A manager killed during its release's task delete
	// leaves that on both containerds: the task gone from containerd's
	// list, its shim and bundle not (TestBackgroundReleaseKilled, about 1
	// run in 5); a shim whose container is gone is idle either way.
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return "", nil, false
	}
	bundle, removed := strings.CutSuffix(cwd, " (deleted)")
	if name := filepath.Base(bundle); name != id && (!removed || name != "."+id) {
		return "", nil, false
	}
	for _, kid := range kids {
		// A pidfd first, then the checks: the process checked is the
		// one signalled, even if its pid was reused since the listing.
		fd, err := unix.PidfdOpen(kid, 0)
		if err != nil {
			continue // gone
		}
		loggers = append(loggers, fd)
		if parentOf(kid) != pid || !slices.Contains(cmdlineOf(kid), "shim-logger") {
			closeFDs(loggers)
			return "", nil, false
		}
	}
	if _, err := b.client.LoadContainer(b.ns(ctx), id); !errdefs.IsNotFound(err) {
		closeFDs(loggers)
		return "", nil, false
	}
	return id, loggers, true
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// cmdlineOf is process pid's arguments (none if it is gone).
func cmdlineOf(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(data) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
}

// parentOf is process pid's parent (0 if it is gone).
func parentOf(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: the fields
	// after its last ')' are "STATE PPID ...".
	rest := string(data[strings.LastIndexByte(string(data), ')')+1:])
	fields := strings.Fields(rest)
	if len(fields) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(fields[1])
	return ppid
}
