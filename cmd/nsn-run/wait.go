package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

func newWaitCommand(g *globalOptions) *cobra.Command {
	var outputDir string
	cmd := &cobra.Command{
		Use:   "wait [--output-dir DIR] ID",
		Short: "Wait for a task to end and print its Result",
		Long: `Wait for the task to end (enforcing its deadline and limits meanwhile, as
run does) and print its Result as JSON, with its logs and output files
listed. nsn-run exits with the task's exit code. A task that has already
ended (a detached task its supervisor waited on) answers at once; waiters
in several processes take turns, and the later ones read the Result the
first recorded. Interrupting a wait whose turn has not come (the task's
supervisor is waiting on it) leaves the task running (exit 125);
interrupting the waiter that enforces the limits stops the task, as
interrupting run does. The task stays until nsn-run rm or gc.

With --output-dir the files the task wrote to /output are copied there
as run --output-dir copies them (a new or empty directory; only regular
files and directories, never a link followed): the way to take a detached
task's results. Do not read STATE/tasks/ID/output/KEY directly: it is the
task's own tree, with its links to host paths and its fifos. A copy that
fails leaves the task and its output in place (exit 125). An output that a
process outside the task held open for writing when the task ended is
never handed over as the task's (exit 125, naming the failed seal;
without --output-dir the Result lists no file of it, and says why in
output_skipped).`,
		Example: `  nsn-run run -d --id job1 busybox -- sh -c 'echo 42 > /output/answer'
  nsn-run wait --output-dir ./job1-out job1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Checked before connecting; WaitAndCollect checks again,
			// with the state dir, before the wait, which may be long.
			if err := runtime.CheckOutputDest(outputDir); err != nil {
				return err
			}
			m, closeFn, err := openManager(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeFn()
			holdDeadlines() // a wait may be the one enforcing the limits
			res, err := m.WaitAndCollect(cmd.Context(), args[0], outputDir)
			if err != nil {
				return err
			}
			if err := printJSON(cmd.OutOrStdout(), res); err != nil {
				return err
			}
			return taskExit(res)
		},
	}
	cmd.Flags().StringVar(&outputDir, "output-dir", "", "host directory to copy the files the task wrote to /output into (new or empty)")
	return cmd
}

func newInspectCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect ID",
		Short: "Print a task's state as JSON",
		Long: `Print the task's state as JSON: running or stopped, its exit code, host
identity and, once it has been waited on, its Result (reason, times,
stats, logs and output files, as wait prints it).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, closeFn, err := openManager(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeFn()
			st, err := m.Inspect(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if st.Result != nil {
				// The record keeps the Result without the logs, which
				// are in their files: the same Result wait prints.
				if err := m.CollectOutput(cmd.Context(), args[0], "", st.Result); err != nil {
					return err
				}
			}
			return printJSON(cmd.OutOrStdout(), st)
		},
	}
}

// superviseCommand is the hidden command run -d starts: it spawns the task
// and waits on it as run would (Manager.Supervise), so its deadline and
// limits hold with nobody waiting; it records its Result and releases its
// container, then exits.
const superviseCommand = "supervise"

// supervisorReport is what the supervisor tells run -d on fd 3 once the
// spawn is done: nothing wrong, or the error and the exit code run would
// have given.
type supervisorReport struct {
	Error    string `json:"error,omitempty"`
	ExitCode int    `json:"exit_code,omitempty"`
}

func newSuperviseCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:    superviseCommand,
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			report := os.NewFile(3, "report")
			var t task.Task
			if err := json.NewDecoder(io.LimitReader(cmd.InOrStdin(), 1<<20)).Decode(&t); err != nil {
				return sendReport(report, fmt.Errorf("read the task: %w", err))
			}
			m, closeFn, err := openManager(cmd.Context(), g)
			if err != nil {
				return sendReport(report, err)
			}
			defer closeFn()
			_, err = m.Supervise(cmd.Context(), t, func(_ runtime.Handle, err error) { _ = sendReport(report, err) })
			return err
		},
	}
}

// sendReport writes the spawn's outcome to run -d and closes the pipe.
func sendReport(w *os.File, spawnErr error) error {
	defer w.Close()
	r := supervisorReport{}
	if spawnErr != nil {
		r.Error, r.ExitCode = spawnErr.Error()+cliHint(spawnErr), exitCodeOf(spawnErr)
	}
	if err := json.NewEncoder(w).Encode(r); err != nil {
		return err
	}
	return spawnErr
}

// startSupervised starts `nsn-run supervise` detached from this process
// (its own session, no terminal, no inherited output), with the same
// global flags and the task on its stdin, and returns once it has spawned
// the task: the spawn's error, as run would report it, or nil.
func startSupervised(g *globalOptions, t task.Task) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("start the task's supervisor: %w", err)
	}
	taskJSON, err := json.Marshal(t)
	if err != nil {
		return err
	}
	args := []string{"--address", g.address, "--namespace", g.namespace, "--backend", g.backend,
		"--state-dir", g.stateDir, "--user-namespaces", g.userns}
	for _, d := range g.cdiSpecDirs {
		args = append(args, "--cdi-spec-dir", d)
	}
	for _, r := range g.allowedRuntimes {
		args = append(args, "--allowed-runtime", r)
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("start the task's supervisor: %w", err)
	}
	defer null.Close()
	reports, report, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start the task's supervisor: %w", err)
	}
	defer reports.Close()
	c := exec.Command(self, append(args, superviseCommand)...)
	c.Stdin, c.Stdout, c.Stderr = bytes.NewReader(taskJSON), null, null
	c.ExtraFiles = []*os.File{report} // fd 3
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = c.Start()
	report.Close()
	if err != nil {
		return fmt.Errorf("start the task's supervisor: %w", err)
	}
	var r supervisorReport
	if err := json.NewDecoder(reports).Decode(&r); err != nil {
		_ = c.Process.Kill()
		_ = c.Wait()
		return fmt.Errorf("the task's supervisor ended before it started the task: %w", err)
	}
	if err := c.Process.Release(); err != nil {
		return err
	}
	if r.Error != "" {
		return &exitError{code: r.ExitCode, msg: r.Error}
	}
	return nil
}
