package shimfront

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// RuncRoot is where runc keeps its state when the bundle's options name
// no root: containerd's default (process.RuncRoot).
const RuncRoot = "/run/containerd/runc"

// RuncForgot reports whether runc certainly keeps no state for the task
// id of namespace ns whose bundle is bundle: the bundle's runtime is runc
// (its "runtime" file names a runc, or is missing: the default), and
// runc's state dir for the container, under the root the bundle's options
// name (else defaultRoot), does not exist. Any error reading that counts
// as "not certain".
//
// After a clean task delete (the shim's own `runc delete` ran) this is
// true, and containerd's `delete` action would exec `runc delete --force`
// only to have it remove an absent state dir: a process start on every
// task's release (TestRuncForgetsUnknownContainer, cmd/nsn-shimd).
func RuncForgot(bundle, ns, id, defaultRoot string) bool {
	rt, err := os.ReadFile(filepath.Join(bundle, "runtime"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) || len(rt) > 0 && filepath.Base(string(rt)) != "runc" {
		// Another OCI runtime may keep no state dir there at all: only
		// runc's absence of state is known to be harmless.
		return false
	}
	root := defaultRoot
	switch b, err := os.ReadFile(filepath.Join(bundle, "options.json")); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return false
	default:
		var opts runcOptionsJSON
		if err := json.Unmarshal(b, &opts); err != nil {
			return false
		}
		if opts.Root != "" {
			root = opts.Root
		}
	}
	_, err = os.Lstat(filepath.Join(root, ns, id))
	return errors.Is(err, fs.ErrNotExist)
}

// runcOptionsJSON is runc's options (options.Options) as the shim writes
// them to options.json (encoding/json: its JSON names and Go types), so
// that what containerd's ReadOptions refuses (a field of the wrong type)
// is refused here too.
type runcOptionsJSON struct {
	NoPivotRoot    bool   `json:"no_pivot_root,omitempty"`
	NoNewKeyring   bool   `json:"no_new_keyring,omitempty"`
	ShimCgroup     string `json:"shim_cgroup,omitempty"`
	IoUID          uint32 `json:"io_uid,omitempty"`
	IoGID          uint32 `json:"io_gid,omitempty"`
	BinaryName     string `json:"binary_name,omitempty"`
	Root           string `json:"root,omitempty"`
	SystemdCgroup  bool   `json:"systemd_cgroup,omitempty"`
	CriuImagePath  string `json:"criu_image_path,omitempty"`
	CriuWorkPath   string `json:"criu_work_path,omitempty"`
	TaskAPIAddress string `json:"task_api_address,omitempty"`
	TaskAPIVersion uint32 `json:"task_api_version,omitempty"`
}

// fuseSuperMagic is statfs's f_type of a FUSE file system.
const fuseSuperMagic = 0x65735546

// HasFUSE reports whether a mount at or under the bundle's rootfs is a
// FUSE file system, as containerd's unmount asks it (statfs), which hands
// those to fusermount (or whether that cannot be read): the front leaves
// that case to nsn-shimd, which unmounts with containerd's own code.
func HasFUSE(bundle string) bool {
	return hasMountOfType(filepath.Join(bundle, "rootfs"), fuseSuperMagic)
}

func hasMountOfType(target string, magic int64) bool {
	target, err := canonical(target)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		return true
	}
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(target))
	if err != nil {
		return true
	}
	for _, m := range mounts {
		var st unix.Statfs_t
		if err := unix.Statfs(m.Mountpoint, &st); err == nil && int64(st.Type) == magic {
			return true
		}
	}
	return false
}

// ValidNamespace reports whether ns is a containerd identifier
// (identifiers.Validate: alphanumeric runs joined by single '.', '_' or
// '-', at most 76 characters), as containerd's shim requires of its
// namespace before it joins it into paths.
func ValidNamespace(ns string) bool {
	if ns == "" || len(ns) > 76 {
		return false
	}
	run := 0
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9':
			run++
		case c == '.' || c == '_' || c == '-':
			if run == 0 {
				return false
			}
			run = 0
		default:
			return false
		}
	}
	return run > 0
}

