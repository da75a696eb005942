package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/moby/moby/api/types/container"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// RuleRuntime is the rule for the request's runtime, which the OCI spec
// does not carry (containerd takes it beside the spec): only runc, named.
const RuleRuntime = "runtime"

// RuleRuntimeSummary says what RuleRuntime requires, for `audit --rules`.
const RuleRuntimeSummary = "HostConfig.Runtime is runc, named: never dockerd's default runtime (which may be nvidia's legacy hook)"

// IsCreateRequest reports whether b is a JSON object shaped like a Request
// (what `nsn-run spec --backend docker` prints) rather than an OCI runtime
// spec: it has a "host_config" key at the top level.
func IsCreateRequest(b []byte) bool {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return false
	}
	_, ok := top["host_config"]
	return ok
}

// DecodeRequest reads a create request the way the auditor needs it read:
// every key must be a field of the Engine API types, spelled exactly, once
// per object (audit.DecodeStrict). An unknown key is one dockerd would drop
// or a newer dockerd would act on, and nsn-run never writes one, so each is
// a finding; an error means b is not JSON of the request's shape at all.
func DecodeRequest(b []byte) (Request, []audit.Finding, error) {
	var r Request
	findings, err := audit.DecodeStrict(b, &r)
	if err != nil {
		return Request{}, nil, err
	}
	for i := range findings {
		// The strict decoder names the OCI spec's schema; here the
		// schema is the Engine API's.
		findings[i].Message = strings.Replace(findings[i].Message, "runtime-spec "+specs.Version, "the Engine API create request", 1)
	}
	return r, findings, nil
}

