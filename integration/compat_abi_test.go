package integration

// Each test here runs one probe attack with runc directly twice: once under
// the spec with one control put back the way containerd or runc would have
// it (containerd's seccomp architecture list, a clone rule that looks at the
// wrong argument, no oomScoreAdj), where the attack must work, and once
// under the spec as generated, where it must not. So the control, and not
// something else about the host, is what stops the attack.

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/internal/imagebuild"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/task"
)

// runcProbe runs `nsn-probe args...` under runc directly, in a bundle of the
// busybox rootfs plus the probe, with the spec spec.Generate makes for it,
// changed by edit unless edit is nil. wrap, if any, is the command line
// runc itself runs under. It returns the probe's report.
func runcProbe(t *testing.T, edit func(*specs.Spec), wrap []string, args ...string) probeReport {
	t.Helper()
	needRoot(t)
	runc := runcPath(t)
	bundle := t.TempDir()
	rootfs := filepath.Join(bundle, spec.RootfsPath)
	if err := imagebuild.BusyboxRootfs(rootfs, busyboxPath(t)); err != nil {
		t.Fatal(err)
	}
	if err := imagebuild.AddFile(rootfs, buildProbe(t), "/bin/nsn-probe"); err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(t.TempDir(), "output")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}

	id := uniqueID("compat")
	tk := task.Task{ID: id, Image: busyboxRef, Command: append([]string{"nsn-probe"}, args...)}
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)
	s, err := spec.Generate(ctx, tk, ocispec.ImageConfig{Env: []string{"PATH=/bin"}}, spec.Options{OutputDir: outDir})
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(s)
	}
	b, err := spec.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}

	runCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stateRoot := t.TempDir()
	argv := append(slices.Clone(wrap), runc, "--root", stateRoot, "run", "--bundle", bundle, id)
	cmd := exec.CommandContext(runCtx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t.Cleanup(func() {
		// Only needed if the run was interrupted: runc run removes its
		// container when the process exits.
		_ = exec.Command(runc, "--root", stateRoot, "delete", "--force", id).Run()
	})
	if err := cmd.Run(); err != nil {
		t.Fatalf("runc run %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
	}
	var r probeReport
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("probe %v: output %q (stderr %q): %v", args, stdout.String(), stderr.String(), err)
	}
	return r
}

// hostProbe runs the probe on the host itself: as root, with no seccomp
// filter, in the test's own namespaces.
func hostProbe(t *testing.T, args ...string) probeReport {
	t.Helper()
	out, err := exec.Command(buildProbe(t), args...).Output()
	if err != nil {
		t.Fatalf("probe %v on the host: %v (output %q)", args, err, out)
	}
	var r probeReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("probe %v on the host: output %q: %v", args, out, err)
	}
	return r
}

// hostHasI386Entry reports whether the kernel takes i386 system calls from a
// 64-bit process (int $0x80), tried unconfined on the host. It does not
// where it was built without IA32 emulation, booted with
// ia32_emulation=0, or, as on this project's PVM-guest VMs, where the
// hypervisor gives user space no i386 entry at all: int $0x80 faults there
// (SIGSEGV), inside a container or not.
func hostHasI386Entry(t *testing.T) (bool, string) {
	t.Helper()
	r := hostProbe(t, "socketcall-32")
	return r.Signal != "SIGSEGV", r.Detail
}

// envRequireI386 makes a kernel without an i386 entry point a failure of
// the socketcall tests rather than a skip: the cgroup v2 VM sets it, since
// its Debian kernel has IA32 emulation.
const envRequireI386 = "NSN_REQUIRE_I386"

