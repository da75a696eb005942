package docker

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestPidsInCgroupOf: this test process's cgroup holds this process and a
// child it starts (a child inherits its parent's cgroup), read from the
// host's own /proc and cgroup mounts (a hybrid v1 layout here; unified in
// the cgroup v2 VM).
func TestPidsInCgroupOf(t *testing.T) {
	child := exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	pids, err := pidsInCgroupOf(hostProc, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []int{os.Getpid(), child.Process.Pid} {
		if !slices.Contains(pids, uint32(want)) {
			t.Errorf("pid %d not among %v", want, pids)
		}
	}
}

// cgroupFixture lays out a /proc with pid 42's cgroup file and a mountinfo,
// and the cgroup groups of the mounts under one temp dir; groups maps a
// group dir (relative to the temp dir) to its cgroup.procs.
func cgroupFixture(t *testing.T, cgroupFile string, mountinfo func(base string) string, groups map[string]string) (proc, base string) {
	t.Helper()
	base = t.TempDir()
	proc = filepath.Join(base, "proc")
	for _, d := range []string{filepath.Join(proc, "42"), filepath.Join(proc, "self")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(proc, "42", "cgroup"), cgroupFile)
	write(filepath.Join(proc, "self", "mountinfo"), mountinfo(base))
	for dir, procs := range groups {
		write(filepath.Join(base, dir, "cgroup.procs"), procs)
	}
	return proc, base
}

// TestPidsInCgroupOfFixtures: the v2 path (a unified host, as dockerd's
// systemd driver places a container), the v1 pids hierarchy of a hybrid
// host (chosen over the unified mount beside it, as containerd's library
// does), a mount whose root is not the hierarchy's, and a group gone.
func TestPidsInCgroupOfFixtures(t *testing.T) {
	const scope = "/system.slice/docker-abc.scope"
	t.Run("unified", func(t *testing.T) {
		proc, _ := cgroupFixture(t, "0::"+scope+"\n",
			func(base string) string {
				return fmt.Sprintf("25 1 0:22 / / rw - ext4 /dev/vda rw\n30 25 0:26 / %s rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n", filepath.Join(base, "v2"))
			},
			map[string]string{
				"v2" + scope:           "42\n43\n",
				"v2" + scope + "/sub":  "44\n",
				"v2/system.slice":      "1\n",
				"v2/other.scope":       "99\n",
				"v2" + scope + "/sub2": "",
			})
		pids, err := pidsInCgroupOf(proc, 42)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(pids)
		if !slices.Equal(pids, []uint32{42, 43, 44}) {
			t.Errorf("pids %v, want the group's 42, 43 and its child group's 44, no one else's", pids)
		}
	})
	t.Run("hybrid", func(t *testing.T) {
		proc, _ := cgroupFixture(t, "12:pids:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/\n",
			func(base string) string {
				return fmt.Sprintf("30 25 0:27 / %[1]s/unified rw - cgroup2 cgroup2 rw\n31 25 0:28 / %[1]s/memory rw - cgroup cgroup rw,memory\n38 25 0:35 / %[1]s/pids rw - cgroup cgroup rw,pids\n", base)
			},
			map[string]string{
				"pids/docker/abc":   "42\n",
				"unified":           "1\n42\n99\n",
				"memory/docker/abc": "7\n",
			})
		pids, err := pidsInCgroupOf(proc, 42)
		if err != nil || !slices.Equal(pids, []uint32{42}) {
			t.Errorf("pids %v %v, want the pids hierarchy's group: 42", pids, err)
		}
	})
	t.Run("mount root and escapes", func(t *testing.T) {
		proc, _ := cgroupFixture(t, "0::/outer/job\n",
			func(base string) string {
				// The kernel escapes the space in the mount point.
				return fmt.Sprintf("30 25 0:26 /outer %s rw - cgroup2 cgroup2 rw\n", strings.ReplaceAll(filepath.Join(base, "cg 2"), " ", `\040`))
			},
			map[string]string{"cg 2/job": "42\n"})
		pids, err := pidsInCgroupOf(proc, 42)
		if err != nil || !slices.Equal(pids, []uint32{42}) {
			t.Errorf("pids %v %v, want 42 from the group under the mount's root", pids, err)
		}
	})
	t.Run("gone", func(t *testing.T) {
		proc, _ := cgroupFixture(t, "0::"+scope+"\n",
			func(base string) string {
				return fmt.Sprintf("30 25 0:26 / %s rw - cgroup2 cgroup2 rw\n", filepath.Join(base, "v2"))
			}, nil)
		if _, err := pidsInCgroupOf(proc, 42); err == nil {
			t.Error("a group that does not exist gave no error")
		}
		if _, err := pidsInCgroupOf(proc, 7); err == nil {
			t.Error("a process that does not exist gave no error")
		}
	})
}
