package main

import (
	"context"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"

	"github.com/nsn-run/nsn-run/internal/shimfront"
)

// joinPatience bounds the dial that decides whether a group's shim still
// runs: long enough that no CPU starvation short of a hung host makes a
// live shim look dead, short against containerd's own wait for `start`.
const joinPatience = 5 * time.Second

// nsnShim is containerd's runc shim manager with nsn-shim's two changes:
// a start that joins a group's running shim whenever one listens on the
// group's socket (Start, here), and a delete that skips runc when runc has
// already forgotten the container (Stop, stop.go). nsn-shim (the front)
// does both itself in their usual cases; nsn-shimd's run when the front
// hands a `start` or `delete` over.
type nsnShim struct {
	shim.Shim
}

func (p *nsnShim) Start(ctx context.Context, params *bootapi.BootstrapParams) (*bootapi.BootstrapResult, error) {
	addr, err := groupSocket(ctx, params, "config.json")
	if err != nil {
		return nil, err
	}
	if addr != "" && shimfront.Listening(addr, joinPatience) {
		// What containerd's start returns when it finds the shim.
		return &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc", Address: addr}, nil
	}
	return p.Shim.Start(ctx, params)
}

// groupSocket is the socket address of the shim group the bundle's spec
// (the file specPath, in the bundle containerd starts the shim in) names,
// computed as containerd's start does; "" if the task is in no group.
func groupSocket(ctx context.Context, params *bootapi.BootstrapParams, specPath string) (string, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	group, grouped, err := shimfront.Grouping(specPath, params.GetInstanceID())
	if err != nil || !grouped {
		return "", err
	}
	dir := params.GetSocketDir()
	if dir == "" {
		dir = shimfront.DefaultSocketDir
	}
	return shimfront.SocketAddress(dir, params.GetContainerdGrpcAddress(), ns, group), nil
}
