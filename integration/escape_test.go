package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	mobyclient "github.com/moby/moby/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/gpu"
	"github.com/nsn-run/nsn-run/idmap"
	"github.com/nsn-run/nsn-run/internal/imagebuild"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// The escapes below each passed the old denylist auditor and, run with
// runc, gave the task something nsn-run never grants. Each test first runs
// the bypass with runc directly and shows the escape, then shows that the
// spec nsn-run generates does not have it, that `audit` finds it, and that
// the containerd backend's Start refuses it (the operator's SpecOpts are
// audited like the rest) and leaves nothing behind.

// bundle is a runc bundle whose spec nsn-run generated for a busybox task.
type bundle struct {
	dir, tasksDir, outDir, id string
	spec                      *specs.Spec
	// userNS is set once the spec has a user namespace of its own (the
	// policy then wants one); limitsOutside once its per-user limits are
	// not in it (runc before 1.4 refuses them, and the backend sets them).
	userNS, limitsOutside bool
	// limits are the task's, where a test wants other than the defaults
	// (withUserNS generates the spec with them).
	limits task.Limits
}

// newBundle generates nsn-run's spec for `sh -c script` over a busybox
// rootfs, with the task's output dir under a tasks dir of its own. The
// directories are world-searchable so that mapped ids can reach them.
func newBundle(t *testing.T, script string) *bundle {
	t.Helper()
	return newBundleLimits(t, script, task.Limits{})
}

// newBundleLimits is newBundle for a task with limits (zero fields: the
// defaults).
func newBundleLimits(t *testing.T, script string, limits task.Limits) *bundle {
	t.Helper()
	needRoot(t)
	b := &bundle{dir: t.TempDir(), tasksDir: t.TempDir(), id: uniqueID("esc")}
	if err := imagebuild.BusyboxRootfs(filepath.Join(b.dir, spec.RootfsPath), busyboxPath(t)); err != nil {
		t.Fatal(err)
	}
	b.outDir = filepath.Join(b.tasksDir, b.id, "output", task.NewOutputKey())
	if err := os.MkdirAll(b.outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{b.dir, filepath.Dir(b.dir), b.tasksDir, filepath.Dir(b.tasksDir), filepath.Join(b.tasksDir, b.id), filepath.Dir(b.outDir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(b.outDir, 0o777); err != nil {
		t.Fatal(err)
	}
	tk := task.Task{ID: b.id, Image: busyboxRef, Command: []string{"sh", "-c", script}, Limits: limits}
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)
	s, err := spec.Generate(ctx, tk, ocispec.ImageConfig{Env: []string{"PATH=/bin"}}, spec.Options{OutputDir: b.outDir})
	if err != nil {
		t.Fatal(err)
	}
	b.spec = s
	return b
}

// newBundleWithHelper is newBundle with the static C helper
// testdata/NAME.c built into the rootfs as /bin/NAME (or, where there is
// no toolchain, the cgroup v2 VM, copied from NSN_TEST_BIN_DIR/helpers,
// where the VM's payload has them built).
func newBundleWithHelper(t *testing.T, script, name string) *bundle {
	t.Helper()
	b := newBundle(t, script)
	helper := filepath.Join(b.dir, spec.RootfsPath, "bin", name)
	if dir := os.Getenv(envBinDir); dir != "" {
		data, err := os.ReadFile(filepath.Join(dir, "helpers", name))
		if err == nil {
			err = os.WriteFile(helper, data, 0o755)
		}
		if err != nil {
			t.Fatalf("the prebuilt helper %s: %v", name, err)
		}
		return b
	}
	gcc, err := exec.LookPath("gcc")
	need(t, err == nil, "gcc is needed to build the static helper %s: %v", name, err)
	if out, err := exec.Command(gcc, "-static", "-O2", "-o", helper, filepath.Join("testdata", name+".c")).CombinedOutput(); err != nil {
		t.Fatalf("build the helper %s: %v\n%s", name, err, out)
	}
	return b
}

func (b *bundle) policy() audit.Policy {
	return audit.Policy{Namespace: testNamespace, TasksDir: b.tasksDir, ResolveSource: filepath.EvalSymlinks, HostIdentity: !b.userNS, UserNSLimitsOutside: b.limitsOutside}
}

// write makes s the bundle's config.json.
func (b *bundle) write(t *testing.T, s *specs.Spec) {
	t.Helper()
	data, err := spec.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// run runs s (nsn-run's spec, or a mutated copy) with runc directly and
// returns what the task printed.
func (b *bundle) run(t *testing.T, s *specs.Spec) (stdout, stderr string, err error) {
	t.Helper()
	b.write(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runc := runcPath(t)
	state := t.TempDir()
	id := uniqueID(b.id)
	cmd := exec.CommandContext(ctx, runc, "--root", state, "run", "--bundle", b.dir, id)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	_ = exec.Command(runc, "--root", state, "delete", "--force", id).Run()
	return o.String(), e.String(), err
}

// runcTask is a task started with runc directly and not yet waited for.
type runcTask struct {
	runc, state, id string
	out             bytes.Buffer // stdout and stderr; read once exited
	exited          chan error   // runc run's end; whoever takes it puts it back
}

// start runs s with runc directly in the background.
func (b *bundle) start(t *testing.T, s *specs.Spec) *runcTask {
	t.Helper()
	b.write(t, s)
	r := &runcTask{runc: runcPath(t), state: t.TempDir(), id: uniqueID(b.id), exited: make(chan error, 1)}
	cmd := exec.Command(r.runc, "--root", r.state, "run", "--bundle", b.dir, r.id)
	cmd.Stdout, cmd.Stderr = &r.out, &r.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.exited <- cmd.Wait() }()
	return r
}

// stop kills the task, waits for runc run to end and deletes the
// container.
func (r *runcTask) stop() {
	_ = exec.Command(r.runc, "--root", r.state, "kill", r.id, "KILL").Run()
	err := <-r.exited
	r.exited <- err
	_ = exec.Command(r.runc, "--root", r.state, "delete", "--force", r.id).Run()
}

// mutated returns a deep copy of the bundle's spec with mutate applied.
func (b *bundle) mutated(t *testing.T, mutate func(*specs.Spec)) *specs.Spec {
	t.Helper()
	data, err := spec.Marshal(b.spec)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := audit.DecodeSpec(data)
	if err != nil {
		t.Fatal(err)
	}
	mutate(c)
	return c
}

// refused checks that the auditor finds the mutation under rule, and that
// the containerd backend refuses to start a task whose spec carries it.
func refused(t *testing.T, b *bundle, rule string, mutate func(*specs.Spec)) {
	t.Helper()
	if f := audit.Check(context.Background(), b.spec, b.policy()); len(f) != 0 {
		t.Fatalf("nsn-run's own spec has findings: %v", f)
	}
	findings := audit.Check(context.Background(), b.mutated(t, mutate), b.policy())
	var hit *audit.Finding
	for i := range findings {
		if findings[i].Rule == rule {
			hit = &findings[i]
			break
		}
	}
	if hit == nil {
		t.Errorf("audit: no %s finding for the bypass: %v", rule, findings)
	} else {
		t.Logf("audit: %s", hit)
	}
	startRefuses(t, rule, mutate)
}

// startRefuses runs a task through a Manager whose containerd backend has
// mutate as the operator's SpecOpt: Start must refuse it with the audit
// finding, and leave nothing.
func startRefuses(t *testing.T, rule string, mutate func(*specs.Spec)) { //nolint:unparam // rule is for the message
	t.Helper()
	c, addr := containerdClient(t)
	importBusybox(t, c, addr)
	opt := func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		mutate(s)
		return nil
	}
	be, err := containerd.New(context.Background(), containerd.Config{Address: addr, Namespace: testNamespace, LoggerBinary: nsnLogger(t), SpecOpts: []oci.SpecOpts{opt}})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	m, err := runtime.New(runtime.Config{Backend: be, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Run(context.Background(), seedTask(uniqueID("refuse"), "true"), runtime.RunOptions{})
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "fails the audit") {
		t.Errorf("Start: %v, want the audit's refusal (%s)", err, rule)
	} else {
		t.Logf("Start: %v", err)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("a refused start left: %s", l)
	}
}

// kmsgContains reports whether the host's kernel log holds marker: it
// reads /dev/kmsg's records without blocking.
func kmsgContains(t *testing.T, marker string) bool {
	t.Helper()
	// Raw syscalls: an *os.File would park a non-blocking read in Go's
	// poller instead of returning EAGAIN at the end of the log.
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case errors.Is(err, unix.EPIPE):
			continue // records overwritten while reading: go on
		case err != nil || n <= 0:
			return false // EAGAIN: the end of the log
		case strings.Contains(string(buf[:n]), marker):
			return true
		}
	}
}

// TestEscapeDeviceAlias: a linux.devices entry at an allowed path
// (/dev/full) that is really another device, here the host's /dev/kmsg
// (c 1:11), with its device cgroup allow: the task writes lines into the
// host's kernel log. (The issue's
// b 8:0 alias reads a host disk the same way; this sandbox refuses even
// root its disk, so the kernel log shows the class.)
func TestEscapeDeviceAlias(t *testing.T) {
	marker := uniqueID("nsn-escape-kmsg")
	b := newBundle(t, "echo "+marker+" > /dev/full; echo rc=$?")
	mode := os.FileMode(0o666)
	kmsg := int64(11)
	mutate := func(s *specs.Spec) {
		s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{Path: "/dev/full", Type: "c", Major: 1, Minor: 11, FileMode: &mode})
		// runc 1.1.5 does not add the device cgroup allow by itself: a
		// spec carries it (the old auditor refused only allow-all rules).
		one := int64(1)
		s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &one, Minor: &kmsg, Access: "rw"})
	}
	if out, _, _ := b.run(t, b.spec); kmsgContains(t, marker) {
		t.Fatalf("nsn-run's own spec let the task write the host's kernel log: %s", out)
	}
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	if err != nil || !kmsgContains(t, marker) {
		t.Fatalf("bypass: the marker is not in the host's kernel log: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	t.Logf("bypass: the task wrote %q into the host's kernel log through /dev/full", marker)
	refused(t, b, audit.RuleDevices, mutate)
}

// TestEscapeDevtmpfs: a devtmpfs mount is the host's own /dev instance: the
// task sees the host's device nodes (its disks, GPUs, /dev/kmsg).
func TestEscapeDevtmpfs(t *testing.T) {
	// kmsg is a node every host's devtmpfs has and no task's /dev.
	const name = "kmsg"
	b := newBundle(t, "ls /hostdev /dev")
	mutate := func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/hostdev", Type: "devtmpfs", Source: "devtmpfs", Options: []string{"nosuid", "noexec"}})
	}
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	if err != nil || !strings.Contains(out, name) {
		t.Fatalf("bypass: the host's %s not listed: %v\n%s%s", name, err, out, errOut)
	}
	t.Logf("bypass: the task lists the host's device nodes, %s among them", name)
	out, _, _ = b.run(t, b.spec)
	if strings.Contains(out, name) {
		t.Errorf("nsn-run's own spec shows the host's %s:\n%s", name, out)
	}
	refused(t, b, audit.RuleMounts, mutate)
}