// StopForgotten is the rest of containerd's Stop (the `delete` action,
// manager.Stop, 2.4.2) after its `runc delete --force`, for a bundle
// runc has forgotten (RuncForgot): unmount the rootfs, and report the exit
// the shim recorded (exit.json), else SIGKILL's 137 with the init pid.
// unmount is the recursive unmount to use (UnmountRecursive, or
// containerd's own); each warning goes to warn, where containerd's Stop
// logs it.
func StopForgotten(bundle string, unmount func(target string) error, warn func(msg string, err error)) StopStatus {
	fallbackExitedAt := time.Now()
	if err := unmount(filepath.Join(bundle, "rootfs")); err != nil {
		warn("failed to cleanup rootfs mount", err)
	}
	if exit, err := readExitStatus(bundle); err == nil {
		return exit
	} else if !errors.Is(err, fs.ErrNotExist) {
		warn("failed to read recorded exit status", err)
	}
	pid, err := readPidFile(filepath.Join(bundle, "init.pid"))
	if err != nil {
		warn("failed to read init pid file", err)
		pid = 0
	}
	return StopStatus{ExitedAt: fallbackExitedAt, ExitStatus: 128 + int(unix.SIGKILL), Pid: pid}
}

// readExitStatus is the shim's runc.ReadExitStatus: exit.json in the
// bundle, go-runc's Exit as encoding/json writes it.
func readExitStatus(bundle string) (StopStatus, error) {
	exitFile := filepath.Join(bundle, "exit.json")
	f, err := os.Open(exitFile)
	if err != nil {
		return StopStatus{}, fmt.Errorf("failed to open %s: %w", exitFile, err)
	}
	defer f.Close()
	var e struct {
		Timestamp time.Time
		Pid       int
		Status    int
	}
	if err := json.NewDecoder(f).Decode(&e); err != nil {
		return StopStatus{}, fmt.Errorf("failed to unmarshal runc.Exit: %w", err)
	}
	if e.Pid <= 0 || e.Timestamp.IsZero() || e.Status < 0 {
		return StopStatus{}, fmt.Errorf("invalid runc.Exit value: %v", e)
	}
	return StopStatus{Pid: e.Pid, ExitStatus: e.Status, ExitedAt: e.Timestamp}, nil
}

// readPidFile is go-runc's ReadPidFile.
func readPidFile(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(string(data))
}

func canonical(path string) (string, error) {
	path, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(path)
}

// UnmountRecursive is containerd's mount.UnmountRecursive with flags 0,
// for mounts that are not FUSE (HasFUSE): every mount at or under target,
// deepest first, each until none is left there; only the last one's
// failure is an error. A target that does not exist is no error.
func UnmountRecursive(target string) error {
	target, err := canonical(target)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(target))
	if err != nil {
		return err
	}
	set := map[string]struct{}{}
	for _, m := range mounts {
		set[m.Mountpoint] = struct{}{}
	}
	var targets []string
	for m := range set {
		targets = append(targets, m)
	}
	sort.SliceStable(targets, func(i, j int) bool { return len(targets[i]) > len(targets[j]) })
	for i, t := range targets {
		if err := unmountAll(t); err != nil && i == len(targets)-1 {
			return err
		}
	}
	return nil
}

// unmountAll is containerd's mount.UnmountAll: unmount until the kernel
// says EINVAL (nothing mounted there).
func unmountAll(target string) error {
	if _, err := os.Stat(target); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	for {
		if err := unmount(target); err != nil {
			if errors.Is(err, unix.EINVAL) {
				return nil
			}
			return err
		}
	}
}

// unmount is containerd's unmount: EBUSY is retried 50 times, 50 ms apart.
func unmount(target string) error {
	for range 50 {
		err := unix.Unmount(target, 0)
		if err == unix.EBUSY {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		return err
	}
	return fmt.Errorf("failed to unmount target %s: %w", target, unix.EBUSY)
}
