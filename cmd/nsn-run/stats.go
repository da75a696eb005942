package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/nsn-run/nsn-run/stats"
)

func newStatsCommand(g *globalOptions) *cobra.Command {
	var asJSON, watch bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "stats [--json] [--watch] ID",
		Short: "Show a running task's memory, CPU and pids",
		Long: `Sample a running task's cgroup (v1 or v2) and print its memory (current,
peak, limit), CPU (seconds used, percent of one CPU over the last interval,
throttling), pids (current, limit) and OOM kills. Without --watch it takes two
samples one --interval apart and prints the second; with --watch it prints a
sample every --interval until the task ends.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval <= 0 {
				return fmt.Errorf("%w: --interval must be positive", errdefs.ErrInvalidArgument)
			}
			m, closeFn, err := openManager(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeFn()
			samples, err := m.Monitor(cmd.Context(), args[0], interval)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			emit := printStatsLine
			if asJSON {
				emit = printStatsJSON
			} else {
				fmt.Fprintln(out, "MEMORY          PEAK      LIMIT     CPU%     CPU-SECONDS  THROTTLED  PIDS     OOM-KILLS")
			}
			<-samples // the first sample has no CPU percent yet
			for s := range samples {
				if err := emit(out, s); err != nil {
					return err
				}
				if !watch {
					return nil
				}
			}
			if !watch {
				return fmt.Errorf("task %s ended before a second sample: %w", args[0], errdefs.ErrNotFound)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each sample as one JSON object")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "keep printing until the task ends")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "time between samples")
	return cmd
}

func printStatsJSON(w io.Writer, s stats.Sample) error {
	return json.NewEncoder(w).Encode(s)
}

func printStatsLine(w io.Writer, s stats.Sample) error {
	_, err := fmt.Fprintf(w, "%-15s %-9s %-9s %-8.1f %-12.3f %-10d %d/%-6d %d\n",
		units.BytesSize(float64(s.MemoryCurrentBytes)), units.BytesSize(float64(s.MemoryPeakBytes)),
		units.BytesSize(float64(s.MemoryLimitBytes)), s.CPUPercent, s.CPUUsageSeconds,
		s.CPUThrottledPeriods, s.PidsCurrent, s.PidsLimit, s.OOMKills)
	return err
}
