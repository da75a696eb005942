package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/nsn-run/nsn-run/doctor"
)

func newDoctorCommand(g *globalOptions) *cobra.Command {
	var asJSON bool
	var runc string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check that this host can run tasks safely",
		Long: `Check the host nsn-run runs on: containerd reachable and its version; the
containerd socket owned by root and writable by no one else; runc's version
against the releases that fixed CVE-2019-5736, CVE-2024-21626 and the 2025
maskedPaths/procfs advisories (CVE-2025-31133, CVE-2025-52565,
CVE-2025-52881), counting the fixes Debian's package backports (its
version from dpkg-query), and its libseccomp; the cgroup layout; kernel
seccomp; overlayfs; user namespaces; core_pattern (a pipe helper is started
as root on the host by a crashing task: warn); AppArmor (ok when the
kernel has it enabled, securityfs is mounted and apparmor_parser is
installed: tasks then run under nsn-run-default; warn otherwise, tasks run
without a profile); the CDI spec dirs
(root-owned, not writable by others) and their specs; NVIDIA GPUs; the
version of the NVIDIA hooks the CDI specs run (fatal before 1.17.8:
CVE-2025-23266, CVE-2025-23267).

With --backend docker the daemon checks are dockerd's instead: reachable
and its API version; its socket; runc among its runtimes (every request
pins it; fatal without it); CDI device requests (API 1.44, Docker 25:
without them GPU tasks are refused, warn); userns-remap.

Each line: STATUS CHECK DETAIL, and what to do for warn and fatal.
Exit status 1 when a check is fatal.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			checks := doctor.Run(cmd.Context(), doctor.Options{Backend: g.backend, Address: g.address, Namespace: g.namespace, DockerHost: dockerHost(), Runc: runc, CDIDirs: g.cdiSpecDirs})
			out := cmd.OutOrStdout()
			if asJSON {
				if err := printJSON(out, checks); err != nil {
					return err
				}
			} else {
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				for _, c := range checks {
					fmt.Fprintf(w, "%s\t%s\t%s\n", c.Status, c.Name, c.Detail)
					if c.Fix != "" && (c.Status == doctor.Warn || c.Status == doctor.Fatal) {
						fmt.Fprintf(w, "\t\tfix: %s\n", c.Fix)
					}
				}
				if err := w.Flush(); err != nil {
					return err
				}
			}
			if doctor.Worst(checks) == doctor.Fatal {
				return &exitError{code: 1, msg: "fatal problems found: see above"}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the checks as JSON")
	cmd.Flags().StringVar(&runc, "runc", "runc", "the runc binary containerd's shim runs")
	return cmd
}
