package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nsn-run/nsn-run/node"
	"github.com/nsn-run/nsn-run/runtime/docker"
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
		Long: `Check an OCI runtime spec (config.json), or a Docker Engine create request as
'nsn-run spec --backend docker' prints it, against nsn-run's isolation policy.
Reads FILE, or standard input for "-" or no argument.

The policy is an allowlist over every field of the spec: the auditor reads
the task's own knobs from it (id = hostname, command, env, working dir,
non-root user, memory, CPU, pids, open files, /tmp size, granted GPUs), checks
them against the task's bounds, rebuilds the spec nsn-run would generate for
that task on this host (--namespace names the cgroup path, --state-dir the
only host path a task may have bound: STATE/tasks/ID/output/KEY, KEY the
random 128-bit key the task drew at its start (a spec shows 000...0);
--cdi-spec-dir
the CDI specs whose edits the "nsn.gpus" annotation's devices may add), and
compares the two. Every other difference is a finding, so "no findings" means
no more than nsn-run itself would grant. A spec with a user namespace must
carry that namespace's per-user limits (linux.sysctl "user.max_*": 16 inotify
instances, no nested namespaces, ...), exactly, unless the node's containerd
(--address), where it answers, is older than 2.3, or reports (its runtime
info: runc features) that the runc its shim runs is older than 1.4, which
refuses them: there a spec without them passes too, as nsn-run's own are
then (it sets the limits between create and start; see
docs/security-model.md). The runc on this shell's PATH plays no part. The
user namespace's host id range must be free on this node or held by the
spec's own task (same id, state dir, namespace and containerd, as
/run/nsn-run/ids records them; a held range where --address does not
answer is a finding), and then the spec must be that task's, as its
container holds it (a task without a container, or another command under
its id, is a finding), and must not overlap /etc/subuid, /etc/subgid or an
account's id. Whatever its user namespace, a spec under the id of a task
the state dir holds (its record, and its /output until rm) must be that
task's own, running, as its container holds it; a create request under
such an id is a finding. The GPUs it names must be free on this node
(/run/nsn-run/gpus) or its own task's: another task's exclusive GPU, or a
GPU others share for a spec whose use is not shared, is a finding. A
create request is judged the same
way against the request nsn-run would send (runtime, seccomp profile,
privileges, devices, binds, namespaces, resources, ulimits), built for the
image its nsn.image label names as dockerd (DOCKER_HOST) holds it now: the
request must name that image by its ID (so that a tag moved later does
not change what runs), and, since dockerd merges an image's volumes and env
into the container, carry nsn-run's empty read-only tmpfs over each image
volume and the image's NVIDIA device variables set empty; where dockerd
does not answer or lacks the image, that is a finding. The JSON is read strictly: unknown
fields, keys that differ only in case, and duplicate keys are findings, since
runtimes disagree on what they mean. Bind sources that run through a symlink
on this host are findings.

Prints one line per finding: RULE PATH: MESSAGE. --rules lists the rules,
their sources (CIS Docker Benchmark section 5, Pod Security Standards,
advisories) and the unit tests (spec/audit TestMutations) that break each.
Exit status: 0 no findings, 1 findings, 2 unreadable input.`,
		Example: `  nsn-run audit /run/containerd/io.containerd.runtime.v2.task/nsn/ID/config.json
  nsn-run spec busybox:latest -- true | nsn-run audit -
  nsn-run audit --rules`,
		// Usage errors are "unreadable input" too: audit's statuses are 0,
		// 1 and 2 only, so a script cannot read a bad call as a finding.
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.MaximumNArgs(1)(cmd, args); err != nil {
				return &exitError{code: auditUnreadable, msg: err.Error()}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			if listRules {
				for _, r := range audit.Rules() {
					fmt.Fprintf(out, "%s\n  %s\n  sources: %s\n  broken by: %s\n", r.ID, r.Summary, r.Sources, strings.Join(r.TestNames(), ", "))
				}
				fmt.Fprintf(out, "%s (Docker create requests)\n  %s\n", docker.RuleRuntime, docker.RuleRuntimeSummary)
				return nil
			}
			name := "-"
			if len(args) == 1 {
				name = args[0]
			}
			b, err := readInput(cmd.InOrStdin(), name)
			if err != nil {
				return &exitError{code: auditUnreadable, msg: err.Error()}
			}
			// The policy run applies (node.AuditPolicy), from the global
			// flags; bind sources are resolved on this host.
			findings, err := node.Audit(cmd.Context(), g.nodeOptions(), b)
			if errors.Is(err, node.ErrUnreadable) {
				return &exitError{code: auditUnreadable, msg: fmt.Sprintf("%s: %v", name, strings.TrimPrefix(err.Error(), node.ErrUnreadable.Error()+": "))}
			}
			if err != nil {
				return err
			}
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
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: auditUnreadable, msg: err.Error()}
	})
	return cmd
}

func readInput(stdin io.Reader, name string) ([]byte, error) {
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
	return b, nil
}
