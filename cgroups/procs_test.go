package cgroups

import (
	"os"
	"os/exec"
	"slices"
	"testing"
)

// TestPidsInCgroupOf: this test process's cgroup holds this process and a
// child it starts (a child inherits its parent's cgroup).
func TestPidsInCgroupOf(t *testing.T) {
	child := exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	pids, err := PidsInCgroupOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []int{os.Getpid(), child.Process.Pid} {
		if !slices.Contains(pids, uint32(want)) {
			t.Errorf("pid %d not among %v", want, pids)
		}
	}
}
