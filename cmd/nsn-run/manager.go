package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/nsn-run/nsn-run/gpu"
	"github.com/nsn-run/nsn-run/gpu/nvmlusage"
	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/node"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/docker"
)

// nodeOptions are the global flags as node.Options: the CLI opens its
// Manager exactly as a node agent does.
func (g *globalOptions) nodeOptions() node.Options {
	return node.Options{
		Backend: g.backend, Address: g.address, Namespace: g.namespace, DockerHost: dockerHost(),
		StateDir: g.stateDir, CDISpecDirs: g.cdiSpecDirs,
		UserNamespaces: runtime.UserNSMode(g.userns), AllowedRuntimes: g.allowedRuntimes,
	}
}

// openManager opens the node's Manager over the backend the global flags
// select (node.Open), and returns a func that closes it.
func openManager(ctx context.Context, g *globalOptions) (*runtime.Manager, func(), error) {
	o := g.nodeOptions()
	var err error
	if o.LoggerBinary, err = shimLogger(); err != nil {
		return nil, nil, err
	}
	gpus, err := node.GPUs(o)
	if err != nil {
		return nil, nil, err
	}
	usage, closeUsage := gpuUsage(gpus)
	o.GPUUsage = usage
	m, err := node.Open(ctx, o)
	if err != nil {
		closeUsage()
		return nil, nil, err
	}
	return m, func() { _ = m.Close(); closeUsage() }, nil
}

// dockerHost is dockerd's address: DOCKER_HOST, as the docker CLI has it.
func dockerHost() string { return envOr("DOCKER_HOST", docker.DefaultHost) }

// shimLogger is the logger containerd's shim runs for each task: the small
// nsn-logger beside this binary (it costs each running task a few MiB less
// than nsn-run itself), else nsn-run itself (its hidden shim-logger
// command).
func shimLogger() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own binary for the shim logger: %w", err)
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return "", fmt.Errorf("find own binary for the shim logger: %w", err)
	}
	if small := filepath.Join(filepath.Dir(self), node.LoggerName); isExecutable(small) {
		return small, nil
	}
	return self, nil
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
	return newLoggerCommand(logs.ShimLoggerCommand, logs.RunShimLogger)
}

// newAttachLoggerCommand is the logger process the Docker backend starts
// for a task (see logs.RunAttachLogger). Hidden: people never run it.
func newAttachLoggerCommand() *cobra.Command {
	return newLoggerCommand(logs.AttachLoggerCommand, logs.RunAttachLogger)
}

// newLoggerCommand is a hidden logger command: `name CONFIG`, run.
func newLoggerCommand(name string, run func(config string) error) *cobra.Command {
	return &cobra.Command{
		Use:    name + " CONFIG",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE:   func(_ *cobra.Command, args []string) error { return run(args[0]) },
	}
}

func isExecutable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0
}
