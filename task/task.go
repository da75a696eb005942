// Package task holds the plain data every layer of nsn-run shares: the Task a
// node agent asks to run, its Limits and GPU request, and the Result and Stats
// it gets back. It has no dependency on any daemon; Validate is the first gate
// every task passes before anything is created on the host.
package task

import (
	"time"
)

// DefaultRuntime is the containerd runtime (shim) tasks run under unless the
// Task names another.
const DefaultRuntime = "io.containerd.runc.v2"

// Task is one job to run in an isolated container.
type Task struct {
	// ID names the task and everything created for it. It must match
	// [a-z0-9][a-z0-9_.-]{0,62} and contain no "..".
	ID string `json:"id"`
	// Image is a reference such as "alpine:latest" or a digest pin; it is
	// normalised the way Docker and containerd do ("docker.io/library/...").
	Image string `json:"image"`
	// Command is the argv to run. It is appended to the image's Entrypoint
	// (Docker semantics); the image's Cmd is replaced.
	Command []string `json:"command"`
	// Env is a list of KEY=VALUE entries layered over the image's Env.
	Env []string `json:"env,omitempty"`
	// WorkingDir overrides the image's WorkingDir; absolute, without "..".
	WorkingDir string `json:"working_dir,omitempty"`
	// User is "UID" or "UID:GID", numeric. Empty takes the image's numeric
	// non-root user, else 65534:65534. UID 0 is refused.
	User string `json:"user,omitempty"`
	// Limits bound what the task may use. Zero fields take the defaults.
	Limits Limits `json:"limits"`
	// GPUs is the GPU request: "" (none), "all", a count "N", or a comma
	// separated list of indices, GPU UUIDs or MIG device UUIDs.
	GPUs string `json:"gpus,omitempty"`
	// GPUShared lets the task's GPUs be shared with other tasks that set
	// it too; by default a task's GPUs are its own. Shared GPUs offer no
	// isolation between the tasks (memory, faults, timing): an opt-in for
	// trusted or cooperative jobs. MIG devices are the isolated way to
	// split a GPU.
	GPUShared bool `json:"gpu_shared,omitempty"`
	// Init runs nsn-init as the task's pid 1, with Command as its child:
	// it forwards signals (so the deadline's SIGTERM ends a command with
	// no handler of its own) and reaps zombies. Docker's --init.
	Init bool `json:"init,omitempty"`
	// Runtime is the containerd runtime name; empty means DefaultRuntime.
	Runtime string `json:"runtime,omitempty"`
}

// Limits bound a task's resources. A zero value means "use the default" (see
// Defaults); negative values are invalid.
type Limits struct {
	MemoryBytes int64   `json:"memory_bytes,omitempty"`
	CPUs        float64 `json:"cpus,omitempty"`
	Pids        int64   `json:"pids,omitempty"`
	OpenFiles   int64   `json:"open_files,omitempty"`
	// TmpBytes and TmpInodes size the /tmp tmpfs. Its pages are charged to
	// the task's memory cgroup, so it cannot exceed the memory limit in use.
	TmpBytes  int64 `json:"tmp_bytes,omitempty"`
	TmpInodes int64 `json:"tmp_inodes,omitempty"`
	// OutputBytes and OutputFiles size /output: the kernel refuses writes
	// beyond them (ENOSPC), and collection copies no more. /output is a
	// tmpfs, so what the task writes there also counts against its memory.
	OutputBytes int64         `json:"output_bytes,omitempty"`
	OutputFiles int64         `json:"output_files,omitempty"`
	Timeout     time.Duration `json:"timeout,omitempty"`
	// Grace is the time between SIGTERM and SIGKILL at the deadline.
	Grace time.Duration `json:"grace,omitempty"`
	// CPUTime, if set, limits the CPU time all the task's processes may use
	// together (as judges like isolate do); 0 means no such limit.
	CPUTime time.Duration `json:"cpu_time,omitempty"`
	// GPUMemoryBytes, if set, limits the GPU memory the task's processes
	// may hold together; over it they are killed (reason
	// gpu_memory_exceeded). Enforced by sampling NVML: see
	// docs/security-model.md for its precision.
	GPUMemoryBytes int64 `json:"gpu_memory_bytes,omitempty"`
}

// Size units used by limits.
const (
	KiB int64 = 1 << 10
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
	TiB int64 = 1 << 40
)

// Defaults are the limits a task gets for every field it leaves at zero.
var Defaults = Limits{
	MemoryBytes: 512 * MiB,
	CPUs:        1,
	Pids:        1024,
	OpenFiles:   1024,
	TmpBytes:    64 * MiB,
	TmpInodes:   16384,
	OutputBytes: 64 * MiB,
	OutputFiles: 1024,
	Timeout:     time.Hour,
	Grace:       10 * time.Second,
}

// WithDefaults returns a copy of t whose zero limits and runtime are filled in
// from Defaults and DefaultRuntime.
func (t Task) WithDefaults() Task {
	l := &t.Limits
	if l.MemoryBytes == 0 {
		l.MemoryBytes = Defaults.MemoryBytes
	}
	if l.CPUs == 0 {
		l.CPUs = Defaults.CPUs
	}
	if l.Pids == 0 {
		l.Pids = Defaults.Pids
	}
	if l.OpenFiles == 0 {
		l.OpenFiles = Defaults.OpenFiles
	}
	if l.TmpBytes == 0 {
		l.TmpBytes = Defaults.TmpBytes
	}
	if l.TmpInodes == 0 {
		l.TmpInodes = Defaults.TmpInodes
	}
	if l.OutputBytes == 0 {
		l.OutputBytes = Defaults.OutputBytes
	}
	if l.OutputFiles == 0 {
		l.OutputFiles = Defaults.OutputFiles
	}
	if l.Timeout == 0 {
		l.Timeout = Defaults.Timeout
	}
	if l.Grace == 0 {
		l.Grace = Defaults.Grace
	}
	if t.Runtime == "" {
		t.Runtime = DefaultRuntime
	}
	return t
}
