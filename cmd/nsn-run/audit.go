package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"

	"github.com/nsn-run/nsn-run/cdi"
	"github.com/nsn-run/nsn-run/spec/audit"
)

// Exit statuses of `nsn-run audit`.
const (
	auditFindings   = 1
	auditUnreadable = 2
)

// maxSpecBytes bounds what audit reads: a real spec is tens of KiB.
const maxSpecBytes = 16 << 20

func newAuditCommand(g *globalOptions) *cobra.Command {
	var listRules bool
	cmd := &cobra.Command{
		Use:   "audit [FILE|-]",
		Short: "Check an OCI runtime spec against the isolation policy",
		Long: `Check an OCI runtime spec (config.json) against nsn-run's isolation policy,
drawn from the CIS Docker Benchmark section 5 and the Kubernetes Pod Security
Standards "restricted" profile. Reads FILE, or standard input for "-" or no
argument.

A spec that nsn-run gave GPUs (its "nsn.gpus" annotation names their CDI
devices) may hold exactly the device nodes, mounts and allowlisted hooks that
those devices' CDI edits add, as the CDI specs on this host (--cdi-spec-dir)
define them; anything else is a finding.

Prints one line per finding: RULE PATH: MESSAGE.
Exit status: 0 no findings, 1 findings, 2 unreadable input.`,
		Example: `  nsn-run audit /run/containerd/io.containerd.runtime.v2.task/nsn/ID/config.json
  nsn-run spec busybox:latest -- true | nsn-run audit -
  nsn-run audit --rules`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			if listRules {
				for _, r := range audit.Rules() {
					fmt.Fprintf(out, "%-27s %s [%s]\n", r.ID, r.Summary, r.Sources)
				}
				return nil
			}
			name := "-"
			if len(args) == 1 {
				name = args[0]
			}
			s, err := readSpec(cmd.InOrStdin(), name)
			if err != nil {
				return &exitError{code: auditUnreadable, msg: err.Error()}
			}
			policy := audit.Policy{}
			if s.Annotations[cdi.Annotation] != "" {
				gpus, err := cdi.New(cdi.Options{SpecDirs: g.cdiSpecDirs})
				if err != nil {
					return err
				}
				policy = gpus.PolicyFor(policy, s)
			}
			findings := audit.CheckWithPolicy(s, policy)
			for _, f := range findings {
				fmt.Fprintln(out, f)
			}
			if len(findings) > 0 {
				return &exitError{code: auditFindings}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s: no findings (%d rules)\n", name, len(audit.Rules()))
			return nil
		},
	}
	cmd.Flags().BoolVar(&listRules, "rules", false, "list the rules and exit")
	return cmd
}

func readSpec(stdin io.Reader, name string) (*specs.Spec, error) {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxSpecBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > maxSpecBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes, not a runtime spec", name, maxSpecBytes)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: not an OCI runtime spec: %w", name, err)
	}
	return &s, nil
}
