package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/internal/imagebuild"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/task"
)

// envRuntime names the containerd runtime handler the adversarial suite runs
// under (default io.containerd.runc.v2): the suite holds for any handler.
const envRuntime = "NSN_TEST_RUNTIME"

type probeReport struct {
	Attack  string `json:"attack"`
	Blocked bool   `json:"blocked"`
	Errno   string `json:"errno"`
	Signal  string `json:"signal"`
	Detail  string `json:"detail"`
}

// runProbe runs one probe invocation in a fresh container with default
// settings, checks nothing is left behind, and returns the report.
func runProbe(t *testing.T, m *runtime.Manager, args ...string) probeReport {
	t.Helper()
	r, id := runProbeTask(t, m, args...)
	assertNothingLeft(t, id)
	return r
}

// runProbeTask runs one probe attack on any backend and returns its report
// and the task id.
func runProbeTask(t *testing.T, m *runtime.Manager, args ...string) (probeReport, string) {
	t.Helper()
	id := uniqueID("atk")
	tk := task.Task{ID: id, Image: probeRef, Command: args, Runtime: os.Getenv(envRuntime)}
	res, err := m.Run(context.Background(), tk, runtime.RunOptions{})
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	var r probeReport
	if err := json.Unmarshal([]byte(res.Stdout), &r); err != nil {
		t.Fatalf("%v: probe output %q (stderr %q, exit %d): %v", args, res.Stdout, res.Stderr, res.ExitCode, err)
	}
	return r, id
}

// TestAdversarialBothBackends runs the attacks on what the issue that
// hardened seccomp and the OOM score added (namespaces through a raw clone,
// the compat ABIs, the OOM score), and later hugetlb pages, on the Docker
// backend too: it sends
// nsn-run's own seccomp profile and score, so it must refuse the same way.
func TestAdversarialBothBackends(t *testing.T) {
	pinned := haveCapability(t, unix.CAP_SYS_RESOURCE)
	forEachBackend(t, func(t *testing.T, b backendCase, m *runtime.Manager) {
		for _, tc := range []struct {
			attack string
			errnos []string
		}{
			{"clone-newuser", []string{"EPERM"}},
			{"clone-newuser-newns", []string{"EPERM"}},
			{"socketcall-32", socketcallRefusals(t)},
			{"x32-getpid", x32Refusals()},
			// RLIMIT_MSGQUEUE 0: queue bytes are charged to host root too
			{"mq-open", []string{"EMFILE"}},
			// seccomp: hugetlb pages are charged to no memory cgroup
			// (without a pool, an allowed call would fail with ENOMEM)
			{"mmap-hugetlb", []string{"EPERM"}},
			{"memfd-hugetlb", []string{"EPERM"}},
			{"netlink-usersock", []string{"EPERM"}},
		} {
			r, _ := runProbeTask(t, m, "nsn-probe", tc.attack)
			refusal := r.Errno
			if r.Signal != "" {
				refusal = r.Signal
			}
			if !r.Blocked || (len(tc.errnos) > 0 && !slices.Contains(tc.errnos, refusal)) {
				t.Errorf("%s on %s: blocked=%v refusal=%q (%s); want one of %v", tc.attack, b.name, r.Blocked, refusal, r.Detail, tc.errnos)
			}
		}
		r, _ := runProbeTask(t, m, "nsn-probe", "oom-score-adj")
		checkOOMScoreAdj(t, r, pinned)
	})
}

// assertNothingLeft checks the host for anything of task id: containerd
// objects, mounts, cgroups (and so processes, which live in them).
func assertNothingLeft(t *testing.T, id string) {
	t.Helper()
	c, _ := containerdClient(t)
	if l := leftovers(t, c); l != "" {
		t.Errorf("task %s left: %s", id, l)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), id) {
		t.Errorf("task %s left a mount", id)
	}
	cgroupDirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + testNamespace + "/" + id)
	v2, _ := filepath.Glob("/sys/fs/cgroup/" + testNamespace + "/" + id)
	if dirs := append(cgroupDirs, v2...); len(dirs) > 0 {
		t.Errorf("task %s left cgroups %v", id, dirs)
	}
}

