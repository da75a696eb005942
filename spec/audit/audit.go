// Package audit judges an OCI runtime spec against nsn-run's isolation
// policy. It is an allowlist, not a list of known-bad fields: the auditor
// reads the task's own knobs from the spec (its id, command, env, working
// dir, user, limits and granted GPUs), checks them against the task's bounds
// and the operator's Policy, rebuilds the spec nsn-run would generate for
// that task, and compares the two field by field. Every other difference is
// a finding, so "no findings" means "no more than nsn-run itself would
// grant". The containerd backend refuses a spec with findings; reviewers run
// the same check with `nsn-run audit`. Rules() names each class of
// difference with its sources and the test that breaks it.
package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/idmap"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/task"
)

// Finding is one violation: the rule broken, the spec path it concerns (in
// JSON field names, e.g. "process.noNewPrivileges"), and one line of text.
type Finding struct {
	Rule    string `json:"rule"`
	Path    string `json:"path"`
	Message string `json:"message"`
}

func (f Finding) String() string {
	if f.Path == "" {
		return f.Rule + ": " + f.Message
	}
	return f.Rule + " " + f.Path + ": " + f.Message
}

// Spec annotations nsn-run writes: the CDI devices granted to the task, and
// whether it shares them. (The gpu package writes them; the auditor reads
// them to replay the same CDI edits.)
const (
	AnnotationGPUs       = "nsn.gpus"
	AnnotationGPUsShared = "nsn.gpus-shared"
	// AnnotationShimGroup is the runc v2 shim's grouping key, which the
	// containerd backend sets when the operator groups tasks into shims.
	AnnotationShimGroup = "io.containerd.runc.v2.group"
)

// DefaultTasksDir is where nsn-run keeps each task's state (its --state-dir,
// /var/lib/nsn-run, plus "tasks"); a task's output dir is TasksDir/ID/output.
const DefaultTasksDir = "/var/lib/nsn-run/tasks"