// TestEscapeSecondProcfs: a second procfs has none of /proc's masks: the
// task reads what is masked (/proc/interrupts, the host's IRQ counters).
func TestEscapeSecondProcfs(t *testing.T) {
	b := newBundle(t, "echo masked=$(wc -c </proc/interrupts); echo second=$(wc -c </proc2/interrupts)")
	mutate := func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/proc2", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}})
	}
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	if err != nil || !strings.Contains(out, "masked=0\n") || strings.Contains(out, "second=0\n") || !strings.Contains(out, "second=") {
		t.Fatalf("bypass: want /proc/interrupts masked and /proc2/interrupts readable: %v\n%s%s", err, out, errOut)
	}
	t.Logf("bypass: %s", strings.ReplaceAll(strings.TrimSpace(out), "\n", ", "))
	refused(t, b, audit.RuleMounts, mutate)
}

// TestEscapeMaskedPaths: the masked /proc and /sys paths leak the host's
// hardware and kernel state to any user: /proc/interrupts (the host's IRQ
// counters per CPU, a side channel on other tenants' devices) and
// /sys/firmware (the host's physical memory map) are world-readable. Run
// with runc directly with maskedPaths emptied, the task (not root) reads
// them; with nsn-run's spec it reads 0 bytes and an empty directory, and
// the audit and Start refuse the spec without the masks.
func TestEscapeMaskedPaths(t *testing.T) {
	b := newBundle(t, `echo interrupts=$(wc -c </proc/interrupts); echo firmware=$(ls /sys/firmware | wc -l)`)
	mutate := func(s *specs.Spec) { s.Linux.MaskedPaths = nil }
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	if err != nil || !strings.Contains(out, "interrupts=") || strings.Contains(out, "interrupts=0\n") {
		t.Fatalf("bypass: want /proc/interrupts readable: %v\n%s%s", err, out, errOut)
	}
	firmware := !strings.Contains(out, "firmware=0\n")
	t.Logf("bypass: %s", strings.ReplaceAll(strings.TrimSpace(out), "\n", ", "))
	out, errOut, err = b.run(t, b.spec)
	if err != nil || !strings.Contains(out, "interrupts=0\n") || !strings.Contains(out, "firmware=0\n") {
		t.Errorf("nsn-run's own spec: want both masked: %v\n%s%s", err, out, errOut)
	}
	if !firmware {
		t.Logf("this host's /sys/firmware is empty: only /proc/interrupts shows the mask")
	}
	refused(t, b, audit.RuleMaskedPaths, mutate)
}