// TestAdversarial runs each attack of the probe in its own container with
// default settings and checks it got nothing, and how the kernel refused.
// An empty errno list means the verdict alone decides (the attack reports
// what it saw: an identity, an empty file, a list of interfaces). A signal
// name in the list stands for the signal that killed the attack's child
// process (the probe makes some syscalls in a child that may not survive).
func TestAdversarial(t *testing.T) {
	m, _ := testManager(t)
	_, addr := containerdClient(t)
	permOrNosys := []string{"EPERM", "ENOSYS"}
	cases := []struct {
		args   []string
		errnos []string
	}{
		// 1, 2: identity, also through a setuid-root binary and a file capability
		{[]string{"nsn-probe", "identity"}, nil},
		{[]string{"nsn-probe-suid", "identity"}, nil},
		// 3: mounts
		{[]string{"nsn-probe", "mount"}, []string{"EPERM"}},
		{[]string{"nsn-probe", "umount-masked"}, []string{"EPERM"}},
		{[]string{"nsn-probe", "pivot-root"}, []string{"EPERM"}},
		// 4: namespaces
		{[]string{"nsn-probe", "unshare-user"}, []string{"EPERM"}},
		{[]string{"nsn-probe", "unshare-mount"}, []string{"EPERM"}},
		{[]string{"nsn-probe", "unshare-net"}, []string{"EPERM"}},
		{[]string{"nsn-probe", "setns"}, []string{"EPERM"}},
		{[]string{"nsn-probe", "clone3"}, []string{"ENOSYS"}},
		// a raw clone(2): the clone rule masks namespace flags in argument 0
		{[]string{"nsn-probe", "clone-newuser"}, []string{"EPERM"}},
		{[]string{"nsn-probe", "clone-newuser-newns"}, []string{"EPERM"}},
		// 5: syscalls no job needs
		{[]string{"nsn-probe", "keyctl"}, permOrNosys},
		{[]string{"nsn-probe", "add-key"}, permOrNosys},
		{[]string{"nsn-probe", "bpf"}, permOrNosys},
		{[]string{"nsn-probe", "perf-event-open"}, permOrNosys},
		{[]string{"nsn-probe", "userfaultfd"}, permOrNosys},
		{[]string{"nsn-probe", "io-uring-setup"}, permOrNosys},
		{[]string{"nsn-probe", "open-by-handle-at"}, permOrNosys},
		{[]string{"nsn-probe", "init-module"}, permOrNosys},
		{[]string{"nsn-probe", "kexec-load"}, permOrNosys},
		{[]string{"nsn-probe", "acct"}, permOrNosys},
		// hugetlb pages, charged to no memory cgroup: the seccomp filter's
		// EPERM (without a reserved pool an allowed call gets ENOMEM)
		{[]string{"nsn-probe", "mmap-hugetlb"}, []string{"EPERM"}},
		{[]string{"nsn-probe", "memfd-hugetlb"}, []string{"EPERM"}},
		// netlink messages between a task's sockets: charged to no cgroup
		{[]string{"nsn-probe", "netlink-usersock"}, []string{"EPERM"}},
		// compat ABIs (i386 int $0x80, x32): the filter lists the native one only
		{[]string{"nsn-probe", "socketcall-32"}, socketcallRefusals(t)},
		{[]string{"nsn-probe", "x32-getpid"}, x32Refusals()},
		// 6: kernel information: empty or denied
		{[]string{"nsn-probe", "read-kcore"}, nil},
		{[]string{"nsn-probe", "read-keys"}, nil},
		{[]string{"nsn-probe", "read-timer-list"}, nil},
		{[]string{"nsn-probe", "read-sched-debug"}, nil},
		{[]string{"nsn-probe", "list-firmware"}, nil},
		// 7: kernel knobs. The task is not root, so a permission check may
		// answer (EACCES) before the read-only mount does (EROFS).
		{[]string{"nsn-probe", "write-core-pattern"}, []string{"EROFS", "EPERM", "EACCES"}},
		{[]string{"nsn-probe", "write-sysrq"}, sysrqErrnos()},
		{[]string{"nsn-probe", "write-cgroupfs"}, []string{"", "EROFS", "EPERM", "EACCES"}},
		{[]string{"nsn-probe", "write-sys"}, []string{"EROFS", "EPERM", "EACCES"}},
		// 8: devices
		{[]string{"nsn-probe", "mknod"}, []string{"EPERM"}},
		// 9: read-only root (the image makes /etc/passwd and /usr/bin
		// writable by anyone, so only the read-only mount can refuse)
		{[]string{"nsn-probe", "write-root"}, []string{"EROFS"}},
		{[]string{"nsn-probe", "write-etc"}, []string{"EROFS"}},
		{[]string{"nsn-probe", "write-usr-bin"}, []string{"EROFS"}},
		// 10: scratch space
		{[]string{"nsn-probe", "fill-tmp"}, []string{"ENOSPC"}},
		{[]string{"nsn-probe", "fill-inodes"}, []string{"ENOSPC"}},
		// 11: network
		{[]string{"nsn-probe", "only-lo"}, nil},
		{[]string{"nsn-probe", "connect-internet"}, []string{"ENETUNREACH"}},
		{[]string{"nsn-probe", "connect-metadata"}, []string{"ENETUNREACH"}},
		{[]string{"nsn-probe", "runtime-sockets", addr}, nil},
		// 12: inherited state
		{[]string{"nsn-probe", "open-fds"}, nil},
		{[]string{"nsn-probe", "host-pids"}, nil},
		// 13: host settings
		{[]string{"nsn-probe", "sethostname"}, []string{"EPERM"}},
		{[]string{"nsn-probe", "raise-rlimit"}, []string{"EPERM"}},
		{[]string{"nsn-probe", "exec-tmp"}, []string{"EACCES"}},
	}

	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runProbe(t, m, tc.args...)
			if !r.Blocked {
				t.Errorf("attack %s was not blocked: %s", r.Attack, r.Detail)
			}
			refusal := r.Errno
			if r.Signal != "" {
				refusal = r.Signal
			}
			if tc.errnos != nil && !slices.Contains(tc.errnos, refusal) {
				t.Errorf("attack %s refused with %q (%s), want one of %v", r.Attack, refusal, r.Detail, tc.errnos)
			}
		})
	}
}