// Policy is the operator's side of the allowlist: what nsn-run may generate
// on this node.
type Policy struct {
	// Namespace is the containerd namespace tasks run in; it names their
	// cgroup path. spec.DefaultNamespace if empty.
	Namespace string
	// TasksDir holds each task's state; its output dir, the only host path
	// a task may have bound, is TasksDir/ID/output. DefaultTasksDir if empty.
	TasksDir string
	// Max bounds the task's limits beyond the task package's own bounds;
	// zero fields leave those.
	Max task.Limits
	// OOMScoreAdj is the score tasks get (spec.Options.OOMScoreAdj); 0
	// means spec.DefaultOOMScoreAdj.
	OOMScoreAdj int
	// CDI replays the edits of the GPUs a spec's annotation names; nil
	// makes any GPU annotation a finding.
	CDI spec.DeviceInjector
	// ResolveSource, if set, resolves a bind mount's host source (for
	// example filepath.EvalSymlinks on the host that runs the spec); a
	// source that resolves elsewhere is a finding.
	ResolveSource func(path string) (string, error)
	// IDs is the span tasks' host id ranges are allotted from; a spec's
	// user namespace must map exactly one of its ranges.
	// idmap.DefaultSpan if zero.
	IDs idmap.Span
	// ShimGroup is the runc shim group the operator has tasks share
	// (containerd.Config.ShimGroup); empty allows none. A spec naming
	// another group would attach its task to another shim process, as
	// another tenant's task.
	ShimGroup string
	// HostIdentity allows, and requires, a spec without a user namespace
	// of its own: tasks run with host ids (the operator turned user
	// namespaces off). By default a spec must have one.
	HostIdentity bool
	// AppArmorProfile is the AppArmor profile every task runs under
	// (spec.DefaultAppArmorProfile where the host supports AppArmor); a
	// spec must name exactly it. Empty requires a spec without one.
	AppArmorProfile string
	// InitBinary is the host path of nsn-init, the only source a task's
	// InitPath may be bound from (spec.Options.InitBinary); empty allows
	// no task an init.
	InitBinary string
	// UserNSLimitsOutside allows a spec with a user namespace but without
	// the namespace's per-user limits in linux.sysctl (spec.UserNSSysctls):
	// whoever runs it sets them itself, as nsn-run does where runc is older
	// than 1.4 and refuses user.* sysctls. By default a spec with a user
	// namespace must carry them, exactly.
	UserNSLimitsOutside bool
	// UserNS is the host id range the task was granted; a spec that maps
	// another is a finding. Backend Start sets it: an operator's SpecOpt
	// that moved the mapping to another valid range would otherwise pass,
	// and the task would share another's host identity.
	UserNS *task.IDRange
	// RangeHolder, if set, says who holds a host id range on this node
	// (held false: no one): a spec whose range another live task holds (a
	// task of another id, or of another state dir) is a finding. It would
	// run as that task's host identity beside it: an outside review ran
	// such a spec with runc, two containers as host uid 1114110.
	// node.AuditPolicy reads the node's allocations (idmap.HolderOf); a
	// range no one holds passes (a spec shown before its task starts).
	RangeHolder func(r task.IDRange) (h idmap.Holder, held bool, err error)
	// TaskSpec, if set, is the spec of the live task id in the policy's
	// namespace as its container holds it (exists false: no container of
	// that id). A spec whose range its own task holds must be that spec:
	// a sixteenth review gave another command and env a stopped task's
	// id, range and /output, the audit passed it, and run with runc it
	// read and forged the task's results as its host uid. Set by
	// node.AuditPolicy, never by a Start (its container does not exist
	// yet).
	// A stopped task's own spec is a finding too: run again, from another
	// bundle whose relative root holds other code, it runs as the task's
	// host identity with its /output (a seventeenth review forged a
	// result so); while the task runs, runc refuses a second container in
	// its cgroup.
	TaskSpec func(id string) (t TaskState, exists bool, err error)
	// StateDirID is the id of the policy's state dir (runtime.Owner.ID),
	// "" if unknown. A Docker create request's state-dir-id label must be
	// it: the Docker backend takes a container with another state dir's
	// id for that state dir's task (ps, kill, rm, gc there), which a
	// twenty-second review gave a request of another state dir.
	StateDirID string
	// TaskExists, if set, says whether task id has state in the policy's
	// state dir (its record, and its /output until it is removed). A spec
	// under that id must then be the task's own, running, as TaskSpec
	// reads it; without TaskSpec (a Docker request) it is a finding. A
	// twentieth review gave another command a stopped task's id with
	// user namespaces off (no range to hold, so none of the checks above
	// ran): the audit passed it, and run with runc it read the task's
	// result and forged it, and `wait --output-dir` handed the forgery
	// over. Set by node.AuditPolicy, never by a Start (the Manager has
	// made the task's state before its backend starts it).
	TaskExists func(id string) (bool, error)
	// GPUHolds, if set, refuses the GPUs (CDI device names) a spec of task
	// id names where another task holds one on this node: exclusively,
	// or, unless the spec's use is shared, sharing it
	// (gpu.Injector.CheckHolds). A spec naming a GPU another task holds
	// alone passed the audit until a twenty-first review, while `nsn-run
	// spec` refused it. Set by node.AuditPolicy, never by a Start (the
	// Manager has granted the task its GPUs by then).
	GPUHolds func(id string, devices []string, shared bool) error
	// CheckRange, if set, refuses a host id range the host gives others
	// (idmap.CheckHostIDs: /etc/subuid, /etc/subgid, accounts), as the
	// node's allocator refuses a span that holds one.
	CheckRange func(r task.IDRange) error
	// ResolveImage reads the image a Docker create request names (by its
	// name, the nsn.image label), as the dockerd the request is for holds
	// it: its ID and config. The request must name that image by its ID
	// (Config.Image), so that dockerd creates the container from the
	// image judged here whatever the name names by then (a twenty-fourth
	// review moved a tag between a clean audit and the create, and the
	// request ran another image). dockerd merges an image's volumes, env
	// and labels into its container, so the request must also carry
	// nsn-run's guard against each: an empty read-only tmpfs over every
	// image volume (else dockerd makes a writable volume on its own disk,
	// outside the task's limits), and each NVIDIA device variable the image
	// sets, set empty (a twenty-third review dropped the tmpfs from
	// nsn-run's own request; the audit passed it, and its task, limited to
	// 16 MiB, wrote 100 MiB to dockerd's disk). Where it is nil or fails, a
	// request is a finding: the merge cannot be judged. The OCI spec audit
	// does not use it: containerd merges nothing.
	ResolveImage func(ctx context.Context, name string) (id string, config ocispec.ImageConfig, err error)
	// Containerd is the UUID of the containerd the specs are for (empty:
	// it did not answer). A range held by a task of another containerd,
	// even in a namespace of the same name, is a finding, as is one whose
	// containerd cannot be compared (a fifteenth review audited a live
	// task's spec clean against another containerd's address).
	Containerd string
}