// TestEscapeWritableRoot: the task's root filesystem is read-only, so
// nothing it writes outside its scratch mounts survives in the image's
// snapshot or changes what its binaries are. Run with runc directly with
// root.readonly false, the task (not root) writes into a directory the
// image made world-writable; with nsn-run's spec the write fails with
// EROFS, and the audit and Start refuse the spec.
func TestEscapeWritableRoot(t *testing.T) {
	b := newBundle(t, `echo pwned > /var/drop/x && echo wrote; cat /var/drop/x`)
	drop := filepath.Join(b.dir, spec.RootfsPath, "var", "drop")
	if err := os.MkdirAll(drop, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(drop, 0o1777); err != nil {
		t.Fatal(err)
	}
	mutate := func(s *specs.Spec) { s.Root.Readonly = false }
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	if err != nil || out != "wrote\npwned\n" {
		t.Fatalf("bypass: want the write in the root: %v\n%s%s", err, out, errOut)
	}
	if err := os.Remove(filepath.Join(drop, "x")); err != nil {
		t.Fatalf("the bypass's file on the rootfs: %v", err)
	}
	t.Logf("bypass: %s", strings.ReplaceAll(strings.TrimSpace(out), "\n", ", "))
	out, errOut, err = b.run(t, b.spec)
	if err == nil || !strings.Contains(errOut, "Read-only file system") || strings.Contains(out, "wrote") {
		t.Errorf("nsn-run's own spec: want EROFS: %v\n%s%s", err, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(drop, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("nsn-run's own spec left a file in the rootfs: %v", err)
	}
	refused(t, b, audit.RuleRoot, mutate)
}

// TestEscapeTmpExec: /tmp, /dev/shm and /output are noexec, so a task
// cannot run code it wrote (a downloaded binary, a payload unpacked at run
// time) that is not in its image, the image the operator chose. Run with
// runc directly with noexec dropped from /tmp, the task copies busybox
// there and runs it; with nsn-run's spec the exec fails with EACCES, and
// the audit and Start refuse the spec.
func TestEscapeTmpExec(t *testing.T) {
	b := newBundle(t, `cp /bin/busybox /tmp/echo && /tmp/echo ran`)
	mutate := func(s *specs.Spec) {
		for i := range s.Mounts {
			if s.Mounts[i].Destination == spec.TmpPath {
				s.Mounts[i].Options = slices.DeleteFunc(s.Mounts[i].Options, func(o string) bool { return o == "noexec" })
			}
		}
	}
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	if err != nil || out != "ran\n" {
		t.Fatalf("bypass: want the copied binary to run: %v\n%s%s", err, out, errOut)
	}
	t.Logf("bypass: %s", strings.TrimSpace(out))
	out, errOut, err = b.run(t, b.spec)
	if err == nil || out != "" || !strings.Contains(errOut, "Permission denied") {
		t.Errorf("nsn-run's own spec: want EACCES: %v\n%s%s", err, out, errOut)
	}
	refused(t, b, audit.RuleMounts, mutate)
}

// TestEscapeSysReadWrite: runc applies mount options in order, so
// "ro","rw" mounts /sys read-write.
func TestEscapeSysReadWrite(t *testing.T) {
	b := newBundle(t, `awk '$2=="/sys"{print "sys=" $4}' /proc/mounts`)
	mutate := func(s *specs.Spec) {
		for i := range s.Mounts {
			if s.Mounts[i].Destination == "/sys" {
				s.Mounts[i].Options = append(s.Mounts[i].Options, "rw")
			}
		}
	}
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	if err != nil || !strings.HasPrefix(out, "sys=rw,") {
		t.Fatalf("bypass: /sys not read-write: %v\n%s%s", err, out, errOut)
	}
	t.Logf("bypass: %s", strings.TrimSpace(out))
	if out, _, _ := b.run(t, b.spec); !strings.HasPrefix(out, "sys=ro,") {
		t.Errorf("nsn-run's own spec: %s", out)
	}
	refused(t, b, audit.RuleMounts, mutate)
}

// TestEscapeRootPath: root.path names any host directory: it becomes the
// task's root, and runc creates the spec's mount points in it, on the host.
func TestEscapeRootPath(t *testing.T) {
	b := newBundle(t, "cat /host-secret; ls /")
	hostDir := t.TempDir()
	if err := imagebuild.BusyboxRootfs(hostDir, busyboxPath(t)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostDir, "host-secret"), []byte("host-only\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(hostDir, "output")); err != nil {
		t.Fatal(err)
	}
	mutate := func(s *specs.Spec) { s.Root.Path = hostDir }
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	if err != nil || !strings.Contains(out, "host-only") {
		t.Fatalf("bypass: the host dir is not the task's root: %v\n%s%s", err, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(hostDir, "output")); err != nil {
		t.Errorf("runc did not create the mount point in the host dir: %v", err)
	}
	t.Logf("bypass: the task's root is the host's %s, and runc created its mount points there", hostDir)
	refused(t, b, audit.RuleRoot, mutate)
}

// TestEscapeUIDMapToHostRoot: a user namespace whose mapping sends the
// task's uid to host uid 0: what it writes is owned by host root, and host
// root's files are its own.
func TestEscapeUIDMapToHostRoot(t *testing.T) {
	b := newBundle(t, "id -u; echo x > /output/owned-by")
	mutate := func(s *specs.Spec) {
		maps := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65534}, {ContainerID: 65534, HostID: 0, Size: 1}}
		s.Linux.UIDMappings, s.Linux.GIDMappings = maps, maps
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	}
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	if err != nil || !strings.HasPrefix(out, "65534\n") {
		t.Fatalf("bypass: %v\n%s%s", err, out, errOut)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(b.outDir, "owned-by"), &st); err != nil {
		t.Fatalf("bypass: the task's file: %v", err)
	}
	if st.Uid != 0 {
		t.Fatalf("bypass: the task's file is owned by host uid %d, want 0", st.Uid)
	}
	t.Logf("bypass: the task (uid 65534 inside) wrote a file owned by host uid %d", st.Uid)
	refused(t, b, audit.RuleUserNamespace, mutate)
}

// TestEscapeSeccompCloneIndex: the clone rule with its argument condition
// on index 1 instead of 0 tests the new stack, not the flags: a raw
// clone(CLONE_NEWUSER) gets through, and the child holds every capability
// in its new user namespace (the first step of most kernel exploits).
func TestEscapeSeccompCloneIndex(t *testing.T) {
	b := newBundleWithHelper(t, "/bin/clonens", "clonens")
	mutate := func(s *specs.Spec) {
		for i, r := range s.Linux.Seccomp.Syscalls {
			if slices.Contains(r.Names, "clone") && len(r.Args) > 0 {
				s.Linux.Seccomp.Syscalls[i].Args[0].Index = 1
			}
		}
	}
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	if err != nil || !strings.Contains(out, "CapEff:\t000001ffffffffff") {
		t.Fatalf("bypass: no user namespace with full capabilities: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	t.Logf("bypass: %s", strings.ReplaceAll(strings.TrimSpace(out), "\n", "; "))
	if out, _, _ := b.run(t, b.spec); !strings.Contains(out, "clone: Operation not permitted") {
		t.Errorf("nsn-run's own spec: %s; want clone refused with EPERM", out)
	}
	refused(t, b, audit.RuleSeccomp, mutate)
}

// TestEscapeUserNSLimits: a task in a user namespace of its own without
// that namespace's per-user limits spends host root's inotify instances.
// runc creates the namespace as host root, so the kernel charges every
// instance the task creates to host root in the initial namespace too (128
// by default), and host root's daemons get EMFILE while the task holds
// them. nsn-run's spec carries the limits in linux.sysctl (runc 1.4 and
// later sets them before the task runs): the task stops at 16 and may not
// nest a namespace. An older runc refuses them, and nsn-run sets them
// itself (TestInotifyPerTask covers that path through the Manager).
func TestEscapeUserNSLimits(t *testing.T) {
	b := newBundleWithHelper(t, "cat /proc/sys/user/max_user_namespaces; exec /bin/inotifyhold", "inotifyhold")
	ids := idmap.DefaultSpan.RangeAt(idmap.DefaultCount - 2)
	tk := task.Task{ID: b.id, Image: busyboxRef, Command: b.spec.Process.Args}
	s, err := spec.Generate(namespaces.WithNamespace(context.Background(), testNamespace), tk, ocispec.ImageConfig{Env: []string{"PATH=/bin"}},
		spec.Options{OutputDir: b.outDir, UserNS: &ids, UserNSSysctls: true})
	if err != nil {
		t.Fatal(err)
	}
	b.spec, b.userNS = s, true
	if s.Linux.Sysctl["user.max_inotify_instances"] != "16" || s.Linux.Sysctl["user.max_user_namespaces"] != "0" {
		t.Fatalf("nsn-run's spec lacks the limits: %v", s.Linux.Sysctl)
	}

	// The bypass: the same spec without the limits. The task's open files
	// (1024) bound what it can hold: only below that can it spend all of
	// host root's instances (128 by default; doctor asks for 8192).
	raw, err := os.ReadFile("/proc/sys/fs/inotify/max_user_instances")
	if err != nil {
		t.Fatal(err)
	}
	rootLimit, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	without := b.mutated(t, func(s *specs.Spec) { s.Linux.Sysctl = nil })
	out, hostErr, err := hold(t, b, without, "instances=", rootInotify)
	var held int
	if i := strings.Index(out, "instances="); i >= 0 {
		_, _ = fmt.Sscanf(out[i:], "instances=%d", &held)
	}
	if err != nil || held <= 16 || strings.HasPrefix(out, "0\n") || (rootLimit < 1000 && hostErr == nil) {
		t.Fatalf("bypass: %v; held %d; host root's inotify_init1 while the task held its instances (root's limit %d): %v\n%s", err, held, rootLimit, hostErr, out)
	}
	t.Logf("bypass: the task printed %q; host root's inotify_init1 while it held them: %v", out, hostErr)

	// nsn-run's spec, with the limits.
	out, hostErr, err = hold(t, b, b.spec, "instances=", rootInotify)
	if err != nil {
		// runc before 1.4 refuses user.* sysctls: nsn-run's backend
		// must recognise that refusal and set the limits itself.
		if !containerd.RefusesUserNSSysctls(err, s.Linux.Sysctl) {
			t.Fatalf("runc run of nsn-run's spec: %v", err)
		}
		v, _ := exec.Command(runcPath(t), "--version").Output()
		var major, minor int
		if _, perr := fmt.Sscanf(string(v), "runc version %d.%d", &major, &minor); perr != nil || major != 1 || minor >= 4 {
			t.Fatalf("runc %q refuses the limits: %v", v, err)
		}
		t.Logf("this runc (%d.%d) refuses user.* sysctls, as nsn-run's backend recognises: %v", major, minor, err)
	} else {
		if out != "0\ninstances=16 errno=EMFILE\n" || hostErr != nil {
			t.Errorf("nsn-run's spec: the task printed %q, host root's inotify_init1: %v; want max_user_namespaces 0, 16 instances, and root unhurt", out, hostErr)
		}
		t.Logf("nsn-run's spec: the task printed %q; host root's inotify_init1 worked", out)
	}
	refused(t, b, audit.RuleSysctls, func(s *specs.Spec) {
		if s.Linux.Sysctl == nil {
			s.Linux.Sysctl = map[string]string{}
		}
		s.Linux.Sysctl["user.max_inotify_instances"] = "128"
	})
}

// withUserNS gives the bundle nsn-run's spec for a task in a user
// namespace of its own over a host id range no live task holds, with the
// namespace's limits in the spec where runc takes them (1.4 and later).
func (b *bundle) withUserNS(t *testing.T) {
	t.Helper()
	b.withUserNSAt(t, idmap.DefaultCount-2)
}

// withUserNSAt is withUserNS over the index'th range of the default span.
func (b *bundle) withUserNSAt(t *testing.T, index uint32) {
	t.Helper()
	ids := idmap.DefaultSpan.RangeAt(index)
	major, minor := runcVersion(t)
	inSpec := major > 1 || major == 1 && minor >= 4
	tk := task.Task{ID: b.id, Image: busyboxRef, Command: b.spec.Process.Args, Limits: b.limits}
	s, err := spec.Generate(namespaces.WithNamespace(context.Background(), testNamespace), tk, ocispec.ImageConfig{Env: []string{"PATH=/bin"}},
		spec.Options{OutputDir: b.outDir, UserNS: &ids, UserNSSysctls: inSpec})
	if err != nil {
		t.Fatal(err)
	}
	b.spec, b.userNS, b.limitsOutside = s, true, !inSpec
}

// runcVersion is the major and minor version of the runc the tests run.
func runcVersion(t *testing.T) (major, minor int) {
	t.Helper()
	v, err := exec.Command(runcPath(t), "--version").Output()
	if err == nil {
		_, err = fmt.Sscanf(string(v), "runc version %d.%d", &major, &minor)
	}
	if err != nil {
		t.Fatalf("runc --version: %q: %v", v, err)
	}
	return major, minor
}

// sharedIDsKill is TestEscapeSharedIDsSignal's attack with runc directly:
// a victim task runs a child; an attacker spec in the host's pid namespace
// with the host's procfs (an escape from its own, which the audit refuses
// on its own) SIGKILLs the child. ownIDs gives the victim and attacker
// ranges of their own; as, if set, runs the attacker (sharing host ids) as
// that host uid and gid. It returns what the attacker printed and whether
// the victim ended (its child killed) or runs on.
func sharedIDsKill(t *testing.T, ownIDs bool, as func(victim *bundle) uint32) (attackerOut string, victimRan bool) {
	t.Helper()
	victim := newBundle(t, "sleep 600 & echo $! > /output/child; wait; echo victim-ended")
	attacker := newBundle(t, "true")
	if ownIDs || as != nil {
		victim.withUserNSAt(t, idmap.DefaultCount-3)
	}
	if ownIDs {
		attacker.withUserNSAt(t, idmap.DefaultCount-4)
	}
	v := victim.start(t, victim.spec)
	defer v.stop()
	runc, state, id, exited := v.runc, v.state, v.id, v.exited
	waitForFile(t, filepath.Join(victim.outDir, "child"))
	raw, err := exec.Command(runc, "--root", state, "state", id).Output()
	var st struct{ Pid int }
	if err == nil {
		err = json.Unmarshal(raw, &st)
	}
	if err != nil || st.Pid == 0 {
		t.Fatalf("runc state of the victim: %v: %s", err, raw)
	}
	// The victim's child, as the host sees it.
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", st.Pid, st.Pid))
	child := strings.TrimSpace(string(children))
	if err != nil || child == "" {
		t.Fatalf("the victim's child: %q, %v", children, err)
	}
	s := attacker.mutated(t, func(s *specs.Spec) {
		// Out of its pid namespace: the host's, with the host's
		// procfs bound in (a procfs of its own for the host's pid
		// namespace is refused in a user namespace; runc writes
		// sysctls through it, so the attacker's namespace limits go
		// too).
		s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.PIDNamespace })
		for i := range s.Mounts {
			if s.Mounts[i].Destination == "/proc" {
				s.Mounts[i] = specs.Mount{Destination: "/proc", Type: "bind", Source: "/proc", Options: []string{"rbind", "nosuid", "nodev", "noexec"}}
			}
		}
		s.Linux.Sysctl = nil
		s.Process.Args = []string{"sh", "-c", "kill -9 " + child + " && echo killed"}
		if as != nil {
			id := as(victim)
			s.Process.User.UID, s.Process.User.GID = id, id
		}
	})
	aout, aerr, err := attacker.run(t, s)
	attackerOut = strings.TrimSpace(aout + aerr)
	if err == nil && strings.Contains(aout, "killed") {
		// The victim's wait returns once its child is gone.
		select {
		case <-exited:
			exited <- nil
			return attackerOut, strings.Contains(v.out.String(), "victim-ended")
		case <-time.After(30 * time.Second):
			t.Fatalf("the attacker killed the victim's child, and the victim did not end: %s", v.out.String())
		}
	}
	raw, _ = exec.Command(runc, "--root", state, "state", id).Output()
	return attackerOut, strings.Contains(string(raw), `"status": "running"`)
}

// TestEscapeSharedIDsSignal: tasks that share a host uid may signal (and
// ptrace) each other once one of them reaches the other's processes: an
// escape from its pid namespace, stood in for here by an attacker spec in
// the host's pid namespace with the host's procfs (which the audit refuses
// on its own). Run with runc directly with shared
// host ids (user namespaces off, dockerd's tasks: both uid 65534), the
// attacker SIGKILLs the victim's child; with per-task host ranges (each in
// a user namespace of its own over its own range, nsn-run's default on
// containerd) the same kill gets EPERM and the victim runs on.
func TestEscapeSharedIDsSignal(t *testing.T) {
	attack := func(ownIDs bool) (string, bool) {
		t.Helper()
		return sharedIDsKill(t, ownIDs, nil)
	}
	out, ended := attack(false)
	if !strings.Contains(out, "killed") || !ended {
		t.Fatalf("bypass (shared host ids): the attacker printed %q, the victim ended: %v; want its child killed", out, ended)
	}
	t.Logf("bypass (shared host ids): the attacker printed %q and the victim's child died", out)
	out, running := attack(true)
	if strings.Contains(out, "killed") || !strings.Contains(out, "Operation not permitted") || !running {
		t.Errorf("per-task host ranges: the attacker printed %q, the victim running: %v; want EPERM and the victim running", out, running)
	}
	t.Logf("per-task host ranges: the attacker printed %q; the victim runs on", out)
}

// TestEscapeSharedUserInTaskRange: a task that shares host ids runs as
// its user's host uid itself, so a user in the node's span of per-task
// ranges is another task's host identity. Run with runc directly, an
// attacker sharing host ids as the host uid of a victim's process (its
// range's base + 65534), out of its pid namespace as in
// TestEscapeSharedIDsSignal, SIGKILLs the victim's child, though the
// victim has a user namespace of its own. nsn-run refuses such a user for
// a task sharing host ids, on both backends (before 2026-12-01 only an
// image's USER there was replaced by nobody).
func TestEscapeSharedUserInTaskRange(t *testing.T) {
	var host uint32
	out, ended := sharedIDsKill(t, false, func(victim *bundle) uint32 {
		host = victim.spec.Linux.UIDMappings[0].HostID + victim.spec.Process.User.UID
		return host
	})
	if !strings.Contains(out, "killed") || !ended {
		t.Fatalf("bypass (the attacker as host uid %d): it printed %q, the victim ended: %v; want its child killed", host, out, ended)
	}
	t.Logf("bypass: sharing host ids as uid %d (the victim's process), the attacker printed %q and the victim's child died", host, out)

	user := fmt.Sprintf("%d:%d", host, host)
	tk := task.Task{ID: uniqueID("in-range"), Image: busyboxRef, Command: []string{"true"}, User: user}
	_, err := spec.Generate(namespaces.WithNamespace(context.Background(), testNamespace), tk, ocispec.ImageConfig{}, spec.Options{OutputDir: t.TempDir()})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("a spec sharing host ids with user %s: %v, want invalid argument", user, err)
	}
	m, _ := testManagerUserNS(t, runtime.UserNSOff)
	if _, err := m.Run(context.Background(), tk, runtime.RunOptions{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("containerd, user namespaces off, user %s: %v, want invalid argument", user, err)
	}
	tk.ID = uniqueID("in-range")
	if _, err := dockerManager(t).Run(context.Background(), tk, runtime.RunOptions{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("docker, user %s: %v, want invalid argument", user, err)
	} else {
		t.Logf("docker: %v", err)
	}
}

// TestEscapeSigPending: queued signals count against RLIMIT_SIGPENDING per
// user, and a task in a user namespace of its own charges them to the
// namespace's creator too: host root, for runc's tasks, up to root's own
// limit. Run with runc directly, nsn-run's spec without its
// RLIMIT_SIGPENDING (runc then leaves the task root's, 96364 on this
// machine's kind) lets the task queue signals until root has none left:
// host root's own sigqueue fails with EAGAIN while the task holds them.
// nsn-run's spec stops the task at 256 and root's sigqueue works; the
// audit finds the limit gone, and Start refuses the spec.
func TestEscapeSigPending(t *testing.T) {
	escapePerUserLimit(t, perUserLimit{
		rlimit: "RLIMIT_SIGPENDING", helper: "sigpendhold", marker: "signals", hostCall: "sigqueue",
		bypassAbove: spec.SigpendingSignals, want: fmt.Sprintf("signals=%d errno=EAGAIN\n", spec.SigpendingSignals),
	})
}

// perUserLimit is a per-user rlimit whose use a task in its own user
// namespace also charges to the namespace's creator, host root.
type perUserLimit struct {
	rlimit string // the limit nsn-run's spec sets
	// helper (integration/testdata) takes the resource until refused,
	// prints "MARKER=N errno=E" and holds what it took until its standard
	// input closes; "helper once" takes one unit, as host root.
	helper, marker string
	hostCall       string // root's call that fails, for the messages
	bypassAbove    int    // without the limit the task holds more than this
	want           string // what the task prints under nsn-run's spec
}

// escapePerUserLimit runs the attack with runc directly: nsn-run's spec
// without l's rlimit (runc then leaves the task root's) lets the task
// take the resource until host root has none left, and root's own call
// fails while the task holds it. Then nsn-run's spec: the task stops at
// its own limit and root's call works. The audit finds the limit gone,
// and Start refuses the spec.
func escapePerUserLimit(t *testing.T, l perUserLimit) {
	t.Helper()
	b := newBundleWithHelper(t, "exec /bin/"+l.helper, l.helper)
	b.withUserNS(t)
	helper := filepath.Join(b.dir, spec.RootfsPath, "bin", l.helper)
	rootTakes := func() error {
		out, err := exec.Command(helper, "once").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w", strings.TrimSpace(string(out)), err)
		}
		return nil
	}
	if err := rootTakes(); err != nil {
		t.Fatalf("host root's %s before any task: %v", l.hostCall, err)
	}
	mutate := func(s *specs.Spec) {
		s.Process.Rlimits = slices.DeleteFunc(s.Process.Rlimits, func(r specs.POSIXRlimit) bool { return r.Type == l.rlimit })
	}
	marker := l.marker + "="
	out, hostErr, err := hold(t, b, b.mutated(t, mutate), marker, rootTakes)
	var held int
	if i := strings.Index(out, marker); i >= 0 {
		_, _ = fmt.Sscanf(out[i+len(marker):], "%d", &held)
	}
	if err != nil || held <= l.bypassAbove || hostErr == nil {
		t.Fatalf("bypass: %v; the task held %d %s; host root's %s while it held them: %v\n%s", err, held, l.marker, l.hostCall, hostErr, out)
	}
	t.Logf("bypass: the task printed %q; host root's %s while it held them: %v", strings.TrimSpace(out), l.hostCall, hostErr)

	out, hostErr, err = hold(t, b, b.spec, marker, rootTakes)
	if err != nil || out != l.want || hostErr != nil {
		t.Errorf("nsn-run's spec: %v; the task printed %q, host root's %s: %v; want %q and root unhurt", err, out, l.hostCall, hostErr, l.want)
	}
	t.Logf("nsn-run's spec: the task printed %q; host root's %s worked", strings.TrimSpace(out), l.hostCall)
	refused(t, b, audit.RuleProcessLimits, mutate)
}

// rootInotify creates and closes an inotify instance as host root.
func rootInotify() error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

// hold runs s with runc directly: the task takes a kernel resource until
// refused, prints a line holding marker, and holds what it took (until its
// standard input closes) while this process runs host, as host root. It
// returns what the task printed, host's error, and runc's error (with its
// stderr).
func hold(t *testing.T, b *bundle, s *specs.Spec, marker string, host func() error) (out string, hostErr, runErr error) {
	t.Helper()
	b.write(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runc, state, id := runcPath(t), t.TempDir(), uniqueID(b.id)
	// runc's errors as JSON log lines: their msg is runc's own message,
	// as the shim hands it to containerd.
	cmd := exec.CommandContext(ctx, runc, "--root", state, "--log-format", "json", "run", "--bundle", b.dir, id)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = exec.Command(runc, "--root", state, "delete", "--force", id).Run() }()
	r := bufio.NewReader(stdout)
	var lines strings.Builder
	for !strings.Contains(lines.String(), marker) {
		line, err := r.ReadString('\n')
		lines.WriteString(line)
		if err != nil {
			break // the task ended early: runc's error says why
		}
	}
	if strings.Contains(lines.String(), marker) {
		hostErr = host()
	}
	stdin.Close()
	rest, _ := io.ReadAll(r)
	lines.Write(rest)
	if err := cmd.Wait(); err != nil {
		var msgs []string
		for line := range strings.Lines(stderr.String()) {
			var entry struct{ Msg string }
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg != "" {
				msgs = append(msgs, entry.Msg)
			}
		}
		return lines.String(), hostErr, fmt.Errorf("runc run: %w: %s", err, strings.Join(msgs, "; "))
	}
	return lines.String(), hostErr, nil
}

// TestEscapeImageHostAccount: a task that shares host ids (user namespaces
// off, or dockerd's) runs as its image's numeric USER, so an image could
// pick a host account's uid and spend that account's per-user kernel
// counts: an outside review's USER 1000 held all of host account 1000's
// inotify instances. Under runc directly, the spec nsn-run generated for an
// image with USER 1 (Debian's daemon account) holds the instances and the
// host's uid 1 gets EMFILE; now such a USER gives nobody (65534) on both
// backends, while a task with its own user namespace keeps it (mapped).
func TestEscapeImageHostAccount(t *testing.T) {
	const account = 1
	need(t, spec.HostAccount(account), "host uid %d is no account here", account)
	raw, err := os.ReadFile("/proc/sys/fs/inotify/max_user_instances")
	if err != nil {
		t.Fatal(err)
	}
	limit, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	// The task's open files (1024) bound what it can hold.
	need(t, limit < 1000, "max_user_instances is %d: a task's 1024 open files cannot spend it", limit)
	b := newBundleWithHelper(t, "exec /bin/inotifyhold", "inotifyhold")
	helper := filepath.Join(b.dir, spec.RootfsPath, "bin", "inotifyhold")
	tk := task.Task{ID: b.id, Image: busyboxRef, Command: b.spec.Process.Args}
	img := ocispec.ImageConfig{Env: []string{"PATH=/bin"}, User: strconv.Itoa(account)}
	before, err := spec.Generate(namespaces.WithNamespace(context.Background(), testNamespace), tk, img, spec.Options{OutputDir: b.outDir})
	if err != nil {
		t.Fatal(err)
	}
	if before.Process.User.UID != account {
		t.Fatalf("the image's USER gave uid %d", before.Process.User.UID)
	}
	asAccount := func() error {
		cmd := exec.Command(helper)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: account, Gid: account}}
		out, err := cmd.Output() // stdin is /dev/null: it prints and exits
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		if strings.HasPrefix(string(out), "instances=0 errno=EMFILE") {
			return unix.EMFILE
		}
		return nil
	}
	out, hostErr, err := hold(t, b, before, "instances=", asAccount)
	if err != nil || !errors.Is(hostErr, unix.EMFILE) {
		t.Fatalf("bypass: host uid %d's inotify_init1 while the task held its instances: %v (run: %v)\n%s", account, hostErr, err, out)
	}
	t.Logf("bypass: the task printed %q; host uid %d got %v", strings.TrimSpace(out), account, hostErr)

	shared := spec.SharedIdentityImage(img, spec.HostIdentityTaken)
	now, err := spec.Generate(namespaces.WithNamespace(context.Background(), testNamespace), tk, shared, spec.Options{OutputDir: b.outDir})
	if err != nil {
		t.Fatal(err)
	}
	if u := now.Process.User; u.UID != task.NobodyID || u.GID != task.NobodyID {
		t.Errorf("nsn-run's spec under shared ids: user %d:%d, want nobody", u.UID, u.GID)
	}
	if _, hostErr, err := hold(t, b, now, "instances=", asAccount); err != nil || hostErr != nil {
		t.Errorf("nsn-run's spec: host uid %d's inotify_init1: %v (run: %v)", account, hostErr, err)
	}

	// Through the backends: the image's USER is nobody where ids are
	// shared, and kept in a task's own user namespace.
	c, _ := containerdClient(t)
	ref := "docker.io/library/hostile-host-account:latest"
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := imagebuild.BusyboxRootfs(rootfs, busyboxPath(t)); err != nil {
		t.Fatal(err)
	}
	if err := importImage(c, imagebuild.Image{Name: ref, RootfsDir: rootfs, Config: img}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode runtime.UserNSMode
		want string
	}{{runtime.UserNSOff, "65534\n"}, {runtime.UserNSPreferred, strconv.Itoa(account) + "\n"}} {
		m, _ := testManagerUserNS(t, tc.mode)
		res, err := m.Run(context.Background(), task.Task{ID: uniqueID("acct"), Image: ref, Command: []string{"id", "-u"}}, runtime.RunOptions{})
		if err != nil || res.Stdout != tc.want {
			t.Errorf("containerd, user namespaces %q: %q, %v; want %q", tc.mode, res.Stdout, err, tc.want)
		}
	}
	// A uid of the node's per-task ranges (a live task's, under user
	// namespaces) is no image's to take either: an outside review ran as
	// another task's host uid 1114110.
	rangeRef := "docker.io/library/hostile-range-uid:latest"
	if err := importImage(c, imagebuild.Image{Name: rangeRef, RootfsDir: rootfs, Config: ocispec.ImageConfig{Env: []string{"PATH=/bin"}, User: "1114110"}}); err != nil {
		t.Fatal(err)
	}
	m, _ := testManagerUserNS(t, runtime.UserNSOff)
	if res, err := m.Run(context.Background(), task.Task{ID: uniqueID("acct"), Image: rangeRef, Command: []string{"id", "-u"}}, runtime.RunOptions{}); err != nil || res.Stdout != "65534\n" {
		t.Errorf("containerd, user namespaces off, USER 1114110: %q, %v; want 65534", res.Stdout, err)
	}
	dc := dockerClient(t)
	var archive bytes.Buffer
	if err := imagebuild.WriteOCILayout(&archive, imagebuild.Image{Name: ref, RootfsDir: rootfs, Config: img}); err != nil {
		t.Fatal(err)
	}
	loaded, err := dc.ImageLoad(context.Background(), &archive)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, loaded)
	loaded.Close()
	t.Cleanup(func() { _, _ = dc.ImageRemove(context.Background(), ref, mobyclient.ImageRemoveOptions{Force: true}) })
	res, err := dockerManager(t).Run(context.Background(), task.Task{ID: uniqueID("acct"), Image: ref, Command: []string{"id", "-u"}}, runtime.RunOptions{})
	if err != nil || res.Stdout != "65534\n" {
		t.Errorf("docker: %q, %v; want 65534", res.Stdout, err)
	}
}