// sysrqErrnos: a kernel built without magic SysRq (as on this project's
// VMs) has no /proc/sysrq-trigger for the task to write to at all.
func sysrqErrnos() []string {
	if _, err := os.Stat("/proc/sysrq-trigger"); err != nil {
		return []string{"ENOENT"}
	}
	return []string{"EROFS", "EPERM", "EACCES"}
}

// socketcallRefusals: runc's filter kills a syscall of an architecture it
// does not list (SIGSYS); a runtime that answers it with an errno refuses
// it too. Where the kernel has no i386 entry point at all (see
// hostHasI386Entry), int $0x80 faults before seccomp sees it: SIGSEGV, as
// on the host. Not applicable (blocked, nothing refused) off x86_64.
func socketcallRefusals(t *testing.T) []string {
	if goruntime.GOARCH != "amd64" {
		return nil
	}
	if ok, detail := hostHasI386Entry(t); !ok {
		if os.Getenv(envRequireI386) == "1" {
			t.Fatalf("%s=1, but this kernel has no i386 entry point: %s", envRequireI386, detail)
		}
		t.Logf("this kernel has no i386 entry point (%s): socketcall-32 shows nothing of the seccomp filter here", detail)
		return []string{"SIGSEGV"}
	}
	return []string{"SIGSYS", "EPERM", "ENOSYS"}
}