// AuditRequest judges a create request as audit.Check judges an OCI spec:
// it reads the task's own knobs from the request (id = name and hostname,
// image, user, env, entrypoint and cmd, working dir, memory, CPU quota,
// pids, open files, /tmp size and inodes, the CDI devices it asks dockerd
// for), checks them against the task's bounds and p, rebuilds the request
// nsn-run would send for that task with CreateRequest (/output bound from
// p.OutputDir(id), the OOM score p's), and compares the two field by field
// (audit.Compare). Every other difference is a finding, classified by the
// field it is in (requestRules), so "no findings" means "no more than
// nsn-run itself would send". The CDI device names must resolve through
// p.CDI; a policy without CDI makes any device request a finding.
func AuditRequest(ctx context.Context, r Request, p audit.Policy) []audit.Finding {
	a := &requestAuditor{policy: p, reported: map[string]bool{}}
	if r.Config == nil || r.HostConfig == nil {
		a.add(audit.RuleShape, "", "the request lacks a config or host_config: nothing nsn-run sends")
		return a.findings
	}
	id := r.Name
	if err := task.ValidateID(id); err != nil {
		a.add(audit.RuleShape, "name", "the container name is the task id, which names its output dir: %v", err)
		return a.findings
	}
	t, gpus := a.knobs(ctx, id, r)
	imageID, img, imageKnown := a.image(ctx, t.Image)
	o := RequestOptions{OutputDir: p.OutputFor(id, outputSource(r)), GPUs: gpus, OOMScoreAdj: p.OOMScoreAdj, ImageID: imageID}
	want, err := CreateRequest(t, img, o)
	if err != nil {
		a.add(audit.RuleShape, "", "cannot rebuild the request nsn-run would send for this task: %v", err)
		return a.findings
	}
	// The task's own free-form knobs: what runs, with which env, where.
	got := r
	want.Config.Env = r.Config.Env
	want.Config.Entrypoint = r.Config.Entrypoint
	want.Config.Cmd = r.Config.Cmd
	// What runs is what the audit read only in nsn-run's shape: the
	// command's first word alone as the Entrypoint. dockerd runs the
	// image's entrypoint where the request's is null, and the image's cmd
	// where both are empty (a twenty-fourth review's null Entrypoint ran
	// the image's, with the audited command as its arguments).
	if len(r.Config.Entrypoint) != 1 && !a.reported["config.Entrypoint"] {
		a.add(audit.RuleProcess, "config.Entrypoint", "is %q: nsn-run sends the command's first word alone (dockerd merges the image's entrypoint into a null one, and its cmd where both are empty)", r.Config.Entrypoint)
	}
	want.Config.WorkingDir = r.Config.WorkingDir
	// The backend records the task's state dir, where it writes the task's
	// logs, as a label: it must be the policy's.
	if _, ok := r.Config.Labels[runtime.LabelStateDir]; ok {
		want.Config.Labels[runtime.LabelStateDir] = p.TaskDir(id)
	}
	// And its state dir's id, which says whose the task is: the
	// policy's state dir's where it is known, else any value of that
	// shape.
	if v, ok := r.Config.Labels[runtime.LabelStateDirID]; ok {
		switch {
		case p.StateDirID != "":
			want.Config.Labels[runtime.LabelStateDirID] = p.StateDirID
		case len(v) == 32 && strings.Trim(v, "0123456789abcdef") == "":
			want.Config.Labels[runtime.LabelStateDirID] = v
		}
	}
	if !imageKnown {
		// Already a finding: the image's ID and name as the request
		// gives them, and the empty read-only tmpfs entries judged on
		// their own (they give the task nothing, wherever they are), are
		// not more findings.
		want.Config.Image = r.Config.Image
		if v, ok := r.Config.Labels[runtime.LabelImage]; ok {
			want.Config.Labels[runtime.LabelImage] = v
		}
		for path, opts := range r.HostConfig.Tmpfs {
			if _, ok := want.HostConfig.Tmpfs[path]; !ok && opts == VoidTmpfs && filepath.IsAbs(path) && filepath.Clean(path) == path && path != "/" {
				want.HostConfig.Tmpfs[path] = opts
			}
		}
	}
	// The image's NVIDIA device variables, each set empty, which dockerd
	// would otherwise merge back in (voidImageDeviceVars): the env is the
	// task's own, but not without them.
	if missing := voidImageDeviceVars(img, r.Config.Env); len(missing) > 0 {
		names := make([]string, len(missing))
		for i, kv := range missing {
			names[i] = strings.TrimSuffix(kv, "=")
		}
		a.add(audit.RuleEnv, "config.Env", "the image sets %s, which dockerd merges into the container unless the request sets it: nsn-run sends %s",
			strings.Join(names, ", "), strings.Join(missing, " "))
	}
	a.checkSources(r)
	a.addFindings(audit.CheckExistingTask(p, id, "host_config.Mounts["+spec.OutputPath+"].Source")...)
	// A create request does not say whether its task shares its GPUs:
	// judged as shared, so only another task's exclusive hold is refused.
	if len(gpus) > 0 && p.GPUHolds != nil {
		if err := p.GPUHolds(id, gpus, true); err != nil {
			a.add(audit.RuleDevices, "host_config.DeviceRequests", "%v: the request would give task %s a GPU that is not its own", err, id)
		}
	}
	got.HostConfig = a.securityOpts(r.HostConfig, want.HostConfig.SecurityOpt)
	diffs, err := audit.Compare(got, want, requestCompareOptions)
	if err != nil {
		a.add(audit.RuleShape, "", "%v", err)
		return a.findings
	}
	for _, d := range diffs {
		if a.covered(d.Path) {
			continue // a knob out of bounds, already said in its own words
		}
		a.add(RequestRuleFor(d.Shape), d.Path, "%s", d.Message())
	}
	return a.findings
}

// image reads the image the request names (by the nsn.image label where
// Config.Image is an ID, else by Config.Image), through the policy: the
// request must name it by that ID, and its guards against dockerd's merge
// (a tmpfs over each image volume, the image's NVIDIA variables set empty)
// are judged against its config. Without it the request is a finding, and
// it is judged as for an image with no config (known false).
func (a *requestAuditor) image(ctx context.Context, name string) (id string, img ocispec.ImageConfig, known bool) {
	if a.policy.ResolveImage == nil {
		a.add(audit.RuleRoot, "config.Image", "the image is not known to the audit (no dockerd to read it from): which image runs, and its volumes and env, which dockerd merges into the container, cannot be judged")
		return "", ocispec.ImageConfig{}, false
	}
	id, img, err := a.policy.ResolveImage(ctx, name)
	if err != nil {
		a.add(audit.RuleRoot, "config.Image", "read image %s from dockerd: %v: which image runs, and its volumes and env, which dockerd merges into the container, cannot be judged", name, err)
		return "", ocispec.ImageConfig{}, false
	}
	return id, img, true
}

