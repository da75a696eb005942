package mountinfo

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mountinfo")
	data := `22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
38 30 0:35 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,pids
40 30 0:37 /outer /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
91 22 0:50 / /var/lib/nsn\040run/out\134x rw - tmpfs nsn-output rw,size=64k
not a mount line
`
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	mounts, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 4 {
		t.Fatalf("%d mounts, want 4: %+v", len(mounts), mounts)
	}
	pids := mounts[1]
	if pids.MountPoint != "/sys/fs/cgroup/pids" || pids.FSType != "cgroup" || !slices.Contains(pids.SuperOptions, "pids") || pids.Root != "/" {
		t.Errorf("pids hierarchy %+v", pids)
	}
	if mounts[2].Root != "/outer" || mounts[2].FSType != "cgroup2" {
		t.Errorf("cgroup2 mount %+v", mounts[2])
	}
	if got := mounts[3].MountPoint; got != `/var/lib/nsn run/out\x` {
		t.Errorf("escaped mount point read as %q", got)
	}
	if _, err := Read(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("a missing file gave no error")
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:        "/plain",
		`/a\040b`:       "/a b",
		`/tab\011`:      "/tab\t",
		`/end\04`:       `/end\04`, // too short to be an escape
		`/not\999octal`: `/not\999octal`,
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}