// x32Refusals: runc's filter kills a syscall of the x32 ABI, which it does
// not list (SIGSYS), or a runtime refuses it with EPERM. Not ENOSYS: that is
// also what a kernel without the x32 ABI answers once seccomp let the call
// through. Not applicable (blocked, nothing refused) off x86_64.
func x32Refusals() []string {
	if goruntime.GOARCH != "amd64" {
		return nil
	}
	return []string{"SIGSYS", "EPERM"}
}

// TestAdversarialOOMScoreAdj: the task starts as the OOM killer's first
// choice (1000) and cannot lower its score (that needs CAP_SYS_RESOURCE).
// The daemons under test are started alongside this test, so its own
// capabilities stand for the runtime's (see checkOOMScoreAdj).
func TestAdversarialOOMScoreAdj(t *testing.T) {
	m, _ := testManager(t)
	r := runProbe(t, m, "nsn-probe", "oom-score-adj")
	checkOOMScoreAdj(t, r, haveCapability(t, unix.CAP_SYS_RESOURCE))
}

// TestPrivilegedBinariesGiveNothing: the image's setuid-root binary and its
// binary with CAP_SYS_ADMIN as a file capability are really there, and give
// nothing: no_new_privs ignores setuid, and a file capability outside the
// empty bounding set makes the exec fail.
func TestPrivilegedBinariesGiveNothing(t *testing.T) {
	m, _ := testManager(t)
	run := func(script string) task.Result {
		t.Helper()
		id := uniqueID("priv")
		res, err := m.Run(context.Background(), task.Task{ID: id, Image: probeRef, Command: []string{"sh", "-c", script}, Runtime: os.Getenv(envRuntime)}, runtime.RunOptions{})
		if err != nil {
			t.Fatal(err)
		}
		assertNothingLeft(t, id)
		return res
	}
	// Owned by host root, the fixture shows inside a task's user namespace
	// as the overflow id 65534 (root is not mapped there), or as 0 with
	// user namespaces off: setuid root either way.
	if res := run("stat -c '%a %u' /bin/nsn-probe-suid"); res.Stdout != "4755 0\n" && res.Stdout != "4755 65534\n" {
		t.Fatalf("the setuid fixture is not setuid root in the container: %q", res.Stdout)
	}
	if res := run("nsn-probe has-xattr /bin/nsn-probe-fcap"); !strings.Contains(res.Stdout, "present, 20 bytes") {
		t.Fatalf("the file-capability fixture has no capability in the container: %q", res.Stdout)
	}
	res := run("nsn-probe-fcap identity; echo exit=$?")
	var r probeReport
	if err := json.Unmarshal([]byte(strings.SplitN(res.Stdout, "\n", 2)[0]), &r); err == nil {
		if !r.Blocked {
			t.Errorf("a file capability raised privilege: %s", r.Detail)
		}
	} else if !strings.Contains(res.Stderr, "Operation not permitted") || !strings.Contains(res.Stdout, "exit=126") {
		t.Errorf("file-capability binary: stdout %q stderr %q; want a blocked identity or a refused exec", res.Stdout, res.Stderr)
	}
}

// TestAdversarialHostServer: a TCP server on the host's 127.0.0.1 is not
// reachable from a task (its loopback is its own), and sees no connection.
func TestAdversarialHostServer(t *testing.T) {
	m, _ := testManager(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var accepted atomic.Int32
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conn.Close()
		}
	}()
	r := runProbe(t, m, "nsn-probe", "connect-host", l.Addr().String())
	if !r.Blocked || r.Errno != "ECONNREFUSED" {
		t.Errorf("connect to the host's %s: blocked=%v errno=%q (%s); want ECONNREFUSED from the task's own loopback", l.Addr(), r.Blocked, r.Errno, r.Detail)
	}
	// The host's own client reaches it: the server was really there.
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if n := accepted.Load(); n > 1 {
		t.Errorf("the host server accepted %d connections; only the test's own was expected", n)
	}
}