// TestEscapeNonGPUCDIDevice: the host's CDI specs define other devices
// than GPUs (IMEX channels, NICs, another vendor's), each with its own
// host mounts and device nodes. A spec whose GPU annotation names one,
// with that device's edits, once passed the auditor, which replayed any
// device the CDI specs knew (an outside review found it): the task then
// reads and writes a host directory. nsn-run grants GPUs only.
func TestEscapeNonGPUCDIDevice(t *testing.T) {
	host := t.TempDir()
	if err := os.Chmod(host, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(host, "secret"), []byte("host-secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cdiDir := t.TempDir()
	nic := fmt.Sprintf(`cdiVersion: "0.6.0"
kind: example.com/nic
devices:
- name: hostdir
  containerEdits:
    mounts: [{hostPath: %s, containerPath: /hostdir, options: [rw, bind]}]
`, host)
	if err := os.WriteFile(filepath.Join(cdiDir, "nic.yaml"), []byte(nic), 0o644); err != nil {
		t.Fatal(err)
	}
	cdi, err := gpu.New(gpu.Options{SpecDirs: []string{cdiDir}})
	if err != nil {
		t.Fatal(err)
	}
	const device = "example.com/nic=hostdir"
	inject, err := cdi.InjectSpecOpt([]string{device}, false)
	if err != nil {
		t.Fatal(err)
	}
	b := newBundle(t, "cat /hostdir/secret; echo task > /hostdir/written")
	mutate := func(s *specs.Spec) {
		if err := inject(context.Background(), nil, nil, s); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	written, _ := os.ReadFile(filepath.Join(host, "written"))
	if err != nil || !strings.Contains(out, "host-secret") || string(written) != "task\n" {
		t.Fatalf("bypass: the task neither read nor wrote the host directory: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	t.Logf("bypass: the task read %q from the host and wrote %s", strings.TrimSpace(out), filepath.Join(host, "written"))

	p := b.policy()
	p.CDI = cdi
	if f := audit.Check(context.Background(), b.spec, p); len(f) != 0 {
		t.Fatalf("nsn-run's own spec has findings: %v", f)
	}
	findings := audit.Check(context.Background(), b.mutated(t, mutate), p)
	hit := slices.IndexFunc(findings, func(f audit.Finding) bool {
		return f.Rule == audit.RuleAnnotations && strings.Contains(f.Message, "not a GPU")
	})
	if hit < 0 {
		t.Fatalf("audit with the node's CDI specs: no finding that %s is not a GPU: %v", device, findings)
	}
	t.Logf("audit: %s", findings[hit])
	if _, err := spec.Generate(context.Background(), task.Task{ID: b.id, Image: busyboxRef, Command: []string{"true"}, GPUs: "all"},
		ocispec.ImageConfig{}, spec.Options{OutputDir: b.outDir, GPUDevices: []string{device}, CDI: cdi}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("spec.Generate granted %s: %v", device, err)
	}
	startRefuses(t, audit.RuleAnnotations, mutate)
}

// TestEscapeAIOContexts: Linux AIO contexts count against one host-wide
// limit (fs.aio-max-nr) that no cgroup and no user namespace bounds; an
// outside review took all 65536 from one task, and host root's own
// io_setup then failed with EAGAIN. containerd's default profile allows
// io_setup; nsn-run's refuses it. The bypass takes 4096 contexts and shows
// the host-wide count holding them.
func TestEscapeAIOContexts(t *testing.T) {
	b := newBundleWithHelper(t, "/bin/aiosetup", "aiosetup")
	mutate := allowSyscall("io_setup")
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	var held int
	if _, serr := fmt.Sscanf(out, "io_setup: ok; host aio-nr %d", &held); err != nil || serr != nil || held < 4096 {
		t.Fatalf("bypass: no AIO contexts held: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	t.Logf("bypass: %s", strings.TrimSpace(out))
	if out, _, _ := b.run(t, b.spec); !strings.Contains(out, "io_setup: Operation not permitted") {
		t.Errorf("nsn-run's own spec: %q; want io_setup refused with EPERM", out)
	}
	refused(t, b, audit.RuleSeccomp, mutate)
}

// TestEscapeIOUring: io_uring is a large kernel surface of its own (its
// own file and page-cache paths, run by kernel workers, and a long line of
// privilege escalations), which containerd's profile no longer allows
// and nsn-run's never did. Run with runc directly with io_uring_setup and
// io_uring_enter allowed, the task sets up a ring and has the kernel run a
// no-op from it; nsn-run's spec refuses the setup (EPERM), and the audit
// refuses a spec that allows it.
func TestEscapeIOUring(t *testing.T) {
	b := newBundleWithHelper(t, "/bin/iouring", "iouring")
	mutate := func(s *specs.Spec) {
		allowSyscall("io_uring_setup")(s)
		allowSyscall("io_uring_enter")(s)
	}
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	need(t, !strings.Contains(out, "io_uring_setup: Function not implemented"), "this kernel has no io_uring: %s", out)
	if err != nil || out != "io_uring: ok, 1 submitted\n" {
		t.Fatalf("bypass: no ring: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	t.Logf("bypass: %s", strings.TrimSpace(out))
	if out, _, _ := b.run(t, b.spec); out != "io_uring_setup: Operation not permitted\n" {
		t.Errorf("nsn-run's own spec: %q; want io_uring_setup refused with EPERM", out)
	}
	refused(t, b, audit.RuleSeccomp, mutate)
}

// allowSyscall is a mutation that allows syscall again: it joins the
// profile's main allow rule (the one with ioctl), as containerd's has it.
func allowSyscall(syscall string) func(*specs.Spec) {
	return func(s *specs.Spec) {
		for i, r := range s.Linux.Seccomp.Syscalls {
			if r.Action == specs.ActAllow && slices.Contains(r.Names, "ioctl") {
				s.Linux.Seccomp.Syscalls[i].Names = append(s.Linux.Seccomp.Syscalls[i].Names, syscall)
			}
		}
	}
}

// TestEscapeSecretMemory: memfd_secret, which containerd's profile allows,
// removes the pages it maps from the kernel's direct map and splits the
// huge pages that held them for good (see spec's deniedSyscalls). Under
// runc with it allowed, the task maps and touches 64 KiB of secret memory;
// nsn-run's spec refuses the call (EPERM), and the audit refuses a spec
// that allows it again.
func TestEscapeSecretMemory(t *testing.T) {
	b := newBundleWithHelper(t, "/bin/secretmem", "secretmem")
	mutate := allowSyscall("memfd_secret")
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	need(t, !strings.Contains(out, "memfd_secret: Function not implemented"), "this kernel has no secret memory (memfd_secret: ENOSYS): %s", out)
	if err != nil || !strings.HasPrefix(out, "memfd_secret: ok") {
		t.Fatalf("bypass: no secret memory mapped: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	t.Logf("bypass: %s", strings.TrimSpace(out))
	if out, _, _ := b.run(t, b.spec); !strings.Contains(out, "memfd_secret: Operation not permitted") {
		t.Errorf("nsn-run's own spec: %q; want memfd_secret refused with EPERM", out)
	}
	refused(t, b, audit.RuleSeccomp, mutate)
}

// TestEscapeSocketFilters: a classic BPF program attached to a socket
// (setsockopt SO_ATTACH_FILTER, which containerd's profile allows) is
// JIT-compiled into executable kernel pages: each splits the host's
// direct map for good and spends the host-wide bpf_jit_limit (an outside
// review moved DirectMap4k by 192 MiB with one task). Under runc with
// setsockopt allowed whole, the task attaches its programs; nsn-run's spec
// refuses both socket filter options, also with the high bits of the level
// set (the kernel reads an int), and keeps other options working.
func TestEscapeSocketFilters(t *testing.T) {
	b := newBundleWithHelper(t, "/bin/sockfilter", "sockfilter")
	mutate := allowSyscall("setsockopt")
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	if err != nil || !strings.Contains(out, "attach: ok\n") || !strings.Contains(out, "held 64 filters") {
		t.Fatalf("bypass: the task attached no filters: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	t.Logf("bypass:\n%s", out)
	out, errOut, err = b.run(t, b.spec)
	for _, want := range []string{"attach: Operation not permitted\n", "attach-high-level: Operation not permitted\n", "reuseport-cbpf: Operation not permitted\n", "rcvbuf: ok\n", "v6only: ok\n", "held 0 filters"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("nsn-run's spec: want %q: %v\nstdout: %s\nstderr: %s", want, err, out, errOut)
		}
	}
	refused(t, b, audit.RuleSeccomp, mutate)
}

// TestEscapeSeccompFilters: a seccomp filter a task loads itself is a
// classic BPF program the kernel JIT-compiles, as a socket filter is (a
// review loaded 448 of 4090 instructions from one task: 8 MiB of JIT code,
// 2 MiB of the direct map split). Under runc with seccomp and prctl
// allowed whole, the task loads its filters by seccomp(2), by
// prctl(PR_SET_SECCOMP) and with the option's high bits set; nsn-run's
// spec refuses all three and keeps other prctl options.
func TestEscapeSeccompFilters(t *testing.T) {
	b := newBundleWithHelper(t, "/bin/seccompfilter", "seccompfilter")
	mutate := func(s *specs.Spec) { allowSyscall("seccomp")(s); allowSyscall("prctl")(s) }
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	if err != nil || !strings.Contains(out, "seccomp: ok\n") || !strings.Contains(out, "prctl-seccomp-high: ok\n") {
		t.Fatalf("bypass: the task loaded no filters: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	t.Logf("bypass:\n%s", out)
	out, errOut, err = b.run(t, b.spec)
	for _, want := range []string{"set-name: ok\n", "no-new-privs: ok\n", "seccomp: Operation not permitted\n", "prctl-seccomp: Operation not permitted\n", "prctl-seccomp-high: Operation not permitted\n", "held 0 more filters"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("nsn-run's spec: want %q: %v\nstdout: %s\nstderr: %s", want, err, out, errOut)
		}
	}
	refused(t, b, audit.RuleSeccomp, mutate)
}

// TestEscapeHugeTLB: hugetlb pages come from the host's reserved pool (or,
// with vm.nr_overcommit_hugepages, from its free memory) and no memory
// cgroup is charged for them (see spec's hugetlbRules). An outside review
// took the host's whole pool from a task limited to 8 MiB, so that host
// root's own mapping failed. The test reserves 8 pages, and names the
// task's host group as vm.hugetlb_shm_group (as an operator lets a group
// of users have hugetlb shared memory; the kernel refuses SHM_HUGETLB to
// everyone else without CAP_IPC_LOCK). Under runc with mmap, memfd_create
// and shmget allowed whole, the task takes pages all three ways; nsn-run's
// spec refuses all three flags with EPERM and keeps the calls without
// them working.
func TestEscapeHugeTLB(t *testing.T) {
	needRoot(t)
	b := newBundleWithHelper(t, "/bin/hugetlb", "hugetlb")
	for file, value := range map[string]string{"nr_hugepages": "8", "hugetlb_shm_group": strconv.Itoa(int(hostGID(b.spec)))} {
		path := filepath.Join("/proc/sys/vm", file)
		old, err := os.ReadFile(path)
		need(t, err == nil, "this kernel has no hugetlb pages: %v", err)
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.WriteFile(path, old, 0o644) })
	}
	allowWhole := func(s *specs.Spec) {
		for _, name := range []string{"mmap", "memfd_create", "shmget"} {
			allowSyscall(name)(s)
		}
	}
	out, errOut, err := b.run(t, b.mutated(t, allowWhole))
	need(t, !strings.Contains(out, "hugepages free: 0 before"), "the kernel reserved no hugetlb pages: %s", out)
	for _, want := range []string{"mmap-hugetlb: ok\n", "mmap-hugetlb-high: ok\n", "memfd-hugetlb: ok\n", "shm-hugetlb: ok\n", "hugepages free: 8 before, 4 held\n"} {
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("bypass: want %q: %v\nstdout: %s\nstderr: %s", want, err, out, errOut)
		}
	}
	t.Logf("bypass:\n%s", out)
	out, errOut, err = b.run(t, b.spec)
	for _, want := range []string{"mmap-hugetlb: Operation not permitted\n", "mmap-hugetlb-high: Operation not permitted\n", "memfd-hugetlb: Operation not permitted\n",
		"shm-hugetlb: Operation not permitted\n", "mmap: ok\n", "memfd: ok\n", "shm: ok\n", "hugepages free: 8 before, 8 held\n"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("nsn-run's spec: want %q: %v\nstdout: %s\nstderr: %s", want, err, out, errOut)
		}
	}
	refused(t, b, audit.RuleSeccomp, allowWhole)
}

// hostGID is the host group of s's process: its gid through the spec's
// gid map, where it has one.
func hostGID(s *specs.Spec) uint32 {
	gid := s.Process.User.GID
	for _, m := range s.Linux.GIDMappings {
		if gid >= m.ContainerID && gid-m.ContainerID < m.Size {
			return m.HostID + gid - m.ContainerID
		}
	}
	return gid
}

// TestEscapeNetlinkUserSock: netlink messages queued on a socket are
// kernel memory no memory cgroup is charged for, and NETLINK_USERSOCK is
// the one netlink protocol whose sockets an unprivileged process may send
// to each other (see spec's socketRules): an outside review queued 2 GB
// from a task limited to 16 MiB, on both backends. Under runc with socket
// allowed whole and a 16 MiB memory limit, the task queues more than its
// limit in 200 sockets and exits 0, unkilled; nsn-run's spec refuses the
// socket (EPERM), and the audit refuses the whole allow.
func TestEscapeNetlinkUserSock(t *testing.T) {
	b := newBundleWithHelper(t, "/bin/nlqueue", "nlqueue")
	limit := func(s *specs.Spec) {
		l := int64(16 << 20)
		s.Linux.Resources.Memory.Limit, s.Linux.Resources.Memory.Swap = &l, &l
	}
	allowWhole := allowSyscall("socket")
	out, errOut, err := b.run(t, b.mutated(t, func(s *specs.Spec) { allowWhole(s); limit(s) }))
	var queued int64
	if i := strings.Index(out, "queued "); i >= 0 {
		_, _ = fmt.Sscanf(out[i:], "queued %d", &queued)
	}
	if err != nil || queued <= 16<<20 {
		t.Fatalf("bypass: %v; queued %d bytes, want more than the 16 MiB limit\nstdout: %s\nstderr: %s", err, queued, out, errOut)
	}
	t.Logf("bypass: %s", strings.TrimSpace(out))
	out, errOut, err = b.run(t, b.mutated(t, limit))
	if err != nil || !strings.Contains(out, "netlink-usersock: Operation not permitted") {
		t.Errorf("nsn-run's spec: %v\nstdout: %s\nstderr: %s; want the socket refused with EPERM", err, out, errOut)
	}
	refused(t, b, audit.RuleSeccomp, allowWhole)
}

// TestEscapePtys: every /dev/pts instance but the host's draws on one
// host-wide count of pseudo-terminals (kernel.pty.max less
// kernel.pty.reserve), whose kernel memory no cgroup is charged for; an
// outside review took 3066 from one task, and every other container's
// openpty failed with ENOSPC. containerd's /dev/pts has no bound; nsn-run's
// has max=spec.PtyMax.
func TestEscapePtys(t *testing.T) {
	b := newBundleWithHelper(t, "/bin/ptyhold", "ptyhold")
	mutate := func(s *specs.Spec) {
		for i := range s.Mounts {
			if s.Mounts[i].Destination == "/dev/pts" {
				s.Mounts[i].Options = slices.DeleteFunc(s.Mounts[i].Options, func(o string) bool { return strings.HasPrefix(o, "max=") })
			}
		}
	}
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	if err != nil || !strings.HasPrefix(out, "ptys: 64 (cap)") {
		t.Fatalf("bypass: the task did not hold 64 ptys: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	t.Logf("bypass: %s", strings.TrimSpace(out))
	want := fmt.Sprintf("ptys: %d (No space left on device)", spec.PtyMax)
	if out, errOut, _ := b.run(t, b.spec); !strings.HasPrefix(out, want) {
		t.Errorf("nsn-run's own spec: %q %q; want %q", out, errOut, want)
	}
	refused(t, b, audit.RuleMounts, mutate)
}

// TestEscapeProcSysWrite: /proc/sys is read-only in the task. The
// adversarial probe's write fails with EACCES for a task that is not root,
// which says nothing of the mount (an audit of the claims found it would
// pass without it); here the task is root with CAP_SYS_ADMIN, so only the
// read-only mount stands between it and the host's kernel knobs. It writes
// core_pattern's own value back (the host's knob, unchanged): without the
// read-only path the write goes through, with it EROFS.
func TestEscapeProcSysWrite(t *testing.T) {
	b := newBundle(t, `p=$(cat /proc/sys/kernel/core_pattern); if printf '%s\n' "$p" > /proc/sys/kernel/core_pattern; then echo wrote; fi`)
	asRoot := rootWith("CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE")
	writable := func(s *specs.Spec) {
		asRoot(s)
		s.Linux.ReadonlyPaths = slices.DeleteFunc(s.Linux.ReadonlyPaths, func(p string) bool { return p == "/proc/sys" })
	}
	before, err := os.ReadFile("/proc/sys/kernel/core_pattern")
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, err := b.run(t, b.mutated(t, writable))
	if err != nil || out != "wrote\n" {
		t.Fatalf("bypass: root with CAP_SYS_ADMIN and /proc/sys writable did not write the host's core_pattern: %v\n%s%s", err, out, errOut)
	}
	t.Log("bypass: the task wrote the host's kernel.core_pattern")
	out, errOut, _ = b.run(t, b.mutated(t, asRoot))
	if out != "" || !strings.Contains(errOut, "Read-only file system") {
		t.Errorf("root with CAP_SYS_ADMIN under nsn-run's read-only /proc/sys: stdout %q stderr %q, want EROFS", out, errOut)
	}
	if after, err := os.ReadFile("/proc/sys/kernel/core_pattern"); err != nil || string(after) != string(before) {
		t.Errorf("the host's core_pattern is now %q (%v), was %q", after, err, before)
	}
	refused(t, b, audit.RuleMaskedPaths, func(s *specs.Spec) {
		s.Linux.ReadonlyPaths = slices.DeleteFunc(s.Linux.ReadonlyPaths, func(p string) bool { return p == "/proc/sys" })
	})
}

// TestEscapeNoNewPrivs: no_new_privs is what keeps a setuid-root binary of
// the image from making the task root where the task shares host ids
// (user namespaces off, and the Docker backend). In a user namespace the
// kernel already ignores the setuid bit of an unmapped owner, so the
// adversarial probe's check says nothing of the control (an audit of the
// claims found it); here the task runs with host ids: with
// noNewPrivileges false the setuid binary's effective uid is 0, with
// nsn-run's spec 65534.
func TestEscapeNoNewPrivs(t *testing.T) {
	b := newBundle(t, "nsn-probe-suid identity")
	suid := b.addProbe(t, "nsn-probe-suid")
	if err := os.Chmod(suid, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	euid := func(out string) string {
		var r probeReport
		if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &r); err != nil {
			return "unreadable: " + out
		}
		uid, _, _ := strings.Cut(strings.TrimPrefix(r.Detail, "Uid="), " Gid=")
		if f := strings.Fields(uid); len(f) == 4 {
			return f[1]
		}
		return "unreadable: " + r.Detail
	}
	mutate := func(s *specs.Spec) { s.Process.NoNewPrivileges = false }
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	if err != nil || euid(out) != "0" {
		t.Fatalf("bypass: the setuid-root binary without no_new_privs: euid %s (%v)\n%s%s", euid(out), err, out, errOut)
	}
	t.Log("bypass: the image's setuid-root binary ran with effective uid 0")
	if out, errOut, err := b.run(t, b.spec); err != nil || euid(out) != "65534" {
		t.Errorf("nsn-run's spec: euid %s (%v)\n%s%s", euid(out), err, out, errOut)
	}
	refused(t, b, audit.RuleNoNewPrivileges, mutate)
}

// TestEscapeDeviceCgroup: the device cgroup's deny-all is what keeps a
// task that can make a device node from using it. The adversarial probe's
// mknod fails for want of CAP_MKNOD, which says nothing of the cgroup (an
// audit of the claims found it); here the task is root with CAP_MKNOD and
// makes the host's /dev/kmsg (c 1:11) in its /dev: with an allow-all
// device rule it writes into the host's kernel log, under nsn-run's rules
// the open fails with EPERM.
func TestEscapeDeviceCgroup(t *testing.T) {
	marker := uniqueID("nsn-escape-devcg")
	b := newBundle(t, "mknod /dev/alias c 1 11 && echo "+marker+" > /dev/alias; echo rc=$?")
	asRoot := rootWith("CAP_MKNOD", "CAP_DAC_OVERRIDE")
	allowAll := func(s *specs.Spec) {
		asRoot(s)
		s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	}
	out, errOut, err := b.run(t, b.mutated(t, allowAll))
	if err != nil || !kmsgContains(t, marker) {
		t.Fatalf("bypass: root with CAP_MKNOD and an allow-all device cgroup did not write the host's kernel log: %v\n%s%s", err, out, errOut)
	}
	t.Logf("bypass: the task made /dev/kmsg and wrote %q into the host's kernel log", marker)
	marker2 := uniqueID("nsn-escape-devcg")
	b2 := newBundle(t, "mknod /dev/alias c 1 11 && echo "+marker2+" > /dev/alias; echo rc=$?")
	out, errOut, _ = b2.run(t, b2.mutated(t, asRoot))
	if kmsgContains(t, marker2) || !strings.Contains(errOut, "Operation not permitted") {
		t.Errorf("root with CAP_MKNOD under nsn-run's device cgroup: stdout %q stderr %q, want EPERM and nothing in the kernel log", out, errOut)
	}
	refused(t, b, audit.RuleDevices, func(s *specs.Spec) {
		s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	})
}

// rootWith makes a spec's process uid and gid 0 with caps, so that no
// permission check or missing capability answers before the control a
// test is about.
func rootWith(caps ...string) func(*specs.Spec) {
	return func(s *specs.Spec) {
		s.Process.User = specs.User{UID: 0, GID: 0}
		s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
	}
}

// addProbe copies the probe program into the bundle's rootfs as
// /bin/name and returns its host path.
func (b *bundle) addProbe(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(buildProbe(t))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(b.dir, spec.RootfsPath, "bin", name)
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSeccompWithCapabilitiesRestored: the adversarial probe's mount,
// unshare, setns, bpf and open_by_handle_at get EPERM from a task without
// capabilities whatever seccomp says, so those cases do not show the
// filter (an audit of the claims found it). Here the task is root with
// CAP_SYS_ADMIN and CAP_DAC_READ_SEARCH: without seccomp each call gets
// past the filter (it succeeds, or the kernel answers with another errno);
// with nsn-run's filter each is EPERM.
func TestSeccompWithCapabilitiesRestored(t *testing.T) {
	// pivot-root last: it succeeds without seccomp, and the shell's next
	// exec would find no nsn-probe under the new root.
	attacks := []string{"mount", "umount-masked", "unshare-mount", "unshare-net", "setns", "bpf", "open-by-handle-at", "pivot-root"}
	b := newBundle(t, "for a in "+strings.Join(attacks, " ")+"; do nsn-probe $a; done")
	b.addProbe(t, "nsn-probe")
	caps := rootWith("CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH")
	errnos := func(out string) map[string]string {
		got := map[string]string{}
		for line := range strings.Lines(out) {
			var r probeReport
			if json.Unmarshal([]byte(line), &r) == nil {
				got[r.Attack] = r.Errno
				if !r.Blocked && r.Errno == "" {
					got[r.Attack] = "succeeded"
				}
			}
		}
		return got
	}
	out, errOut, err := b.run(t, b.mutated(t, func(s *specs.Spec) { caps(s); s.Linux.Seccomp = nil }))
	without := errnos(out)
	for _, a := range attacks {
		if e, ok := without[a]; !ok || e == "EPERM" {
			t.Errorf("bypass: %s without seccomp, as root with CAP_SYS_ADMIN: %q (%v); want past the filter\n%s%s", a, e, err, out, errOut)
		}
	}
	t.Logf("bypass: without seccomp: %v", without)
	out, errOut, err = b.run(t, b.mutated(t, caps))
	with := errnos(out)
	for _, a := range attacks {
		if with[a] != "EPERM" {
			t.Errorf("%s under nsn-run's seccomp, as root with CAP_SYS_ADMIN: %q (%v), want EPERM\n%s%s", a, with[a], err, out, errOut)
		}
	}
}

// TestEscapeImageMountPointSymlink: an image whose /dev is a symlink to a
// host directory. runc 1.1 follows it on the host when it sets up the
// task's /dev: it creates /dev/fd, /dev/stdin, /dev/stdout and /dev/stderr
// (and /dev/ptmx) inside the host directory the link names. Run with runc
// directly on such a rootfs (nsn-run's spec, without the backend's image
// check), the host directory gains them; the containerd backend refuses the
// image before runc runs (images.Check; TestHostileImages runs it through a
// Manager) and the directory holds only its marker. runc 1.2 and later
// resolve the link inside the root: there the attack is shown only as
// refused.
func TestEscapeImageMountPointSymlink(t *testing.T) {
	b := newBundle(t, "true")
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "marker"), []byte("untouched\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dev := filepath.Join(b.dir, spec.RootfsPath, "dev")
	if err := os.RemoveAll(dev); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(hostDir, dev); err != nil {
		t.Fatal(err)
	}
	hostEntries := func() []string {
		entries, err := os.ReadDir(hostDir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	out, errOut, err := b.run(t, b.spec)
	got := hostEntries()
	major, minor := runcVersion(t)
	if major == 1 && minor < 2 {
		if !slices.Contains(got, "stdout") || !slices.Contains(got, "fd") {
			t.Fatalf("bypass with runc %d.%d: the host dir holds %v; want /dev/fd, /dev/stdout and the rest made there: %v\n%s%s", major, minor, got, err, out, errOut)
		}
		t.Logf("bypass with runc %d.%d: runc made %v in the host dir the image's /dev names", major, minor, got)
	} else {
		t.Logf("runc %d.%d on the linked rootfs: %v; the host dir holds %v", major, minor, err, got)
	}
	for _, name := range got {
		if name != "marker" {
			_ = os.RemoveAll(filepath.Join(hostDir, name))
		}
	}

	c, addr := containerdClient(t)
	importBusybox(t, c, addr)
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := imagebuild.BusyboxRootfs(rootfs, busyboxPath(t)); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(rootfs, "dev")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(hostDir, filepath.Join(rootfs, "dev")); err != nil {
		t.Fatal(err)
	}
	ref := "docker.io/nsn-test/dev-link:" + b.id
	if err := importImage(c, imagebuild.Image{Name: ref, RootfsDir: rootfs, Config: ocispec.ImageConfig{Env: []string{"PATH=/bin"}}}); err != nil {
		t.Fatal(err)
	}
	m, _ := testManager(t)
	tk := seedTask(uniqueID("devlink"), "true")
	tk.Image = ref
	if _, err := m.Run(context.Background(), tk, runtime.RunOptions{}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("run of the image whose /dev links to a host dir: %v; want invalid argument naming the symlink", err)
	}
	if got := hostEntries(); !slices.Equal(got, []string{"marker"}) {
		t.Errorf("the host dir after the backend's run: %v; want only its marker", got)
	}
}

// TestEscapeHook: an OCI hook is a program runc runs on the host, as root,
// outside every namespace and limit of the task: a spec that carries one
// runs the spec writer's command on the node. With runc directly a
// createRuntime hook writes its uid (host root's 0) into a host directory;
// the audit refuses every hook nsn-run does not generate, and so does Start.
func TestEscapeHook(t *testing.T) {
	b := newBundle(t, "true")
	hostDir := t.TempDir()
	marker := filepath.Join(hostDir, "hook-ran-as")
	mutate := func(s *specs.Spec) {
		if s.Hooks == nil {
			s.Hooks = &specs.Hooks{}
		}
		s.Hooks.CreateRuntime = append(s.Hooks.CreateRuntime, specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "id -u > " + marker}})
	}
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	got, rerr := os.ReadFile(marker)
	if err != nil || rerr != nil || string(got) != "0\n" {
		t.Fatalf("bypass: the hook did not run as host root: %v, %q (%v)\n%s%s", err, got, rerr, out, errOut)
	}
	t.Logf("bypass: the spec's hook ran on the host as uid %s", strings.TrimSpace(string(got)))
	refused(t, b, audit.RuleHooks, mutate)
}

// TestEscapeNamespacePath: a namespace given by path joins an existing
// one: the host's network namespace (here the test's own) gives the task the host's
// network (its interfaces, its loopback services). With runc directly the
// task lists the host's interfaces; nsn-run's has only lo; the audit and
// Start refuse the path.
func TestEscapeNamespacePath(t *testing.T) {
	hostIfaces := func(dev string) []string {
		var names []string
		for i, line := range strings.Split(dev, "\n") {
			if name, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && i >= 2 && name != "lo" {
				names = append(names, name)
			}
		}
		return names
	}
	// This process's network namespace stands in for host pid 1's (which
	// a sandboxed test host may not let even root open).
	host, err := os.ReadFile("/proc/self/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	want := hostIfaces(string(host))
	need(t, len(want) > 0, "the host has no network interface but lo")
	b := newBundle(t, "cat /proc/net/dev")
	mutate := func(s *specs.Spec) {
		for i := range s.Linux.Namespaces {
			if s.Linux.Namespaces[i].Type == specs.NetworkNamespace {
				s.Linux.Namespaces[i].Path = fmt.Sprintf("/proc/%d/ns/net", os.Getpid())
			}
		}
	}
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	if err != nil || !slices.Contains(hostIfaces(out), want[0]) {
		t.Fatalf("bypass: the task does not see the host's %s: %v\n%s%s", want[0], err, out, errOut)
	}
	t.Logf("bypass: the task sees the host's interfaces %v", hostIfaces(out))
	if out, _, _ := b.run(t, b.spec); len(hostIfaces(out)) != 0 {
		t.Errorf("nsn-run's own spec shows interfaces %v", hostIfaces(out))
	}
	refused(t, b, audit.RuleNamespaces, mutate)
}

// TestEscapeRootfsPropagation: with the root's propagation rslave (runc's
// default, and what a spec without the field gets), a mount the host makes
// under the task's root after it started appears in the task: host mount
// events reach it (a host admin's mount of secrets under a shared rootfs,
// say). nsn-run's spec sets rprivate: the task never sees it. The bundle's
// rootfs is made a shared mount on the host for both runs; the task says
// when it runs (a file in /output), then looks for the host's mount.
func TestEscapeRootfsPropagation(t *testing.T) {
	const script = `echo up > /output/started; for i in $(seq 1 40); do [ -e /mnt/marker ] && { cat /mnt/marker; exit 0; }; sleep 0.1; done; echo none`
	run := func(propagation string) string {
		t.Helper()
		b := newBundle(t, script)
		rootfs := filepath.Join(b.dir, spec.RootfsPath)
		mnt := filepath.Join(rootfs, "mnt")
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount(rootfs, rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Unmount(rootfs, unix.MNT_DETACH) })
		if err := unix.Mount("", rootfs, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
			t.Fatal(err)
		}
		s := b.mutated(t, func(s *specs.Spec) { s.Linux.RootfsPropagation = propagation })
		b.write(t, s)
		runc, state, id := runcPath(t), t.TempDir(), uniqueID(b.id)
		cmd := exec.Command(runc, "--root", state, "run", "--bundle", b.dir, id)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = exec.Command(runc, "--root", state, "delete", "--force", id).Run() }()
		waitForFile(t, filepath.Join(b.outDir, "started"))
		// The host's mount, after the task's mount namespace exists.
		if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=64k"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
		if err := os.WriteFile(filepath.Join(mnt, "marker"), []byte("host-mount\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("runc run (%s): %v\n%s%s", propagation, err, out.String(), errOut.String())
		}
		return out.String()
	}
	if out := run("rslave"); out != "host-mount\n" {
		t.Fatalf("bypass: with rslave the task did not see the host's mount: %q", out)
	}
	t.Log("bypass: with rslave the host's mount under the task's root reached the task")
	if out := run("rprivate"); out != "none\n" {
		t.Errorf("nsn-run's rprivate: the task printed %q, want none", out)
	}
	b := newBundle(t, "true")
	refused(t, b, audit.RuleMountPropagation, func(s *specs.Spec) { s.Linux.RootfsPropagation = "rslave" })
}

// waitForFile waits until path exists (a task announces it runs).
func waitForFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestEscapeRuntimePath: containerd runs whatever a container's runtime
// names as the task's shim, as root on the host, before any of the task's
// isolation exists, and takes an absolute path there too (1.6 and 2.x). The
// attack, with containerd directly: a container whose runtime is a path to
// a script gets the script run as host root when its task is created. A
// task's Runtime is a runtime name that the Manager's allowlist holds:
// nsn-run refuses the path, a name outside the allowlist, and an operator
// allowlist that names a path, and runs nothing.
func TestEscapeRuntimePath(t *testing.T) {
	c, _ := containerdClient(t)
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)
	hostDir := t.TempDir()
	marker := filepath.Join(hostDir, "shim-ran-as")
	evil := filepath.Join(hostDir, "containerd-shim-evil-v1")
	if err := os.WriteFile(evil, []byte("#!/bin/sh\nid -u >> "+marker+"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	id := uniqueID("evil-runtime")
	ctr, err := c.NewContainer(ctx, id, client.WithRuntime(evil, nil),
		client.WithSpec(&specs.Spec{Version: specs.Version, Process: &specs.Process{Args: []string{"true"}, Cwd: "/"}, Root: &specs.Root{Path: "rootfs"}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ctr.Delete(ctx) })
	_, terr := ctr.NewTask(ctx, cio.NullIO)
	got, rerr := os.ReadFile(marker)
	if rerr != nil || !strings.HasPrefix(string(got), "0\n") {
		t.Fatalf("the attack: want the runtime path run as root: marker %q (%v), task create: %v", got, rerr, terr)
	}
	t.Logf("the attack: containerd ran the runtime path as host uid 0 (task create: %v)", terr)
	if err := os.Remove(marker); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}

	var cfg runtime.Config
	m, _ := testManagerWith(t, func(c *runtime.Config) { cfg = *c })
	for _, r := range []string{evil, "io.containerd.evil.v1"} {
		_, err := m.Run(context.Background(), task.Task{ID: uniqueID("evil-runtime"), Image: busyboxRef, Command: []string{"true"}, Runtime: r}, runtime.RunOptions{})
		if err == nil || !(errdefs.IsInvalidArgument(err) || errdefs.IsFailedPrecondition(err) || errdefs.IsPermissionDenied(err)) {
			t.Errorf("a task with runtime %q: %v; want it refused", r, err)
		}
	}
	cfg.AllowedRuntimes = []string{evil}
	if _, err := runtime.New(cfg); err == nil || !errdefs.IsInvalidArgument(err) {
		t.Errorf("a Manager allowing the runtime path %s: %v; want invalid argument", evil, err)
	}
	if got, err := os.ReadFile(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("nsn-run ran the runtime: marker %q (%v)", got, err)
	}
}

// TestEscapeOtherTaskOutput: a task's /output is a bind of its own dir in
// the tasks dir; the same mount with another task's dir as its source (one
// path element changed) gives it that task's output, which may be its
// results or secrets it was handed. With runc directly the task reads
// another task's file and writes into its dir; the audit and Start refuse
// the source.
func TestEscapeOtherTaskOutput(t *testing.T) {
	b := newBundle(t, `cat /output/secret && echo planted > /output/planted`)
	victim := filepath.Join(b.tasksDir, uniqueID("victim"), "output", task.NewOutputKey())
	if err := os.MkdirAll(victim, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{victim, filepath.Dir(victim)} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(victim, "secret"), []byte("the victim's result\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mutate := func(s *specs.Spec) {
		for i := range s.Mounts {
			if s.Mounts[i].Destination == spec.OutputPath {
				s.Mounts[i].Source = victim
			}
		}
	}
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	planted, perr := os.ReadFile(filepath.Join(victim, "planted"))
	if err != nil || out != "the victim's result\n" || perr != nil {
		t.Fatalf("bypass: want the other task's file read and one planted in its dir: %v, planted %q (%v)\n%s%s", err, planted, perr, out, errOut)
	}
	t.Logf("bypass: read %q from the other task's output and planted %q", strings.TrimSpace(out), strings.TrimSpace(string(planted)))
	if err := os.Remove(filepath.Join(victim, "planted")); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = b.run(t, b.spec)
	if err == nil || strings.Contains(out, "victim") {
		t.Errorf("nsn-run's own spec: want no such file: %v\n%s%s", err, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(victim, "planted")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("nsn-run's own spec wrote into the other task's dir: %v", err)
	}
	refused(t, b, audit.RuleMounts, mutate)
}

// TestEscapeCgroupsPathHost: runc puts the task in the cgroup its spec's
// cgroupsPath names, creating it or joining it as it finds it, and writes
// the task's limits there. A path to an existing host cgroup (a system
// slice, another tenant's) caps every process in it with the task's
// memory and pids limits. With runc directly, a cgroup the test made for
// a host process (its marker) gets the task's limits; nsn-run's spec has
// /NAMESPACE/ID, its own; the audit and Start refuse the path.
func TestEscapeCgroupsPathHost(t *testing.T) {
	b := newBundle(t, "true")
	name := "/" + uniqueID("nsn-host-victim")
	limits := victimCgroup(t, name)
	before := limits()
	mutate := func(s *specs.Spec) { s.Linux.CgroupsPath = name }
	out, errOut, err := b.run(t, b.mutated(t, mutate))
	after := limits()
	memLimit, pidsLimit := *b.spec.Linux.Resources.Memory.Limit, *b.spec.Linux.Resources.Pids.Limit
	if err != nil || after.memory != memLimit || after.pids != pidsLimit {
		t.Fatalf("bypass: want the host cgroup %s capped at the task's memory %d and pids %d: %+v before, %+v after: %v\n%s%s", name, memLimit, pidsLimit, before, after, err, out, errOut)
	}
	t.Logf("bypass: the host cgroup %s (a host process in it) went from %+v to %+v", name, before, after)

	name2 := "/" + uniqueID("nsn-host-victim")
	limits2 := victimCgroup(t, name2)
	before = limits2()
	out, errOut, err = b.run(t, b.spec)
	if err != nil {
		t.Fatalf("nsn-run's own spec: %v\n%s%s", err, out, errOut)
	}
	if after := limits2(); after != before {
		t.Errorf("nsn-run's own spec changed the host cgroup %s: %+v, was %+v", name2, after, before)
	}
	refused(t, b, audit.RuleCgroups, mutate)
}

// cgroupLimits is a cgroup's memory and pids limits (-1: none).
type cgroupLimits struct{ memory, pids int64 }

// victimCgroup makes the cgroup name (a path under every controller's
// root, as runc reads cgroupsPath) with a host process in it, and returns
// a reader of its limits. Cleanup ends the process and removes the cgroup
// wherever runc made it too.
func victimCgroup(t *testing.T, name string) func() cgroupLimits {
	t.Helper()
	root := "/sys/fs/cgroup"
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		t.Fatal(err)
	}
	unified := st.Type == unix.CGROUP2_SUPER_MAGIC
	dirs := []string{filepath.Join(root, name)}
	if !unified {
		dirs = []string{filepath.Join(root, "memory", name), filepath.Join(root, "pids", name)}
	}
	sleeper := exec.Command("sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sleeper.Process.Kill()
		_ = sleeper.Wait()
		// runc makes the path under every v1 hierarchy; it removes those
		// it could once the task is gone, not those holding the marker.
		matches, _ := filepath.Glob(filepath.Join(root, "*", name))
		for _, d := range append(matches, filepath.Join(root, name)) {
			_ = os.Remove(d)
		}
	})
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(sleeper.Process.Pid)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(dir, file string) int64 {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			return -1
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("%s/%s: %q", dir, file, v)
		}
		return n
	}
	return func() cgroupLimits {
		if unified {
			return cgroupLimits{memory: read(dirs[0], "memory.max"), pids: read(dirs[0], "pids.max")}
		}
		return cgroupLimits{memory: read(dirs[0], "memory.limit_in_bytes"), pids: read(dirs[1], "pids.max")}
	}
}