// outputSource is the source of r's /output mount, "" if it has none.
func outputSource(r Request) string {
	for _, m := range r.HostConfig.Mounts {
		if m.Target == spec.OutputPath {
			return m.Source
		}
	}
	return ""
}

var requestCompareOptions = audit.CompareOptions{
	KeyedLists: map[string]string{
		"host_config.Mounts":  "Target",
		"host_config.Ulimits": "Name",
	},
	// Masking more, or making more read-only, only restricts the task.
	SupersetLists: []string{"host_config.MaskedPaths", "host_config.ReadonlyPaths"},
}

type requestAuditor struct {
	policy   audit.Policy
	findings []audit.Finding
	// reported are the paths a knob finding already covers.
	reported map[string]bool
}

func (a *requestAuditor) add(rule, path, format string, args ...any) {
	a.addFindings(audit.Finding{Rule: rule, Path: path, Message: fmt.Sprintf(format, args...)})
}

func (a *requestAuditor) addFindings(fs ...audit.Finding) {
	for _, f := range fs {
		a.findings = append(a.findings, f)
		a.reported[f.Path] = true
	}
}

// covered reports whether a finding at p, or at a field holding it, was
// already made.
func (a *requestAuditor) covered(p string) bool {
	for r := range a.reported {
		if r != "" && (p == r || strings.HasPrefix(p, r+".") || strings.HasPrefix(p, r+"[")) {
			return true
		}
	}
	return false
}

// knobs reads the task a request describes, and the CDI devices it asks
// for. A knob out of bounds is a finding and is replaced by the default, so
// the rebuilt request differs there too; one above the policy's maximum is
// kept, so only the limits rule reports it.
func (a *requestAuditor) knobs(ctx context.Context, id string, r Request) (task.Task, []string) {
	c, h := r.Config, r.HostConfig
	// nsn-run names the image by ID, its name in a label (ImageID).
	name, namedAt := c.Image, "config.Image"
	if IsImageID(c.Image) {
		name, namedAt = c.Labels[runtime.LabelImage], "config.Labels."+runtime.LabelImage
	}
	t := task.Task{ID: id, Image: name, Command: append(slices.Clone(c.Entrypoint), c.Cmd...)}
	if _, err := task.NormalizeImage(name); err != nil && !IsImageID(name) {
		a.add(audit.RuleRoot, namedAt, "%v", err)
		t.Image = "audit.invalid/task"
	}
	if len(t.Command) == 0 || t.Command[0] == "" {
		a.add(audit.RuleProcess, "config.Entrypoint", "no command")
		t.Command = []string{"/missing-command"}
	}
	if c.Hostname != id {
		a.add(audit.RuleShape, "config.Hostname", "hostname %q is not the task id %q", c.Hostname, id)
	}
	if uid, gid, err := task.ParseUser(c.User); err == nil {
		t.User = fmt.Sprintf("%d:%d", uid, gid)
	} // else: the default user, and the comparison reports the request's.
	t.Init = h.Init != nil && *h.Init
	if err := task.ValidateWorkingDir(c.WorkingDir); err != nil {
		a.add(audit.RuleProcess, "config.WorkingDir", "%v", err)
	}
	if err := task.ValidateEnv(c.Env); err != nil {
		a.add(audit.RuleProcess, "config.Env", "%v", err)
	}
	for i, kv := range c.Env {
		// Empty, one selects nothing: the request sets an image's so
		// (voidImageDeviceVars), as dockerd would merge it back.
		if key, value, _ := strings.Cut(kv, "="); task.IsNVIDIADeviceVar(key) && value != "" {
			// dockerd's CDI driver applies the granted devices' edits
			// itself: the request never carries these.
			a.add(audit.RuleEnv, fmt.Sprintf("config.Env[%d]", i), "%s selects GPUs outside CDI: nsn-run never sends it", key)
		}
	}

	l := &t.Limits
	l.MemoryBytes = h.Memory
	if h.CPUQuota > 0 {
		l.CPUs = float64(h.CPUQuota) / cfsPeriod
	}
	if h.PidsLimit != nil {
		l.Pids = *h.PidsLimit
	}
	for _, u := range h.Ulimits {
		if u != nil && u.Name == "nofile" {
			l.OpenFiles = u.Hard
		}
	}
	l.TmpBytes, l.TmpInodes = audit.TmpfsLimits(strings.Split(h.Tmpfs[spec.TmpPath], ","))
	a.addFindings(audit.CheckLimits(l, a.policy, audit.LimitPaths{
		Memory: "host_config.Memory", CPU: "host_config.CpuQuota", Pids: "host_config.PidsLimit",
		OpenFiles: "host_config.Ulimits[nofile]", Tmp: "host_config.Tmpfs./tmp",
	})...)

	var names []string
	for _, d := range h.DeviceRequests {
		if d.Driver == "cdi" {
			names = append(names, d.DeviceIDs...)
		}
	}
	if len(names) == 0 {
		return t, nil
	}
	const at = "host_config.DeviceRequests"
	if a.policy.CDI == nil {
		a.add(audit.RuleDevices, at, "asks dockerd for CDI devices %s, but this policy has no CDI specs to check them against", strings.Join(names, ","))
		return t, nil
	}
	// The names must be devices the CDI specs define, whose edits pass
	// the injector's own checks (allowed hooks), as for the containerd
	// backend: inject them into a spec to find out.
	probe := task.Task{ID: id, Image: "audit.invalid/task", Command: []string{"/probe"}, GPUs: "all"}
	ns := namespaces.WithNamespace(ctx, spec.DefaultNamespace)
	if _, err := spec.Generate(ns, probe, ocispec.ImageConfig{}, spec.Options{OutputDir: a.policy.OutputDir(id), GPUDevices: names, CDI: a.policy.CDI}); err != nil {
		a.add(audit.RuleDevices, at, "CDI devices %s: %v", strings.Join(names, ","), err)
		return t, nil
	}
	// The request only has to be non-empty: the names are what is asked.
	t.GPUs = "all"
	return t, names
}

