package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/spf13/cobra"
)

func newWaitCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "wait ID",
		Short: "Wait for a task to end and print its Result",
		Long: `Wait for the task to end (enforcing its deadline and limits meanwhile, as
run does) and print its Result as JSON, with its logs and output files
listed. nsn-run exits with the task's exit code. A task that has already
ended (a detached task its supervisor waited on) answers at once. The task
stays until nsn-run rm.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, closeFn, err := openManager(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeFn()
			res, err := m.Wait(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := m.CollectOutput(cmd.Context(), args[0], "", &res); err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			if err := enc.Encode(res); err != nil {
				return err
			}
			return taskExit(res)
		},
	}
}

func newInspectCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect ID",
		Short: "Print a task's state as JSON",
		Long: `Print the task's state as JSON: running or stopped, its exit code, host
identity and, once it has been waited on, its Result (reason, times,
stats).`,
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
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		},
	}
}

// superviseCommand is the hidden command run -d leaves behind: it waits on
// the task as run would have, so its deadline and limits hold with nobody
// waiting, records its Result and releases its container, then exits.
const superviseCommand = "supervise"

func newSuperviseCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:    superviseCommand + " ID",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, closeFn, err := openManager(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeFn()
			_, err = m.Wait(cmd.Context(), args[0])
			return err
		},
	}
}

// startSupervisor starts `nsn-run supervise ID` detached from this process
// (its own session, no terminal, no inherited output), with the same
// global flags, so a detached task's deadline is enforced after run -d
// returns.
func startSupervisor(g *globalOptions, id string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("start the task's supervisor: %w", err)
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
	c := exec.Command(self, append(args, superviseCommand, id)...)
	c.Stdin, c.Stdout, c.Stderr = null, null, null
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		return fmt.Errorf("start the task's supervisor: %w", err)
	}
	return c.Process.Release()
}
