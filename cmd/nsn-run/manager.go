package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"

	"github.com/nsn-run/nsn-run/cdi"
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
	gpus, err := cdi.New(cdi.Options{SpecDirs: g.cdiSpecDirs, AllocDir: filepath.Join(g.stateDir, "gpus")})
	if err != nil {
		return nil, nil, err
	}
	switch g.backend {
	case "containerd":
		cb, err := openContainerd(ctx, g, gpus)
		if err != nil {
			return nil, nil, err
		}
		b = cb
	case "docker":
		db, err := docker.New(ctx, docker.Config{Host: dockerHost(), CDI: gpus, NVML: gpuNVML(gpus)})
		if err != nil {
			return nil, nil, err
		}
		b = db
	default:
		return nil, nil, fmt.Errorf("%w: backend %q: want containerd or docker", errdefs.ErrInvalidArgument, g.backend)
	}
	userns, err := runtime.ParseUserNSMode(g.userns)
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	m, err := runtime.New(runtime.Config{Backend: b, StateDir: g.stateDir, AllowedRuntimes: g.allowedRuntimes, GPUs: gpus, UserNamespaces: userns})
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	return m, func() { b.Close() }, nil
}

// dockerHost is dockerd's address: DOCKER_HOST, as the docker CLI has it.
func dockerHost() string { return envOr("DOCKER_HOST", docker.DefaultHost) }

func openContainerd(ctx context.Context, g *globalOptions, gpus *cdi.Injector) (*containerd.Backend, error) {
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
	cfg := containerd.Config{Address: g.address, Namespace: g.namespace, LoggerBinary: logger, CDI: gpus, NVML: gpuNVML(gpus)}
	return containerd.New(ctx, cfg)
}

// gpuNVML is NVML, initialised, where the CDI specs define GPUs: it samples
// their memory for stats and --gpu-memory. Without GPUs or a driver it is
// nil, and GPU stats are simply left out.
func gpuNVML(gpus *cdi.Injector) nvml.Interface {
	if len(gpus.GPUs()) == 0 {
		return nil
	}
	if lib := nvml.New(); lib.Init() == nvml.SUCCESS {
		return lib
	}
	return nil
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