// checkSources judges every bind source on the host (audit.CheckBindSource).
func (a *requestAuditor) checkSources(r Request) {
	for _, m := range r.HostConfig.Mounts {
		if m.Type == "bind" { // any other type differs from the rebuilt request
			a.addFindings(audit.CheckBindSource(a.policy, m.Source, "host_config.Mounts["+m.Target+"].Source")...)
		}
	}
}

// securityOpts judges the security options one by one, since each is its
// own control (seccomp, AppArmor, SELinux, no-new-privileges, ...) and
// dockerd applies them in any order, the last of a kind winning. It returns
// a copy of h with want's options, so the comparison does not report them
// again.
func (a *requestAuditor) securityOpts(h *container.HostConfig, want []string) *container.HostConfig {
	for i, o := range h.SecurityOpt {
		if !slices.Contains(want, o) {
			a.add(securityOptRule(o), fmt.Sprintf("host_config.SecurityOpt[%d]", i), "not allowed: nsn-run sends no %s", short(o))
		}
	}
	for _, o := range want {
		if !slices.Contains(h.SecurityOpt, o) {
			a.add(securityOptRule(o), "host_config.SecurityOpt", "missing: nsn-run sends %s", short(o))
		}
	}
	c := *h
	c.SecurityOpt = want
	return &c
}

// securityOptRule classifies one of dockerd's security options by its kind
// (the part before "=", or ":" in the old syntax).
func securityOptRule(o string) string {
	kind, _, _ := strings.Cut(o, "=")
	kind, _, _ = strings.Cut(kind, ":")
	switch kind {
	case "seccomp":
		return audit.RuleSeccomp
	case "no-new-privileges":
		return audit.RuleNoNewPrivileges
	case "apparmor", "label":
		return audit.RuleLSM
	case "systempaths": // systempaths=unconfined unmasks /proc and /sys
		return audit.RuleMaskedPaths
	case "writable-cgroups":
		return audit.RuleCgroups
	}
	return audit.RuleSpecOther
}

func short(v string) string {
	const maxText = 160
	if len(v) <= maxText {
		return v
	}
	return v[:maxText] + "..."
}

