// Package mountinfo reads a process's mount table, /proc/PID/mountinfo
// (proc(5)), for the places nsn-run needs it: the Manager finds the output
// tmpfs mounts it must detach, the Docker backend finds the cgroup
// hierarchies a container's processes are listed in. Pure Go, so the
// library that uses it still builds without cgo.
package mountinfo

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Self is the mount table of the calling process.
const Self = "/proc/self/mountinfo"

// Mount is one line of a mountinfo file.
type Mount struct {
	// ID is the mount's unique id (reused only once it is unmounted).
	ID int
	// Root is the directory of the filesystem mounted here (not "/" for a
	// bind mount, or a cgroup namespace's view of a hierarchy).
	Root string
	// MountPoint is where it is mounted.
	MountPoint string
	// FSType is the filesystem type ("tmpfs", "cgroup", "cgroup2").
	FSType string
	// Source is the mount's source ("nsn-output" for a task's output
	// tmpfs, a device for a disk filesystem).
	Source string
	// Options are the mount's own options ("ro", "nosuid", "idmapped"
	// for a mount with an id mapping of its own).
	Options []string
	// SuperOptions are the filesystem's own options (for a cgroup v1
	// hierarchy, its controllers).
	SuperOptions []string
}

// Read parses a mountinfo file: lines of "ID PARENT MAJ:MIN ROOT MOUNTPOINT
// OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS", in mount order.
// Lines of another shape are skipped.
func Read(path string) ([]Mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	// A line holds two paths of up to PATH_MAX each, and options.
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 6 || len(tail) < 3 {
			continue
		}
		id, _ := strconv.Atoi(fields[0])
		out = append(out, Mount{
			ID:           id,
			Root:         Unescape(fields[3]),
			MountPoint:   Unescape(fields[4]),
			FSType:       tail[0],
			Source:       Unescape(tail[1]),
			Options:      strings.Split(fields[5], ","),
			SuperOptions: strings.Split(tail[2], ","),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	return out, nil
}

// Unescape undoes the kernel's octal escapes in mountinfo paths (\040 for a
// space; also tab, newline and backslash).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
