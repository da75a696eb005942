package doctor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nsn-run/nsn-run/cdi/cditest"
)

func TestRuncAdvisories(t *testing.T) {
	cases := []struct {
		version string
		status  Status
		cves    []string
	}{
		{"1.0.0-rc6", Fatal, []string{"CVE-2019-5736", "CVE-2024-21626", "CVE-2025-31133"}},
		{"1.1.5+ds1", Warn, []string{"CVE-2024-21626", "CVE-2025-31133"}},
		{"1.1.12", Warn, []string{"CVE-2025-31133"}},
		{"1.1.15", Warn, []string{"CVE-2025-31133"}},
		{"1.2.7", Warn, []string{"CVE-2025-31133"}},
		{"1.2.8", OK, nil},
		{"1.3.2", Warn, []string{"CVE-2025-52565"}},
		{"1.3.3", OK, nil},
		{"1.4.0-rc.2", Warn, []string{"CVE-2025-52881"}},
		{"1.4.0", OK, nil},
		{"1.5.3", OK, nil},
	}
	for _, c := range cases {
		got := RuncAdvisories(c.version)
		if got.Status != c.status {
			t.Errorf("%s: status %s, want %s (%s)", c.version, got.Status, c.status, got.Detail)
		}
		for _, cve := range c.cves {
			if !strings.Contains(got.Detail, cve) {
				t.Errorf("%s: detail does not name %s: %s", c.version, cve, got.Detail)
			}
		}
		if c.status == OK && strings.Contains(got.Detail, "CVE") {
			t.Errorf("%s: a fixed version names an advisory: %s", c.version, got.Detail)
		}
	}
	if got := RuncAdvisories("banana"); got.Status != Warn {
		t.Errorf("unparseable version: %+v", got)
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
	if c := checkUserNamespaces(root); c.Status != Info {
		t.Errorf("no userns: %+v", c)
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
	specDir, _, err := cditest.WriteStandInSpec(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if c := checkGPUs(root, []string{specDir}); c.Status != OK || !strings.Contains(c.Detail, "1 NVIDIA") || !strings.Contains(c.Detail, "nvidia.com/gpu="+cditest.UUID0) {
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