// requestRules classify a difference by the request field it is in, as
// spec/audit's rule table does for spec paths, with the same rule ids where
// the control is the same. A field of container.Resources not listed is a
// cgroup resource (audit.RuleResources); any other field not listed is
// audit.RuleProcess under config and audit.RuleSpecOther elsewhere.
var requestRules = map[string]string{
	"name":                          audit.RuleShape,
	"config.Hostname":               audit.RuleShape,
	"config.User":                   audit.RuleUser,
	"host_config.GroupAdd":          audit.RuleUser,
	"host_config.Umask":             audit.RuleUser,
	"config.Env":                    audit.RuleEnv,
	"config.Image":                  audit.RuleRoot,
	"host_config.ReadonlyRootfs":    audit.RuleRoot,
	"host_config.StorageOpt":        audit.RuleRoot,
	"config.Tty":                    audit.RuleTerminal,
	"config.OpenStdin":              audit.RuleTerminal,
	"config.StdinOnce":              audit.RuleTerminal,
	"config.AttachStdin":            audit.RuleTerminal,
	"host_config.ConsoleSize":       audit.RuleTerminal,
	"config.Labels":                 audit.RuleAnnotations,
	"host_config.Annotations":       audit.RuleAnnotations,
	"config.Volumes":                audit.RuleMounts,
	"host_config.Binds":             audit.RuleMounts,
	"host_config.Mounts":            audit.RuleMounts,
	"host_config.Tmpfs":             audit.RuleMounts,
	"host_config.VolumeDriver":      audit.RuleMounts,
	"host_config.VolumesFrom":       audit.RuleMounts,
	"host_config.ShmSize":           audit.RuleMounts,
	"config.NetworkDisabled":        audit.RuleNamespaces,
	"config.ExposedPorts":           audit.RuleNamespaces,
	"host_config.NetworkMode":       audit.RuleNamespaces,
	"host_config.PortBindings":      audit.RuleNamespaces,
	"host_config.PublishAllPorts":   audit.RuleNamespaces,
	"host_config.Dns":               audit.RuleNamespaces,
	"host_config.DnsOptions":        audit.RuleNamespaces,
	"host_config.DnsSearch":         audit.RuleNamespaces,
	"host_config.ExtraHosts":        audit.RuleNamespaces,
	"host_config.Links":             audit.RuleNamespaces,
	"host_config.PidMode":           audit.RuleNamespaces,
	"host_config.IpcMode":           audit.RuleNamespaces,
	"host_config.UTSMode":           audit.RuleNamespaces,
	"host_config.CgroupnsMode":      audit.RuleNamespaces,
	"host_config.UsernsMode":        audit.RuleUserNamespace,
	"host_config.Privileged":        audit.RuleCapabilities,
	"host_config.CapAdd":            audit.RuleCapabilities,
	"host_config.CapDrop":           audit.RuleCapabilities,
	"host_config.SecurityOpt":       audit.RuleLSM, // each option is classified by securityOptRule first
	"host_config.OomScoreAdj":       audit.RuleProcessLimits,
	"host_config.Ulimits":           audit.RuleProcessLimits,
	"host_config.MaskedPaths":       audit.RuleMaskedPaths,
	"host_config.ReadonlyPaths":     audit.RuleMaskedPaths,
	"host_config.Devices":           audit.RuleDevices,
	"host_config.DeviceRequests":    audit.RuleDevices,
	"host_config.DeviceCgroupRules": audit.RuleDevices,
	"host_config.CgroupParent":      audit.RuleCgroups,
	"host_config.Cgroup":            audit.RuleCgroups,
	"host_config.Sysctls":           audit.RuleSysctls,
	"host_config.Runtime":           RuleRuntime,
	"host_config.Init":              audit.RuleProcess,
}

// resourceFields are the JSON names of container.Resources' fields, which
// HostConfig embeds.
var resourceFields = func() map[string]bool {
	out := map[string]bool{}
	t := reflect.TypeFor[container.Resources]()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		out[name] = true
	}
	return out
}()

// RequestRuleFor returns the rule a difference at shape (a request path
// without indices, "host_config.Mounts[].Source") falls under.
func RequestRuleFor(shape string) string {
	field := shape
	if i := strings.IndexAny(shape, ".["); i >= 0 {
		if j := strings.IndexAny(shape[i+1:], ".["); j >= 0 {
			field = shape[:i+1+j]
		}
	}
	if r, ok := requestRules[field]; ok {
		return r
	}
	section, name, _ := strings.Cut(field, ".")
	switch {
	case section == "host_config" && resourceFields[name]:
		return audit.RuleResources
	case section == "config":
		return audit.RuleProcess
	}
	return audit.RuleSpecOther
}
