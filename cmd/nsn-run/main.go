// Command nsn-run runs untrusted jobs in isolated containers through
// containerd and runc, prints the exact OCI spec a job gets, and audits
// specs against the isolation policy. See design.md's CLI contract.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/containerd/log"
	"github.com/spf13/cobra"

	"github.com/nsn-run/nsn-run/gpu"
	"github.com/nsn-run/nsn-run/gpu/cdigen"
	"github.com/nsn-run/nsn-run/internal/gcdelay"
	"github.com/nsn-run/nsn-run/node"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/task"
)

// Exit statuses of nsn-run's own failures (the CLI contract): a task's own
// exit code passes through unchanged.
const (
	exitFailure = 125 // nsn-run itself failed: bad input, daemon down, ...
)

// exitError carries an exit status other than 125 up to main, with an
// optional message (already printed when empty).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// globalOptions are the flags every command shares.
type globalOptions struct {
	address   string
	namespace string
	backend   string
	stateDir  string
	// cdiSpecDirs override /etc/cdi and /var/run/cdi.
	cdiSpecDirs []string
	// allowedRuntimes are the runtimes a task may name (runtime.Config).
	allowedRuntimes []string
	// userns is the per-task user namespace policy (runtime.UserNSMode).
	userns string
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// envList splits a comma-separated environment variable, dropping empty
// elements; nil when it is unset or empty.
func envList(key string) []string {
	var out []string
	for v := range strings.SplitSeq(os.Getenv(key), ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func newRootCommand() *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:   "nsn-run",
		Short: "Run untrusted jobs in isolated containers through containerd and runc",
		Long: `nsn-run runs untrusted jobs (AI workloads) in isolated containers: no
network, read-only root, no capabilities, seccomp, a non-root user, and
memory, CPU and pids limits; GPUs only through CDI, only those granted. It
talks to containerd directly and runs tasks with runc (or, with --backend
docker, to dockerd over the Engine API).

Reviewers can print the exact OCI spec a task gets (nsn-run spec) and check
any spec against the isolation policy (nsn-run audit).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.address, "address", envOr("NSN_ADDRESS", node.DefaultAddress), "containerd socket (env NSN_ADDRESS)")
	pf.StringVar(&g.namespace, "namespace", envOr("NSN_NAMESPACE", spec.DefaultNamespace), "containerd namespace (env NSN_NAMESPACE)")
	pf.StringVar(&g.backend, "backend", envOr("NSN_BACKEND", node.BackendContainerd), "backend: containerd, or docker (dockerd at DOCKER_HOST) (env NSN_BACKEND)")
	pf.StringArrayVar(&g.cdiSpecDirs, "cdi-spec-dir", nil, "CDI spec directory (repeatable; default /etc/cdi and /var/run/cdi)")
	pf.StringVar(&g.stateDir, "state-dir", envOr("NSN_STATE_DIR", node.DefaultStateDir), "directory for per-task state and output: new, empty, or one nsn-run made (env NSN_STATE_DIR)")
	pf.StringArrayVar(&g.allowedRuntimes, "allowed-runtime", envList("NSN_ALLOWED_RUNTIMES"),
		"containerd runtime a task may name with --runtime (repeatable; default "+task.DefaultRuntime+
			"; env NSN_ALLOWED_RUNTIMES, comma-separated); a task naming another is refused (exit 125). The docker backend runs runc only, whatever is allowed")
	pf.StringVar(&g.userns, "user-namespaces", envOr("NSN_USER_NAMESPACES", "preferred"),
		"per-task user namespaces: preferred (each task its own user namespace over a host id range no other task holds, where the backend can: containerd; "+
			"docker tasks share host ids and their Result says so), required (refuse a task that cannot have one: exit 125), or off (env NSN_USER_NAMESPACES)")

	root.AddCommand(newRunCommand(g), newSpecCommand(g), newAuditCommand(g), newPsCommand(g), newLogsCommand(g),
		newStatsCommand(g), newKillCommand(g), newRmCommand(g), newWaitCommand(g), newInspectCommand(g), newSuperviseCommand(g), newGCCommand(g), newImageCommand(g), newDoctorCommand(g), newGPUCommand(g), newShimLoggerCommand(), newAttachLoggerCommand())
	return root
}

func main() {
	// The containerd client logs through logrus at info level (e.g. every
	// registry 404 while resolving); nsn-run reports errors itself, once.
	_ = log.SetLevel("error")
	gcdelay.Start(gcOffFor, gcOffLimit, nil)
	ctx, stop := stopContext()
	root := newRootCommand()
	root.SetOut(stdStream{os.Stdout})
	root.SetErr(stdStream{os.Stderr})
	err := root.ExecuteContext(ctx)
	stop()
	os.Exit(exitCode(err))
}

// A CLI process is short-lived: most commands allocate what they need and
// exit within a second, and a collection then only costs time (a `run` of
// a trivial task spent 147 ms of CPU with the collector on, 116 ms with it
// off, at the same peak RSS of 32 MB). So the collector waits for the
// process's first gcOffFor, bounded by gcOffLimit of heap (gcdelay).
const (
	gcOffFor   = 2 * time.Second
	gcOffLimit = 128 << 20
)

// exitCode prints err as one line and maps it to nsn-run's exit status.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "nsn-run: "+ee.msg)
		}
		return ee.code
	}
	if isReaderGone(err) {
		// The reader of nsn-run's output has gone (`| head -1`): say
		// nothing, and exit as a command killed by SIGPIPE would.
		return exitBrokenPipe
	}
	fmt.Fprintln(os.Stderr, "nsn-run: "+err.Error()+cliHint(err))
	return exitCodeOf(err)
}

// cliHint names the command that is the next step after err, where the
// library's error names one in its own terms (remove the task, import the
// image): the library says what to do, the CLI says with which command.
func cliHint(err error) string {
	var exists *runtime.TaskExistsError
	var noImage *runtime.ImageNotFoundError
	var noGPU *gpu.NotFoundError
	var sharedGPU *gpu.SharedOnlyError
	var elsewhere *runtime.TaskElsewhereError
	var conflict *runtime.ImageConflictError
	var down *runtime.DaemonNotRunningError
	var noHook *cdigen.HookNotFoundError
	switch {
	case errors.As(err, &exists):
		return " (nsn-run rm " + exists.ID + ")"
	case errors.As(err, &elsewhere):
		return " (nsn-run --state-dir " + elsewhere.StateDir + ")"
	case errors.As(err, &conflict):
		return " (nsn-run image rm " + conflict.Name + ", or image import --replace)"
	case errors.As(err, &down) && down.Daemon == "dockerd":
		return " (start it, or point DOCKER_HOST at its socket)"
	case errors.As(err, &down):
		return " (start it, or point --address / NSN_ADDRESS at its socket)"
	case errors.As(err, &sharedGPU):
		return " (run with --gpu-shared to share it)"
	case errors.As(err, &noHook):
		return " (or nsn-run gpu cdi-generate --no-hooks)"
	case errors.As(err, &noImage) && noImage.Docker:
		return " (docker load, or nsn-run --backend docker image import)"
	case errors.As(err, &noImage):
		return " (nsn-run image import|pull)"
	case errors.As(err, &noGPU):
		return " (nsn-run doctor lists the GPUs they define)"
	}
	return ""
}

// exitBrokenPipe is 128 + SIGPIPE: what a shell reports for a command
// killed by SIGPIPE, and what nsn-run exits with when its output's reader
// has gone.
const exitBrokenPipe = 141

// exitCodeOf is the exit status nsn-run gives err: a missing or
// unrunnable command's 127 or 126, an exitError's own, else 125.
func exitCodeOf(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return runtime.ExitCode(err)
}

// printJSON writes v to w as indented JSON, as every --json output is.
// C1 control characters (U+0080-U+009F, which encoding/json leaves as
// UTF-8) are written as \u escapes: the same JSON string, and a terminal
// that shows the output sees no 8-bit CSI from a task's stdout.
func printJSON(w io.Writer, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	_, err := w.Write(escapeC1(b.Bytes()))
	return err
}

// escapeC1 rewrites the UTF-8 encodings of U+0080-U+009F (0xC2 0x80-0x9F)
// in JSON text as \u0080-\u009F. They only occur inside strings: JSON's
// own syntax is ASCII.
func escapeC1(js []byte) []byte {
	if !bytes.Contains(js, []byte{0xC2}) {
		return js
	}
	out := make([]byte, 0, len(js)+16)
	for i := 0; i < len(js); i++ {
		if js[i] == 0xC2 && i+1 < len(js) && js[i+1] >= 0x80 && js[i+1] <= 0x9F {
			out = fmt.Appendf(out, `\u%04x`, js[i+1])
			i++
			continue
		}
		out = append(out, js[i])
	}
	return out
}
