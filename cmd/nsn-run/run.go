package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

func newRunCommand(g *globalOptions) *cobra.Command {
	f := &taskFlags{}
	var asJSON, detach, raw bool
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE [--] CMD [ARG...]",
		Short: "Run a task in an isolated container",
		Long: `Run CMD in a container from IMAGE, isolated: no network, read-only root,
no capabilities, seccomp, a non-root user, and memory, CPU and pids limits.
The image must be present locally (nsn-run image import|pull).

In the foreground, the task's stdout and stderr stream to nsn-run's, and
nsn-run exits with the task's exit code: 124 if it hit its time limit, 137
if it was killed for memory, 125 if nsn-run itself failed (bad input,
unknown image, daemon down, duplicate id) — then nothing is left behind.
Interrupting nsn-run stops the task (SIGTERM, then SIGKILL after --grace);
so do SIGQUIT (Ctrl-\) and a hang-up (SIGHUP), unless nsn-run was started
under nohup. Ctrl-Z does nothing: nsn-run enforces the task's --timeout
and limits, and a suspended nsn-run would not (use -d to detach). When
the reader of its output goes away (a pipe to head -1), the task is
stopped at its next write and nsn-run exits 141, as a command killed by
SIGPIPE, once the task is cleaned up.

--json prints the Result object instead of streaming; its contract is
docs/result.schema.json in nsn-run's source (fields are added, never renamed
or removed: ignore those you do not know). -d starts the task and prints
its id; follow it with nsn-run ps, logs, wait, inspect, kill and rm. A
detached task is spawned and watched by a supervisor process (nsn-run
supervise, in a session of its own): its --timeout and limits hold with
nobody waiting; it records the Result (wait and inspect show it) and
releases the container; logs and Result stay until rm or gc. Killing the
supervisor (SIGKILL, or killing the caller's cgroup) leaves the task
unwatched until something waits on it again.

--init runs nsn-init as the task's pid 1 (on containerd; dockerd's own
docker-init with --backend docker): it forwards signals to the command, so
the deadline's SIGTERM ends a command without a handler of its own, and
reaps zombies.

Files the task writes to /output are copied to --output-dir after it exits
(a directory that does not exist or is empty: nsn-run refuses one that
holds anything, so a task's files never land beside, or replace, yours;
not with -d);
links, fifos, devices and names with control characters, bytes that are
not UTF-8 or a leading '-' are not, and are listed in the Result's
output_skipped.

` + terminalHelp,
		Example: `  nsn-run run busybox:latest -- echo hello
  nsn-run run --json --memory 512m alpine:latest -- echo hello
  nsn-run run --output-dir ./out busybox -- sh -c 'echo 42 > /output/answer'
  id=$(nsn-run run -d busybox -- sleep 60) && nsn-run logs "$id"`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := f.task(args)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			m, closeFn, err := openManager(ctx, g)
			if err != nil {
				return err
			}
			defer closeFn()

			if !detach {
				holdDeadlines()
			}
			if asJSON {
				res, err := m.Run(ctx, t, runtime.RunOptions{OutputDir: f.outputDir})
				if err != nil {
					return err
				}
				if err := printJSON(cmd.OutOrStdout(), res); err != nil {
					return err
				}
				return taskExit(res)
			}

			if !detach {
				return runForeground(ctx, cmd, m, t, f.outputDir, raw)
			}
			// The supervisor spawns the task itself and keeps waiting on
			// it: there is no moment with nobody holding it.
			if err := startSupervised(g, t); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), t.ID)
			return nil
		},
	}
	cmd.Flags().SetInterspersed(false)
	f.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the Result as JSON instead of streaming output")
	cmd.Flags().BoolVarP(&detach, "detach", "d", false, "start the task and print its id")
	cmd.Flags().BoolVar(&raw, "raw", false, rawHelp)
	cmd.MarkFlagsMutuallyExclusive("json", "detach")
	// A detached task's output stays in the state dir (its supervisor
	// does not collect it): --output-dir would silently do nothing.
	cmd.MarkFlagsMutuallyExclusive("output-dir", "detach")
	return cmd
}

// runForeground runs the task with its streams printed as it writes them,
// then collects its output and cleans up, whatever happened. Unless raw, a
// stream that goes to a terminal is escaped (taskOutput).
//
// A stream whose reader has gone (EPIPE, as after `| head -1`) stops the
// task as an interrupt does, and nsn-run exits once it is cleaned up: it
// used to die of SIGPIPE there and leave the task running with nobody
// enforcing its limits. Another write error (a full disk under
// `> file`) only stops that stream: the task runs on, its logs whole in
// its Result, and nsn-run reports the error once it has ended.
func runForeground(ctx context.Context, cmd *cobra.Command, m *runtime.Manager, t task.Task, outputDir string, raw bool) error {
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	stdout, flushOut := taskOutput(cmd.OutOrStdout(), raw)
	stderr, flushErr := taskOutput(cmd.ErrOrStderr(), raw)
	res, err := m.Run(ctx, t, runtime.RunOptions{OutputDir: outputDir,
		Stdout: stopOnReaderGone{stdout, stop}, Stderr: stopOnReaderGone{stderr, stop}})
	if ferr := errors.Join(flushOut(), flushErr()); err == nil {
		err = ferr
	}
	if cause := context.Cause(ctx); isReaderGone(cause) {
		// The task was stopped because the reader went: exit as such
		// (141, silent), unless the run failed of its own too (the
		// daemon gone, the task left running): that must be said.
		if err != nil && !isReaderGone(err) {
			return err
		}
		return cause
	}
	if err != nil {
		return err
	}
	reportSkipped(cmd.ErrOrStderr(), res.OutputSkipped)
	return taskExit(res)
}

// stopOnReaderGone is a stream of a foreground run that stops the run
// when the reader of its pipe has gone.
type stopOnReaderGone struct {
	w    io.Writer
	stop context.CancelCauseFunc
}

func (s stopOnReaderGone) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if isReaderGone(err) {
		s.stop(fmt.Errorf("write the task's output: %w", err))
	}
	return n, err
}

// maxSkippedShown bounds the entries reportSkipped names.
const maxSkippedShown = 5

// reportSkipped tells a foreground run's operator, on one line, what of
// /output was not collected (--json has the whole list). The paths are as
// the Result lists them: quoted where the task gave them characters a
// terminal would act on.
func reportSkipped(w io.Writer, skipped []task.SkippedFile) {
	if len(skipped) == 0 {
		return
	}
	shown := make([]string, 0, maxSkippedShown)
	for _, s := range skipped[:min(len(skipped), maxSkippedShown)] {
		shown = append(shown, s.Path+" ("+s.Reason+")")
	}
	more := ""
	if n := len(skipped) - len(shown); n > 0 {
		more = fmt.Sprintf(" and %d more (--json lists them)", n)
	}
	fmt.Fprintf(w, "nsn-run: %d entries of /output not collected: %s%s\n", len(skipped), strings.Join(shown, ", "), more)
}

// taskExit passes the task's exit code through as nsn-run's.
func taskExit(res task.Result) error {
	if res.ExitCode == 0 {
		return nil
	}
	msg := ""
	switch {
	case res.Error != "":
		msg = fmt.Sprintf("task %s: %s: %s", res.ID, res.Reason, res.Error)
	case res.Reason != task.ReasonExited:
		msg = fmt.Sprintf("task %s: %s", res.ID, res.Reason)
	}
	return &exitError{code: res.ExitCode, msg: msg}
}
