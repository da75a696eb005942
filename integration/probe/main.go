// Command nsn-probe runs inside an nsn-run container and tries one named
// attack per invocation, reporting what happened as one JSON object:
// `nsn-probe ATTACK [ARG]`. `nsn-probe all` runs every attack that needs no
// argument, one JSON line each. It is built static (CGO_ENABLED=0) and packed
// into test and demo images by our own image builder.
//
// Two workloads serve the limit tests: `alloc MB` touches MB mebibytes of
// memory, `spin SECONDS` keeps one CPU busy for that long.
package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Report is what one attack did. Blocked is the verdict: the attack got
// nothing. Errno names the error the kernel returned, if any; Signal the
// signal that killed the attack's child process, if one did.
type Report struct {
	Attack  string `json:"attack"`
	Blocked bool   `json:"blocked"`
	Errno   string `json:"errno,omitempty"`
	Signal  string `json:"signal,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

type attack struct {
	what string
	run  func(arg string) Report
}

// noArg adapts an attack that takes no argument.
func noArg(f func() Report) func(string) Report { return func(string) Report { return f() } }

var attacks = map[string]attack{
	// 1, 2: identity (also run from setuid-root and file-capability copies)
	"identity": {"uids, gids, capability sets, no_new_privs and seccomp mode", noArg(identity)},
	// 3: mounts
	"mount":         {"mount a tmpfs on /tmp", noArg(func() Report { return errnoReport(unix.Mount("none", "/tmp", "tmpfs", 0, "")) })},
	"umount-masked": {"unmount the mask over /proc/kcore", noArg(func() Report { return errnoReport(unix.Unmount("/proc/kcore", unix.MNT_DETACH)) })},
	"pivot-root":    {"pivot_root", noArg(func() Report { return errnoReport(unix.PivotRoot("/tmp", "/tmp")) })},
	// 4: namespaces
	"unshare-user":        {"unshare a user namespace", noArg(func() Report { return errnoReport(unix.Unshare(unix.CLONE_NEWUSER)) })},
	"unshare-mount":       {"unshare a mount namespace", noArg(func() Report { return errnoReport(unix.Unshare(unix.CLONE_NEWNS)) })},
	"unshare-net":         {"unshare a network namespace", noArg(func() Report { return errnoReport(unix.Unshare(unix.CLONE_NEWNET)) })},
	"setns":               {"setns into a network namespace", noArg(setns)},
	"clone3":              {"clone3 (fails with ENOSYS so libcs fall back to clone)", noArg(clone3)},
	"clone-newuser":       {"raw clone(2) with CLONE_NEWUSER", noArg(func() Report { return cloneNewuser(0) })},
	"clone-newuser-newns": {"raw clone(2) with CLONE_NEWUSER|CLONE_NEWNS", noArg(func() Report { return cloneNewuser(unix.CLONE_NEWNS) })},
	// 5: dangerous syscalls
	"keyctl":            {"keyctl", noArg(func() Report { return sysReport(unix.SYS_KEYCTL, 0, negOne(3), 0) })},
	"add-key":           {"add_key", noArg(addKey)},
	"bpf":               {"bpf(BPF_MAP_CREATE)", noArg(func() Report { return sysReport(unix.SYS_BPF, 0, 0, 0) })},
	"perf-event-open":   {"perf_event_open", noArg(perfEventOpen)},
	"userfaultfd":       {"userfaultfd", noArg(func() Report { return sysReport(unix.SYS_USERFAULTFD, 0, 0, 0) })},
	"io-uring-setup":    {"io_uring_setup", noArg(ioUringSetup)},
	"mmap-hugetlb":      {"mmap a hugetlb page (MAP_HUGETLB: no memory cgroup is charged for it)", noArg(mmapHugeTLB)},
	"memfd-hugetlb":     {"memfd_create(MFD_HUGETLB)", noArg(memfdHugeTLB)},
	"netlink-usersock":  {"socket(AF_NETLINK, NETLINK_USERSOCK): messages between its sockets are charged to no memory cgroup", noArg(netlinkUserSock)},
	"open-by-handle-at": {"open_by_handle_at", noArg(func() Report { return sysReport(unix.SYS_OPEN_BY_HANDLE_AT, negOne(100), 0, 0) })},
	"init-module":       {"init_module", noArg(func() Report { return sysReport(unix.SYS_INIT_MODULE, 0, 0, 0) })},
	"kexec-load":        {"kexec_load", noArg(func() Report { return sysReport(unix.SYS_KEXEC_LOAD, 0, 0, 0) })},
	"acct":              {"acct", noArg(func() Report { return sysReport(unix.SYS_ACCT, 0, 0, 0) })},
	"socketcall-32":     {"socket(AF_VSOCK) through the i386 socketcall (int $0x80), in a child", noArg(socketcall32)},
	"x32-getpid":        {"getpid through the x32 ABI (syscall number | 0x40000000), in a child", noArg(x32Getpid)},
	// 6: sensitive kernel files
	"read-kcore":       {"read /proc/kcore", noArg(func() Report { return readReport("/proc/kcore") })},
	"read-keys":        {"read /proc/keys", noArg(func() Report { return readReport("/proc/keys") })},
	"read-timer-list":  {"read /proc/timer_list", noArg(func() Report { return readReport("/proc/timer_list") })},
	"read-sched-debug": {"read /proc/sched_debug", noArg(func() Report { return readReport("/proc/sched_debug") })},
	"list-firmware":    {"list /sys/firmware", noArg(listFirmware)},
	// 7: kernel knobs
	"write-core-pattern": {"write /proc/sys/kernel/core_pattern", noArg(func() Report { return writeReport("/proc/sys/kernel/core_pattern", "|/pwn") })},
	"write-sysrq":        {"write /proc/sysrq-trigger", noArg(func() Report { return writeReport("/proc/sysrq-trigger", "h") })},
	"write-cgroupfs":     {"find a cgroup filesystem and create a cgroup in it", noArg(writeCgroupfs)},
	"write-sys":          {"write /sys/class/net/lo/mtu", noArg(func() Report { return writeReport("/sys/class/net/lo/mtu", "1280") })},
	"has-xattr":          {"read extended attribute security.capability of ARG", hasFileCapability},
	// 8: devices
	"mknod": {"create a block device node", noArg(func() Report {
		return errnoReport(unix.Mknod("/tmp/sda", unix.S_IFBLK|0o600, int(unix.Mkdev(8, 0))))
	})},
	// 9: read-only root
	"write-root":    {"write a file in /", noArg(func() Report { return errnoReport(os.WriteFile("/pwned", []byte("x"), 0o644)) })},
	"write-etc":     {"append to /etc/passwd", noArg(func() Report { return writeReport("/etc/passwd", "pwn::0:0::/:/bin/sh\n") })},
	"write-usr-bin": {"create a file in /usr/bin", noArg(func() Report { return errnoReport(os.WriteFile("/usr/bin/pwn", []byte("x"), 0o755)) })},
	// 10: scratch space limits
	"fill-tmp":    {"write to /tmp until it is full", noArg(fillTmp)},
	"fill-inodes": {"create files in /tmp until the inodes run out", noArg(fillInodes)},
	// 11: network
	"only-lo":          {"list network interfaces", noArg(onlyLo)},
	"connect-host":     {"TCP connect to ARG (a server on the host's loopback)", connect},
	"connect-internet": {"TCP connect to 1.1.1.1:53", noArg(func() Report { return connect("1.1.1.1:53") })},
	"connect-metadata": {"TCP connect to 169.254.169.254:80", noArg(func() Report { return connect("169.254.169.254:80") })},
	"runtime-sockets":  {"look for containerd and docker sockets (and ARG, a path)", runtimeSockets},
	// 12: inherited state
	"open-fds":  {"file descriptors open at start", noArg(openFDs)},
	"host-pids": {"processes visible in /proc", noArg(hostPids)},
	// 13: host settings
	"sethostname":   {"sethostname", noArg(func() Report { return errnoReport(unix.Sethostname([]byte("pwned"))) })},
	"raise-rlimit":  {"raise the hard RLIMIT_NOFILE", noArg(raiseRlimit)},
	"oom-score-adj": {"read /proc/self/oom_score_adj and try to lower it to -1000, then 0", noArg(oomScoreAdj)},
	"exec-tmp":      {"run a binary copied to /tmp", noArg(execTmp)},
}

// needsArg lists attacks `all` leaves out.
var needsArg = map[string]bool{"connect-host": true, "has-xattr": true, "uevents": true}

func main() {
	// Before anything else can open a descriptor.
	initialFDs = listFDs()
	if len(os.Args) < 2 || len(os.Args) > 3 {
		usage()
	}
	name, arg := os.Args[1], ""
	if len(os.Args) == 3 {
		arg = os.Args[2]
	}
	switch name {
	case "alloc", "spin":
		workload(name, arg)
		return
	case "inotify-hold":
		holdInotify()
		return
	case "all":
		names := make([]string, 0, len(attacks))
		for n := range attacks {
			if !needsArg[n] && n != "fill-tmp" && n != "fill-inodes" {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			emit(run(n, ""))
		}
		return
	}
	if _, ok := attacks[name]; !ok {
		usage()
	}
	emit(run(name, arg))
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: nsn-probe ATTACK [ARG] | all | alloc MB | spin SECONDS")
	names := make([]string, 0, len(attacks))
	for n := range attacks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-19s %s\n", n, attacks[n].what)
	}
	os.Exit(2)
}

func run(name, arg string) Report {
	r := attacks[name].run(arg)
	r.Attack = name
	return r
}

func emit(r Report) {
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}

// errnoReport judges an attack by its error: any error blocks it.
func errnoReport(err error) Report {
	if err == nil {
		return Report{Blocked: false, Detail: "succeeded"}
	}
	r := Report{Blocked: true, Detail: err.Error()}
	var errno unix.Errno
	if errors.As(err, &errno) {
		r.Errno = unix.ErrnoName(errno)
	}
	return r
}

func negOne(n int) uintptr { return uintptr(-n) }

// sysReport makes a raw syscall with harmless arguments: refusal is the
// expected answer; success (fd closed at once) means the syscall is open.
func sysReport(nr uintptr, a1, a2, a3 uintptr) Report {
	r1, _, errno := unix.Syscall(nr, a1, a2, a3)
	if errno == 0 {
		_ = unix.Close(int(r1))
		return Report{Blocked: false, Detail: fmt.Sprintf("returned %d", r1)}
	}
	return errnoReport(errno)
}

func setns() Report {
	fd, err := unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return errnoReport(err)
	}
	defer unix.Close(fd)
	return errnoReport(unix.Setns(fd, unix.CLONE_NEWNET))
}

func clone3() Report {
	var args [88]byte // struct clone_args, version 2, all zero: a plain fork
	r1, _, errno := unix.Syscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(&args[0])), uintptr(len(args)), 0)
	if errno == 0 {
		if r1 == 0 {
			os.Exit(0) // the child of a successful clone3
		}
		return Report{Blocked: false, Detail: "clone3 created a process"}
	}
	return errnoReport(errno)
}

// cloneNewuser makes a raw clone(2), not unshare and not clone3, with
// CLONE_NEWUSER and extra: the seccomp rule for clone inspects its flags
// argument. A child it creates exits at once.
func cloneNewuser(extra uintptr) Report {
	flags := unix.CLONE_NEWUSER | extra | uintptr(unix.SIGCHLD)
	a0, a1 := flags, uintptr(0)
	if runtime.GOARCH == "s390x" {
		a0, a1 = 0, flags // clone(newsp, flags, ...) there
	}
	pid, errno := rawClone(a0, a1)
	if errno != 0 {
		return errnoReport(errno)
	}
	ws, err := wait(pid)
	if err != nil {
		return Report{Detail: fmt.Sprintf("ALLOWED: clone created pid %d in a new user namespace; %v", pid, err)}
	}
	return Report{Detail: fmt.Sprintf("ALLOWED: clone created pid %d in a new user namespace (wait status %#x)", pid, uint32(ws))}
}

// rawClone calls clone(a0, a1, 0, 0, 0): the same stack, so the child runs
// on a copy of this goroutine's with one thread and no working runtime.
// nosplit and nothing but raw syscalls after the clone: the child only
// exits.
//
//go:nosplit
func rawClone(a0, a1 uintptr) (int, unix.Errno) {
	r1, _, e := unix.RawSyscall6(unix.SYS_CLONE, a0, a1, 0, 0, 0, 0)
	if e == 0 && r1 == 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
	}
	return int(r1), e
}

func addKey() Report {
	typ, _ := unix.BytePtrFromString("user")
	desc, _ := unix.BytePtrFromString("nsn-probe")
	payload := []byte("x")
	r1, _, errno := unix.Syscall6(unix.SYS_ADD_KEY, uintptr(unsafe.Pointer(typ)), uintptr(unsafe.Pointer(desc)),
		uintptr(unsafe.Pointer(&payload[0])), 1, negOne(2), 0)
	if errno == 0 {
		return Report{Blocked: false, Detail: fmt.Sprintf("key %d", r1)}
	}
	return errnoReport(errno)
}

func perfEventOpen() Report {
	attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_CPU_CLOCK}
	attr.Size = uint32(unsafe.Sizeof(attr))
	fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, 0)
	if err == nil {
		unix.Close(fd)
	}
	return errnoReport(err)
}

func ioUringSetup() Report {
	var params [120]byte // struct io_uring_params
	return sysReport(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params[0])), 0)
}

// readReport: a masked file reads as empty, or cannot be opened.
func readReport(path string) Report {
	f, err := os.Open(path)
	if err != nil {
		return errnoReport(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	n, _ := f.Read(buf)
	if n > 0 {
		return Report{Blocked: false, Detail: fmt.Sprintf("read %d bytes", n)}
	}
	return Report{Blocked: true, Detail: "empty"}
}

func listFirmware() Report {
	entries, err := os.ReadDir("/sys/firmware")
	if err != nil {
		return errnoReport(err)
	}
	if len(entries) > 0 {
		return Report{Blocked: false, Detail: fmt.Sprintf("%d entries, first %s", len(entries), entries[0].Name())}
	}
	return Report{Blocked: true, Detail: "empty"}
}

func writeReport(path, data string) Report {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return errnoReport(err)
	}
	defer f.Close()
	_, err = f.WriteString(data)
	return errnoReport(err)
}

// writeCgroupfs looks for a cgroup filesystem in the task's mount table
// and tries to create a cgroup in each: none visible is itself the answer.
func writeCgroupfs() Report {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return errnoReport(err)
	}
	var tried []string
	for line := range strings.Lines(string(b)) {
		fields := strings.Fields(line)
		sep := slicesIndex(fields, "-")
		if sep < 0 || sep+1 >= len(fields) || !strings.HasPrefix(fields[sep+1], "cgroup") {
			continue
		}
		err := os.Mkdir(filepath.Join(fields[4], "pwn"), 0o755)
		if err == nil {
			return Report{Blocked: false, Detail: "created a cgroup in " + fields[4]}
		}
		tried = append(tried, fields[4]+": "+err.Error())
		r := errnoReport(err)
		r.Detail = strings.Join(tried, "; ")
		return r
	}
	return Report{Blocked: true, Detail: "no cgroup filesystem mounted"}
}

func slicesIndex(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

func hasFileCapability(path string) Report {
	buf := make([]byte, 64)
	n, err := unix.Getxattr(path, "security.capability", buf)
	if err != nil {
		return Report{Detail: "absent: " + err.Error()}
	}
	return Report{Detail: fmt.Sprintf("present, %d bytes", n)}
}

func fillTmp() Report {
	f, err := os.Create("/tmp/fill")
	if err != nil {
		return Report{Detail: "cannot create: " + err.Error()}
	}
	defer os.Remove("/tmp/fill")
	defer f.Close()
	buf := make([]byte, 1<<20)
	var written int64
	for written < 64<<30 {
		n, err := f.Write(buf)
		written += int64(n)
		if err != nil {
			r := errnoReport(err)
			r.Detail = fmt.Sprintf("%s after %d bytes", r.Detail, written)
			return r
		}
	}
	return Report{Blocked: false, Detail: fmt.Sprintf("wrote %d bytes", written)}
}

func fillInodes() Report {
	if err := os.Mkdir("/tmp/inodes", 0o755); err != nil {
		return Report{Detail: "cannot mkdir: " + err.Error()}
	}
	for i := range 1_000_000 {
		fd, err := unix.Open(fmt.Sprintf("/tmp/inodes/%d", i), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			r := errnoReport(err)
			r.Detail = fmt.Sprintf("%s after %d files", r.Detail, i)
			return r
		}
		unix.Close(fd)
	}
	return Report{Blocked: false, Detail: "created 1000000 files"}
}

func onlyLo() Report {
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return errnoReport(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return Report{Blocked: len(names) == 1 && names[0] == "lo", Detail: strings.Join(names, ",")}
}

func connect(addr string) Report {
	if addr == "" {
		return Report{Detail: "no address given"}
	}
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err == nil {
		conn.Close()
	}
	return errnoReport(err)
}

func runtimeSockets(extra string) Report {
	paths := []string{"/run/containerd/containerd.sock", "/var/run/containerd/containerd.sock",
		"/run/docker.sock", "/var/run/docker.sock", "/run/containerd/containerd.sock.ttrpc"}
	if extra != "" {
		paths = append(paths, extra)
	}
	var found []string
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			found = append(found, p)
		}
	}
	return Report{Blocked: len(found) == 0, Detail: "visible: " + strings.Join(found, ",")}
}

// initialFDs are the descriptors open when main started.
var initialFDs []int

// listFDs reads /proc/self/fd with raw syscalls, leaving out the
// descriptor used to read it.
func listFDs() []int {
	dir, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(dir)
	var fds []int
	buf := make([]byte, 4096)
	for {
		n, err := unix.ReadDirent(dir, buf)
		if err != nil || n == 0 {
			break
		}
		_, _, names := unix.ParseDirent(buf[:n], -1, nil)
		for _, name := range names {
			if fd, err := strconv.Atoi(name); err == nil && fd != dir {
				fds = append(fds, fd)
			}
		}
	}
	sort.Ints(fds)
	return fds
}

func openFDs() Report {
	ok := len(initialFDs) == 3 && initialFDs[0] == 0 && initialFDs[1] == 1 && initialFDs[2] == 2
	return Report{Blocked: ok, Detail: fmt.Sprint(initialFDs)}
}

func hostPids() Report {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return errnoReport(err)
	}
	var pids []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, e.Name())
		}
	}
	cmd, _ := os.ReadFile("/proc/1/cmdline")
	init := strings.ReplaceAll(string(cmd), "\x00", " ")
	// In its own pid namespace the task's first process is pid 1.
	blocked := strings.Contains(init, "nsn-probe") && len(pids) < 10
	return Report{Blocked: blocked, Detail: fmt.Sprintf("pids %v, pid 1 is %q", pids, strings.TrimSpace(init))}
}

func raiseRlimit() Report {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return Report{Detail: err.Error()}
	}
	lim.Max++
	lim.Cur = lim.Max
	return errnoReport(unix.Setrlimit(unix.RLIMIT_NOFILE, &lim))
}

// oomScoreAdj reads the task's OOM score adjustment and tries to lower it:
// lowering needs CAP_SYS_RESOURCE. Blocked: no write lowered it. Detail
// has a fixed shape, "start N; write -1000: ERR; write 0: ERR; end N".
func oomScoreAdj() Report {
	const path = "/proc/self/oom_score_adj"
	read := func() (int, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(strings.TrimSpace(string(b)))
	}
	start, err := read()
	if err != nil {
		return Report{Detail: "read: " + err.Error()}
	}
	r := Report{Blocked: true}
	parts := []string{fmt.Sprintf("start %d", start)}
	for _, v := range []int{-1000, 0} {
		before, _ := read()
		err := writeString(path, strconv.Itoa(v))
		if after, _ := read(); after < before {
			r.Blocked = false
		}
		if err == nil {
			parts = append(parts, fmt.Sprintf("write %d: ok", v))
			continue
		}
		e := errnoReport(err)
		if r.Errno == "" {
			r.Errno = e.Errno
		}
		parts = append(parts, fmt.Sprintf("write %d: %s", v, cmp.Or(e.Errno, e.Detail)))
	}
	end, err := read()
	if err != nil {
		return Report{Detail: strings.Join(parts, "; ") + "; read: " + err.Error()}
	}
	r.Detail = strings.Join(append(parts, fmt.Sprintf("end %d", end)), "; ")
	return r
}

// writeString writes data to path with one write, as a /proc knob wants.
func writeString(path, data string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func execTmp() Report {
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		return Report{Blocked: false, Detail: "cannot read own binary: " + err.Error()}
	}
	if err := os.WriteFile("/tmp/probe-copy", self, 0o755); err != nil {
		return Report{Blocked: false, Detail: "cannot write /tmp: " + err.Error()}
	}
	return errnoReport(unix.Exec("/tmp/probe-copy", []string{"probe-copy", "identity"}, nil))
}

// identity reads the process's credentials and security state from
// /proc/self/status: blocked means no uid or gid (real, effective, saved,
// filesystem) is 0, every capability set is empty, no_new_privs is set and
// seccomp filters.
func identity() Report {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return Report{Detail: err.Error()}
	}
	fields := map[string]string{}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	ids := append(strings.Fields(fields["Uid"]), strings.Fields(fields["Gid"])...)
	blocked := len(ids) == 8 && !containsString(ids, "0")
	const zero = "0000000000000000"
	for _, set := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		blocked = blocked && fields[set] == zero
	}
	blocked = blocked && fields["NoNewPrivs"] == "1" && fields["Seccomp"] == "2"
	detail := fmt.Sprintf("Uid=%s Gid=%s CapInh=%s CapPrm=%s CapEff=%s CapBnd=%s CapAmb=%s NoNewPrivs=%s Seccomp=%s",
		fields["Uid"], fields["Gid"], fields["CapInh"], fields["CapPrm"], fields["CapEff"], fields["CapBnd"], fields["CapAmb"],
		fields["NoNewPrivs"], fields["Seccomp"])
	return Report{Blocked: blocked, Detail: detail}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// workload runs alloc or spin.
func workload(name, arg string) {
	n, err := strconv.Atoi(arg)
	if err != nil || n < 0 {
		usage()
	}
	switch name {
	case "alloc":
		// Touch every page so the memory is really charged to the cgroup.
		var keep [][]byte
		for range n {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		fmt.Printf("allocated %d MiB\n", len(keep))
	case "spin":
		start := time.Now()
		end := start.Add(time.Duration(n) * time.Second)
		for time.Now().Before(end) {
		}
		// The CPU this process got, for tests that bound a limit by it
		// rather than by a fixed figure a loaded host may not reach.
		var ru unix.Rusage
		_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		fmt.Printf("spun %d s cpu=%.3f wall=%.3f\n", n, cpu.Seconds(), time.Since(start).Seconds())
	}
}

// mmapHugeTLB maps one 2 MiB hugetlb page. Without a reserved pool the
// kernel answers ENOMEM; nsn-run's seccomp filter answers EPERM first.
func mmapHugeTLB() Report {
	b, err := unix.Mmap(-1, 0, 2<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_HUGETLB)
	if err != nil {
		return errnoReport(err)
	}
	_ = unix.Munmap(b)
	return Report{Blocked: false, Detail: "mapped a hugetlb page"}
}

// memfdHugeTLB creates a hugetlb-backed memfd (its pages come when it is
// sized and touched).
func memfdHugeTLB() Report {
	fd, err := unix.MemfdCreate("nsn-probe", unix.MFD_HUGETLB|unix.MFD_CLOEXEC)
	if err != nil {
		return errnoReport(err)
	}
	_ = unix.Close(fd)
	return Report{Blocked: false, Detail: "created a hugetlb memfd"}
}

// netlinkUserSock creates a NETLINK_USERSOCK socket.
func netlinkUserSock() Report {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_USERSOCK)
	if err != nil {
		return errnoReport(err)
	}
	_ = unix.Close(fd)
	return Report{Blocked: false, Detail: "created a NETLINK_USERSOCK socket"}
}
