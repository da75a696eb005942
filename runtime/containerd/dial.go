// Package containerd is nsn-run's backend over the containerd v2 client. It
// works against containerd 1.6/1.7 and 2.x daemons.
package containerd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"google.golang.org/grpc"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// pingTimeout bounds the version call Dial makes to prove the daemon answers.
const pingTimeout = 5 * time.Second

// Dial connects to the containerd daemon at address with namespace as the
// default for every call, and proves the daemon answers with a version call:
// the containerd client connects lazily, and a dead socket would otherwise
// surface only at the first real request. The connection encodes every
// call with protoCodec (gRPC's proto codec with buffers sized for specs),
// whatever codec the process registered for "proto": a stub built on it
// must speak protobuf.
func Dial(ctx context.Context, address, namespace string) (*client.Client, error) {
	c, _, err := dial(ctx, address, namespace)
	return c, err
}

// dial is Dial that also returns the daemon's version ("v2.4.2"). Each of
// alongside runs beside the version call, on the same connection and
// under the same bound, and dial returns once they all have: a new
// process's first calls then share the connection's setup instead of
// waiting their turn (a CLI run's New and first task made three calls in
// a row, 4-5 ms, before its spec was built).
func dial(ctx context.Context, address, namespace string, alongside ...func(context.Context, *client.Client)) (*client.Client, string, error) {
	if _, err := os.Stat(address); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, "", &runtime.DaemonNotRunningError{Daemon: "containerd", Socket: address}
		}
		return nil, "", fmt.Errorf("%w: containerd socket %s: %w", errdefs.ErrUnavailable, address, err)
	}
	// Every container names its runtime (runtimeOf): the default runtime
	// would cost the first container of each process a read of the
	// namespace's labels, for a value never used.
	c, err := client.New(address, client.WithDefaultNamespace(namespace), client.WithTimeout(pingTimeout),
		client.WithDefaultRuntime(task.DefaultRuntime), client.WithCallOpts([]grpc.CallOption{forceProtoCodec}))
	if err != nil {
		return nil, "", fmt.Errorf("%w: connect to containerd at %s: %w", errdefs.ErrUnavailable, address, err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, call := range alongside {
		wg.Go(func() { call(pingCtx, c) })
	}
	v, err := c.Version(pingCtx)
	wg.Wait()
	if err != nil {
		c.Close()
		return nil, "", fmt.Errorf("%w: containerd at %s does not answer: %w", errdefs.ErrUnavailable, address, err)
	}
	return c, v.Version, nil
}

// ServerVersion returns the version of the containerd at address ("v2.4.2").
func ServerVersion(ctx context.Context, address string) (string, error) {
	c, v, err := dial(ctx, address, spec.DefaultNamespace)
	if err != nil {
		return "", err
	}
	c.Close()
	return v, nil
}

// UserNSLimitsInSpec reports whether a Backend on containerd of version
// starts by putting each task's user namespace limits in its spec (2.3 and
// later: their releases come with runc 1.4 or later, which sets them);
// before, it sets them itself between create and start.
func UserNSLimitsInSpec(version string) bool { return atLeast(version, 2, 3) }

// runcVersionAnnotation is where `runc features` gives runc's version.
const runcVersionAnnotation = "org.opencontainers.runc.version"

// UserNSLimitsInSpecAt reports whether a Backend on the containerd at
// address keeps each task's user namespace limits in its spec: containerd
// 2.3 or later (UserNSLimitsInSpec) whose runc shim runs a runc that takes
// them, 1.4 or later (an older one refuses them, and the Backend then sets
// them itself between create and start). The runc is the one the node's
// shim runs, as containerd's runtime info reports it (`runc features`),
// not one on the caller's PATH (nor a library Config.RuncBinary: the CLI
// has none). It is true where containerd does not answer, or answers with
// a version or runtime info that does not say: the auditor then requires
// the limits.
func UserNSLimitsInSpecAt(ctx context.Context, address string) bool {
	limits, _ := AuditFactsAt(ctx, address)
	return limits
}

// AuditFactsAt is what the auditor asks the containerd at address, in one
// connection: UserNSLimitsInSpecAt's answer, and the daemon's UUID (empty
// where it does not answer), which names the containerd a task's host id
// range was granted in (the Manager records it with the range).
func AuditFactsAt(ctx context.Context, address string) (userNSLimitsInSpec bool, serverUUID string) {
	c, version, err := dial(ctx, address, spec.DefaultNamespace)
	if err != nil {
		return true, ""
	}
	defer c.Close()
	infoCtx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if server, err := c.Server(infoCtx); err == nil {
		serverUUID = server.UUID
	}
	if knownVersion(version) && !UserNSLimitsInSpec(version) {
		return false, serverUUID
	}
	info, err := c.RuntimeInfo(infoCtx, task.DefaultRuntime, nil)
	if err != nil {
		return true, serverUUID
	}
	f, ok := info.Features.(*features.Features)
	if !ok || f == nil {
		return true, serverUUID
	}
	return RuncTakesUserNSSysctls(f.Annotations[runcVersionAnnotation]), serverUUID
}

// TaskSpecAt reads container id in namespace from the containerd at
// address: the spec it holds, and whether its task runs (exists false: no
// such container), for the audit of a spec under a live task's id
// (audit.Policy.TaskSpec).
func TaskSpecAt(ctx context.Context, address, namespace, id string) (t audit.TaskState, exists bool, err error) {
	c, _, err := dial(ctx, address, namespace)
	if err != nil {
		return t, false, err
	}
	defer c.Close()
	ctx = namespaces.WithNamespace(ctx, namespace)
	container, err := c.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return t, false, nil
	}
	if err != nil {
		return t, false, fmt.Errorf("container %s: %w", id, err)
	}
	if t.Spec, err = container.Spec(ctx); err != nil {
		return t, false, fmt.Errorf("spec of container %s: %w", id, err)
	}
	if tk, err := container.Task(ctx, nil); err == nil {
		if st, err := tk.Status(ctx); err == nil {
			t.Running = st.Status == client.Running || st.Status == client.Paused || st.Status == client.Pausing
		}
	}
	return t, true, nil
}

// knownVersion reports whether a daemon's version reads as MAJOR.MINOR
// ("v2.4.2", "1.6.20~ds1"): one that does not ("devel", "") says nothing
// about where the limits go, and the auditor stays strict.
func knownVersion(version string) bool { return versionPattern.MatchString(version) }

// versionPattern is a release's version as containerd gives it: "v2.4.2",
// "2.4.0-rc.1", "1.6.20~ds1", "2.4.2+unknown".
var versionPattern = regexp.MustCompile(`^v?[0-9]+\.[0-9]+(\.[0-9]+)?([-+~][0-9A-Za-z.+~-]*)?$`)

// RuncTakesUserNSSysctls reports whether runc of version ("1.5.3",
// "1.1.5+ds1") sets user.* sysctls in a task's user namespace: 1.4 and
// later. An unreadable version counts as one that does.
func RuncTakesUserNSSysctls(version string) bool {
	var major, minor int
	if _, err := fmt.Sscanf(version, "%d.%d", &major, &minor); err != nil {
		return true
	}
	return major > 1 || (major == 1 && minor >= 4)
}
