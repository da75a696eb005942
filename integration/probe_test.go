package integration

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

// TestProbeAttacksBlocked runs each attack of our probe in a container with
// default settings and checks it got nothing, and how the kernel refused.
func TestProbeAttacksBlocked(t *testing.T) {
	m, _ := testManager(t)
	res, err := m.Run(context.Background(), task.Task{ID: uniqueID("probe"), Image: probeRef, Command: []string{"nsn-probe", "all"}}, runtime.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("probe exit %d, stderr %q", res.ExitCode, res.Stderr)
	}
	want := map[string]string{ // attack -> errno ("" : judged by detail)
		"identity":     "",
		"write-root":   "EROFS",
		"write-etc":    "EROFS",
		"mount":        "EPERM",
		"unshare-net":  "EPERM",
		"unshare-user": "EPERM",
		"network":      "ENETUNREACH",
		"mknod":        "EPERM",
		"exec-tmp":     "EACCES",
	}
	seen := map[string]bool{}
	for line := range strings.Lines(res.Stdout) {
		var r struct {
			Attack  string `json:"attack"`
			Blocked bool   `json:"blocked"`
			Errno   string `json:"errno"`
			Detail  string `json:"detail"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("probe line %q: %v", line, err)
		}
		seen[r.Attack] = true
		errno, known := want[r.Attack]
		if !known {
			t.Errorf("unexpected attack %q", r.Attack)
			continue
		}
		if !r.Blocked || r.Errno != errno {
			t.Errorf("%s: blocked=%v errno=%q (%s); want blocked with %q", r.Attack, r.Blocked, r.Errno, r.Detail, errno)
		}
	}
	for a := range want {
		if !seen[a] {
			t.Errorf("attack %s did not report", a)
		}
	}
}
