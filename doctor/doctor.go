// Package doctor checks that a host can run nsn-run tasks safely: the
// daemon answers, the OCI runtime and the NVIDIA hooks are builds without
// the known escapes, the kernel has what isolation needs, a crashing task
// starts no root helper unnoticed, and the files that decide what a task
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
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/mod/semver"

	"github.com/nsn-run/nsn-run/cgroups"
	"github.com/nsn-run/nsn-run/gpu"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/runtime/docker"
	"github.com/nsn-run/nsn-run/spec"
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
	// Backend is the backend to check: "containerd" (the default) or
	// "docker", whose daemon checks replace containerd's.
	Backend    string
	Address    string   // containerd socket
	Namespace  string   // containerd namespace
	DockerHost string   // dockerd's address; docker.DefaultHost if empty
	Runc       string   // runc binary; "runc" on PATH if empty
	CDIDirs    []string // CDI spec dirs; /etc/cdi and /var/run/cdi if empty
	// Root prefixes the host paths read (/proc, /sys, /dev), for tests.
	Root string
	// Exec runs the host commands the checks ask (runc --version,
	// dpkg-query, the NVIDIA hooks' --version); os/exec if nil. Tests
	// inject one so they need no runc, dpkg or NVIDIA toolkit.
	Exec Runner
}

// Runner runs a command and returns what it wrote to stdout.
type Runner func(ctx context.Context, name string, args ...string) ([]byte, error)

func execOutput(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).Output()
}

