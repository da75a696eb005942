// Package doctor checks that a host can run nsn-run tasks safely: the
// daemon answers, the OCI runtime is one without the known escapes, the
// kernel has what isolation needs, and the files that decide what a task
// gets (the containerd socket, CDI spec dirs) are not writable by others.
package doctor

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/mod/semver"

	"github.com/nsn-run/nsn-run/cdi"
	"github.com/nsn-run/nsn-run/cgroups"
	"github.com/nsn-run/nsn-run/runtime/containerd"
)

// Status of a check.
type Status string

// The statuses, from harmless to blocking.
const (
	OK    Status = "ok"
	Info  Status = "info"
	Warn  Status = "warn"
	Fatal Status = "fatal"
)

// Check is one finding.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Fix says what to do, for warn and fatal.
	Fix string `json:"fix,omitempty"`
}

// Options say where to look; zero values take the defaults.
type Options struct {
	Address   string   // containerd socket
	Namespace string   // containerd namespace
	Runc      string   // runc binary; "runc" on PATH if empty
	CDIDirs   []string // CDI spec dirs; /etc/cdi and /var/run/cdi if empty
	// Root prefixes the host paths read (/proc, /sys, /dev), for tests.
	Root string
}

// Run performs every check and returns them in a fixed order.
func Run(ctx context.Context, o Options) []Check {
	if o.Runc == "" {
		o.Runc = "runc"
	}
	if len(o.CDIDirs) == 0 {
		o.CDIDirs = []string{"/etc/cdi", "/var/run/cdi"}
	}
	checks := []Check{checkContainerd(ctx, o)}
	checks = append(checks, checkSocket(o.Address))
	checks = append(checks, checkRunc(ctx, o.Runc)...)
	checks = append(checks,
		checkCgroups(),
		checkSeccomp(o.Root),
		checkOverlay(o.Root),
		checkUserNamespaces(o.Root),
	)
	for _, dir := range o.CDIDirs {
		checks = append(checks, CheckCDIDir(dir))
	}
	checks = append(checks, checkGPUs(o.Root, o.CDIDirs))
	return checks
}

// Worst is the most severe status among checks.
func Worst(checks []Check) Status {
	rank := map[Status]int{OK: 0, Info: 0, Warn: 1, Fatal: 2}
	worst := OK
	for _, c := range checks {
		if rank[c.Status] > rank[worst] {
			worst = c.Status
		}
	}
	return worst
}

func checkContainerd(ctx context.Context, o Options) Check {
	c, err := containerd.Dial(ctx, o.Address, o.Namespace)
	if err != nil {
		return Check{Name: "containerd", Status: Fatal, Detail: err.Error(),
			Fix: "start containerd (apt-get install containerd) or point --address / NSN_ADDRESS at its socket"}
	}
	defer c.Close()
	v, err := c.Version(ctx)
	if err != nil {
		return Check{Name: "containerd", Status: Fatal, Detail: err.Error(), Fix: "check containerd's log"}
	}
	return Check{Name: "containerd", Status: OK, Detail: fmt.Sprintf("%s (revision %s) at %s", v.Version, v.Revision, o.Address)}
}

// checkSocket: whoever can write the containerd socket is root on the host.
func checkSocket(path string) Check {
	info, err := os.Stat(path)
	if err != nil {
		return Check{Name: "containerd socket", Status: Info, Detail: err.Error()}
	}
	return permissions("containerd socket", path, info, "chown root:root and chmod 0660 the socket (containerd's [grpc] uid/gid settings)")
}

// permissions judges a path that decides what tasks get: it must be owned
// by root and writable by no one else.
func permissions(name, path string, info fs.FileInfo, fix string) Check {
	st, ok := info.Sys().(*syscall.Stat_t)
	mode := info.Mode().Perm()
	detail := fmt.Sprintf("%s mode %04o", path, mode)
	if ok {
		detail += fmt.Sprintf(" owner %d:%d", st.Uid, st.Gid)
	}
	switch {
	case mode&0o002 != 0:
		return Check{Name: name, Status: Fatal, Detail: detail + ": writable by every user", Fix: fix}
	case ok && st.Uid != 0:
		return Check{Name: name, Status: Fatal, Detail: detail + ": not owned by root", Fix: fix}
	case mode&0o020 != 0 && ok && st.Gid != 0:
		return Check{Name: name, Status: Warn, Detail: detail + ": writable by a non-root group", Fix: fix}
	}
	return Check{Name: name, Status: OK, Detail: detail}
}