// TestHostileImages: images whose /proc, /dev, /dev/null or
// /etc/resolv.conf are symlinks to host paths, and image configs with
// WORKDIR /proc/self/fd/7 or USER 0, are refused or contained, and a host
// marker stays untouched. Twice: as a backend's first tasks, and after a
// task has run (where idmapped snapshots work, the backend then inspects
// a root through a plain mount instead of an idmapped one).
func TestHostileImages(t *testing.T) {
	t.Run("first-tasks", func(t *testing.T) { hostileImages(t, false) })
	t.Run("after-a-task", func(t *testing.T) { hostileImages(t, true) })
}

func hostileImages(t *testing.T, afterATask bool) {
	m, c := testManager(t)
	if afterATask {
		res, err := m.Run(context.Background(), task.Task{ID: uniqueID("imgfirst"), Image: "busybox:latest", Command: []string{"true"}}, runtime.RunOptions{})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("a first task: %+v, %v", res, err)
		}
		if res.Identity == nil || res.Identity.Level != task.IdentityIDMapped {
			t.Logf("the first task's identity is %+v, not idmapped: the plain inspection mount is not used on this host", res.Identity)
		}
	}
	markerDir := t.TempDir()
	marker := filepath.Join(markerDir, "marker")
	if err := os.WriteFile(marker, []byte("untouched\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(t.TempDir(), "rootfs")
	if err := imagebuild.BusyboxRootfs(base, busyboxPath(t)); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		symlink map[string]string // rootfs path -> link target
		config  ocispec.ImageConfig
		// refused: the spawn must fail with an InvalidArgument error.
		refused bool
		script  string
		stdout  string // when it runs: what it must print
	}{
		// Mount points that are symlinks are refused before the runtime
		// sees them (runc 1.1 creates /dev/fd and friends through a /dev
		// symlink, on the host).
		{name: "proc-link", symlink: map[string]string{"proc": markerDir}, refused: true},
		{name: "dev-link", symlink: map[string]string{"dev": markerDir}, refused: true},
		{name: "dev-relative-link", symlink: map[string]string{"dev": "../../../../../../.." + markerDir}, refused: true},
		// /dev/null and /etc/resolv.conf are no mount points of ours: /dev
		// is a fresh tmpfs and there is no network to resolve, so these
		// links are contained, not refused.
		{name: "devnull-link", symlink: map[string]string{"dev/null": marker}, script: "echo pwned > /dev/null; echo ran", stdout: "ran\n"},
		{name: "resolv-link", symlink: map[string]string{"etc/resolv.conf": marker}, script: "echo pwned > /etc/resolv.conf; echo ran", stdout: "ran\n"},
		{name: "workdir-fd", config: ocispec.ImageConfig{WorkingDir: "/proc/self/fd/7"}, refused: true},
		// The same places through the image's own symlinks (an outside
		// review ran WORKDIR /ps/root in /proc/self/root); a link to an
		// ordinary directory still works.
		{name: "workdir-proc-link", symlink: map[string]string{"ps": "/proc/self"}, config: ocispec.ImageConfig{WorkingDir: "/ps/root"}, refused: true},
		{name: "workdir-dev-relative-link", symlink: map[string]string{"dv": "../dev"}, config: ocispec.ImageConfig{WorkingDir: "/dv"}, refused: true},
		{name: "workdir-plain-link", symlink: map[string]string{"work": "/etc"}, config: ocispec.ImageConfig{WorkingDir: "/work"}, script: "pwd -P", stdout: "/etc\n"},
		{name: "user-0", config: ocispec.ImageConfig{User: "0"}, script: "id -u", stdout: "65534\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rootfs := filepath.Join(t.TempDir(), "rootfs")
			if err := os.CopyFS(rootfs, os.DirFS(base)); err != nil {
				t.Fatal(err)
			}
			for p, target := range tc.symlink {
				full := filepath.Join(rootfs, p)
				if err := os.RemoveAll(full); err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, full); err != nil {
					t.Fatal(err)
				}
			}
			ref := "docker.io/library/hostile-" + tc.name + ":latest"
			cfg := tc.config
			cfg.Env = []string{"PATH=/bin"}
			if err := importImage(c, imagebuild.Image{Name: ref, RootfsDir: rootfs, Config: cfg}); err != nil {
				t.Fatal(err)
			}
			id := uniqueID("img")
			script := tc.script
			if script == "" {
				script = "echo ran"
			}
			res, err := m.Run(context.Background(), task.Task{ID: id, Image: ref, Command: []string{"sh", "-c", script}}, runtime.RunOptions{})
			switch {
			case tc.refused:
				if !errdefs.IsInvalidArgument(err) {
					t.Errorf("want the spawn refused as invalid, got %v (result %+v)", err, res)
				}
			case err != nil:
				t.Errorf("spawn failed: %v", err)
			case tc.stdout != "" && res.Stdout != tc.stdout:
				t.Errorf("stdout %q, want %q", res.Stdout, tc.stdout)
			}
			b, err := os.ReadFile(marker)
			if err != nil || string(b) != "untouched\n" {
				t.Errorf("host marker = %q, %v", b, err)
			}
			entries, _ := os.ReadDir(markerDir)
			if len(entries) != 1 {
				t.Errorf("host marker dir now holds %d entries", len(entries))
			}
			if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), markerDir) {
				t.Errorf("something is mounted on the host marker dir")
			}
			assertNothingLeft(t, id)
		})
	}
}

