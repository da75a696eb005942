package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/contrib/apparmor"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
)

// envRequireAppArmor makes a host without AppArmor a failure rather than a
// skip: the cgroup v2 VM sets it, since its Debian kernel has AppArmor.
const envRequireAppArmor = "NSN_REQUIRE_APPARMOR"

// needAppArmor loads nsn-run's profile, or skips where the host cannot
// apply one (this project's build machine: a kernel without AppArmor).
func needAppArmor(t *testing.T) {
	t.Helper()
	needRoot(t)
	if containerd.AppArmorProfile() == "" {
		if os.Getenv(envRequireAppArmor) == "1" {
			t.Fatalf("%s=1, but this host cannot apply AppArmor profiles (kernel module, securityfs or /sbin/apparmor_parser missing)", envRequireAppArmor)
		}
		t.Skipf("this host cannot apply AppArmor profiles; the cgroup v2 VM (make test-cgroupv2) runs this test with %s=1", envRequireAppArmor)
	}
	if err := apparmor.LoadDefaultProfile(spec.DefaultAppArmorProfile); err != nil {
		t.Fatal(err)
	}
}

// TestAppArmorTaskConfined: on a host with AppArmor, a task runs under
// nsn-run-default in enforce mode; `spec` shows the profile and `audit`
// passes it; a spec without it fails the audit and Start refuses it.
func TestAppArmorTaskConfined(t *testing.T) {
	needAppArmor(t)
	m, _ := testManager(t)
	res, err := m.Run(context.Background(), seedTask(uniqueID("aa"), "cat", "/proc/self/attr/current"), runtime.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := spec.DefaultAppArmorProfile + " (enforce)"; strings.TrimSpace(res.Stdout) != want {
		t.Fatalf("the task's AppArmor label: %q (stderr %q), want %q", res.Stdout, res.Stderr, want)
	}

	c, addr := containerdClient(t)
	importBusybox(t, c, addr)
	global := []string{"--address", addr, "--namespace", testNamespace, "--state-dir", "/var/lib/nsn-run"}
	printed := runCLI(t, nil, slices.Concat([]string{"spec"}, global, []string{"busybox:latest", "--", "true"})...)
	if printed.code != 0 {
		t.Fatalf("spec: exit %d: %s", printed.code, printed.stderr)
	}
	if !strings.Contains(printed.stdout, `"apparmorProfile": "`+spec.DefaultAppArmorProfile+`"`) {
		t.Errorf("the printed spec does not name %s", spec.DefaultAppArmorProfile)
	}
	if a := runCLI(t, []byte(printed.stdout), slices.Concat(global, []string{"audit", "-"})...); a.code != 0 {
		t.Errorf("audit of the printed spec: exit %d: %s%s", a.code, a.stdout, a.stderr)
	}
	stripped := strings.Replace(printed.stdout, `"apparmorProfile": "`+spec.DefaultAppArmorProfile+`",`, "", 1)
	if a := runCLI(t, []byte(stripped), slices.Concat(global, []string{"audit", "-"})...); a.code != 1 || !strings.Contains(a.stdout, audit.RuleLSM+" process.apparmorProfile") {
		t.Errorf("audit of the spec without its profile: exit %d (want 1 with an lsm finding): %s%s", a.code, a.stdout, a.stderr)
	}
	startRefuses(t, audit.RuleLSM, func(s *specs.Spec) { s.Process.ApparmorProfile = "" })
}

// TestAppArmorStopsWhatOtherLayersMiss: AppArmor is the layer under the
// others. Each case takes one other control out of nsn-run's spec and runs
// it with runc directly: without a profile the attack works, with
// nsn-run-default it is denied.
func TestAppArmorStopsWhatOtherLayersMiss(t *testing.T) {
	needAppArmor(t)
	cases := []struct {
		name, script, worked string
		without              func(*specs.Spec) // the other control taken away
	}{{
		// Without seccomp, a task makes a user namespace of its own and,
		// as root there, mounts: the profile's `deny mount`.
		name:    "mount-without-seccomp",
		script:  "unshare -r -m sh -c 'mount -t tmpfs attack /tmp && echo MOUNTED'",
		worked:  "MOUNTED",
		without: func(s *specs.Spec) { s.Linux.Seccomp = nil },
	}, {
		// Without the masked path, /sys/firmware (the host's firmware
		// tables and memory map) is readable: `deny /sys/firmware/** r`.
		name:   "firmware-unmasked",
		script: "cat /sys/firmware/memmap/0/type",
		worked: "System RAM",
		without: func(s *specs.Spec) {
			s.Linux.MaskedPaths = slices.DeleteFunc(s.Linux.MaskedPaths, func(p string) bool { return p == "/sys/firmware" })
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newBundle(t, c.script)
			open := b.mutated(t, func(s *specs.Spec) { c.without(s); s.Process.ApparmorProfile = "" })
			stdout, stderr, err := b.run(t, open)
			if !strings.Contains(stdout, c.worked) {
				t.Fatalf("without the other control and without AppArmor the attack should work: stdout %q, stderr %q, %v", stdout, stderr, err)
			}
			t.Logf("without AppArmor: %q", strings.TrimSpace(stdout))
			confined := b.mutated(t, func(s *specs.Spec) { c.without(s); s.Process.ApparmorProfile = spec.DefaultAppArmorProfile })
			stdout, stderr, err = b.run(t, confined)
			if strings.Contains(stdout, c.worked) {
				t.Fatalf("under %s the attack worked: stdout %q", spec.DefaultAppArmorProfile, stdout)
			}
			if !strings.Contains(stderr, "Permission denied") {
				t.Errorf("under %s: want EACCES from the profile, got stdout %q, stderr %q, %v", spec.DefaultAppArmorProfile, stdout, stderr, err)
			}
			t.Logf("under %s: %q", spec.DefaultAppArmorProfile, strings.TrimSpace(stderr))
		})
	}
}

// TestAppArmorProfileReplaced: a profile already loaded under
// nsn-run-default's name (an older nsn-run's, or an operator's weaker one,
// say in complain mode, which logs and allows) would confine tasks in its
// place: runc applies a profile by name. The attack first: such a profile
// (no deny rules, complain mode), and a spec without the /sys/firmware
// mask run with runc directly: the task reads the host's firmware memory
// map. Then the
// containerd backend starts (as node.Open and the CLI do): it loads its
// own profile over it (apparmor_parser -r), a task's label reads
// "nsn-run-default (enforce)", and the same runc run is denied.
func TestAppArmorProfileReplaced(t *testing.T) {
	needAppArmor(t)
	name := spec.DefaultAppArmorProfile
	// A weaker profile of the same name: no deny rules (those hold even
	// in complain mode), in complain mode.
	weak := "profile " + name + " flags=(attach_disconnected,mediate_deleted,complain) {\n  file,\n}\n"
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(weak), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("/sbin/apparmor_parser", "-K", "-r", path).CombinedOutput(); err != nil {
		t.Fatalf("load a weaker %s in complain mode: %v: %s", name, err, out)
	}
	// Whatever happens below, the next test gets the profile enforcing.
	t.Cleanup(func() {
		if err := apparmor.LoadDefaultProfile(name); err != nil {
			t.Errorf("reload %s: %v", name, err)
		}
	})
	b := newBundle(t, "cat /proc/self/attr/current; cat /sys/firmware/memmap/0/type")
	unmasked := b.mutated(t, func(s *specs.Spec) {
		s.Linux.MaskedPaths = slices.DeleteFunc(s.Linux.MaskedPaths, func(p string) bool { return p == "/sys/firmware" })
		s.Process.ApparmorProfile = name
	})
	stdout, stderr, err := b.run(t, unmasked)
	if stdout != name+" (complain)\nSystem RAM\n" {
		t.Fatalf("bypass: under %s in complain mode the task printed %q (stderr %q, %v); want the firmware read", name, stdout, stderr, err)
	}
	t.Logf("bypass: under the complain-mode profile the task printed %q", stdout)

	m, _ := testManager(t)
	res, err := m.Run(context.Background(), seedTask(uniqueID("aa-replaced"), "cat", "/proc/self/attr/current"), runtime.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := name + " (enforce)"; strings.TrimSpace(res.Stdout) != want {
		t.Errorf("after the backend started, the task's label: %q (stderr %q), want %q", res.Stdout, res.Stderr, want)
	}
	stdout, stderr, _ = b.run(t, unmasked)
	if strings.Contains(stdout, "System RAM") || !strings.Contains(stderr, "Permission denied") {
		t.Errorf("after the backend started: the task printed %q, stderr %q; want the firmware read denied", stdout, stderr)
	} else {
		t.Logf("after the backend started: %q, %q", strings.TrimSpace(stdout), strings.TrimSpace(stderr))
	}
}