func (p Policy) span() idmap.Span {
	if p.IDs == (idmap.Span{}) {
		return idmap.DefaultSpan
	}
	return p.IDs
}

func (p Policy) tasksDir() string {
	if p.TasksDir == "" {
		return DefaultTasksDir
	}
	return filepath.Clean(p.TasksDir)
}

func (p Policy) namespace() string {
	if p.Namespace == "" {
		return spec.DefaultNamespace
	}
	return p.Namespace
}

// OutputDir is the host directory a preview of task id's spec binds at
// /output: TASKSDIR/ID/output/KEY with task.PreviewOutputKey.
func (p Policy) OutputDir(id string) string {
	return filepath.Join(p.tasksDir(), id, "output", task.PreviewOutputKey)
}

// OutputFor is the host directory the policy lets task id bind at /output,
// given source, the one a spec or request binds: source itself where it is
// TASKSDIR/ID/output/KEY for a key of the right shape (the task's key,
// drawn at random at its start, is known to its record and container
// alone: task.NewOutputKey), else the preview's (OutputDir), so that the
// difference names the shape nsn-run generates.
func (p Policy) OutputFor(id, source string) string {
	if task.OutputKeyOf(p.tasksDir(), id, source) != "" {
		return source
	}
	return p.OutputDir(id)
}

// outputSource is the source of s's /output mount, "" if it has none.
func outputSource(s *specs.Spec) string {
	for _, m := range s.Mounts {
		if m.Destination == spec.OutputPath {
			return m.Source
		}
	}
	return ""
}

// TaskDir is task id's state directory under the policy's tasks dir.
func (p Policy) TaskDir(id string) string {
	return filepath.Join(p.tasksDir(), id)
}

// Check returns every finding for s under p, rules in table order.
func Check(ctx context.Context, s *specs.Spec, p Policy) []Finding {
	a := &auditor{policy: p}
	if s == nil || s.Process == nil || s.Linux == nil || s.Root == nil {
		a.add(RuleShape, "", "the spec lacks a process, linux or root section: nothing nsn-run generates")
		return a.findings
	}
	t, o, ok := a.knobs(s)
	if !ok {
		return a.sorted()
	}
	want, err := spec.Generate(namespaces.WithNamespace(ctx, p.namespace()), t, ocispec.ImageConfig{}, o)
	if err != nil && len(o.GPUDevices) > 0 {
		// The annotation names devices the CDI specs cannot give: judge
		// the rest against a spec without them, so every edit shows.
		a.add(RuleAnnotations, "annotations."+AnnotationGPUs, "cannot replay the GPUs it names: %v", err)
		t.GPUs, o.GPUDevices = "", nil
		want, err = spec.Generate(namespaces.WithNamespace(ctx, p.namespace()), t, ocispec.ImageConfig{}, o)
	}
	if err != nil {
		a.add(RuleShape, "", "cannot rebuild the spec nsn-run would generate for this task: %v", err)
		return a.sorted()
	}
	a.checkEnv(s, want)
	// The task's own free-form knobs: what runs, with which env, where.
	want.Process.Args = s.Process.Args
	want.Process.Env = s.Process.Env
	want.Process.Cwd = s.Process.Cwd
	if g := p.ShimGroup; g != "" && s.Annotations[AnnotationShimGroup] == g {
		if want.Annotations == nil {
			want.Annotations = map[string]string{}
		}
		want.Annotations[AnnotationShimGroup] = g
	}
	a.checkSources(s)
	a.checkExisting(t.ID, s, "mounts["+spec.OutputPath+"].source")
	if len(o.GPUDevices) > 0 && p.GPUHolds != nil {
		if err := p.GPUHolds(t.ID, o.GPUDevices, t.GPUShared); err != nil {
			a.add(RuleAnnotations, "annotations."+AnnotationGPUs, "%v: the spec would give task %s a GPU that is not its own", err, t.ID)
		}
	}
	diffs, err := Compare(s, want, specCompareOptions)
	if err != nil {
		a.add(RuleShape, "", "%v", err)
		return a.sorted()
	}
	reported := map[string]bool{}
	for _, f := range a.findings {
		reported[f.Path] = true
	}
	for _, d := range diffs {
		if reported[d.Path] {
			continue // a knob out of bounds, already said in its own words
		}
		rule, ok := rulesByPath[d.Path]
		if !ok {
			rule = RuleFor(d.Shape)
		}
		a.add(rule, d.Path, "%s", d.Message())
	}
	return a.sorted()
}

