package doctor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nsn-run/nsn-run/gpu/gputest"
)

// fakeExec answers commands from a table, keyed by the command line;
// anything else fails as a missing binary would.
type fakeExec map[string]string

func (f fakeExec) run(_ context.Context, name string, args ...string) ([]byte, error) {
	out, ok := f[strings.Join(append([]string{name}, args...), " ")]
	if !ok {
		return nil, fmt.Errorf("exec: %q: %w", name, exec.ErrNotFound)
	}
	return []byte(out), nil
}

const dpkgRunc = "dpkg-query -W -f=${Version} runc"

// runcOutput is what `runc --version` prints (Debian's build puts its
// package version in the commit line).
func runcOutput(version string) string {
	return "runc version " + version + "\ncommit: v" + version + "\nspec: 1.0.2-dev\ngo: go1.19.8\nlibseccomp: 2.5.4\n"
}

// TestRuncAdvisories judges runc builds by the fixes they carry: upstream
// releases by their line's fixed release, Debian's by its package version
// (backports), and only when that package is the runc that runs.
func TestRuncAdvisories(t *testing.T) {
	const (
		cve2019 = "CVE-2019-5736"
		cve2024 = "CVE-2024-21626"
		cve2025 = "CVE-2025-31133, CVE-2025-52565, CVE-2025-52881"
	)
	cases := []struct {
		version, dpkg string // dpkg "": no dpkg-query answer
		status        Status
		cves          []string
	}{
		// A runc built from source beside Debian's package: the package's
		// backports are not this binary's.
		{"1.1.5", "1.1.5+ds1-1+deb12u1", Warn, []string{cve2024, cve2025}},
		{"1.1.5+ds1", "1.1.5+ds1-1+deb12u1", Warn, []string{cve2025}},
		{"1.1.5+ds1", "1.1.5+ds1-1+deb12u2", Warn, []string{cve2025}},
		{"1.1.5+ds1", "1.1.5+ds1-1", Warn, []string{cve2024, cve2025}},
		{"1.1.5+ds1", "", Warn, []string{cve2024, cve2025}},
		{"1.1.12", "", Warn, []string{cve2025}},
		{"1.1.15", "", Warn, []string{cve2025}},
		{"1.2.7", "", Warn, []string{cve2025}},
		{"1.2.8", "", OK, nil},
		{"1.3.2", "", Warn, []string{cve2025}},
		{"1.3.3", "", OK, nil},
		{"1.4.0-rc.2", "", Warn, []string{cve2025}},
		{"1.4.0", "", OK, nil},
		{"1.5.3", "", OK, nil},
		{"1.0.0-rc6", "", Fatal, []string{cve2019, cve2024, cve2025}},
		// rc93 is after rc7 (numbered, not lexical); 1.0 got no later fix.
		{"1.0.0-rc93", "", Warn, []string{cve2024, cve2025}},
		{"1.0.0~rc93+ds1", "1.0.0~rc93+ds1-5", Warn, []string{cve2024, cve2025}},
	}
	all := []string{cve2019, cve2024, cve2025}
	for _, c := range cases {
		f := fakeExec{"runc --version": runcOutput(c.version)}
		if c.dpkg != "" {
			f[dpkgRunc] = c.dpkg
		}
		checks := checkRunc(context.Background(), f.run, "runc")
		got := checks[0]
		if got.Name != "runc" || got.Status != c.status {
			t.Errorf("%s (dpkg %q): %s %s, want %s (%s)", c.version, c.dpkg, got.Name, got.Status, c.status, got.Detail)
		}
		for _, cve := range all {
			if want := slices.Contains(c.cves, cve); strings.Contains(got.Detail, cve) != want {
				t.Errorf("%s (dpkg %q): names %s: %v, want %v: %s", c.version, c.dpkg, cve, !want, want, got.Detail)
			}
		}
		if c.status == OK && got.Fix != "" {
			t.Errorf("%s: a fix for a fixed version: %s", c.version, got.Fix)
		}
		if len(checks) != 2 || checks[1].Name != "runc seccomp" || checks[1].Status != OK {
			t.Errorf("%s: seccomp check %+v", c.version, checks[1:])
		}
	}
	if got := RuncAdvisories("banana", ""); got.Status != Warn {
		t.Errorf("unparseable version: %+v", got)
	}
	if got := checkRunc(context.Background(), fakeExec{}.run, "/no/runc"); got[0].Status != Fatal {
		t.Errorf("no runc: %+v", got)
	}
	noSeccomp := fakeExec{"runc --version": "runc version 1.3.3\ncommit: v1.3.3\n"}
	if got := checkRunc(context.Background(), noSeccomp.run, "runc"); len(got) != 2 || got[1].Status != Fatal {
		t.Errorf("runc without libseccomp: %+v", got)
	}
}

