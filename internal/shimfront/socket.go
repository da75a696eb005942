package shimfront

import (
	"crypto/sha256"
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
)

// GroupLabels are the annotations by which containerd's runc shim groups
// tasks into one shim, in its order: its own group label, then CRI's
// sandbox id (which nsn-run never sets).
var GroupLabels = []string{"io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id"}

// DefaultSocketDir is where shim sockets go when containerd names no
// directory: defaults.DefaultStateDir + "/s".
const DefaultSocketDir = "/run/containerd/s"

// Grouping is the shim group a task belongs to: the value of the first of
// GroupLabels its spec (the bundle's config.json at specPath) carries,
// else the task's own id. grouped says whether a label named it.
// containerd's manager.Start reads the spec the same way.
func Grouping(specPath, id string) (grouping string, grouped bool, err error) {
	b, err := os.ReadFile(specPath)
	if err != nil {
		return "", false, fmt.Errorf("read spec: %w", err)
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return "", false, fmt.Errorf("read spec: %w", err)
	}
	for _, label := range GroupLabels {
		if g, ok := spec.Annotations[label]; ok {
			return g, true, nil
		}
	}
	return id, false, nil
}

// SocketAddress is the address ("unix://DIR/SHA256") of the shim socket
// for grouping in namespace ns, under dir, for the containerd at
// grpcAddress: shim.CreateSocketAddress without its debug variant.
func SocketAddress(dir, grpcAddress, ns, grouping string) string {
	d := sha256.Sum256([]byte(filepath.Join(grpcAddress, ns, grouping)))
	return fmt.Sprintf("unix://%s/%x", dir, d)
}

// SocketPath is the file of a "unix://PATH" address; ok is false for an
// abstract socket or another scheme, which only containerd's start
// handles.
func SocketPath(address string) (string, bool) {
	path, ok := strings.CutPrefix(address, "unix://")
	if !ok || strings.HasPrefix(path, "\x00") {
		return "", false
	}
	return path, true
}

// Listening reports whether a process may listen on the unix socket at
// addr ("unix://PATH"). Only a refusal, a missing file or a path where no
// socket can be is an answer of no. A dial that finds the listen queue full reached a live listener; one
// that timed out (this process starved of CPU, perhaps before it even
// called connect) is tried once more, with a fresh deadline. Any other
// error is not taken for a dead shim either: containerd's connect will
// meet it too, and fail this one task, where taking a live shim for dead
// would start a second one for the whole group.
//
// containerd's own start asks once, for 100 ms (shim.CanConnect), and
// takes any failure for a dead shim: under CPU load a live group shim
// then lost its socket to a second shim (docs/performance.md).
func Listening(addr string, patience time.Duration) bool {
	path, ok := SocketPath(addr)
	if !ok {
		return false // containerd's start decides
	}
	for try := 0; ; try++ {
		c, err := net.DialTimeout("unix", path, patience)
		if err == nil {
			c.Close()
			return true
		}
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, fs.ErrNotExist) ||
			errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENAMETOOLONG) {
			// Nobody listens, or no socket can be at that path (a path too
			// long for a sockaddr is EINVAL): the bind that follows fails
			// it in its own words.
			return false
		}
		var ne net.Error
		if try == 0 && errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		return true
	}
}

// ErrInUse is Listen's answer when a shim already listens on the socket:
// the task joins it.
var ErrInUse = errors.New("a shim listens on the socket")

// Listen makes the shim socket at address and returns it as a file to
// pass to the shim, as containerd's newShimSocket does: the directory
// 0700, the socket 0600; a socket file in use is ErrInUse when a 100 ms
// connect gets through (shim.CanConnect), else removed and made again.
func Listen(address string) (*os.File, error) {
	path, ok := SocketPath(address)
	if !ok {
		return nil, fmt.Errorf("not a unix socket path: %q", address)
	}
	l, err := listen(path)
	if err != nil {
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "listen" || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("create new shim socket: %w", err)
		}
		if c, err := net.DialTimeout("unix", path, 100*time.Millisecond); err == nil {
			c.Close()
			return nil, ErrInUse
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove pre-existing socket: %w", err)
		}
		if l, err = listen(path); err != nil {
			return nil, fmt.Errorf("try create new shim socket 2x: %w", err)
		}
	}
	defer l.Close() // the file is a dup; the listener's own fd goes
	f, err := l.File()
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return f, nil
}

func listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("mkdir failed for %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		os.Remove(path)
		l.Close()
		return nil, fmt.Errorf("chmod failed for %s: %w", path, err)
	}
	ul := l.(*net.UnixListener)
	// Closing the listener here must not unlink the socket the shim will
	// serve.
	ul.SetUnlinkOnClose(false)
	return ul, nil
}