// Container escapes fixed in runc that nsn-run's threat model cares about.
const (
	advisory2019 = "CVE-2019-5736: a container can overwrite the host's runc binary (fixed in 1.0.0-rc7)"
	advisory2024 = "CVE-2024-21626: a leaked fd lets WORKDIR /proc/self/fd/N reach the host filesystem (fixed in 1.1.12)"
	advisory2025 = "CVE-2025-31133, CVE-2025-52565, CVE-2025-52881: maskedPaths and /dev/console symlink races write host procfs files (fixed in 1.2.8, 1.3.3, 1.4.0-rc.3)"
)

// fixed2025 is the first fixed release of each runc line for the 2025
// advisories; lines before 1.2 got no fix, lines after 1.4 were born fixed.
var fixed2025 = map[string]string{"v1.2": "v1.2.8", "v1.3": "v1.3.3", "v1.4": "v1.4.0-rc.3"}

var runcVersionLine = regexp.MustCompile(`(?m)^runc version (\S+)`)
var libseccompLine = regexp.MustCompile(`(?m)^libseccomp: (\S+)`)

func checkRunc(ctx context.Context, runc string) []Check {
	out, err := exec.CommandContext(ctx, runc, "--version").Output()
	if err != nil {
		return []Check{{Name: "runc", Status: Fatal, Detail: fmt.Sprintf("%s --version: %v", runc, err), Fix: "apt-get install runc, or install a current release"}}
	}
	m := runcVersionLine.FindSubmatch(out)
	if m == nil {
		return []Check{{Name: "runc", Status: Warn, Detail: "cannot read the version from: " + strings.TrimSpace(string(out))}}
	}
	checks := []Check{RuncAdvisories(string(m[1]))}
	if s := libseccompLine.FindSubmatch(out); s != nil {
		checks = append(checks, Check{Name: "runc seccomp", Status: OK, Detail: "built with libseccomp " + string(s[1])})
	} else {
		checks = append(checks, Check{Name: "runc seccomp", Status: Fatal, Detail: "runc reports no libseccomp: specs' seccomp profiles would not be enforced",
			Fix: "use a runc built with seccomp (Debian's is; from source: make with libseccomp-dev)"})
	}
	return checks
}

// RuncAdvisories judges a runc version string ("1.1.5+ds1") against the
// releases that fixed the escapes above.
func RuncAdvisories(version string) Check {
	v := "v" + version
	if !semver.IsValid(v) {
		return Check{Name: "runc", Status: Warn, Detail: fmt.Sprintf("version %q is not semver; cannot check advisories", version)}
	}
	var missing []string
	if semver.Compare(v, "v1.0.0-rc7") < 0 {
		missing = append(missing, advisory2019)
	}
	if semver.Compare(v, "v1.1.12") < 0 {
		missing = append(missing, advisory2024)
	}
	line := semver.MajorMinor(v)
	if fix, ok := fixed2025[line]; (ok && semver.Compare(v, fix) < 0) || semver.Compare(line, "v1.2") < 0 {
		missing = append(missing, advisory2025)
	}
	if len(missing) == 0 {
		return Check{Name: "runc", Status: OK, Detail: "version " + version + ": no known escape advisory applies"}
	}
	status := Warn
	if semver.Compare(v, "v1.0.0-rc7") < 0 {
		status = Fatal
	}
	return Check{Name: "runc", Status: status,
		Detail: fmt.Sprintf("version %s predates fixes for: %s. A distribution may have backported them (check its security tracker). Whatever the runc, nsn-run refuses WORKDIRs under /proc and images whose mount points are symlinks.", version, strings.Join(missing, "; ")),
		Fix:    "install runc 1.2.8, 1.3.3 or later (go install github.com/opencontainers/runc@v1.5.3 with -tags seccomp), or a distribution build with the fixes"}
}

func checkCgroups() Check {
	mode := cgroups.Mode()
	switch mode {
	case "unified":
		return Check{Name: "cgroups", Status: OK, Detail: "unified (cgroup v2)"}
	case "hybrid":
		return Check{Name: "cgroups", Status: OK, Detail: "hybrid (cgroup v1 controllers, v2 mounted beside them): v1 stats, no kernel pids peak"}
	case "legacy":
		return Check{Name: "cgroups", Status: OK, Detail: "legacy (cgroup v1)"}
	}
	return Check{Name: "cgroups", Status: Fatal, Detail: "no cgroup hierarchy found", Fix: "mount cgroup2 on /sys/fs/cgroup"}
}

func readHost(root, path string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, path))
	return string(b), err
}

