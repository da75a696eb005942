package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

// logPoll is how often a foreground run copies new log output to the
// terminal.
const logPoll = 50 * time.Millisecond

func newRunCommand(g *globalOptions) *cobra.Command {
	f := &taskFlags{}
	var asJSON, detach bool
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
Interrupting nsn-run stops the task (SIGTERM, then SIGKILL after --grace).

--json prints the Result object instead of streaming. -d starts the task
and prints its id; follow it with nsn-run ps, logs, kill and rm. A detached
task's --timeout is enforced only while an nsn-run process waits on it.

Files the task writes to /output are copied to --output-dir after it exits.`,
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

			if asJSON {
				res, err := m.Run(ctx, t, runtime.RunOptions{OutputDir: f.outputDir})
				if err != nil {
					return err
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
				return taskExit(res)
			}

			if _, err := m.Spawn(ctx, t); err != nil {
				return err
			}
			if detach {
				fmt.Fprintln(cmd.OutOrStdout(), t.ID)
				return nil
			}
			return runForeground(ctx, cmd, m, t.ID, f.outputDir)
		},
	}
	cmd.Flags().SetInterspersed(false)
	f.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the Result as JSON instead of streaming output")
	cmd.Flags().BoolVarP(&detach, "detach", "d", false, "start the task and print its id")
	cmd.MarkFlagsMutuallyExclusive("json", "detach")
	return cmd
}

// runForeground streams the task's logs while waiting for it, then collects
// its output and cleans up, whatever happened.
func runForeground(ctx context.Context, cmd *cobra.Command, m *runtime.Manager, id, outputDir string) error {
	stdoutPath, stderrPath := m.LogPaths(id)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	followErrs := make([]error, 2)
	wg.Go(func() { followErrs[0] = follow(stdoutPath, cmd.OutOrStdout(), stop, logPoll) })
	wg.Go(func() { followErrs[1] = follow(stderrPath, cmd.ErrOrStderr(), stop, logPoll) })

	cleanupCtx := context.WithoutCancel(ctx)
	res, err := m.Wait(ctx, id)
	close(stop) // Wait released the task: its logs are complete
	wg.Wait()
	if err == nil {
		err = m.CollectOutput(cleanupCtx, id, outputDir, &res)
	}
	if cerr := m.Cleanup(cleanupCtx, id); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	for _, ferr := range followErrs {
		if ferr != nil {
			return ferr
		}
	}
	return taskExit(res)
}

// taskExit passes the task's exit code through as nsn-run's.
func taskExit(res task.Result) error {
	if res.ExitCode == 0 {
		return nil
	}
	msg := ""
	if res.Reason != task.ReasonExited {
		msg = fmt.Sprintf("task %s: %s", res.ID, res.Reason)
	}
	return &exitError{code: res.ExitCode, msg: msg}
}
