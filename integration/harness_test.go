// Package integration runs nsn-run against real daemons: runc, containerd
// (and, as the backends grow, dockerd). scripts/ci.sh installs and starts
// them; with CI or NSN_REQUIRE_INTEGRATION set, a missing daemon fails the
// test instead of skipping it.
package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/internal/imagebuild"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/task"
)

// Environment the test harness reads (scripts/ci.sh sets them).
const (
	envAddress = "NSN_TEST_ADDRESS" // socket of the containerd under test
	envRunc    = "NSN_TEST_RUNC"    // runc binary (default: runc on PATH)
	envBusybox = "NSN_TEST_BUSYBOX" // static busybox (default /bin/busybox)
	// testNamespace keeps the tests' images and containers apart from
	// anything else on the daemon.
	testNamespace = "nsn-it"
	busyboxRef    = "docker.io/library/busybox:latest"
	alpineRef     = "docker.io/library/alpine:latest"
	probeRef      = "docker.io/library/nsn-probe:latest"
)

func required() bool {
	return os.Getenv("CI") != "" || os.Getenv("NSN_REQUIRE_INTEGRATION") != ""
}

// need fails the test (under CI) or skips it (on a developer machine) when a
// prerequisite is missing.
func need(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	if required() {
		t.Fatalf("integration prerequisite missing (CI/NSN_REQUIRE_INTEGRATION set): "+format, args...)
	}
	t.Skipf("integration prerequisite missing: "+format, args...)
}

func needRoot(t *testing.T) {
	t.Helper()
	need(t, os.Geteuid() == 0, "must run as root")
}

func runcPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv(envRunc)
	if p == "" {
		p, _ = exec.LookPath("runc")
	}
	_, err := os.Stat(p)
	need(t, p != "" && err == nil, "no runc binary (set %s or put runc on PATH)", envRunc)
	return p
}

func busyboxPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv(envBusybox)
	if p == "" {
		p = "/bin/busybox"
	}
	_, err := os.Stat(p)
	need(t, err == nil, "no static busybox at %s (apt-get install busybox-static)", p)
	return p
}

// containerdClient connects to the containerd under test, in testNamespace.
func containerdClient(t *testing.T) (*client.Client, string) {
	t.Helper()
	addr := os.Getenv(envAddress)
	need(t, addr != "", "%s is not set: no containerd to test against", envAddress)
	c, err := containerd.Dial(context.Background(), addr, testNamespace)
	need(t, err == nil, "containerd at %s: %v", addr, err)
	t.Cleanup(func() { c.Close() })
	return c, addr
}

var importOnce sync.Map // address -> *sync.Once

// testImages are the names the busybox test image is imported under. The
// seed test of the design nsn-run replaces runs "alpine:latest"; no registry
// is reachable here, so that name holds our busybox rootfs too.
var testImages = []string{busyboxRef, alpineRef}

// importBusybox builds the busybox test image with our image builder and
// imports it into the containerd under test under each of testImages, once
// per address.
func importBusybox(t *testing.T, c *client.Client, addr string) {
	t.Helper()
	busybox := busyboxPath(t)
	v, _ := importOnce.LoadOrStore(addr, new(sync.Once))
	var err error
	v.(*sync.Once).Do(func() {
		rootfs := filepath.Join(t.TempDir(), "rootfs")
		if err = imagebuild.BusyboxRootfs(rootfs, busybox); err != nil {
			return
		}
		for _, name := range testImages {
			if err = importRootfs(c, name, rootfs); err != nil {
				return
			}
		}
		// The probe image: the same rootfs plus our static attack probe,
		// a setuid-root copy and a copy with CAP_SYS_ADMIN as a file
		// capability; /etc/passwd and /usr/bin writable by anyone, so a
		// refused write shows the read-only root, not file permissions.
		probe := buildProbe(t)
		for _, dest := range []string{"/bin/nsn-probe", "/bin/nsn-probe-suid", "/bin/nsn-probe-fcap"} {
			if err = imagebuild.AddFile(rootfs, probe, dest); err != nil {
				return
			}
		}
		if err = os.Chmod(filepath.Join(rootfs, "bin/nsn-probe-suid"), 0o755|os.ModeSetuid); err != nil {
			return
		}
		if err = os.WriteFile(filepath.Join(rootfs, "etc/passwd"), []byte("root:x:0:0::/:/bin/sh\n"), 0o666); err != nil {
			return
		}
		if err = os.Chmod(filepath.Join(rootfs, "etc/passwd"), 0o666); err != nil {
			return
		}
		if err = os.Chmod(filepath.Join(rootfs, "usr/bin"), 0o777|os.ModeSticky); err != nil {
			return
		}
		err = importImage(c, imagebuild.Image{
			Name: probeRef, RootfsDir: rootfs,
			Config: ocispec.ImageConfig{Env: []string{"PATH=/bin"}},
			Xattrs: map[string]map[string]string{"bin/nsn-probe-fcap": {"security.capability": imagebuild.FileCapability(21)}},
		})
	})
	if err != nil {
		t.Fatalf("import busybox test image: %v", err)
	}
}