func TestDebianCompare(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"1.1.5+ds1-1+deb12u1", "1.1.5+ds1-1", 1},
		{"1.1.5+ds1-1+deb12u2", "1.1.5+ds1-1+deb12u1", 1},
		{"1.1.5+ds1-1+deb12u10", "1.1.5+ds1-1+deb12u9", 1}, // digits numerically
		{"1.1.5+ds1-1+deb12u1", "1.1.5+ds1-1+deb12u1", 0},
		{"1.0.0~rc93+ds1-5", "1.0.0+ds1-1", -1}, // '~' sorts first
		{"1.1.5~", "1.1.5", -1},
		{"1:1.0-1", "2.0-1", 1}, // epoch first
		{"1.1.12+ds1-1", "1.1.5+ds1-9", 1},
		{"1.0a-1", "1.0+-1", -1}, // letters before other characters
		{"01.2-1", "1.2-1", 0},
	}
	for _, c := range cases {
		if got := debianCompare(c.a, c.b); got != c.want {
			t.Errorf("debianCompare(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := debianCompare(c.b, c.a); got != -c.want {
			t.Errorf("debianCompare(%q, %q) = %d, want %d", c.b, c.a, got, -c.want)
		}
	}
	if u := debianUpstream("1:1.1.5+ds1-1+deb12u1"); u != "1.1.5+ds1" {
		t.Errorf("upstream = %q", u)
	}
}

func TestCheckCDIDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create root- and nobody-owned dirs")
	}
	base := t.TempDir()
	mk := func(name string, mode os.FileMode, uid int) string {
		dir := filepath.Join(base, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, uid, 0); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	good := mk("good", 0o755, 0)
	if err := os.WriteFile(filepath.Join(good, "nvidia.yaml"), []byte("cdiVersion: 0.6.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		dir    string
		status Status
		want   string
	}{
		{good, OK, "1 spec(s) nvidia.yaml"},
		{mk("world", 0o777, 0), Fatal, "writable by every user"},
		{mk("nobody", 0o755, 65534), Fatal, "not owned by root"},
		{filepath.Join(base, "absent"), Info, "absent"},
	}
	for _, c := range cases {
		got := CheckCDIDir(c.dir)
		if got.Status != c.status || !strings.Contains(got.Detail, c.want) {
			t.Errorf("%s: %+v, want %s with %q", c.dir, got, c.status, c.want)
		}
	}
	if err := os.WriteFile(filepath.Join(good, "evil.json"), []byte("{}"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(good, "evil.json"), 0o666); err != nil {
		t.Fatal(err)
	}
	if got := CheckCDIDir(good); got.Status != Fatal || !strings.Contains(got.Detail, "evil.json") {
		t.Errorf("world-writable spec: %+v", got)
	}
}

func TestWorst(t *testing.T) {
	if w := Worst([]Check{{Status: OK}, {Status: Info}}); w != OK {
		t.Errorf("ok+info = %s", w)
	}
	if w := Worst([]Check{{Status: Warn}, {Status: Fatal}, {Status: OK}}); w != Fatal {
		t.Errorf("with a fatal = %s", w)
	}
}

func TestHostChecksOnFakeRoot(t *testing.T) {
	root := t.TempDir()
	write := func(p, data string) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("/proc/filesystems", "nodev\tsysfs\nnodev\ttmpfs\n\text4\n")
	write("/proc/self/status", "Name:\tx\n")
	write("/proc/sys/user/max_user_namespaces", "0\n")
	if c := checkOverlay(root); c.Status != Fatal {
		t.Errorf("no overlay: %+v", c)
	}
	write("/proc/sys/kernel/osrelease", "6.1.0-test\n")
	write("/lib/modules/6.1.0-test/kernel/fs/overlayfs/overlay.ko.xz", "")
	if c := checkOverlay(root); c.Status != OK || !strings.Contains(c.Detail, "module") {
		t.Errorf("overlay as an unloaded module: %+v", c)
	}
	if c := checkSeccomp(root); c.Status != Fatal {
		t.Errorf("no seccomp: %+v", c)
	}
	if c := checkUserNamespaces(root, false); c.Status != Warn || !strings.Contains(c.Detail, "level shared") {
		t.Errorf("no userns: %+v", c)
	}
	write("/proc/sys/user/max_user_namespaces", "1000\n")
	write("/proc/sys/fs/inotify/max_user_instances", "128\n")
	if c := checkUserNamespaces(root, false); c.Status != Warn || !strings.Contains(c.Detail, "level userns") || !strings.Contains(c.Fix, "max_user_instances=8192") {
		t.Errorf("userns with root's inotify budget at 128: %+v", c)
	}
	write("/proc/sys/fs/inotify/max_user_instances", "8192\n")
	if c := checkUserNamespaces(root, false); c.Status != OK || !strings.Contains(c.Detail, "level userns") {
		t.Errorf("userns: %+v", c)
	}
	if c := checkUserNamespaces(root, true); c.Status != OK || !strings.Contains(c.Detail, "level idmapped") {
		t.Errorf("idmapped: %+v", c)
	}
	write("/proc/filesystems", "nodev\toverlay\n")
	write("/proc/self/status", "Name:\tx\nSeccomp:\t0\n")
	write("/dev/nvidia0", "")
	if c := checkOverlay(root); c.Status != OK {
		t.Errorf("overlay: %+v", c)
	}
	if c := checkSeccomp(root); c.Status != OK {
		t.Errorf("seccomp: %+v", c)
	}
	noSpecs := filepath.Join(root, "no-cdi")
	if c := checkGPUs(root, []string{noSpecs}); c.Status != Warn || !strings.Contains(c.Detail, "cdi-generate") {
		t.Errorf("GPU nodes without a CDI spec: %+v", c)
	}
	specDir, _, err := gputest.WriteStandInSpec(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if c := checkGPUs(root, []string{specDir}); c.Status != OK || !strings.Contains(c.Detail, "1 NVIDIA") || !strings.Contains(c.Detail, "nvidia.com/gpu="+gputest.UUID0) {
		t.Errorf("gpus: %+v", c)
	}
	// A spec whose hook binary is missing here: every GPU task would fail.
	hooked := t.TempDir()
	spec := "cdiVersion: \"0.6.0\"\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes: [{path: /dev/nvidia0, hostPath: /dev/zero}]\ncontainerEdits:\n  hooks: [{hookName: createContainer, path: /nonexistent/nvidia-cdi-hook, args: [nvidia-cdi-hook, update-ldcache]}]\n"
	if err := os.WriteFile(filepath.Join(hooked, "nvidia.yaml"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	if c := checkGPUs(root, []string{hooked}); c.Status != Fatal || !strings.Contains(c.Detail, "/nonexistent/nvidia-cdi-hook") {
		t.Errorf("spec with a missing hook: %+v", c)
	}
}

// hookSpec writes a CDI spec for one GPU whose edits run the given hook
// binaries, and returns its dir.
func hookSpec(t *testing.T, hooks ...string) string {
	t.Helper()
	var hs []string
	for _, h := range hooks {
		hs = append(hs, fmt.Sprintf("{hookName: createContainer, path: %s, args: [%s, update-ldcache]}", h, filepath.Base(h)))
	}
	spec := "cdiVersion: \"0.6.0\"\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes: [{path: /dev/nvidia0, hostPath: /dev/zero}]\ncontainerEdits:\n  hooks: [" + strings.Join(hs, ", ") + "]\n"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nvidia.yaml"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestNVIDIAToolkit: the hooks the CDI specs run are judged by the version
// they report; before 1.17.8 (CVE-2025-23266, CVE-2025-23267) is fatal.
func TestNVIDIAToolkit(t *testing.T) {
	bin := t.TempDir()
	cdiHook, ctk := filepath.Join(bin, "nvidia-cdi-hook"), filepath.Join(bin, "nvidia-ctk")
	for _, p := range []string{cdiHook, ctk} {
		if err := os.WriteFile(p, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	hookSays := func(v string) string { return "NVIDIA CDI Hook version " + v + "\ncommit: 0123abc\n" }
	ctkSays := func(v string) string { return "NVIDIA Container Toolkit CLI version " + v + "\ncommit: 0123abc\n" }
	cases := []struct {
		name   string
		dir    string
		exec   fakeExec
		status Status
		want   []string
	}{
		{"no specs", filepath.Join(bin, "none"), fakeExec{}, Info, []string{"no CDI spec runs NVIDIA's hooks"}},
		{"other hooks only", hookSpec(t, "/usr/bin/true"), fakeExec{}, Info, []string{"no CDI spec runs NVIDIA's hooks"}},
		{"hook missing", hookSpec(t, filepath.Join(bin, "gone", "nvidia-cdi-hook")), fakeExec{}, Info, []string{"missing"}},
		{"1.17.7", hookSpec(t, cdiHook), fakeExec{cdiHook + " --version": hookSays("1.17.7")}, Fatal, []string{cdiHook, "1.17.7", "CVE-2025-23266", "CVE-2025-23267"}},
		{"1.17.8-rc.1", hookSpec(t, cdiHook), fakeExec{cdiHook + " --version": hookSays("1.17.8-rc.1")}, Fatal, []string{"CVE-2025-23267"}},
		{"1.17.8", hookSpec(t, cdiHook), fakeExec{cdiHook + " --version": hookSays("1.17.8")}, OK, []string{cdiHook + " version 1.17.8"}},
		{"1.20.2", hookSpec(t, cdiHook), fakeExec{cdiHook + " --version": hookSays("1.20.2")}, OK, []string{"1.20.2"}},
		{"old nvidia-ctk", hookSpec(t, ctk), fakeExec{ctk + " --version": ctkSays("1.16.2")}, Fatal, []string{ctk, "1.16.2"}},
		{"version fails", hookSpec(t, cdiHook), fakeExec{}, Warn, []string{cdiHook + " --version", "cannot check"}},
		{"version unreadable", hookSpec(t, cdiHook), fakeExec{cdiHook + " --version": "dev build\n"}, Warn, []string{"cannot read the version", "cannot check"}},
		{"one old one unknown", hookSpec(t, cdiHook, ctk), fakeExec{ctk + " --version": ctkSays("1.14.0")}, Fatal, []string{ctk + " version 1.14.0", cdiHook + " --version"}},
	}
	for _, c := range cases {
		got := checkNVIDIAToolkit(context.Background(), c.exec.run, []string{c.dir})
		if got.Name != "NVIDIA toolkit" || got.Status != c.status {
			t.Errorf("%s: %s %s, want %s: %s", c.name, got.Name, got.Status, c.status, got.Detail)
		}
		for _, w := range c.want {
			if !strings.Contains(got.Detail, w) {
				t.Errorf("%s: detail lacks %q: %s", c.name, w, got.Detail)
			}
		}
		if (got.Status == Warn || got.Status == Fatal) != (got.Fix != "") {
			t.Errorf("%s: %s with fix %q", c.name, got.Status, got.Fix)
		}
	}
}

func TestCorePattern(t *testing.T) {
	root := t.TempDir()
	if c := checkCorePattern(root); c.Status != Info {
		t.Errorf("unreadable core_pattern: %+v", c)
	}
	p := filepath.Join(root, "/proc/sys/kernel/core_pattern")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		pattern string
		status  Status
		want    string
	}{
		{"core\n", OK, `"core"`},
		{"/var/crash/core.%e.%p\n", OK, "writes files"},
		{"|/usr/share/apport/apport -p%p -s%s -c%c -d%d -P%P -u%u -g%g -- %E\n", Warn, "pipes core dumps to /usr/share/apport/apport:"},
		{"|/lib/systemd/systemd-coredump %P %u %g %s %t 9223372036854775808 %h\n", Warn, "/lib/systemd/systemd-coredump"},
	}
	for _, c := range cases {
		if err := os.WriteFile(p, []byte(c.pattern), 0o644); err != nil {
			t.Fatal(err)
		}
		got := checkCorePattern(root)
		if got.Name != "core dumps" || got.Status != c.status || !strings.Contains(got.Detail, c.want) {
			t.Errorf("%q: %+v, want %s with %q", c.pattern, got, c.status, c.want)
		}
		if c.status == Warn && (!strings.Contains(got.Detail, "RLIMIT_CORE") || got.Fix == "") {
			t.Errorf("%q: the warning does not say why or what to do: %+v", c.pattern, got)
		}
	}
}

func TestSocketBuffers(t *testing.T) {
	root := t.TempDir()
	if c := checkSocketBuffers(root); c.Status != Info {
		t.Errorf("unreadable limits: %+v", c)
	}
	dir := filepath.Join(root, "/proc/sys/net/core")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		rmem, wmem string
		status     Status
		want       string
	}{
		{"212992\n", "212992\n", Info, "about 416 KiB"},
		{"4194304\n", "212992\n", Warn, "about 8192 KiB"},
		{"212992\n", "16777216\n", Warn, "wmem_max is 16777216"},
	} {
		for f, v := range map[string]string{"rmem_max": c.rmem, "wmem_max": c.wmem} {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got := checkSocketBuffers(root)
		if got.Name != "socket buffers" || got.Status != c.status || !strings.Contains(got.Detail, c.want) || (c.status == Warn) != (got.Fix != "") {
			t.Errorf("rmem_max %q wmem_max %q: %+v, want %s with %q", c.rmem, c.wmem, got, c.status, c.want)
		}
	}
}

func TestAppArmor(t *testing.T) {
	root := t.TempDir()
	write := func(path, value string) {
		t.Helper()
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := func(step string, status Status, detail string) {
		t.Helper()
		c := checkAppArmor(root)
		if c.Name != "AppArmor" || c.Status != status || !strings.Contains(c.Detail, detail) {
			t.Errorf("%s: got %+v; want %v with %q", step, c, status, detail)
		}
		if status == Warn && c.Fix == "" {
			t.Errorf("%s: a warning without a fix: %+v", step, c)
		}
	}
	want("no module", Warn, "tasks run without an AppArmor profile")
	write("/sys/module/apparmor/parameters/enabled", "N\n")
	want("disabled", Warn, "not enabled in this kernel")
	write("/sys/module/apparmor/parameters/enabled", "Y\n")
	want("no securityfs", Warn, "securityfs is not mounted")
	write("/sys/kernel/security/apparmor/profiles", "")
	want("no parser", Warn, "apparmor_parser is not installed")
	write("/sbin/apparmor_parser", "")
	want("supported", OK, "runs every task under it")
}

func TestDockerRuntimesAndCDI(t *testing.T) {
	for _, c := range []struct {
		def    string
		names  []string
		status Status
	}{
		{"runc", []string{"io.containerd.runc.v2", "runc"}, OK},
		{"nvidia", []string{"nvidia", "runc"}, Info},
		{"nvidia", []string{"nvidia"}, Fatal},
	} {
		if got := checkDockerRuntimes(c.def, c.names); got.Status != c.status || (c.status == Fatal && got.Fix == "") {
			t.Errorf("default %s of %v: %+v, want %s", c.def, c.names, got, c.status)
		}
	}
	for api, status := range map[string]Status{"1.41": Warn, "1.43": Warn, "1.44": OK, "1.51": OK} {
		if got := checkDockerCDI(api); got.Status != status {
			t.Errorf("API %s: %+v, want %s", api, got, status)
		}
	}
}
