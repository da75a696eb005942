package task

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func validTask() Task {
	return Task{ID: "job-1", Image: "alpine:latest", Command: []string{"echo", "hello"}}
}

func TestValidateAcceptsGoodTasks(t *testing.T) {
	for name, mutate := range map[string]func(*Task){
		"minimal":         func(*Task) {},
		"defaults":        func(t *Task) { *t = t.WithDefaults() },
		"digest pin":      func(t *Task) { t.Image = "alpine@sha256:" + strings.Repeat("a", 64) },
		"registry":        func(t *Task) { t.Image = "127.0.0.1:5000/team/img:v1.2" },
		"max length id":   func(t *Task) { t.ID = strings.Repeat("a", 63) },
		"dots in id":      func(t *Task) { t.ID = "a.b_c-d" },
		"env":             func(t *Task) { t.Env = []string{"A=1", "_B=", "C_2=x=y"} },
		"workdir":         func(t *Task) { t.WorkingDir = "/work/dir" },
		"user":            func(t *Task) { t.User = "1000:1000" },
		"uid only":        func(t *Task) { t.User = "1000" },
		"gpus all":        func(t *Task) { t.GPUs = "all" },
		"gpus count":      func(t *Task) { t.GPUs = "2" },
		"gpus indices":    func(t *Task) { t.GPUs = "0,2" },
		"gpus device=":    func(t *Task) { t.GPUs = "device=1" },
		"gpus uuid":       func(t *Task) { t.GPUs = "GPU-8a7c7f3e-1b2c-4d5e-8f90-123456789abc" },
		"gpus mig":        func(t *Task) { t.GPUs = "MIG-4f5e6d7c-1111-2222-3333-444455556666" },
		"gpus shared":     func(t *Task) { t.GPUs, t.GPUShared = "1", true },
		"fractional cpu":  func(t *Task) { t.Limits.CPUs = 0.25 },
		"runtime":         func(t *Task) { t.Runtime = "io.containerd.runsc.v1" },
		"longest runtime": func(t *Task) { t.Runtime = strings.Repeat("r", 128) },
		"longest uuid":    func(t *Task) { t.GPUs = "GPU-" + strings.Repeat("a", 128) },
		"cuda env":        func(t *Task) { t.Env = []string{"CUDA_VISIBLE_DEVICES=0", "NVIDIA_STANDIN=1"} },
	} {
		t.Run(name, func(t *testing.T) {
			tk := validTask()
			mutate(&tk)
			if err := tk.Validate(); err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
		})
	}
}

