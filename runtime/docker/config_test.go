package docker

import (
	"context"
	"math"
	"testing"

	"github.com/containerd/errdefs"
)

// TestNewRefusesLoggerCPUs: a loggers' quota outside the kernel's range
// (0.01 to 1024 CPUs, as a task's --cpus) is refused before any daemon
// is dialled, not at every start.
func TestNewRefusesLoggerCPUs(t *testing.T) {
	for _, cpus := range []float64{-1, math.NaN(), math.Inf(1), 0.001, 0.005, 1025, 1e9} {
		_, err := New(context.Background(), Config{LoggerCPUs: cpus, LoggerBinary: "/bin/sh", Host: "unix:///nonexistent/docker.sock"})
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("LoggerCPUs %v: %v, want invalid argument", cpus, err)
		}
	}
}
