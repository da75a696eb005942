package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/task"
)

// envHelper makes the test binary a helper process instead of running the
// tests: a manager that a test can watch die.
const envHelper = "NSN_TEST_HELPER"

// helperReleaseThenDie is the helper that runs one task with the release
// in the background, prints its Result and kills itself with SIGKILL at
// once, its release in flight.
const helperReleaseThenDie = "release-then-die"

func TestMain(m *testing.M) {
	if os.Getenv(envHelper) == helperReleaseThenDie {
		if err := releaseThenDie(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

func releaseThenDie() error {
	ctx := context.Background()
	b, err := containerd.New(ctx, containerd.Config{Address: os.Getenv("NSN_HELPER_ADDRESS"), Namespace: testNamespace, LoggerBinary: os.Getenv("NSN_HELPER_LOGGER")})
	if err != nil {
		return err
	}
	m, err := runtime.New(runtime.Config{Backend: b, StateDir: os.Getenv("NSN_HELPER_STATE"), ReleaseInBackground: true})
	if err != nil {
		return err
	}
	res, err := m.Run(ctx, task.Task{ID: os.Getenv("NSN_HELPER_ID"), Image: "busybox:latest", Command: []string{"echo", "ok"}}, runtime.RunOptions{})
	if err != nil {
		return err
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return err
	}
	return syscall.Kill(os.Getpid(), syscall.SIGKILL)
}
