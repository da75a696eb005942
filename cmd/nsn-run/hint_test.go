package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/gpu"
	"github.com/nsn-run/nsn-run/gpu/cdigen"
	"github.com/nsn-run/nsn-run/runtime"
)

// TestCLIHint: the library's typed errors keep their errdefs kind through
// wrapping, and the CLI names its own command for each; other errors get
// no hint.
func TestCLIHint(t *testing.T) {
	for _, c := range []struct {
		err  error
		kind func(error) bool
		want string
	}{
		{&runtime.TaskExistsError{ID: "job-1"}, errdefs.IsAlreadyExists, " (nsn-run rm job-1)"},
		{&runtime.ImageNotFoundError{Name: "docker.io/library/x:1"}, errdefs.IsNotFound, " (nsn-run image import|pull)"},
		{&runtime.ImageNotFoundError{Name: "docker.io/library/x:1", Docker: true}, errdefs.IsNotFound, " (docker load, or nsn-run --backend docker image import)"},
		{&gpu.NotFoundError{What: "GPU 7", SpecDirs: []string{"/etc/cdi"}}, errdefs.IsNotFound, " (nsn-run doctor lists the GPUs they define)"},
		{&gpu.SharedOnlyError{GPU: "nvidia.com/gpu=0", Sharers: []string{"a"}}, errdefs.IsResourceExhausted, " (run with --gpu-shared to share it)"},
		{&cdigen.HookNotFoundError{Paths: []string{"/usr/bin/nvidia-cdi-hook"}}, errdefs.IsNotFound, " (or nsn-run gpu cdi-generate --no-hooks)"},
		{&runtime.TaskElsewhereError{ID: "job-1", StateDir: "/srv/a"}, errdefs.IsFailedPrecondition, " (nsn-run --state-dir /srv/a)"},
		{&runtime.ImageConflictError{Name: "docker.io/library/x:1", Have: "sha256:1", Archive: "sha256:2"}, errdefs.IsAlreadyExists, " (nsn-run image rm docker.io/library/x:1, or image import --replace)"},
		{errors.Join(&runtime.ImageConflictError{Name: "docker.io/library/x:1"}, errors.New("undo")), errdefs.IsAlreadyExists, " (nsn-run image rm docker.io/library/x:1, or image import --replace)"},
		{&runtime.DaemonNotRunningError{Daemon: "containerd", Socket: "/run/x.sock"}, errdefs.IsUnavailable, " (start it, or point --address / NSN_ADDRESS at its socket)"},
		{&runtime.DaemonNotRunningError{Daemon: "dockerd", Socket: "/run/d.sock"}, errdefs.IsUnavailable, " (start it, or point DOCKER_HOST at its socket)"},
		{fmt.Errorf("start: %w", errdefs.ErrAlreadyExists), errdefs.IsAlreadyExists, ""},
	} {
		wrapped := fmt.Errorf("run task: %w", c.err)
		if !c.kind(wrapped) {
			t.Errorf("%v: lost its errdefs kind when wrapped", c.err)
		}
		if got := cliHint(wrapped); got != c.want {
			t.Errorf("cliHint(%v) = %q, want %q", c.err, got, c.want)
		}
	}
	if got := cliHint(errors.New("other")); got != "" {
		t.Errorf("cliHint of a plain error = %q", got)
	}
}