// TestHostileImagesAfterTheirRootPassed: the containerd backend mounts a
// task's root to inspect it only the first time a root of that image
// passes with that working dir and those mount points, in this Backend
// (passedRoots) or in any process of the node (the records in ProbeDir,
// which each CLI run reads). What it remembers must not let a hostile
// root through: a task of the same image whose working dir leads into
// /proc through the image's own symlink, after tasks whose working dir did
// not; and a hostile image imported under the name of an image whose root
// passed. Both are refused, by the Manager whose tasks passed and by a
// second one sharing its ProbeDir (a later process), as on a first task.
func TestHostileImagesAfterTheirRootPassed(t *testing.T) {
	probe := t.TempDir()
	withProbe := func(c *containerd.Config) { c.ProbeDir = probe }
	first, c := testManagerBackend(t, withProbe, func(*runtime.Config) {})
	later, _ := testManagerBackend(t, withProbe, func(*runtime.Config) {})
	managers := map[string]*runtime.Manager{"the same Manager": first, "a later process's Manager": later}
	ctx := context.Background()
	build := func(name string, symlinks map[string]string) {
		t.Helper()
		rootfs := filepath.Join(t.TempDir(), "rootfs")
		if err := imagebuild.BusyboxRootfs(rootfs, busyboxPath(t)); err != nil {
			t.Fatal(err)
		}
		for p, target := range symlinks {
			full := filepath.Join(rootfs, p)
			if err := os.RemoveAll(full); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
		}
		if err := importImage(c, imagebuild.Image{Name: name, RootfsDir: rootfs, Config: ocispec.ImageConfig{Env: []string{"PATH=/bin"}}}); err != nil {
			t.Fatal(err)
		}
	}
	run := func(m *runtime.Manager, name, workdir string) (task.Result, error) {
		t.Helper()
		id := uniqueID("passed")
		res, err := m.Run(ctx, task.Task{ID: id, Image: name, WorkingDir: workdir, Command: []string{"sh", "-c", "pwd -P"}}, runtime.RunOptions{})
		assertNothingLeft(t, id)
		return res, err
	}
	records := func() int {
		t.Helper()
		files, _ := filepath.Glob(filepath.Join(probe, "passed-roots", "*"))
		return len(files)
	}
	// Where a task's own snapshot must get its mount points made
	// (per-task user namespaces without idmapped snapshots: containerd
	// 1.x), every root is inspected, and nothing is recorded.
	identity, err := first.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantRecords := 1
	if identity == task.IdentityUserNS {
		wantRecords = 0
	}

	linked := "docker.io/library/" + strings.ToLower(uniqueID("passed-ps")) + ":v1"
	build(linked, map[string]string{"ps": "/proc/self"})
	for _, m := range []*runtime.Manager{first, first, later} {
		if res, err := run(m, linked, "/etc"); err != nil || res.Stdout != "/etc\n" {
			t.Fatalf("a task in /etc of the image with /ps -> /proc/self: %q, %v; want it run in /etc", res.Stdout, err)
		}
	}
	if n := records(); n != wantRecords {
		t.Fatalf("after three tasks of one image and working dir (identity %q), %s holds %d passed-root records, want %d", identity, probe, n, wantRecords)
	}
	for who, m := range managers {
		if res, err := run(m, linked, "/ps/root"); !errdefs.IsInvalidArgument(err) {
			t.Errorf("then one in /ps/root, by %s: %v (stdout %q); want it refused as invalid", who, err, res.Stdout)
		}
	}

	name := "docker.io/library/" + strings.ToLower(uniqueID("passed-name")) + ":v1"
	build(name, nil)
	if res, err := run(first, name, "/"); err != nil || res.Stdout != "/\n" {
		t.Fatalf("a task of the plain image: %q, %v", res.Stdout, err)
	}
	marker := t.TempDir()
	build(name, map[string]string{"proc": marker})
	for who, m := range managers {
		if res, err := run(m, name, "/"); !errdefs.IsInvalidArgument(err) {
			t.Errorf("a task of the image imported again under %s with /proc -> %s, by %s: %v (stdout %q); want it refused as invalid", name, marker, who, err, res.Stdout)
		}
	}
	if entries, _ := os.ReadDir(marker); len(entries) != 0 {
		t.Errorf("the host dir the image's /proc linked to now holds %d entries", len(entries))
	}
}