// Run performs every check and returns them in a fixed order.
func Run(ctx context.Context, o Options) []Check {
	if o.Runc == "" {
		o.Runc = "runc"
	}
	if len(o.CDIDirs) == 0 {
		o.CDIDirs = []string{"/etc/cdi", "/var/run/cdi"}
	}
	if o.Exec == nil {
		o.Exec = execOutput
	}
	var checks []Check
	idmapped := false
	if o.Backend == "docker" {
		if o.DockerHost == "" {
			o.DockerHost = docker.DefaultHost
		}
		checks = dockerChecks(ctx, o.DockerHost)
	} else {
		checks = []Check{checkContainerd(ctx, o), checkSocket(o.Address)}
		idmapped = snapshotsIDMapped(ctx, o)
	}
	checks = append(checks, checkRunc(ctx, o.Exec, o.Runc)...)
	checks = append(checks,
		checkCgroups(),
		checkSeccomp(o.Root),
		checkOverlay(o.Root),
	)
	if o.Backend == "docker" {
		checks = append(checks, Check{Name: "user namespaces", Status: Info,
			Detail: "docker tasks share host ids (their Result says identity shared); the containerd backend gives each task its own user namespace and host id range"})
	} else {
		checks = append(checks, checkUserNamespaces(o.Root, idmapped))
	}
	checks = append(checks,
		checkCorePattern(o.Root),
		checkAppArmor(o.Root),
		checkSocketBuffers(o.Root),
	)
	for _, dir := range o.CDIDirs {
		checks = append(checks, CheckCDIDir(dir))
	}
	checks = append(checks, checkGPUs(o.Root, o.CDIDirs), checkNVIDIAToolkit(ctx, o.Exec, o.CDIDirs))
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

// advisory is a runc container escape nsn-run's threat model cares about,
// with where it is fixed.
type advisory struct {
	cves, what string
	// fixed is the first fixed release of each runc line that got the fix.
	// A line without an entry is vulnerable when it is older than the
	// newest entry's line (it got no fix) and fixed when newer (born fixed).
	fixed []string
	// debian lists Debian package versions known to carry the fix
	// backported, one per suite; later revisions of the same upstream
	// version carry it too.
	debian []string
	// fatal: nothing in nsn-run stands in for the fix, so doctor fails.
	fatal bool
}

// runcAdvisories: the upstream fixes are runc's release notes and GitHub
// advisories; the Debian ones Debian's security tracker.
var runcAdvisories = []advisory{
	{cves: "CVE-2019-5736", what: "a container can overwrite the host's runc binary",
		fixed: []string{"v1.0.0-rc.7"}, fatal: true},
	{cves: "CVE-2024-21626", what: "a leaked fd lets WORKDIR /proc/self/fd/N reach the host filesystem",
		fixed: []string{"v1.1.12"}, debian: []string{"1.1.5+ds1-1+deb12u1"}},
	{cves: "CVE-2025-31133, CVE-2025-52565, CVE-2025-52881", what: "maskedPaths and /dev/console symlink races write host procfs files",
		fixed: []string{"v1.2.8", "v1.3.3", "v1.4.0-rc.3"}},
}

// fixedUpstream says whether upstream runc v (semver) carries a's fix.
func (a advisory) fixedUpstream(v string) bool {
	line := semver.MajorMinor(v)
	for _, f := range a.fixed {
		if semver.MajorMinor(f) == line {
			return semver.Compare(v, f) >= 0
		}
	}
	return semver.Compare(v, a.fixed[len(a.fixed)-1]) > 0
}

// fixedInDebian says whether the Debian package version deb carries a's
// fix as a backport: a later revision of a fixed package's upstream version.
func (a advisory) fixedInDebian(deb string) bool {
	for _, f := range a.debian {
		if debianUpstream(f) == debianUpstream(deb) && debianCompare(deb, f) >= 0 {
			return true
		}
	}
	return false
}

func (a advisory) String() string {
	var fixed []string
	for _, f := range a.fixed {
		fixed = append(fixed, strings.TrimPrefix(f, "v"))
	}
	return fmt.Sprintf("%s: %s (fixed in %s)", a.cves, a.what, strings.Join(fixed, ", "))
}

var runcVersionLine = regexp.MustCompile(`(?m)^runc version (\S+)`)
var libseccompLine = regexp.MustCompile(`(?m)^libseccomp: (\S+)`)

func checkRunc(ctx context.Context, run Runner, runc string) []Check {
	out, err := run(ctx, runc, "--version")
	if err != nil {
		return []Check{{Name: "runc", Status: Fatal, Detail: fmt.Sprintf("%s --version: %v", runc, err), Fix: "apt-get install runc, or install a current release"}}
	}
	m := runcVersionLine.FindSubmatch(out)
	if m == nil {
		return []Check{{Name: "runc", Status: Warn, Detail: "cannot read the version from: " + strings.TrimSpace(string(out))}}
	}
	// Debian backports fixes without changing the upstream version runc
	// reports; the package version says which. RuncAdvisories uses it
	// only if it is the package of this very version (not, say, Debian's
	// runc installed beside a runc built from source); without dpkg
	// there is none.
	deb, _ := run(ctx, "dpkg-query", "-W", "-f=${Version}", "runc")
	checks := []Check{RuncAdvisories(string(m[1]), strings.TrimSpace(string(deb)))}
	if s := libseccompLine.FindSubmatch(out); s != nil {
		checks = append(checks, Check{Name: "runc seccomp", Status: OK, Detail: "built with libseccomp " + string(s[1])})
	} else {
		checks = append(checks, Check{Name: "runc seccomp", Status: Fatal, Detail: "runc reports no libseccomp: specs' seccomp profiles would not be enforced",
			Fix: "use a runc built with seccomp (Debian's is; from source: make with libseccomp-dev)"})
	}
	return checks
}

// RuncAdvisories judges a runc build by the escape fixes it carries: the
// version `runc --version` reports ("1.1.5+ds1"), and debianVersion, the
// Debian package version of runc ("1.1.5+ds1-1+deb12u1"), or "". The
// package version counts only when its upstream part is version, i.e.
// when this runc is that package's build.
func RuncAdvisories(version, debianVersion string) Check {
	v, ok := runcSemver(version)
	if !ok {
		return Check{Name: "runc", Status: Warn, Detail: fmt.Sprintf("version %q is not semver; cannot check advisories", version)}
	}
	build := "version " + version
	if debianVersion != "" && debianUpstream(debianVersion) == version {
		build += " (Debian package " + debianVersion + ", its backports counted)"
	} else {
		debianVersion = ""
	}
	var missing []string
	status := Warn
	for _, a := range runcAdvisories {
		if a.fixedUpstream(v) || (debianVersion != "" && a.fixedInDebian(debianVersion)) {
			continue
		}
		missing = append(missing, a.String())
		if a.fatal {
			status = Fatal
		}
	}
	if len(missing) == 0 {
		return Check{Name: "runc", Status: OK, Detail: build + ": no known escape advisory applies"}
	}
	return Check{Name: "runc", Status: status,
		Detail: fmt.Sprintf("%s lacks the fixes for: %s. A distribution may have backported them (check its security tracker). Whatever the runc, nsn-run refuses WORKDIRs under /proc and images whose mount points are symlinks.", build, strings.Join(missing, "; ")),
		Fix:    "install runc 1.2.8, 1.3.3 or later (go install github.com/opencontainers/runc@v1.5.3 with -tags seccomp), or a distribution build with the fixes"}
}

// runcSemver turns a runc version into a comparable semver: "1.1.5+ds1"
// -> v1.1.5+ds1 (build metadata does not count), Debian's "1.0.0~rc93+ds1"
// and the old "1.0.0-rc93" -> v1.0.0-rc.93, so that rc93 sorts after rc7.
func runcSemver(version string) (string, bool) {
	v := "v" + strings.Replace(version, "~", "-", 1)
	v = oldRC.ReplaceAllString(v, "-rc.$1")
	return v, semver.IsValid(v)
}

var oldRC = regexp.MustCompile(`-rc(\d+)`)

// v1SocketMemory is what cgroup v1 does not limit: runc ignores the
// spec's kernelTCP, and Linux 6.12 deprecated v1's TCP accounting.
const v1SocketMemory = "socket buffers are not charged to a task's memory limit (an outside review queued 634 MiB in loopback TCP buffers from a 512 MiB task): prefer cgroup v2"

func checkCgroups() Check {
	mode := cgroups.Mode()
	switch mode {
	case "unified":
		return Check{Name: "cgroups", Status: OK, Detail: "unified (cgroup v2)"}
	case "hybrid":
		return Check{Name: "cgroups", Status: OK, Detail: "hybrid (cgroup v1 controllers, v2 mounted beside them): v1 stats, no kernel pids peak; " + v1SocketMemory}
	case "legacy":
		return Check{Name: "cgroups", Status: OK, Detail: "legacy (cgroup v1): " + v1SocketMemory}
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

// snapshotsIDMapped reports whether containerd's overlayfs snapshotter
// idmaps snapshots (its "remap-ids" capability: containerd 2.x on a kernel
// with idmapped overlay layers), as the containerd backend asks.
func snapshotsIDMapped(ctx context.Context, o Options) bool {
	c, err := containerd.Dial(ctx, o.Address, o.Namespace)
	if err != nil {
		return false
	}
	defer c.Close()
	caps, err := c.GetSnapshotterCapabilities(ctx, "overlayfs")
	return err == nil && slices.Contains(caps, "remap-ids")
}

// checkUserNamespaces says which level of per-task host identity this node
// gives containerd tasks (task.Identity*), and why: each task its own user
// namespace over a host id range needs user namespaces in the kernel and
// nsenter (to bound the namespace's per-user counts before the task
// starts); idmapped where containerd's snapshotter can idmap the image.
// Every task's inotify instances and watches also count against host
// root's (runc creates the namespaces as root), so root's limits must hold
// many tasks' worth.
func checkUserNamespaces(root string, idmapped bool) Check {
	level := "level userns: each task its own user namespace and host id range; image files owned by root show as the overflow id (the snapshotter cannot idmap: containerd 1.x, or a kernel without idmapped overlay layers)"
	if idmapped {
		level = "level idmapped: each task its own user namespace and host id range, the image's files idmapped into it (containerd's overlayfs remaps ids)"
	}
	s, err := readHost(root, "/proc/sys/user/max_user_namespaces")
	n, perr := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || perr != nil || n == 0 {
		return Check{Name: "user namespaces", Status: Warn,
			Detail: "the kernel allows no user namespaces: tasks would share host ids (level shared); with --user-namespaces required every task is refused",
			Fix:    "set user.max_user_namespaces above the number of concurrent tasks"}
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		return Check{Name: "user namespaces", Status: Fatal,
			Detail: "nsenter is missing: nsn-run bounds each task's per-user kernel counts in its user namespace with it, and refuses the task without",
			Fix:    "apt-get install util-linux, or run with --user-namespaces off (tasks then share host ids)"}
	}
	inst, _ := readHost(root, "/proc/sys/fs/inotify/max_user_instances")
	if v, err := strconv.Atoi(strings.TrimSpace(inst)); err == nil && v < minRootInotifyInstances {
		return Check{Name: "user namespaces", Status: Warn,
			Detail: fmt.Sprintf("%s. Every task's inotify instances (at most 16 each) count against host root's, and fs.inotify.max_user_instances is %d: a few busy tasks can leave root's daemons without inotify", level, v),
			Fix:    fmt.Sprintf("sysctl -w fs.inotify.max_user_instances=%d (and persist it in /etc/sysctl.d)", minRootInotifyInstances)}
	}
	return Check{Name: "user namespaces", Status: OK, Detail: fmt.Sprintf("%s (max %d namespaces)", level, n)}
}

// minRootInotifyInstances is the host root budget doctor asks for: 16 per
// task for some 500 tasks, and host root's own use.
const minRootInotifyInstances = 8192

// checkCorePattern: with a core_pattern that pipes ("|/path args"), every
// process that dumps core, a task's too, makes the kernel start that helper
// as root in the host's namespaces, reading the dump from the task; a
// task's RLIMIT_CORE 0 does not stop it (the kernel applies the limit only
// to dumps written to files).
func checkCorePattern(root string) Check {
	p, err := readHost(root, "/proc/sys/kernel/core_pattern")
	if err != nil {
		return Check{Name: "core dumps", Status: Info, Detail: "cannot read core_pattern: " + err.Error()}
	}
	p = strings.TrimSpace(p)
	helper, piped := strings.CutPrefix(p, "|")
	if !piped {
		return Check{Name: "core dumps", Status: OK, Detail: fmt.Sprintf("core_pattern %q writes files; tasks get RLIMIT_CORE 0, so they write none", p)}
	}
	if f := strings.Fields(helper); len(f) > 0 {
		helper = f[0]
	}
	return Check{Name: "core dumps", Status: Warn,
		Detail: fmt.Sprintf("core_pattern pipes core dumps to %s: a task that crashes makes the kernel start it as root on the host, fed by the task (tasks' RLIMIT_CORE 0 does not stop pipe helpers)", helper),
		Fix:    "set kernel.core_pattern to a file name (sysctl kernel.core_pattern=core; the tasks' RLIMIT_CORE 0 then stops their dumps), or keep " + helper + " patched: it parses dumps from untrusted tasks"}
}

// defaultSocketBuffer is Linux's default net.core.rmem_max and wmem_max.
const defaultSocketBuffer = 212992

// checkSocketBuffers says how much kernel memory a task can hold, charged
// to no memory cgroup, per netlink socket: the kernel answers a netlink
// request it refuses with an error that copies the request, and the
// answers queue in the socket's receive buffer, up to about twice
// net.core.rmem_max (a fifteenth review held 808 MB from a task limited
// to 16 MiB with 100 route sockets, rmem_max 4 MiB). A task holds as many
// sockets as its open files times its processes. Raised limits are a
// warning: they multiply the bound.
func checkSocketBuffers(root string) Check {
	const name = "socket buffers"
	var most int
	for _, f := range []string{"/proc/sys/net/core/rmem_max", "/proc/sys/net/core/wmem_max"} {
		b, err := readHost(root, f)
		if err != nil {
			return Check{Name: name, Status: Info, Detail: "cannot read " + f + ": " + err.Error()}
		}
		v, err := strconv.Atoi(strings.TrimSpace(b))
		if err != nil {
			return Check{Name: name, Status: Info, Detail: fmt.Sprintf("cannot read %s: %q", f, b)}
		}
		most = max(most, v)
	}
	detail := fmt.Sprintf("a task's netlink sockets can each hold about %d KiB of kernel memory that no memory cgroup is charged for (netlink's error answers queue copies of the task's requests), as many sockets as its --open-files times its --pids", 2*most/1024)
	if most <= defaultSocketBuffer {
		return Check{Name: name, Status: Info, Detail: detail + " (net.core.rmem_max and wmem_max at Linux's default)"}
	}
	return Check{Name: name, Status: Warn,
		Detail: detail + fmt.Sprintf(": net.core.rmem_max or wmem_max is %d, above Linux's default %d, which raises that bound", most, defaultSocketBuffer),
		Fix:    fmt.Sprintf("sysctl -w net.core.rmem_max=%d net.core.wmem_max=%d (and persist it in /etc/sysctl.d), or lower --open-files and --pids for untrusted tasks", defaultSocketBuffer, defaultSocketBuffer)}
}

// checkAppArmor says whether tasks run under nsn-run's AppArmor profile:
// the containerd backend loads and applies it where the kernel has
// AppArmor enabled, securityfs shows it and apparmor_parser is installed
// (containerd's own test); elsewhere tasks run without one, which is a
// warning: AppArmor is the layer that still denies mounts, /proc and /sys
// writes and /sys/firmware when another layer is missing.
func checkAppArmor(root string) Check {
	const name = "AppArmor"
	const docker = "with --backend docker, dockerd applies its docker-default profile (the same rules) where AppArmor is enabled"
	v, err := readHost(root, "/sys/module/apparmor/parameters/enabled")
	if err != nil || strings.TrimSpace(v) != "Y" {
		return Check{Name: name, Status: Warn,
			Detail: "not enabled in this kernel: tasks run without an AppArmor profile (seccomp, no capabilities, the user namespace and the read-only root still confine them); " + docker,
			Fix:    "boot a kernel with AppArmor enabled (security=apparmor, or apparmor in lsm=) and install apparmor"}
	}
	if _, err := os.Stat(filepath.Join(root, "/sys/kernel/security/apparmor")); err != nil {
		return Check{Name: name, Status: Warn,
			Detail: "enabled in the kernel, but securityfs is not mounted: tasks run without an AppArmor profile; " + docker,
			Fix:    "mount -t securityfs securityfs /sys/kernel/security"}
	}
	if _, err := os.Stat(filepath.Join(root, "/sbin/apparmor_parser")); err != nil { // the parser nsn-run runs
		return Check{Name: name, Status: Warn,
			Detail: "enabled in the kernel, but apparmor_parser is not installed: tasks run without an AppArmor profile; " + docker,
			Fix:    "apt-get install apparmor"}
	}
	return Check{Name: name, Status: OK,
		Detail: "enabled: the containerd backend loads containerd's default profile as " + spec.DefaultAppArmorProfile + " and runs every task under it; " + docker}
}

// toolkitFixed is the first NVIDIA Container Toolkit release with the
// fixes for CVE-2025-23266 (a createContainer hook ran the image's
// LD_PRELOAD on the host) and CVE-2025-23267 (update-ldcache followed the
// image's symlinks to write host files).
const toolkitFixed = "v1.17.8"

var toolkitVersionLine = regexp.MustCompile(`(?m)\bversion v?(\d+\.\d+\.\d+\S*)`)

// checkNVIDIAToolkit judges the NVIDIA hooks the CDI specs run: they run
// as root on the host at every GPU task's start, over the task's rootfs.
// A toolkit before toolkitFixed is fatal: nsn-run's PATH-only hook env
// stands in for the CVE-2025-23266 fix, nothing stands in for
// CVE-2025-23267's.
func checkNVIDIAToolkit(ctx context.Context, run Runner, cdiDirs []string) Check {
	const name = "NVIDIA toolkit"
	in, err := gpu.New(gpu.Options{SpecDirs: cdiDirs})
	if err != nil {
		return Check{Name: name, Status: Warn, Detail: err.Error()}
	}
	var hooks []string
	for _, h := range in.Hooks() {
		if b := filepath.Base(h); b == "nvidia-cdi-hook" || b == "nvidia-ctk" {
			hooks = append(hooks, h)
		}
	}
	if len(hooks) == 0 {
		return Check{Name: name, Status: Info, Detail: "no CDI spec runs NVIDIA's hooks (nvidia-cdi-hook, nvidia-ctk): its advisories do not apply"}
	}
	status := OK
	var details []string
	for _, h := range hooks {
		if _, err := os.Stat(h); err != nil {
			continue // the GPUs check reports a missing hook
		}
		out, err := run(ctx, h, "--version")
		m := toolkitVersionLine.FindSubmatch(out)
		switch {
		case err != nil:
			details = append(details, fmt.Sprintf("%s --version: %v", h, err))
			if status != Fatal {
				status = Warn
			}
		case m == nil || !semver.IsValid("v"+string(m[1])):
			details = append(details, fmt.Sprintf("%s: cannot read the version from %q", h, strings.TrimSpace(string(out))))
			if status != Fatal {
				status = Warn
			}
		case semver.Compare("v"+string(m[1]), toolkitFixed) < 0:
			details = append(details, fmt.Sprintf("%s version %s predates 1.17.8, which fixed CVE-2025-23266 and CVE-2025-23267 (a hook following the image's symlinks writes host files)", h, m[1]))
			status = Fatal
		default:
			details = append(details, fmt.Sprintf("%s version %s", h, m[1]))
		}
	}
	if len(details) == 0 {
		return Check{Name: name, Status: Info, Detail: "the NVIDIA hooks the CDI specs run are missing (see GPUs): no version to check"}
	}
	c := Check{Name: name, Status: status, Detail: strings.Join(details, "; ")}
	switch status {
	case OK:
		c.Detail += ": has the CVE-2025-23266 and CVE-2025-23267 fixes"
	case Warn:
		c.Detail += ": cannot check CVE-2025-23266 and CVE-2025-23267 (fixed in 1.17.8)"
		c.Fix = "make sure the hooks are nvidia-container-toolkit-base 1.17.8 or later"
	case Fatal:
		c.Fix = "upgrade nvidia-container-toolkit-base to 1.17.8 or later, or regenerate the CDI spec without hooks ('nsn-run gpu cdi-generate --no-hooks')"
	}
	return c
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
	in, err := gpu.New(gpu.Options{SpecDirs: cdiDirs})
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
