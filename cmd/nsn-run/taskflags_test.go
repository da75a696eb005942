package main

import (
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/spf13/pflag"

	"github.com/nsn-run/nsn-run/task"
)

func parseTask(t *testing.T, argv ...string) (task.Task, error) {
	t.Helper()
	f := &taskFlags{}
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.SetInterspersed(false)
	f.register(fs)
	if err := fs.Parse(argv); err != nil {
		return task.Task{}, err
	}
	return f.task(fs.Args())
}

func TestTaskFromFlags(t *testing.T) {
	tk, err := parseTask(t, "--id", "j1", "--memory", "256m", "--cpus", "0.5", "--pids", "64",
		"--timeout", "30s", "--grace", "2s", "-e", "A=1", "-e", "B=2", "--tmpfs-size", "8m",
		"--user", "1000:1000", "-w", "/work", "busybox:latest", "--", "sh", "-c", "echo --memory")
	if err != nil {
		t.Fatal(err)
	}
	l := tk.Limits
	if tk.ID != "j1" || l.MemoryBytes != 256<<20 || l.CPUs != 0.5 || l.Pids != 64 || l.Timeout != 30*time.Second ||
		l.Grace != 2*time.Second || l.TmpBytes != 8<<20 || tk.User != "1000:1000" || tk.WorkingDir != "/work" {
		t.Errorf("task = %+v", tk)
	}
	if got := strings.Join(tk.Command, "|"); got != "sh|-c|echo --memory" {
		t.Errorf("command = %q: flags after IMAGE must belong to the command", got)
	}
	if strings.Join(tk.Env, ",") != "A=1,B=2" {
		t.Errorf("env = %v", tk.Env)
	}
}

func TestTaskFromFlagsWithoutDashDash(t *testing.T) {
	tk, err := parseTask(t, "busybox", "ls", "-l")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(tk.Command, " ") != "ls -l" {
		t.Errorf("command = %v", tk.Command)
	}
	if task.ValidateID(tk.ID) != nil {
		t.Errorf("generated id %q is not valid", tk.ID)
	}
	other, _ := parseTask(t, "busybox", "ls")
	if other.ID == tk.ID {
		t.Error("two generated ids are equal")
	}
}

func TestTaskFlagErrors(t *testing.T) {
	for _, argv := range [][]string{
		{"--memory", "lots", "busybox", "true"},
		{"--memory", "-5m", "busybox", "true"},
		{"--tmpfs-size", "0", "busybox", "true"},
		{"--cpus", "-1", "busybox", "true"},
		{"busybox"},
		{"busybox", "--"},
		{},
		{"-e", "NVIDIA_VISIBLE_DEVICES=all", "busybox", "true"},
	} {
		_, err := parseTask(t, argv...)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: error %v, want invalid argument", argv, err)
		}
	}
	// A size past int64 wraps around in go-units: it is too large, not
	// negative.
	if _, err := parseTask(t, "--gpu-memory", "9999999999999999999999", "busybox", "true"); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "too large") {
		t.Errorf("an overflowing size: %v, want too large", err)
	}
}

func TestExitCodes(t *testing.T) {
	if exitCode(nil) != 0 {
		t.Error("nil error is not exit 0")
	}
	if exitCode(errdefs.ErrNotFound) != exitFailure {
		t.Error("nsn-run's own failure is not 125")
	}
	if exitCode(&exitError{code: auditFindings}) != 1 {
		t.Error("exitError code not passed through")
	}
}

// TestAllowedRuntimeFlag: --allowed-runtime defaults to NSN_ALLOWED_RUNTIMES
// split at commas; the flag, repeated, replaces it.
func TestAllowedRuntimeFlag(t *testing.T) {
	t.Setenv("NSN_ALLOWED_RUNTIMES", "io.containerd.runc.v2, io.containerd.runsc.v1,,")
	root := newRootCommand()
	got, err := root.PersistentFlags().GetStringArray("allowed-runtime")
	if err != nil || strings.Join(got, "|") != "io.containerd.runc.v2|io.containerd.runsc.v1" {
		t.Errorf("from the env: %q, %v", got, err)
	}
	root = newRootCommand()
	if err := root.PersistentFlags().Parse([]string{"--allowed-runtime", "a.v1", "--allowed-runtime", "b.v2"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := root.PersistentFlags().GetStringArray("allowed-runtime"); strings.Join(got, "|") != "a.v1|b.v2" {
		t.Errorf("from the flags: %q", got)
	}
	t.Setenv("NSN_ALLOWED_RUNTIMES", "")
	if got, _ := newRootCommand().PersistentFlags().GetStringArray("allowed-runtime"); len(got) != 0 {
		t.Errorf("unset: %q, want none (the Manager's default)", got)
	}
}

// TestZeroLimitsRefused: a limit given as 0 is refused, not taken for the
// default (an outside review's --timeout 0 ran with the default hour).
func TestZeroLimitsRefused(t *testing.T) {
	for _, flag := range []string{"--cpus", "--pids", "--open-files", "--tmpfs-inodes", "--output-files", "--timeout", "--grace", "--cpu-time"} {
		zero := "0"
		if flag == "--timeout" || flag == "--grace" || flag == "--cpu-time" {
			zero = "0s"
		}
		_, err := parseTask(t, flag, zero, "busybox", "true")
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), flag+" 0: must be positive") {
			t.Errorf("%s %s: %v; want refused", flag, zero, err)
		}
	}
	if _, err := parseTask(t, "busybox", "true"); err != nil {
		t.Errorf("no limits given: %v", err)
	}
}
