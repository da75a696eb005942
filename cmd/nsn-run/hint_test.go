package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/gpu"
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