// TestCompatABISocketcall: with containerd's architecture list (x86_64,
// x86, x32) the i386 socketcall multiplexer reaches the kernel's socket
// code, AF_VSOCK included, though the native socket rule refuses AF_VSOCK;
// with the native architecture only, runc's filter kills the process
// (libseccomp's default bad-architecture action, KILL_THREAD, on a
// single-threaded child: SIGSYS).
func TestCompatABISocketcall(t *testing.T) {
	if goruntime.GOARCH != "amd64" {
		t.Skipf("the i386 entry point is an x86_64 matter; this is %s", goruntime.GOARCH)
	}
	needRoot(t)
	if ok, detail := hostHasI386Entry(t); !ok {
		if os.Getenv(envRequireI386) == "1" {
			t.Fatalf("%s=1, but this kernel has no i386 entry point: %s", envRequireI386, detail)
		}
		// Not a missing prerequisite CI could install: the attack surface
		// itself is absent, with or without the control.
		t.Skipf("this kernel has no i386 system call entry (on the host, unconfined: %s): the compat-ABI attack cannot run here", detail)
	}

	withCompat := runcProbe(t, func(s *specs.Spec) {
		s.Linux.Seccomp.Architectures = []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}
	}, nil, "socketcall-32")
	t.Logf("containerd's architectures: %+v", withCompat)
	if withCompat.Blocked || withCompat.Signal != "" {
		t.Errorf("with the compat architectures listed, the i386 socketcall did not reach the kernel: %+v", withCompat)
	}
	if !strings.Contains(withCompat.Detail, "i386 getpid: returned ") {
		t.Errorf("with the compat architectures listed, an i386 getpid did not return: %s", withCompat.Detail)
	}

	native := runcProbe(t, nil, nil, "socketcall-32")
	t.Logf("as generated: %+v", native)
	if !native.Blocked || native.Signal != "SIGSYS" {
		t.Errorf("with the native architecture only, want the i386 socketcall killed by SIGSYS, got %+v", native)
	}
}

// TestCompatABIX32: an x32 system call (bit 30 of the number set, on the
// x86_64 entry point) is killed by runc's filter when the profile lists
// x86_64 alone: libseccomp's default bad-architecture action,
// KILL_THREAD, which kills a single-threaded child with SIGSYS. With
// containerd's list it passes seccomp and the kernel answers: ENOSYS where
// it has no x32 ABI (as Debian's and this project's kernels), a pid where
// it has one. This is the bad-architecture action seen on any x86_64
// kernel, the i386 entry point not needed.
func TestCompatABIX32(t *testing.T) {
	if goruntime.GOARCH != "amd64" {
		t.Skipf("the x32 ABI is an x86_64 matter; this is %s", goruntime.GOARCH)
	}
	withCompat := runcProbe(t, func(s *specs.Spec) {
		s.Linux.Seccomp.Architectures = []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}
	}, nil, "x32-getpid")
	t.Logf("containerd's architectures: %+v", withCompat)
	host := hostProbe(t, "x32-getpid")
	if withCompat.Signal != "" || withCompat.Errno != host.Errno {
		t.Errorf("with the compat architectures listed, the x32 getpid did not get the kernel's own answer (%+v on the host): %+v", host, withCompat)
	}

	native := runcProbe(t, nil, nil, "x32-getpid")
	t.Logf("as generated: %+v", native)
	if !native.Blocked || native.Signal != "SIGSYS" {
		t.Errorf("with the native architecture only, want the x32 getpid killed by SIGSYS, got %+v", native)
	}
}

// cloneFlagsRule returns the argument condition of the seccomp rule that
// allows clone only without namespace flags: flags & Value == ValueTwo (0).
func cloneFlagsRule(t *testing.T, s *specs.Spec) *specs.LinuxSeccompArg {
	t.Helper()
	for i, sc := range s.Linux.Seccomp.Syscalls {
		if !slices.Contains(sc.Names, "clone") {
			continue
		}
		for j, a := range sc.Args {
			if a.Op == specs.OpMaskedEqual {
				return &s.Linux.Seccomp.Syscalls[i].Args[j]
			}
		}
	}
	t.Fatal("the generated profile has no clone rule with a masked-equal argument")
	return nil
}

// hostAllowsUserns reports whether an unprivileged process may create a user
// namespace on this host at all, whatever seccomp says.
func hostAllowsUserns() (bool, string) {
	for path, refusing := range map[string]string{
		"/proc/sys/kernel/unprivileged_userns_clone":             "0", // Debian's patch
		"/proc/sys/user/max_user_namespaces":                     "0",
		"/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1", // Ubuntu 23.10+
	} {
		if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == refusing {
			return false, path + " is " + refusing
		}
	}
	return true, ""
}