// TestPassedRootRecordsFollowTheSnapshot: containerd commits a snapshot
// under whatever name a client gives it (the diff IDs are checked by the
// unpacker, not by containerd), and snapshots are a namespace's. A root
// that passed must not pass, through a record or a Backend's memory, where
// the snapshot of the same chain ID holds something else: a root whose
// /etc links to /proc/self/root, committed under the chain ID of an image
// whose root passed in /etc, then the image imported (which then unpacks
// nothing), in another namespace, or in the same one after the image and
// its snapshot were removed. Its task in /etc is refused, as on a node
// without records. Outside reviews ran the first (cwd /) while the records
// were shared by all namespaces, and found the second while a record
// named the snapshot by its chain ID alone.
func TestPassedRootRecordsFollowTheSnapshot(t *testing.T) {
	probe := t.TempDir()
	withProbe := func(c *containerd.Config) { c.ProbeDir = probe }
	// Host ids shared: the records are used on every containerd (with
	// per-task user namespaces on 1.x every root is inspected).
	sharedIDs := func(cfg *runtime.Config) { cfg.UserNamespaces = runtime.UserNSOff }
	first, c := testManagerBackend(t, withProbe, sharedIDs)
	later, _ := testManagerBackend(t, withProbe, sharedIDs)
	otherNS := strings.ToLower(uniqueID("other-ns"))
	other, _ := testManagerBackend(t, func(c *containerd.Config) { c.ProbeDir = probe; c.Namespace = otherNS }, sharedIDs)
	ctx := context.Background()
	sn := c.SnapshotService(containerd.DefaultSnapshotter)
	run := func(m *runtime.Manager, name string) (task.Result, error) {
		t.Helper()
		id := uniqueID("passed")
		res, err := m.Run(ctx, task.Task{ID: id, Image: name, WorkingDir: "/etc", Command: []string{"sh", "-c", "pwd -P"}}, runtime.RunOptions{})
		if err == nil {
			_ = m.Cleanup(ctx, id)
		}
		return res, err
	}
	for _, tc := range []struct {
		what     string
		nsCtx    context.Context
		managers map[string]*runtime.Manager
	}{
		{"another namespace", namespaces.WithNamespace(ctx, otherNS), map[string]*runtime.Manager{"its Manager": other}},
		{"the same namespace, the image removed", ctx, map[string]*runtime.Manager{"the Manager whose task passed": first, "a later process's Manager": later}},
	} {
		t.Run(strings.ReplaceAll(tc.what, " ", "-"), func(t *testing.T) {
			name := "docker.io/library/" + strings.ToLower(uniqueID("passed-snap")) + ":v1"
			rootfs := filepath.Join(t.TempDir(), "rootfs")
			if err := imagebuild.BusyboxRootfs(rootfs, busyboxPath(t)); err != nil {
				t.Fatal(err)
			}
			// A layer of its own: no other image holds its snapshot.
			if err := os.WriteFile(filepath.Join(rootfs, "marker"), []byte(name), 0o644); err != nil {
				t.Fatal(err)
			}
			var layout bytes.Buffer
			if err := imagebuild.WriteOCILayout(&layout, imagebuild.Image{Name: name, RootfsDir: rootfs, Config: ocispec.ImageConfig{Env: []string{"PATH=/bin"}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Import(ctx, bytes.NewReader(layout.Bytes())); err != nil {
				t.Fatal(err)
			}
			before, _ := filepath.Glob(filepath.Join(probe, "passed-roots", "*"))
			if res, err := run(first, name); err != nil || res.Stdout != "/etc\n" {
				t.Fatalf("a task in /etc of the plain image: %q, %v", res.Stdout, err)
			}
			if after, _ := filepath.Glob(filepath.Join(probe, "passed-roots", "*")); len(after) != len(before)+1 {
				t.Fatalf("after a task, %d passed-root records, want %d", len(after), len(before)+1)
			}
			img, err := c.GetImage(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			diffIDs, err := img.RootFS(ctx)
			if err != nil {
				t.Fatal(err)
			}
			chainID := identity.ChainID(diffIDs).String()
			if tc.nsCtx == ctx {
				if err := c.ImageService().Delete(ctx, name, images.SynchronousDelete()); err != nil {
					t.Fatal(err)
				}
				if _, err := sn.Stat(ctx, chainID); !errdefs.IsNotFound(err) {
					t.Fatalf("the image's snapshot after the image's removal: %v, want not found", err)
				}
			}

			// A hostile root committed under the image's chain ID,
			// held by a lease against containerd's collector (the
			// image's config names no snapshot: it was never unpacked
			// there), then the image.
			leaseCtx, endLease, err := c.WithLease(tc.nsCtx)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = c.ImageService().Delete(tc.nsCtx, name, images.SynchronousDelete())
				_ = endLease(tc.nsCtx)
				_ = sn.Remove(tc.nsCtx, chainID)
				_ = sn.Remove(tc.nsCtx, "hostile")
			})
			mounts, err := sn.Prepare(leaseCtx, "hostile", "")
			if err != nil {
				t.Fatal(err)
			}
			if err := mount.WithTempMount(leaseCtx, mounts, func(root string) error {
				if err := imagebuild.BusyboxRootfs(root, busyboxPath(t)); err != nil {
					return err
				}
				if err := os.RemoveAll(filepath.Join(root, "etc")); err != nil {
					return err
				}
				return os.Symlink("/proc/self/root", filepath.Join(root, "etc"))
			}); err != nil {
				t.Fatal(err)
			}
			if err := sn.Commit(leaseCtx, chainID, "hostile"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Import(tc.nsCtx, bytes.NewReader(layout.Bytes())); err != nil {
				t.Fatal(err)
			}
			for who, m := range tc.managers {
				if res, err := run(m, name); !errdefs.IsInvalidArgument(err) {
					t.Errorf("a task in /etc of the image, by %s, its snapshot's /etc now linked to /proc/self/root: %v (stdout %q); want it refused as invalid", who, err, res.Stdout)
				}
			}
		})
	}
	if err := c.NamespaceService().Delete(ctx, otherNS); err != nil {
		t.Errorf("remove the namespace %s: %v", otherNS, err)
	}
}