func importRootfs(c *client.Client, name, rootfs string) error {
	return importImage(c, imagebuild.Image{
		Name:      name,
		RootfsDir: rootfs,
		Config:    ocispec.ImageConfig{Env: []string{"PATH=/bin"}, Cmd: []string{"sh"}},
	})
}

// importImage packs img with our image builder and imports it.
func importImage(c *client.Client, img imagebuild.Image) error {
	var buf bytes.Buffer
	if err := imagebuild.WriteOCILayout(&buf, img); err != nil {
		return err
	}
	_, err := c.Import(context.Background(), &buf)
	return err
}

// buildTags are the build tags of the binaries built with some: nsn-shimd
// as the Makefile's SHIMD_TAGS builds it (internal/deps checks they agree).
var buildTags = map[string]string{"cmd/nsn-shimd": "no_grpc"}

// builtBinary is a binary of this module built once per test process.
type builtBinary struct {
	once sync.Once
	path string
	err  error
}

var (
	nsnRunBin    builtBinary
	nsnLoggerBin builtBinary
	probeBin     builtBinary
	nsnInitBin   builtBinary
	nsnShimBin   builtBinary
	nsnShimdBin  builtBinary
)

// envBinDir names a directory of prebuilt nsn-run, nsn-logger and
// nsn-probe binaries, for running the compiled tests where there is no Go
// toolchain (the cgroup v2 VM).
const envBinDir = "NSN_TEST_BIN_DIR"

// get builds pkg as name into a temp dir the first time (or takes it from
// NSN_TEST_BIN_DIR); static asks for CGO_ENABLED=0 (binaries that go into
// test images).
func (b *builtBinary) get(t *testing.T, pkg, name string, static bool) string {
	t.Helper()
	return b.getInto(t, "", pkg, name, static)
}