var specCompareOptions = CompareOptions{
	KeyedLists: map[string]string{
		"mounts":           "destination",
		"linux.devices":    "path",
		"linux.namespaces": "type",
		"process.rlimits":  "type",
	},
	// Masking more, or making more read-only, only restricts the task.
	// (containerd also masks each CPU's thermal_throttle directory the
	// host has: a spec from a larger host masks more.)
	SupersetLists: []string{"linux.maskedPaths", "linux.readonlyPaths"},
}

// rulesByPath are the places whose rule their shape does not tell: the
// user namespace's own entry and the per-uid process limit it makes
// meaningful belong to the user namespace's rule.
var rulesByPath = map[string]string{
	"linux.namespaces[user]":        RuleUserNamespace,
	"process.rlimits[RLIMIT_NPROC]": RuleUserNamespace,
}

type auditor struct {
	policy   Policy
	findings []Finding
	// liveCompared is set once the spec was compared with its task's
	// live one (rangeOwnedBy): checkExisting need not again.
	liveCompared bool
}

func (a *auditor) add(rule, path, format string, args ...any) {
	a.findings = append(a.findings, Finding{Rule: rule, Path: path, Message: fmt.Sprintf(format, args...)})
}

// sorted orders findings by the rule table, keeping each rule's in order.
func (a *auditor) sorted() []Finding {
	order := map[string]int{}
	for i, r := range rules {
		order[r.ID] = i
	}
	slices.SortStableFunc(a.findings, func(x, y Finding) int { return order[x.Rule] - order[y.Rule] })
	return a.findings
}

// knobs reads the task a spec describes. A knob outside the task's bounds or
// the policy's maxima is a finding; it is then replaced by the default, so
// the rebuilt spec differs there too and the comparison shows the value.
//
// Without a valid task id in the hostname nothing else can be judged (it
// names the cgroup and the output dir): ok is false then.
func (a *auditor) knobs(s *specs.Spec) (t task.Task, o spec.Options, ok bool) {
	id := s.Hostname
	if err := task.ValidateID(id); err != nil {
		a.add(RuleShape, "hostname", "the hostname is the task id, which names its cgroup and output dir: %v", err)
		return t, o, false
	}
	t = task.Task{ID: id, Image: "audit.invalid/task", Command: s.Process.Args}
	if len(t.Command) > 2 && t.Command[0] == spec.InitPath && t.Command[1] == "--" {
		// nsn-init as pid 1, the task's command its child.
		t.Init, t.Command = true, t.Command[2:]
		if a.policy.InitBinary == "" {
			a.add(RuleProcess, "process.args", "runs %s as pid 1, and this policy allows no init binary", spec.InitPath)
			t.Init = false // judge the rest: the init mount shows as extra
		}
	}
	if len(t.Command) == 0 {
		a.add(RuleProcess, "process.args", "no command: nsn-run never generates a spec without one")
		t.Command = []string{"/missing-command"}
	}
	if u := s.Process.User; u.UID != 0 && u.GID != 0 && u.UID <= 1<<31-1 && u.GID <= 1<<31-1 {
		t.User = fmt.Sprintf("%d:%d", u.UID, u.GID)
	} // else: the default user, and the comparison reports the root id.
	if err := task.ValidateWorkingDir(s.Process.Cwd); err != nil {
		a.add(RuleProcess, "process.cwd", "%v", err)
	}
	if err := task.ValidateEnv(s.Process.Env); err != nil {
		a.add(RuleProcess, "process.env", "%v", err)
	}

	l := &t.Limits
	res := s.Linux.Resources
	if res != nil && res.Memory != nil && res.Memory.Limit != nil {
		l.MemoryBytes = *res.Memory.Limit
	}
	if res != nil && res.CPU != nil && res.CPU.Quota != nil && *res.CPU.Quota > 0 {
		l.CPUs = float64(*res.CPU.Quota) / 100000
	}
	if res != nil && res.Pids != nil && res.Pids.Limit != nil {
		l.Pids = *res.Pids.Limit
	}
	for _, r := range s.Process.Rlimits {
		if r.Type == "RLIMIT_NOFILE" && r.Hard <= task.MaxOpenFiles {
			l.OpenFiles = int64(r.Hard)
		}
	}
	for _, m := range s.Mounts {
		if m.Destination == spec.TmpPath {
			l.TmpBytes, l.TmpInodes = TmpfsLimits(m.Options)
		}
	}
	a.findings = append(a.findings, CheckLimits(l, a.policy, LimitPaths{
		Memory: "linux.resources.memory.limit", CPU: "linux.resources.cpu.quota", Pids: "linux.resources.pids.limit",
		OpenFiles: "process.rlimits", Tmp: "mounts[/tmp].options",
	})...)

	o = spec.Options{OutputDir: a.policy.OutputFor(id, outputSource(s)), OOMScoreAdj: a.policy.OOMScoreAdj, AppArmorProfile: a.policy.AppArmorProfile, InitBinary: a.policy.InitBinary}
	if !a.policy.HostIdentity {
		o.UserNS = a.userNSRange(s)
		// The namespace's per-user limits are in the spec exactly as
		// nsn-run writes them (spec.UserNSSysctls), or, where the policy
		// lets whoever runs it set them, not at all.
		o.UserNSSysctls = o.UserNS != nil && (len(s.Linux.Sysctl) > 0 || !a.policy.UserNSLimitsOutside)
	}
	if names := s.Annotations[AnnotationGPUs]; names != "" {
		if a.policy.CDI == nil {
			a.add(RuleAnnotations, "annotations."+AnnotationGPUs, "names GPUs %s, but this policy has no CDI specs to check their edits against", names)
		} else {
			o.GPUDevices = strings.Split(names, ",")
			o.CDI = a.policy.CDI
			// The request only has to be non-empty: the names are what
			// is injected.
			t.GPUs = "all"
			t.GPUShared = s.Annotations[AnnotationGPUsShared] == "true"
		}
	}
	return t, o, true
}

