package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/shim"
)

// groupAnnotation is the runc v2 shim's group annotation (the first of its
// group labels; the other is CRI's sandbox id, which nsn-run never sets).
const groupAnnotation = "io.containerd.runc.v2.group"

// joinPatience bounds the dial that decides whether a group's shim still
// runs: long enough that no CPU starvation short of a hung host makes a
// live shim look dead, short against containerd's own wait for `start`.
const joinPatience = 5 * time.Second

// nsnShim is containerd's runc shim manager with nsn-shim's two changes:
// a start that joins a group's running shim whenever one listens on the
// group's socket (Start, here), and a delete that skips runc when runc has
// already forgotten the container (Stop, stop.go).
type nsnShim struct {
	shim.Shim
}

func (p *nsnShim) Start(ctx context.Context, params *bootapi.BootstrapParams) (*bootapi.BootstrapResult, error) {
	addr, err := groupSocket(ctx, params, "config.json")
	if err != nil {
		return nil, err
	}
	if addr != "" && listening(addr, joinPatience) {
		// What containerd's start returns when it finds the shim.
		return &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc", Address: addr}, nil
	}
	return p.Shim.Start(ctx, params)
}

// groupSocket is the socket address of the shim group the bundle's spec
// (the file specPath, in the bundle containerd starts the shim in) names,
// computed as containerd's start does; "" if the task is in no group.
func groupSocket(ctx context.Context, params *bootapi.BootstrapParams, specPath string) (string, error) {
	b, err := os.ReadFile(specPath)
	if err != nil {
		return "", fmt.Errorf("read spec: %w", err)
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return "", fmt.Errorf("read spec: %w", err)
	}
	group := spec.Annotations[groupAnnotation]
	if group == "" {
		return "", nil
	}
	dir := params.GetSocketDir()
	if dir == "" {
		dir = filepath.Join(defaults.DefaultStateDir, "s")
	}
	return shim.CreateSocketAddress(ctx, dir, params.GetContainerdGrpcAddress(), group, false)
}

// listening reports whether a process may listen on the unix socket at
// addr ("unix://PATH"). Only a refusal or a missing file is an answer of
// no. A dial that finds the listen queue full reached a live listener; one
// that timed out (this process starved of CPU, perhaps before it even
// called connect) is tried once more, with a fresh deadline. Any other
// error is not taken for a dead shim either: containerd's connect will
// meet it too, and fail this one task, where taking a live shim for dead
// would start a second one for the whole group.
func listening(addr string, patience time.Duration) bool {
	path, ok := strings.CutPrefix(addr, "unix://")
	if !ok {
		return false // an abstract socket: containerd's start decides
	}
	for try := 0; ; try++ {
		c, err := net.DialTimeout("unix", path, patience)
		if err == nil {
			c.Close()
			return true
		}
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, fs.ErrNotExist) {
			return false
		}
		var ne net.Error
		if try == 0 && errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		return true
	}
}