// getInto is get into the directory into ("": a new temp dir).
func (b *builtBinary) getInto(t *testing.T, into, pkg, name string, static bool) string {
	t.Helper()
	b.once.Do(func() {
		if dir := os.Getenv(envBinDir); dir != "" {
			b.path = filepath.Join(dir, name)
			_, b.err = os.Stat(b.path)
			return
		}
		dir := into
		if dir == "" {
			var err error
			if dir, err = os.MkdirTemp("", name+"-bin-"); err != nil {
				b.err = err
				return
			}
		}
		// Searchable by others: tasks in their own user namespaces run
		// nsn-init from here as their own ids.
		if err := os.Chmod(dir, 0o755); err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		args := []string{"build", "-o", b.path}
		if tags := buildTags[pkg]; tags != "" {
			args = append(args, "-tags", tags)
		}
		build := exec.Command("go", append(args, "github.com/nsn-run/nsn-run/"+pkg)...)
		if static {
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
		}
		if out, err := build.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("build %s: %w: %s", name, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// nsnRun is the nsn-run binary, with nsn-init beside it, where run --init
// finds it, and nsn-shim (and nsn-shimd), which its tasks run with on
// containerd 2.3+.
func nsnRun(t *testing.T) string {
	t.Helper()
	p := nsnRunBin.get(t, "cmd/nsn-run", "nsn-run", false)
	for name, bin := range map[string]func(*testing.T) string{"nsn-init": nsnInit, "nsn-shim": nsnShim, "nsn-shimd": nsnShimd} {
		beside := filepath.Join(filepath.Dir(p), name)
		if _, err := os.Stat(beside); err != nil {
			if err := os.Link(bin(t), beside); err != nil && !os.IsExist(err) {
				t.Fatal(err)
			}
		}
	}
	return p
}

// nsnInit is the static init a task with --init runs as pid 1.
func nsnInit(t *testing.T) string { return nsnInitBin.get(t, "cmd/nsn-init", "nsn-init", true) }

// nsnLogger is the small shim logger.
func nsnLogger(t *testing.T) string {
	return nsnLoggerBin.get(t, "cmd/nsn-logger", "nsn-logger", false)
}

// nsnShim is nsn-run's runc shim, which tasks run with on containerd 2.3+:
// the front, nsn-shim, with nsn-shimd beside it.
func nsnShim(t *testing.T) string {
	t.Helper()
	p := nsnShimBin.get(t, "cmd/nsn-shim", "nsn-shim", true)
	nsnShimdBin.getInto(t, filepath.Dir(p), "cmd/nsn-shimd", "nsn-shimd", true)
	return p
}

// nsnShimd is the full shim that serves the tasks (beside nsnShim).
func nsnShimd(t *testing.T) string {
	t.Helper()
	return filepath.Join(filepath.Dir(nsnShim(t)), "nsn-shimd")
}

// buildProbe is the static attack probe.
func buildProbe(t *testing.T) string { return probeBin.get(t, "integration/probe", "nsn-probe", true) }

// cliResult is what one nsn-run invocation did.
type cliResult struct {
	stdout, stderr string
	code           int
}

func runCLI(t *testing.T, stdin []byte, args ...string) cliResult {
	t.Helper()
	return runCLIWith(t, nil, stdin, args...)
}

// runCLIEnv runs nsn-run with the environment env.
func runCLIEnv(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	return runCLIWith(t, env, nil, args...)
}

func runCLIWith(t *testing.T, env []string, stdin []byte, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nsnRun(t), args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("nsn-run %s: %v", strings.Join(args, " "), err)
		}
		code = ee.ExitCode()
	}
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// taskDir is task id's private directory under m's state dir.
func taskDir(m *runtime.Manager, id string) string {
	return filepath.Join(m.StateDir(), "tasks", id)
}

// uniqueID returns a task id no other test run uses.
func uniqueID(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// testManager returns a Manager over the containerd under test, with the
// test images imported and a private state directory.
func testManager(t *testing.T) (*runtime.Manager, *client.Client) {
	t.Helper()
	return testManagerUserNS(t, runtime.UserNSPreferred)
}

// testManagerUserNS is testManager with the given user namespace policy.
func testManagerUserNS(t *testing.T, userns runtime.UserNSMode) (*runtime.Manager, *client.Client) {
	t.Helper()
	return testManagerWith(t, func(cfg *runtime.Config) { cfg.UserNamespaces = userns })
}

// testManagerWith is testManager with its Config changed by configure.
func testManagerWith(t *testing.T, configure func(*runtime.Config)) (*runtime.Manager, *client.Client) {
	t.Helper()
	return testManagerBackend(t, func(*containerd.Config) {}, configure)
}

// testManagerBackend is testManagerWith with the backend's Config changed
// by backend too.
func testManagerBackend(t *testing.T, backend func(*containerd.Config), configure func(*runtime.Config)) (*runtime.Manager, *client.Client) {
	t.Helper()
	c, addr := containerdClient(t)
	importBusybox(t, c, addr)
	// The Go API path uses the small nsn-logger as the shim logger; the
	// CLI tests use nsn-run itself: both loggers are exercised.
	// nsn-shim as node.Open finds it (beside nsn-run): tasks run with it
	// on containerd 2.3 and later, with containerd's shim on older ones.
	bc := containerd.Config{Address: addr, Namespace: testNamespace, LoggerBinary: nsnLogger(t), InitBinary: nsnInit(t), ShimBinary: nsnShim(t)}
	backend(&bc)
	b, err := containerd.New(context.Background(), bc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	// The adversarial suite may name another runtime (NSN_TEST_RUNTIME):
	// the operator's allowlist is where it is allowed.
	allowed := []string{task.DefaultRuntime}
	if rt := os.Getenv(envRuntime); rt != "" {
		allowed = append(allowed, rt)
	}
	cfg := runtime.Config{Backend: b, StateDir: t.TempDir(), AllowedRuntimes: allowed}
	configure(&cfg)
	m, err := runtime.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// After the test (and its own leak checks): whatever a failed test left
	// must not break the next one, nor keep TempDir's mounts busy.
	t.Cleanup(func() { _, _ = m.CleanupOrphans(context.Background(), true) })
	return m, c
}

// taskOutput is the directory task id's container binds at /output, in
// state dir stateDir: STATE/tasks/ID/output/KEY (task.NewOutputKey).
func taskOutput(t *testing.T, stateDir, id string) string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(stateDir, "tasks", id, "output", "*"))
	if err != nil || len(matches) != 1 || !task.IsOutputKey(filepath.Base(matches[0])) {
		t.Fatalf("task %s's keyed output dir: %v, %v", id, matches, err)
	}
	return matches[0]
}

// mustRead is the contents of the file at path.
func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
