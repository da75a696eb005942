package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"

	"github.com/nsn-run/nsn-run/gpu"
	"github.com/nsn-run/nsn-run/gpu/nvmlusage"
	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/runtime/docker"
)

// openManager connects the backend the global flags select and returns a
// Manager over it, and a func to release the connection.
func openManager(ctx context.Context, g *globalOptions) (*runtime.Manager, func(), error) {
	var b interface {
		runtime.Backend
		Close() error
	}
	// One injector over the node's allocation dir: the Manager allocates
	// with it, the backend injects, gc and `gpu ls` see the same grants.
	gpus, err := gpu.New(gpu.Options{SpecDirs: g.cdiSpecDirs, AllocDir: filepath.Join(g.stateDir, "gpus")})
	if err != nil {
		return nil, nil, err
	}
	usage, closeUsage := gpuUsage(gpus)
	switch g.backend {
	case "containerd":
		cb, err := openContainerd(ctx, g, gpus, usage)
		if err != nil {
			closeUsage()
			return nil, nil, err
		}
		b = cb
	case "docker":
		db, err := docker.New(ctx, docker.Config{Host: dockerHost(), CDI: gpus, GPUUsage: usage})
		if err != nil {
			closeUsage()
			return nil, nil, err
		}
		b = db
	default:
		closeUsage()
		return nil, nil, fmt.Errorf("%w: backend %q: want containerd or docker", errdefs.ErrInvalidArgument, g.backend)
	}
	closeAll := func() {
		b.Close()
		closeUsage()
	}
	userns, err := runtime.ParseUserNSMode(g.userns)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	m, err := runtime.New(runtime.Config{Backend: b, StateDir: g.stateDir, AllowedRuntimes: g.allowedRuntimes, GPUs: gpus, UserNamespaces: userns})
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return m, closeAll, nil
}

// dockerHost is dockerd's address: DOCKER_HOST, as the docker CLI has it.
func dockerHost() string { return envOr("DOCKER_HOST", docker.DefaultHost) }

func openContainerd(ctx context.Context, g *globalOptions, gpus *gpu.Injector, usage runtime.GPUUsageSampler) (*containerd.Backend, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own binary for the shim logger: %w", err)
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return nil, fmt.Errorf("find own binary for the shim logger: %w", err)
	}
	// The small nsn-logger beside this binary costs each running task a
	// few MiB less than nsn-run itself as the logger; either works.
	logger := self
	if small := filepath.Join(filepath.Dir(self), "nsn-logger"); isExecutable(small) {
		logger = small
	}
	cfg := containerd.Config{Address: g.address, Namespace: g.namespace, LoggerBinary: logger, CDI: gpus, GPUUsage: usage}
	return containerd.New(ctx, cfg)
}

// gpuUsage is the GPU usage sampler over NVML where the CDI specs define
// GPUs: it samples their memory for stats and --gpu-memory. Without GPUs or
// a driver it is nil, and GPU stats are simply left out. The CLI is where
// NVML is linked and wired in; the backends only know the interface.
func gpuUsage(gpus *gpu.Injector) (runtime.GPUUsageSampler, func()) {
	if len(gpus.GPUs()) == 0 {
		return nil, func() {}
	}
	s, err := nvmlusage.Open()
	if err != nil {
		return nil, func() {}
	}
	return s, func() { _ = s.Close() }
}

// newShimLoggerCommand is the logger process containerd's shim runs for a
// task (see logs.RunShimLogger). Hidden: people never run it.
func newShimLoggerCommand() *cobra.Command {
	return &cobra.Command{
		Use:    logs.ShimLoggerCommand + " CONFIG",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return logs.RunShimLogger(args[0])
		},
	}
}

func isExecutable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0
}
