package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/go-units"
	"github.com/moby/sys/signal"
	"github.com/spf13/cobra"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

func newPsCommand(g *globalOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List tasks",
		Long:  "List the tasks nsn-run created in the namespace, running or not yet removed.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, closeFn, err := openManager(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeFn()
			list, err := m.List(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), list)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tIMAGE\tSTATE\tEXIT\tHOST IDS\tCREATED")
			for _, st := range list {
				exit := "-"
				if st.State == runtime.StateStopped {
					exit = fmt.Sprint(st.ExitCode)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s ago\n", st.ID, st.Image, st.State, exit, hostIDs(st.Identity), units.HumanDuration(time.Since(st.CreatedAt)))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newLogsCommand(g *globalOptions) *cobra.Command {
	var followFlag, raw bool
	cmd := &cobra.Command{
		Use:   "logs [-f] [--raw] ID",
		Short: "Print a task's stdout and stderr",
		Long: `Print what the task wrote: its stdout to stdout, its stderr to stderr. Each
stream is capped (head and tail kept, a marker where bytes were dropped).
-f keeps printing until the task stops.

` + terminalHelp,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			m, closeFn, err := openManager(ctx, g)
			if err != nil {
				return err
			}
			defer closeFn()
			id := args[0]
			stdout, flushOut := taskOutput(cmd.OutOrStdout(), raw)
			stderr, flushErr := taskOutput(cmd.ErrOrStderr(), raw)
			err = m.Logs(ctx, id, runtime.LogOptions{Stdout: stdout, Stderr: stderr, Follow: followFlag})
			return errors.Join(err, flushOut(), flushErr())
		},
	}
	cmd.Flags().BoolVarP(&followFlag, "follow", "f", false, "keep printing until the task stops")
	cmd.Flags().BoolVar(&raw, "raw", false, rawHelp)
	return cmd
}

func newKillCommand(g *globalOptions) *cobra.Command {
	var sigName string
	cmd := &cobra.Command{
		Use:   "kill [-s SIGNAL] ID...",
		Short: "Send a signal to tasks",
		Long: `Send SIGNAL (default KILL) to each task. KILL goes to every process in the
task's cgroup; other signals to its main process.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sig, err := signal.ParseSignal(sigName)
			if err != nil {
				return fmt.Errorf("%w: signal %q: %w", errdefs.ErrInvalidArgument, sigName, err)
			}
			m, closeFn, err := openManager(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeFn()
			return eachArg(cmd.OutOrStdout(), args, func(id string) (string, error) {
				return id, m.Kill(cmd.Context(), id, sig, sig == syscall.SIGKILL)
			})
		},
	}
	cmd.Flags().StringVarP(&sigName, "signal", "s", "KILL", "signal name or number")
	return cmd
}

func newRmCommand(g *globalOptions) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [-f] ID...",
		Short: "Remove tasks and everything they left",
		Long: `Remove each task: its container, snapshot and state directory (logs and
output). A running task is refused unless -f, which kills it first.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, closeFn, err := openManager(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeFn()
			return eachArg(cmd.OutOrStdout(), args, func(id string) (string, error) {
				return id, m.Remove(cmd.Context(), id, force)
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill running tasks first")
	return cmd
}

// eachArg runs do for each of args in turn, printing the line each
// success returns; the errors of the others come back as one error, on
// one line (so one bad argument neither stops the rest nor hides them).
func eachArg(out io.Writer, args []string, do func(arg string) (string, error)) error {
	var errs []string
	for _, arg := range args {
		line, err := do(arg)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		fmt.Fprintln(out, line)
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

func newGCCommand(g *globalOptions) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "gc [--force]",
		Short: "Remove what stopped or crashed runs left behind",
		Long: `Remove what stopped or crashed runs left in the namespace and state dir:
nsn-run's containers that are not running, with their tasks, snapshots and
output mounts; leases and snapshots of spawns that died before their
container existed; the empty cgroups of creates given up on midway (no
container, no runc state); containerd's idmapped image-layer mounts
(/tmp/ovl-idmappedN) that an earlier gc saw over a minute before (they live
milliseconds; one left by a killed shim pins its image); shims of its
containerd and namespace that serve nothing (their bundle removed, nothing
but task loggers under them); state directories no container belongs to. Print one line
per object removed. Running tasks are left alone unless --force, which stops
and removes them too; a running task of this state dir that has no record
(its start failed after the daemon ran it, so nobody can wait on it) is
removed either way. Safe to run twice, and on a timer while tasks start:
a task some process is spawning, waiting on or running (over the same
--state-dir) is left alone unless --force. A running task past its
deadline and grace that nobody waits on (its supervisor was killed) is
ended as its wait would have ended it ("ended task ID: ..."), its Result
recorded. Tasks another --state-dir started in the same namespace (or
dockerd), and what their spawns hold, are that state dir's: gc passes
over them, even with --force.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, closeFn, err := openManager(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeFn()
			removed, err := m.CleanupOrphans(cmd.Context(), force)
			for _, r := range removed {
				if strings.HasPrefix(r, "ended ") {
					fmt.Fprintln(cmd.OutOrStdout(), r) // a task gc ended, not removed
					continue
				}
				fmt.Fprintln(cmd.OutOrStdout(), "removed", r)
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "also stop and remove running tasks")
	return cmd
}

// hostIDs is a task's host identity for a table: its range, or its level.
func hostIDs(id *task.Identity) string {
	switch {
	case id == nil:
		return "-"
	case id.Range != nil:
		return id.Range.String()
	default:
		return id.Level
	}
}