// LimitPaths name where each limit sits in the audited document, for the
// findings' paths.
type LimitPaths struct {
	Memory, CPU, Pids, OpenFiles, Tmp string
}

// CheckLimits checks each limit of l against the task package's bounds and
// p.Max. One out of the task's bounds is a finding and is reset to the
// default (the rebuilt document then differs there too); one above the
// policy's maximum is a finding and is kept, so only this check reports it.
// Both auditors (specs and Engine requests) use it.
func CheckLimits(l *task.Limits, p Policy, at LimitPaths) []Finding {
	var out []Finding
	add := func(path, format string, args ...any) {
		out = append(out, Finding{Rule: RuleLimits, Path: path, Message: fmt.Sprintf(format, args...)})
	}
	check := func(path, what string, v *int64, limit int64, probe task.Limits) {
		if *v == 0 {
			return
		}
		if err := probe.Validate(); err != nil {
			add(path, "%v", err)
			*v = 0
			return
		}
		if limit > 0 && *v > limit {
			add(path, "%s %d is above the policy's maximum %d", what, *v, limit)
		}
	}
	max := p.Max
	check(at.Memory, "memory", &l.MemoryBytes, max.MemoryBytes, task.Limits{MemoryBytes: l.MemoryBytes})
	check(at.Pids, "pids", &l.Pids, max.Pids, task.Limits{Pids: l.Pids})
	check(at.OpenFiles, "open files", &l.OpenFiles, max.OpenFiles, task.Limits{OpenFiles: l.OpenFiles})
	check(at.Tmp, "/tmp size", &l.TmpBytes, max.TmpBytes, task.Limits{TmpBytes: l.TmpBytes})
	check(at.Tmp, "/tmp inodes", &l.TmpInodes, max.TmpInodes, task.Limits{TmpInodes: l.TmpInodes})
	if l.CPUs != 0 {
		if err := (task.Limits{CPUs: l.CPUs}).Validate(); err != nil {
			add(at.CPU, "%v", err)
			l.CPUs = 0
		} else if max.CPUs > 0 && l.CPUs > max.CPUs {
			add(at.CPU, "%g CPUs is above the policy's maximum %g", l.CPUs, max.CPUs)
		}
	}
	return out
}

