package procstat

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

func TestStartTime(t *testing.T) {
	self, err := StartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if n, err := strconv.ParseUint(self, 10, 64); err != nil || n == 0 {
		t.Fatalf("own start time %q", self)
	}
	// A process started later has a later (or, within one tick, the same)
	// start time; a process that is gone has none.
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child, err := StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := strconv.ParseUint(self, 10, 64)
	b, _ := strconv.ParseUint(child, 10, 64)
	if b < a {
		t.Errorf("child start %d before own %d", b, a)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if _, err := StartTime(cmd.Process.Pid); err == nil {
		t.Error("StartTime of a reaped process succeeded")
	}
}