// TestNewID: generated ids are valid task ids and differ.
func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := NewID()
		if err := ValidateID(id); err != nil || !strings.HasPrefix(id, "t-") || len(id) != 14 {
			t.Fatalf("NewID() = %q (%v), want t- and 12 hex digits, valid", id, err)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestValidateRejects(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Task)
		want   string
	}{
		{"empty id", func(t *Task) { t.ID = "" }, "task id is empty"},
		{"upper case id", func(t *Task) { t.ID = "Job" }, "must match"},
		{"slash in id", func(t *Task) { t.ID = "a/b" }, "must match"},
		{"dotdot id", func(t *Task) { t.ID = "a..b" }, `must not contain ".."`},
		{"bare dotdot id", func(t *Task) { t.ID = ".." }, `must not contain ".."`},
		{"leading dash id", func(t *Task) { t.ID = "-a" }, "must match"},
		{"too long id", func(t *Task) { t.ID = strings.Repeat("a", 64) }, "longer than 63"},
		{"too long runtime", func(t *Task) { t.Runtime = strings.Repeat("r", 129) }, "must be a runtime name"},
		{"too long uuid", func(t *Task) { t.GPUs = "MIG-" + strings.Repeat("a", 129) }, "is not a GPU index"},
		{"empty image", func(t *Task) { t.Image = "" }, "image reference is empty"},
		{"bad image", func(t *Task) { t.Image = "Alpine:latest" }, "image reference"},
		{"bad image chars", func(t *Task) { t.Image = "alpine:la test" }, "image reference"},
		{"no command", func(t *Task) { t.Command = nil }, "command is empty"},
		{"empty argv0", func(t *Task) { t.Command = []string{""} }, "command is empty"},
		{"nul in arg", func(t *Task) { t.Command = []string{"echo", "a\x00b"} }, "NUL"},
		{"env no equals", func(t *Task) { t.Env = []string{"FOO"} }, "want KEY=VALUE"},
		{"env bad key", func(t *Task) { t.Env = []string{"1FOO=x"} }, "env key"},
		{"env dash key", func(t *Task) { t.Env = []string{"FOO-BAR=x"} }, "env key"},
		{"env empty key", func(t *Task) { t.Env = []string{"=x"} }, "env key"},
		{"env nul value", func(t *Task) { t.Env = []string{"FOO=a\x00b"} }, "NUL"},
		{"relative workdir", func(t *Task) { t.WorkingDir = "work" }, "absolute"},
		{"dotdot workdir", func(t *Task) { t.WorkingDir = "/work/../etc" }, "clean path"},
		{"proc workdir", func(t *Task) { t.WorkingDir = "/proc/self/fd/7" }, "under /proc"},
		{"root user", func(t *Task) { t.User = "0" }, "not allowed"},
		{"root group", func(t *Task) { t.User = "1000:0" }, "not allowed"},
		{"named user", func(t *Task) { t.User = "nobody" }, "numeric"},
		{"huge uid", func(t *Task) { t.User = "99999999999" }, "out of range"},
		{"negative memory", func(t *Task) { t.Limits.MemoryBytes = -1 }, "memory -1: must not be negative"},
		{"timeout in nanoseconds", func(t *Task) { t.Limits.Timeout = 1 }, "timeout 1ns: must be between 1s and 720h0m0s"},
		{"negative timeout", func(t *Task) { t.Limits.Timeout = -time.Second }, "timeout -1s: must not be negative"},
		{"tiny memory", func(t *Task) { t.Limits.MemoryBytes = 1024 }, "memory 1024"},
		{"absurd memory", func(t *Task) { t.Limits.MemoryBytes = 1 << 50 }, "memory"},
		{"negative cpus", func(t *Task) { t.Limits.CPUs = -0.5 }, "cpus"},
		{"tiny cpus", func(t *Task) { t.Limits.CPUs = 0.001 }, "cpus"},
		{"absurd cpus", func(t *Task) { t.Limits.CPUs = 5000 }, "cpus"},
		{"nan cpus", func(t *Task) { t.Limits.CPUs = math.NaN() }, "cpus"},
		{"negative pids", func(t *Task) { t.Limits.Pids = -5 }, "pids limit"},
		{"absurd pids", func(t *Task) { t.Limits.Pids = 1 << 40 }, "pids limit"},
		{"absurd open files", func(t *Task) { t.Limits.OpenFiles = 1 << 30 }, "open files"},
		{"tiny tmp", func(t *Task) { t.Limits.TmpBytes = 10 }, "tmp size"},
		{"negative tmp inodes", func(t *Task) { t.Limits.TmpInodes = -1 }, "tmp inodes"},
		{"negative output", func(t *Task) { t.Limits.OutputBytes = -1 }, "output size"},
		{"negative timeout", func(t *Task) { t.Limits.Timeout = -time.Second }, "timeout"},
		{"sub-second timeout", func(t *Task) { t.Limits.Timeout = time.Millisecond }, "timeout"},
		{"absurd timeout", func(t *Task) { t.Limits.Timeout = 365 * 24 * time.Hour }, "timeout"},
		{"absurd grace", func(t *Task) { t.Limits.Grace = 2 * time.Hour }, "grace"},
		{"gpu count zero", func(t *Task) { t.GPUs = "0," }, "not a GPU index"},
		{"gpu count huge", func(t *Task) { t.GPUs = "1000" }, "count must be between"},
		{"gpu junk", func(t *Task) { t.GPUs = "some" }, "not a GPU index"},
		{"gpu duplicate", func(t *Task) { t.GPUs = "1,1" }, "given twice"},
		{"gpu path", func(t *Task) { t.GPUs = "device=../../dev/sda" }, "not a GPU index"},
		{"gpu shared alone", func(t *Task) { t.GPUShared = true }, "set without gpus"},
		{"gpu mig index open", func(t *Task) { t.GPUs = "0:" }, "not a GPU index"},
		{"gpu mig index no gpu", func(t *Task) { t.GPUs = ":1" }, "not a GPU index"},
		{"gpu mig index deep", func(t *Task) { t.GPUs = "0:1:2" }, "not a GPU index"},
		{"runtime path", func(t *Task) { t.Runtime = "/usr/bin/evil" }, "runtime"},
		{"nvidia visible devices", func(t *Task) { t.Env = []string{"A=1", "NVIDIA_VISIBLE_DEVICES=all"} }, "env NVIDIA_VISIBLE_DEVICES: selects NVIDIA devices"},
		{"nvidia visible devices empty", func(t *Task) { t.Env = []string{"NVIDIA_VISIBLE_DEVICES="} }, "env NVIDIA_VISIBLE_DEVICES"},
		{"nvidia driver capabilities", func(t *Task) { t.Env = []string{"NVIDIA_DRIVER_CAPABILITIES=all"} }, "env NVIDIA_DRIVER_CAPABILITIES"},
		{"nvidia require", func(t *Task) { t.Env = []string{"NVIDIA_REQUIRE_CUDA=cuda>=12"} }, "env NVIDIA_REQUIRE_CUDA"},
		{"nvidia mig config", func(t *Task) { t.Env = []string{"NVIDIA_MIG_CONFIG_DEVICES=all"} }, "env NVIDIA_MIG_CONFIG_DEVICES"},
		{"nvidia mig monitor", func(t *Task) { t.Env = []string{"NVIDIA_MIG_MONITOR_DEVICES=all"} }, "env NVIDIA_MIG_MONITOR_DEVICES"},
		{"nvidia imex", func(t *Task) { t.Env = []string{"NVIDIA_IMEX_CHANNELS=all"} }, "env NVIDIA_IMEX_CHANNELS"},
		{"nvidia gds", func(t *Task) { t.Env = []string{"NVIDIA_GDS=enabled"} }, "env NVIDIA_GDS"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tk := validTask()
			c.mutate(&tk)
			err := tk.Validate()
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("error %q is not errdefs.ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is more than one line", err)
			}
		})
	}
}