// TmpfsLimits reads a tmpfs's size= and nr_inodes= options (0 where absent
// or not a plain number).
func TmpfsLimits(opts []string) (bytes, inodes int64) {
	for _, opt := range opts {
		k, v, _ := strings.Cut(opt, "=")
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case err != nil:
		case k == "size":
			bytes = n
		case k == "nr_inodes":
			inodes = n
		}
	}
	return bytes, inodes
}

func (a *auditor) checkEnv(s, want *specs.Spec) {
	for i, kv := range s.Process.Env {
		key, _, _ := strings.Cut(kv, "=")
		if task.IsNVIDIADeviceVar(key) && !slices.Contains(want.Process.Env, kv) {
			a.add(RuleEnv, fmt.Sprintf("process.env[%d]", i), "%s selects GPUs outside CDI: only the granted devices' CDI edits may set it", key)
		}
	}
}

// checkSources judges every bind source on the host (CheckBindSource).
func (a *auditor) checkSources(s *specs.Spec) {
	for _, m := range s.Mounts {
		if m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind") {
			a.findings = append(a.findings, CheckBindSource(a.policy, m.Source, "mounts["+m.Destination+"].source")...)
		}
	}
}

// CheckBindSource resolves a bind source on the host, if the policy can:
// a source that is, or runs through, a symlink is not the path it names. A
// source that does not exist yet (audited before run) is judged by the
// longest part of its path that does. at is the finding's path.
func CheckBindSource(p Policy, source, at string) []Finding {
	if p.ResolveSource == nil {
		return nil
	}
	for dir := path.Clean(source); path.IsAbs(dir); dir = path.Dir(dir) {
		resolved, err := p.ResolveSource(dir)
		if err != nil {
			if dir == "/" {
				return nil
			}
			continue // not there (yet): try the part above
		}
		if path.Clean(resolved) != dir {
			return []Finding{{Rule: RuleMounts, Path: at, Message: fmt.Sprintf("%s resolves to %s on this host: a bind source must not run through a symlink", dir, resolved)}}
		}
		return nil
	}
	return nil
}

// userNSRange reads the task's host id range from its mappings: one
// mapping of container ids 0..65535, the same for uids and gids, onto a
// range of the policy's span. Anything else is a finding, and the span's
// first range stands in so the comparison shows the rest.
func (a *auditor) userNSRange(s *specs.Spec) *task.IDRange {
	span := a.policy.span()
	u, g := s.Linux.UIDMappings, s.Linux.GIDMappings
	if len(u) == 1 && len(g) == 1 && u[0] == g[0] && u[0].ContainerID == 0 {
		r := task.IDRange{HostID: u[0].HostID, Size: u[0].Size}
		if _, ok := span.IndexOf(r); ok {
			a.rangeOwnedBy(r, s.Hostname, s)
			return &r
		}
	}
	a.add(RuleUserNamespace, "linux.uidMappings", "the task's ids must map to one host range of %d ids allotted from %d..%d (never host 0), the same for uids and gids; the spec maps uids %s, gids %s",
		task.IDRangeSize, span.Base, uint64(span.Base)+uint64(span.Count)*task.IDRangeSize-1, encode(u), encode(g))
	first := span.RangeAt(0)
	return &first
}

