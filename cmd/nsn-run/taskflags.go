package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/go-units"
	"github.com/spf13/pflag"

	"github.com/nsn-run/nsn-run/task"
)

// taskFlags are the flags `run` and `spec` share: everything that shapes the
// task and so its spec.
type taskFlags struct {
	id          string
	memory      string
	cpus        float64
	pids        int64
	openFiles   int64
	tmpfsSize   string
	tmpfsInodes int64
	outputSize  string
	outputFiles int64
	timeout     time.Duration
	grace       time.Duration
	cpuTime     time.Duration
	gpuMemory   string
	gpus        string
	gpuShared   bool
	init        bool
	env         []string
	workdir     string
	user        string
	runtime     string
	outputDir   string
	// flags is the set register filled, to tell a limit given as 0 from
	// one left out.
	flags *pflag.FlagSet
}

func (f *taskFlags) register(fs *pflag.FlagSet) {
	f.flags = fs
	fs.StringVar(&f.id, "id", "", "task id, [a-z0-9][a-z0-9_.-]{0,62} (default: generated)")
	fs.StringVar(&f.memory, "memory", "", "memory limit, e.g. 512m, 2g; swap is not allowed (default 512m)")
	fs.Float64Var(&f.cpus, "cpus", 0, "CPU limit as a fraction of one CPU, e.g. 0.5 (default 1)")
	fs.Int64Var(&f.pids, "pids", 0, "limit on processes and threads (default 1024)")
	fs.Int64Var(&f.openFiles, "open-files", 0, "RLIMIT_NOFILE, soft and hard (default 1024)")
	fs.StringVar(&f.tmpfsSize, "tmpfs-size", "", "size of the /tmp tmpfs, counted against memory (default 64m)")
	fs.Int64Var(&f.tmpfsInodes, "tmpfs-inodes", 0, "inode limit of the /tmp tmpfs (default 16384)")
	fs.StringVar(&f.outputSize, "output-size", "", "size of /output, a tmpfs counted against memory; writes beyond it fail with ENOSPC (default 64m)")
	fs.Int64Var(&f.outputFiles, "output-files", 0, "cap on files and directories in /output (default 1024)")
	fs.DurationVar(&f.timeout, "timeout", 0, "wall-clock limit; the task is stopped at the deadline (default 1h)")
	fs.DurationVar(&f.grace, "grace", 0, "time between SIGTERM and SIGKILL at the deadline (default 10s)")
	fs.DurationVar(&f.cpuTime, "cpu-time", 0, "limit on CPU time of all the task's processes together; over it they are killed (default: none)")
	fs.StringVar(&f.gpuMemory, "gpu-memory", "", "limit on GPU memory the task's processes hold together, e.g. 8g; over it they are killed (checked every 100 ms through NVML; refused where NVML does not load)")
	fs.StringVar(&f.gpus, "gpus", "", "GPUs: all, a count N, or device=ID[,ID] / ID,ID (indices, MIG indices GPU:MIG, GPU-/MIG- UUIDs)")
	fs.BoolVar(&f.init, "init", false, "run nsn-init as the task's pid 1: it forwards signals to the command (so the deadline's SIGTERM ends a command without a handler of its own) and reaps zombies")
	fs.BoolVar(&f.gpuShared, "gpu-shared", false, "let other --gpu-shared tasks use the same GPUs at once (no isolation between them; default: the GPUs are this task's alone)")
	fs.StringArrayVarP(&f.env, "env", "e", nil, "environment variable KEY=VALUE (repeatable)")
	fs.StringVarP(&f.workdir, "workdir", "w", "", "working directory inside the container (default: the image's, else /)")
	fs.StringVar(&f.user, "user", "", "numeric UID[:GID] to run as; 0 is refused, and so is an id in the per-task host ranges (1048576 and up) for a task sharing host ids (docker, --user-namespaces off) (default: the image's numeric non-root user, else 65534:65534)")
	fs.StringVar(&f.runtime, "runtime", "", "containerd runtime name (default "+task.DefaultRuntime+")")
	fs.StringVar(&f.outputDir, "output-dir", "", "host directory to copy the files the task writes to /output into")
}

// task builds the Task from the flags and IMAGE [--] CMD [ARG...].
func (f *taskFlags) task(args []string) (task.Task, error) {
	if len(args) == 0 {
		return task.Task{}, fmt.Errorf("%w: missing IMAGE and command", errdefs.ErrInvalidArgument)
	}
	cmd := args[1:]
	if len(cmd) > 0 && cmd[0] == "--" {
		cmd = cmd[1:]
	}
	t := task.Task{
		ID:         f.id,
		Image:      args[0],
		Command:    cmd,
		Env:        f.env,
		WorkingDir: f.workdir,
		User:       f.user,
		GPUs:       f.gpus,
		GPUShared:  f.gpuShared,
		Init:       f.init,
		Runtime:    f.runtime,
		Limits: task.Limits{
			CPUs:        f.cpus,
			Pids:        f.pids,
			OpenFiles:   f.openFiles,
			TmpInodes:   f.tmpfsInodes,
			OutputFiles: f.outputFiles,
			Timeout:     f.timeout,
			Grace:       f.grace,
			CPUTime:     f.cpuTime,
		},
	}
	// A limit of 0 is the library's "default"; given on the command line
	// it would silently be 1h or 1024 (an outside review ran with
	// --timeout 0 and got the hour): refused, as sizes of 0 are.
	for _, l := range []struct {
		name string
		zero bool
	}{{"cpus", f.cpus == 0}, {"pids", f.pids == 0}, {"open-files", f.openFiles == 0}, {"tmpfs-inodes", f.tmpfsInodes == 0},
		{"output-files", f.outputFiles == 0}, {"timeout", f.timeout == 0}, {"grace", f.grace == 0}, {"cpu-time", f.cpuTime == 0}} {
		if l.zero && f.flags != nil && f.flags.Changed(l.name) {
			return task.Task{}, fmt.Errorf("%w: --%s 0: must be positive (leave the flag out for the default)", errdefs.ErrInvalidArgument, l.name)
		}
	}
	var err error
	if t.Limits.MemoryBytes, err = parseSize("memory", f.memory); err != nil {
		return task.Task{}, err
	}
	if t.Limits.TmpBytes, err = parseSize("tmpfs-size", f.tmpfsSize); err != nil {
		return task.Task{}, err
	}
	if t.Limits.OutputBytes, err = parseSize("output-size", f.outputSize); err != nil {
		return task.Task{}, err
	}
	if t.Limits.GPUMemoryBytes, err = parseSize("gpu-memory", f.gpuMemory); err != nil {
		return task.Task{}, err
	}
	if t.ID == "" {
		t.ID = task.NewID()
	}
	if err := t.Validate(); err != nil {
		return task.Task{}, err
	}
	return t, nil
}

// parseSize reads a size with Docker's binary units (512m = 512 MiB); empty
// means "default" and gives 0.
func parseSize(flag, s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := units.RAMInBytes(s)
	if err != nil {
		return 0, fmt.Errorf("%w: --%s %q: want a size such as 512m or 2g", errdefs.ErrInvalidArgument, flag, s)
	}
	if n < 0 && !strings.HasPrefix(strings.TrimSpace(s), "-") {
		// units.RAMInBytes wraps a size past int64 around.
		return 0, fmt.Errorf("%w: --%s %q: too large", errdefs.ErrInvalidArgument, flag, s)
	}
	if n <= 0 {
		return 0, fmt.Errorf("%w: --%s %q: must be positive", errdefs.ErrInvalidArgument, flag, s)
	}
	return n, nil
}