func TestWithDefaultsFillsOnlyZeroFields(t *testing.T) {
	tk := validTask()
	tk.Limits.MemoryBytes = 256 * MiB
	got := tk.WithDefaults()
	if got.Limits.MemoryBytes != 256*MiB {
		t.Errorf("memory = %d, want the task's 256 MiB kept", got.Limits.MemoryBytes)
	}
	if got.Limits.Pids != Defaults.Pids || got.Limits.CPUs != Defaults.CPUs || got.Runtime != DefaultRuntime {
		t.Errorf("defaults not applied: %+v runtime %q", got.Limits, got.Runtime)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestParseGPURequest(t *testing.T) {
	cases := map[string]GPURequest{
		"":              {},
		"all":           {All: true},
		"3":             {Count: 3},
		"device=2":      {IDs: []string{"2"}},
		"0,2":           {IDs: []string{"0", "2"}},
		"GPU-abc,MIG-d": {IDs: []string{"GPU-abc", "MIG-d"}},
		"0:1":           {IDs: []string{"0:1"}},
		"device=0:1,7":  {IDs: []string{"0:1", "7"}},
	}
	for in, want := range cases {
		got, err := ParseGPURequest(in)
		if err != nil {
			t.Fatalf("ParseGPURequest(%q) = %v", in, err)
		}
		if got.All != want.All || got.Count != want.Count || strings.Join(got.IDs, ",") != strings.Join(want.IDs, ",") {
			t.Errorf("ParseGPURequest(%q) = %+v, want %+v", in, got, want)
		}
		if got.Empty() != (in == "") {
			t.Errorf("ParseGPURequest(%q).Empty() = %v", in, got.Empty())
		}
	}
}

func TestNormalizeImage(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":               "docker.io/library/busybox:latest",
		"alpine:3.20":           "docker.io/library/alpine:3.20",
		"ghcr.io/org/img:v1":    "ghcr.io/org/img:v1",
		"localhost:5000/a/b:c1": "localhost:5000/a/b:c1",
	} {
		got, err := NormalizeImage(in)
		if err != nil || got != want {
			t.Errorf("NormalizeImage(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestIsNVIDIADeviceVar(t *testing.T) {
	for key, want := range map[string]bool{
		"NVIDIA_VISIBLE_DEVICES":     true,
		"NVIDIA_DRIVER_CAPABILITIES": true,
		"NVIDIA_REQUIRE_CUDA":        true,
		"NVIDIA_REQUIRE_ARCH":        true,
		"NVIDIA_MIG_CONFIG_DEVICES":  true,
		"NVIDIA_MIG_MONITOR_DEVICES": true,
		"NVIDIA_IMEX_CHANNELS":       true,
		"NVIDIA_GDS":                 true,
		"NVIDIA_MOFED":               true,
		"NVIDIA_NVSWITCH":            true,
		"NVIDIA_GDRCOPY":             true,
		// Not read by the toolkit: in-process selection, or other names.
		"CUDA_VISIBLE_DEVICES":   false,
		"NVIDIA_STANDIN":         false,
		"NVIDIA_VISIBLE":         false,
		"nvidia_visible_devices": false,
		"NVIDIA_REQUIRE":         false,
		"MY_NVIDIA_GDS":          false,
	} {
		if got := IsNVIDIADeviceVar(key); got != want {
			t.Errorf("IsNVIDIADeviceVar(%q) = %v, want %v", key, got, want)
		}
	}
}