// rangeOwnedBy adds a finding where host id range r is not task id's: not
// the range the policy says it was granted, or one another live task on
// this node holds.
func (a *auditor) rangeOwnedBy(r task.IDRange, id string, s *specs.Spec) {
	last := uint64(r.HostID) + uint64(r.Size) - 1
	if g := a.policy.UserNS; g != nil && *g != r {
		a.add(RuleUserNamespace, "linux.uidMappings", "maps host ids %d..%d, but task %s was granted %d..%d: only its own range keeps it apart from other tasks' host identities", r.HostID, last, id, g.HostID, uint64(g.HostID)+uint64(g.Size)-1)
		return
	}
	if a.policy.CheckRange != nil {
		if err := a.policy.CheckRange(r); err != nil {
			a.add(RuleUserNamespace, "linux.uidMappings", "host ids %d..%d: %v", r.HostID, last, err)
		}
	}
	if a.policy.RangeHolder == nil {
		return
	}
	h, held, err := a.policy.RangeHolder(r)
	switch {
	case err != nil:
		a.add(RuleUserNamespace, "linux.uidMappings", "cannot tell which task holds host ids %d..%d on this node: %v", r.HostID, last, err)
	case held && (h.Task != id || !a.sameStateDir(h.StateDir)):
		a.add(RuleUserNamespace, "linux.uidMappings", "host ids %d..%d are held by live task %s of state dir %s on this node: task %s would share its host identity", r.HostID, last, h.Task, h.StateDir, id)
	case held && h.Namespace != "" && h.Namespace != a.policy.namespace():
		// The same task's spec for another namespace: a second copy of
		// the live task, beside it (a fourteenth review ran one with runc
		// and wrote into the task's /output as its host uid).
		a.add(RuleUserNamespace, "linux.uidMappings", "host ids %d..%d are held by live task %s in containerd namespace %q: a spec of it for namespace %q would run a second copy as its host identity", r.HostID, last, h.Task, h.Namespace, a.policy.namespace())
	case held && h.Containerd != "" && h.Containerd != a.policy.Containerd:
		this := a.policy.Containerd
		if this == "" {
			this = "one that did not answer"
		}
		a.add(RuleUserNamespace, "linux.uidMappings", "host ids %d..%d are held by live task %s of containerd %s, and this audit is for %s: a spec of it there would run a second copy as its host identity", r.HostID, last, h.Task, h.Containerd, this)
	case held && a.policy.TaskSpec != nil:
		a.liveCompared = true
		if why := a.notLiveSpec(id, s); why != "" {
			a.add(RuleUserNamespace, "linux.uidMappings", "host ids %d..%d are held by task %s, %s: a spec under its id would run as its host identity, with its /output", r.HostID, last, id, why)
		}
	}
}

// notLiveSpec says why s is not task id's own running spec as its
// container holds it (Policy.TaskSpec); "" if it is.
func (a *auditor) notLiveSpec(id string, s *specs.Spec) string {
	live, exists, err := a.policy.TaskSpec(id)
	switch {
	case err != nil:
		return fmt.Sprintf("whose own spec cannot be read to compare (%v)", err)
	case !exists:
		return "which has no container"
	case !sameSpec(s, live.Spec):
		return "and this is not its spec (its container's differs)"
	case !live.Running:
		return "which is not running (its spec, run again from another bundle, would run other code)"
	}
	return ""
}

// checkExisting adds a finding where s is under the id of a task the
// policy's state dir holds and is not that task's own running spec
// (Policy.TaskExists): it would bind the task's /output and join its
// cgroup, whatever its user namespace.
func (a *auditor) checkExisting(id string, s *specs.Spec, path string) {
	if a.policy.TaskExists == nil || a.liveCompared {
		return
	}
	exists, err := a.policy.TaskExists(id)
	switch {
	case err != nil:
		a.add(RuleMounts, path, "cannot tell whether task %s exists in the state dir: %v", id, err)
	case !exists:
	case a.policy.TaskSpec == nil:
		a.add(RuleMounts, path, "task %s exists in the state dir %s: a spec under its id would bind its /output; its spec is its container's, not a new one's", id, filepath.Dir(a.policy.tasksDir()))
	default:
		if why := a.notLiveSpec(id, s); why != "" {
			a.add(RuleMounts, path, "task %s exists in the state dir %s, %s: a spec under its id would bind its /output", id, filepath.Dir(a.policy.tasksDir()), why)
		}
	}
}

// CheckExistingTask is the existing-task check (Policy.TaskExists) for a
// request whose live form the audit cannot read (a Docker create
// request): a task of id in the state dir is a finding at path.
func CheckExistingTask(p Policy, id, path string) []Finding {
	p.TaskSpec = nil
	a := &auditor{policy: p}
	a.checkExisting(id, nil, path)
	return a.findings
}

// TaskState is a live task as the audit sees it (Policy.TaskSpec): the
// spec its container holds, and whether its process runs.
type TaskState struct {
	Spec    *specs.Spec
	Running bool
}

// sameSpec reports whether two specs say the same, field for field.
func sameSpec(a, b *specs.Spec) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// sameStateDir reports whether dir is the policy's state dir (the one
// above TasksDir), each resolved as ResolveSource resolves paths.
func (a *auditor) sameStateDir(dir string) bool {
	mine := filepath.Dir(a.policy.tasksDir())
	if resolve := a.policy.ResolveSource; resolve != nil {
		if r, err := resolve(mine); err == nil {
			mine = r
		}
		if r, err := resolve(dir); err == nil {
			dir = r
		}
	}
	return filepath.Clean(dir) == filepath.Clean(mine)
}