func checkSeccomp(root string) Check {
	status, err := readHost(root, "/proc/self/status")
	if err != nil || !strings.Contains(status, "\nSeccomp:") {
		return Check{Name: "kernel seccomp", Status: Fatal, Detail: "the kernel reports no seccomp support", Fix: "boot a kernel with CONFIG_SECCOMP_FILTER"}
	}
	return Check{Name: "kernel seccomp", Status: OK, Detail: "supported"}
}

func checkOverlay(root string) Check {
	fss, err := readHost(root, "/proc/filesystems")
	if err != nil {
		return Check{Name: "overlayfs", Status: Warn, Detail: err.Error()}
	}
	for line := range strings.Lines(fss) {
		if strings.TrimSpace(strings.TrimPrefix(line, "nodev")) == "overlay" {
			return Check{Name: "overlayfs", Status: OK, Detail: "available"}
		}
	}
	// Not loaded yet is fine where the module exists: the snapshotter's
	// first mount loads it.
	release, _ := readHost(root, "/proc/sys/kernel/osrelease")
	modules, _ := filepath.Glob(filepath.Join(root, "/lib/modules", strings.TrimSpace(release), "kernel/fs/overlayfs/overlay.ko*"))
	if len(modules) > 0 {
		return Check{Name: "overlayfs", Status: OK, Detail: "available as a module (loaded on first use)"}
	}
	return Check{Name: "overlayfs", Status: Fatal, Detail: "overlay is neither in /proc/filesystems nor a kernel module", Fix: "modprobe overlay, or use a kernel with overlayfs"}
}

func checkUserNamespaces(root string) Check {
	s, err := readHost(root, "/proc/sys/user/max_user_namespaces")
	n, perr := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || perr != nil || n == 0 {
		return Check{Name: "user namespaces", Status: Info, Detail: "not available (nsn-run does not use them by default)"}
	}
	return Check{Name: "user namespaces", Status: OK, Detail: fmt.Sprintf("available (max %d; not used by default)", n)}
}

// CheckCDIDir reports a CDI spec directory: its specs decide which device
// nodes, mounts and hooks a GPU task gets, so it must be root's alone.
func CheckCDIDir(dir string) Check {
	name := "CDI " + dir
	info, err := os.Stat(dir)
	if err != nil {
		return Check{Name: name, Status: Info, Detail: "absent: no CDI devices from here"}
	}
	c := permissions(name, dir, info, "chown root:root "+dir+" and chmod 0755 it; keep specs root-owned 0644")
	if c.Status != OK {
		return c
	}
	var specs []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if ext := filepath.Ext(e.Name()); ext == ".json" || ext == ".yaml" {
			specs = append(specs, e.Name())
			info, err := os.Stat(filepath.Join(dir, e.Name()))
			if err == nil {
				if pc := permissions(name, filepath.Join(dir, e.Name()), info, "chown root:root and chmod 0644 the spec"); pc.Status != OK {
					return pc
				}
			}
		}
	}
	c.Detail += fmt.Sprintf(", %d spec(s) %s", len(specs), strings.Join(specs, " "))
	return c
}

// checkGPUs reports the NVIDIA GPUs and whether tasks can be given them:
// a CDI spec must define them, and every hook it runs must exist.
func checkGPUs(root string, cdiDirs []string) Check {
	nodes, _ := filepath.Glob(filepath.Join(root, "/dev/nvidia[0-9]*"))
	in, err := cdi.New(cdi.Options{SpecDirs: cdiDirs})
	if err != nil {
		return Check{Name: "GPUs", Status: Warn, Detail: err.Error()}
	}
	names := in.GPUs()
	switch {
	case len(nodes) == 0 && len(names) == 0:
		return Check{Name: "GPUs", Status: Info, Detail: "no NVIDIA device nodes (/dev/nvidiaN) and no CDI GPUs: GPU tasks will be refused"}
	case len(names) == 0:
		return Check{Name: "GPUs", Status: Warn, Detail: fmt.Sprintf("%d NVIDIA device node(s) but no CDI spec names a GPU under %s: run 'nsn-run gpu cdi-generate'", len(nodes), strings.Join(cdiDirs, ", "))}
	}
	if missing := in.MissingHooks(); len(missing) > 0 {
		return Check{Name: "GPUs", Status: Fatal, Detail: fmt.Sprintf("the CDI specs run hooks missing on this host (%s): every GPU task would fail to start; install nvidia-container-toolkit-base or regenerate with 'nsn-run gpu cdi-generate --no-hooks'", strings.Join(missing, ", "))}
	}
	return Check{Name: "GPUs", Status: OK, Detail: fmt.Sprintf("%d NVIDIA device node(s); CDI names %d GPU device(s) (index, UUID and MIG names): %s", len(nodes), len(names), strings.Join(names, " "))}
}