// TestCompatCloneNewuser: a raw clone(2) with CLONE_NEWUSER (alone, and
// with CLONE_NEWNS) creates a user namespace when the clone rule's mask
// leaves out those two flags, and is refused with EPERM by the rule as
// generated. Moving the rule to argument 1 (the new stack) instead, as a
// rule written for s390x's argument order would be here, does not show
// this: every thread the Go runtime creates passes its stack there, so
// the probe itself dies at start-up (EPERM from clone in newosproc).
func TestCompatCloneNewuser(t *testing.T) {
	needRoot(t)
	ok, why := hostAllowsUserns()
	need(t, ok, "this host refuses unprivileged user namespaces (%s): the clone rule cannot be shown to matter", why)
	for _, attack := range []string{"clone-newuser", "clone-newuser-newns"} {
		t.Run(attack, func(t *testing.T) {
			unmasked := runcProbe(t, func(s *specs.Spec) {
				cloneFlagsRule(t, s).Value &^= unix.CLONE_NEWUSER | unix.CLONE_NEWNS
			}, nil, attack)
			t.Logf("without CLONE_NEWUSER|CLONE_NEWNS in the rule's mask: %+v", unmasked)
			if unmasked.Blocked || !strings.HasPrefix(unmasked.Detail, "ALLOWED") {
				t.Errorf("with CLONE_NEWUSER|CLONE_NEWNS out of the clone rule's mask, the clone was refused: %+v", unmasked)
			}
			generated := runcProbe(t, nil, nil, attack)
			t.Logf("as generated: %+v", generated)
			if !generated.Blocked || generated.Errno != "EPERM" {
				t.Errorf("with the clone rule as generated, want EPERM, got %+v", generated)
			}
		})
	}
}

// haveCapability reports whether this process has capability c effective.
func haveCapability(t *testing.T, c int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatalf("CapEff %q: %v", v, err)
			}
			return mask&(1<<c) != 0
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}

// TestCompatOOMScoreAdj: without process.oomScoreAdj, runc leaves the task
// the score of whatever started runc (under Debian's containerd.service a
// shim's is -998: the task would be among the last the OOM killer picks);
// with the spec as generated the task starts at 1000 and cannot lower it.
func TestCompatOOMScoreAdj(t *testing.T) {
	needRoot(t)
	// runc's score: -500, a daemon's kind of score, where this process may
	// lower it (CAP_SYS_RESOURCE; some sandboxes drop it even for root);
	// else a raised one, which anyone may set: either shows inheritance.
	parent := "-500"
	if !haveCapability(t, unix.CAP_SYS_RESOURCE) {
		parent = "321"
		t.Logf("no CAP_SYS_RESOURCE here: runc runs at %s, not -500", parent)
	}
	// Only runc and its children get it: a shell sets it, then execs runc.
	wrap := []string{busyboxPath(t), "sh", "-c", "echo " + parent + ` > /proc/self/oom_score_adj && exec "$@"`, "sh"}

	unset := runcProbe(t, func(s *specs.Spec) { s.Process.OOMScoreAdj = nil }, wrap, "oom-score-adj")
	t.Logf("without oomScoreAdj, under runc at %s: %+v", parent, unset)
	if !strings.HasPrefix(unset.Detail, "start "+parent+";") {
		t.Errorf("without oomScoreAdj, want the task to start at runc's %s, got %s", parent, unset.Detail)
	}

	generated := runcProbe(t, nil, wrap, "oom-score-adj")
	t.Logf("as generated, under runc at %s: %+v", parent, generated)
	checkOOMScoreAdj(t, generated, haveCapability(t, unix.CAP_SYS_RESOURCE))
}

// checkOOMScoreAdj checks an oom-score-adj report of a task under the
// generated spec: it starts at 1000 and cannot lower it. pinned says whether
// the runtime that set the score held CAP_SYS_RESOURCE: the kernel makes a
// score written with it the task's floor (oom_score_adj_min); written
// without it (a sandbox that drops the capability even for root), the floor
// stays the one inherited, and the task may lower its score down to that.
func checkOOMScoreAdj(t *testing.T, r probeReport, pinned bool) {
	t.Helper()
	if !strings.HasPrefix(r.Detail, "start 1000;") {
		t.Errorf("oom_score_adj: %s; want the task to start at 1000", r.Detail)
	}
	if !pinned {
		t.Logf("the runtime has no CAP_SYS_RESOURCE here, so 1000 is not the task's floor: %s", r.Detail)
		return
	}
	if !strings.HasSuffix(r.Detail, "; end 1000") || !r.Blocked || !slices.Contains([]string{"EACCES", "EPERM"}, r.Errno) {
		t.Errorf("lowering oom_score_adj: blocked=%v errno=%q (%s); want both writes refused (EACCES or EPERM) and 1000 at the end", r.Blocked, r.Errno, r.Detail)
	}
}
