package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/gpu"
	"github.com/nsn-run/nsn-run/gpu/gputest"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// testImage is the config of the image the tests' requests name, as the
// policy's dockerd holds it.
var testImage = ocispec.ImageConfig{Env: []string{"PATH=/bin"}, Entrypoint: []string{"/entry", "-x"}}

// testImageID is the ID of every image the tests' policies resolve.
const testImageID = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

var auditPolicy = withImage(audit.Policy{TasksDir: "/var/lib/nsn-run/tasks", Max: task.Limits{MemoryBytes: task.GiB}}, testImage)

// withImage is p with img as the config of every image a request names.
func withImage(p audit.Policy, img ocispec.ImageConfig) audit.Policy {
	p.ResolveImage = func(context.Context, string) (string, ocispec.ImageConfig, error) { return testImageID, img, nil }
	return p
}

// auditedRequest is the request Backend.Start audits for a task: what
// CreateRequest builds, with the state-dir label the backend adds.
func auditedRequest(t *testing.T, tk task.Task, p audit.Policy, gpus []string) Request {
	t.Helper()
	r, err := CreateRequest(tk, testImage,
		RequestOptions{OutputDir: p.OutputDir(tk.ID), GPUs: gpus, OOMScoreAdj: p.OOMScoreAdj, ImageID: testImageID})
	if err != nil {
		t.Fatal(err)
	}
	r.Config.Labels[runtime.LabelStateDir] = "/var/lib/nsn-run/tasks/" + tk.ID
	return r
}

func auditTask() task.Task {
	return task.Task{ID: "job-1", Image: "busybox:latest", Command: []string{"echo", "hi"}, Env: []string{"A=1"},
		User: "1000:1000", WorkingDir: "/work",
		Limits: task.Limits{MemoryBytes: 256 * task.MiB, CPUs: 0.5, Pids: 64, OpenFiles: 4096, TmpBytes: 8 * task.MiB, TmpInodes: 100}}
}

// TestAuditRequestOwnRequestIsClean: what CreateRequest builds has no
// findings, as built and after a round trip through the JSON `nsn-run spec
// --backend docker` prints; with GPUs too, when they resolve through the
// policy's CDI specs.
func TestAuditRequestOwnRequestIsClean(t *testing.T) {
	ctx := context.Background()
	for _, tk := range []task.Task{auditTask(), {ID: "d", Image: "busybox", Command: []string{"true"}}, {ID: "i", Image: "busybox", Command: []string{"sleep", "1"}, Init: true}} {
		r := auditedRequest(t, tk, auditPolicy, nil)
		if f := AuditRequest(ctx, r, auditPolicy); len(f) != 0 {
			t.Errorf("task %s: findings on nsn-run's own request: %v", tk.ID, f)
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if !IsCreateRequest(b) {
			t.Error("IsCreateRequest(marshalled request) = false")
		}
		back, findings, err := DecodeRequest(b)
		if err != nil || len(findings) != 0 {
			t.Fatalf("decode: %v %v", findings, err)
		}
		if f := AuditRequest(ctx, back, auditPolicy); len(f) != 0 {
			t.Errorf("task %s after JSON: %v", tk.ID, f)
		}
	}
	if IsCreateRequest([]byte(`{"ociVersion":"1.2.0","process":{}}`)) {
		t.Error("IsCreateRequest(an OCI spec) = true")
	}

	gpuPolicy := auditPolicy
	gpuPolicy.CDI = standInCDI(t)
	tk := auditTask()
	tk.GPUs = "device=0"
	r := auditedRequest(t, tk, gpuPolicy, []string{"nvidia.com/gpu=0"})
	if f := AuditRequest(ctx, r, gpuPolicy); len(f) != 0 {
		t.Errorf("GPU task: %v", f)
	}
	if f := rulesOf(AuditRequest(ctx, r, auditPolicy)); !slices.Equal(f, []string{audit.RuleDevices}) {
		t.Errorf("GPU task under a policy without CDI: rules %v, want devices", f)
	}
	// A device of another kind the host's CDI specs define (an outside
	// review passed this: dockerd would inject the host's /dev/kmsg).
	other := r
	other.HostConfig = new(*r.HostConfig)
	other.HostConfig.DeviceRequests = []container.DeviceRequest{{Driver: "cdi", DeviceIDs: []string{"example.com/nic=kmsg"}}}
	withNIC := gpuPolicy
	withNIC.CDI = standInCDIWith(t, nicSpec)
	if f := rulesOf(AuditRequest(ctx, other, withNIC)); !slices.Equal(f, []string{audit.RuleDevices}) {
		t.Errorf("a CDI device that is not a GPU: rules %v, want devices", f)
	}
	unknown := auditedRequest(t, tk, gpuPolicy, []string{"nvidia.com/gpu=7"})
	if f := rulesOf(AuditRequest(ctx, unknown, gpuPolicy)); len(f) == 0 || !allAre(f, audit.RuleDevices) {
		t.Errorf("a CDI device the specs do not define: rules %v, want devices", f)
	}
	operator := gpuPolicy
	operator.OOMScoreAdj = 700
	r = auditedRequest(t, tk, operator, []string{"nvidia.com/gpu=0"})
	if f := AuditRequest(ctx, r, operator); len(f) != 0 {
		t.Errorf("GPU task with the operator's score 700: %v", f)
	}
	if f := rulesOf(AuditRequest(ctx, r, gpuPolicy)); !slices.Equal(f, []string{audit.RuleProcessLimits}) {
		t.Errorf("score 700 under a policy of 1000: rules %v, want process-limits", f)
	}
}

func standInCDI(t *testing.T) *gpu.Injector {
	t.Helper()
	return standInCDIWith(t, "")
}

// nicSpec is a CDI spec of another kind than GPUs: a NIC stand-in that
// gives the host's /dev/kmsg.
const nicSpec = `cdiVersion: "0.6.0"
kind: example.com/nic
devices:
- name: kmsg
  containerEdits:
    deviceNodes: [{path: /dev/kmsg}]
`

// standInCDIWith is standInCDI with another CDI spec beside the stand-in
// GPUs' ("" for none).
func standInCDIWith(t *testing.T, other string) *gpu.Injector {
	t.Helper()
	dir, _, err := gputest.WriteStandInSpec(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if other != "" {
		if err := os.WriteFile(filepath.Join(dir, "other.yaml"), []byte(other), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	in, err := gpu.New(gpu.Options{SpecDirs: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func rulesOf(fs []audit.Finding) []string {
	var out []string
	for _, f := range fs {
		if !slices.Contains(out, f.Rule) {
			out = append(out, f.Rule)
		}
	}
	return out
}

func allAre(rules []string, want string) bool {
	return !slices.ContainsFunc(rules, func(r string) bool { return r != want })
}

// TestAuditRequestMutations: one change per field class, each a finding of
// exactly its rule.
func TestAuditRequestMutations(t *testing.T) {
	hc := func(f func(h *container.HostConfig)) func(*Request) { return func(r *Request) { f(r.HostConfig) } }
	cfg := func(f func(c *container.Config)) func(*Request) { return func(r *Request) { f(r.Config) } }
	cases := []struct {
		name   string
		mutate func(*Request)
		rule   string
	}{
		{"privileged", hc(func(h *container.HostConfig) { h.Privileged = true }), audit.RuleCapabilities},
		{"cap-add", hc(func(h *container.HostConfig) { h.CapAdd = []string{"SYS_ADMIN"} }), audit.RuleCapabilities},
		{"cap-drop-none", hc(func(h *container.HostConfig) { h.CapDrop = nil }), audit.RuleCapabilities},
		{"devices", hc(func(h *container.HostConfig) {
			h.Devices = []container.DeviceMapping{{PathOnHost: "/dev/sda", PathInContainer: "/dev/sda", CgroupPermissions: "rwm"}}
		}), audit.RuleDevices},
		{"device-cgroup-rule", hc(func(h *container.HostConfig) { h.DeviceCgroupRules = []string{"a *:* rwm"} }), audit.RuleDevices},
		{"device-request-nvidia-all", hc(func(h *container.HostConfig) {
			h.DeviceRequests = []container.DeviceRequest{{Driver: "nvidia", Count: -1, Capabilities: [][]string{{"gpu"}}}}
		}), audit.RuleDevices},
		{"device-request-cdi-all", hc(func(h *container.HostConfig) {
			h.DeviceRequests = []container.DeviceRequest{{Driver: "cdi", DeviceIDs: []string{"nvidia.com/gpu=all"}}}
		}), audit.RuleDevices},
		{"binds", hc(func(h *container.HostConfig) { h.Binds = []string{"/:/host"} }), audit.RuleMounts},
		{"mount-other-source", hc(func(h *container.HostConfig) { h.Mounts[0].Source = "/etc" }), audit.RuleMounts},
		{"mount-other-task", hc(func(h *container.HostConfig) { h.Mounts[0].Source = "/var/lib/nsn-run/tasks/other/output" }), audit.RuleMounts},
		{"mount-recursive", hc(func(h *container.HostConfig) { h.Mounts[0].BindOptions.NonRecursive = false }), audit.RuleMounts},
		{"mount-added", hc(func(h *container.HostConfig) {
			h.Mounts = append(h.Mounts, mount.Mount{Type: mount.TypeBind, Source: "/var/run/docker.sock", Target: "/s"})
		}), audit.RuleMounts},
		{"tmp-exec", hc(func(h *container.HostConfig) { h.Tmpfs["/tmp"] = strings.Replace(h.Tmpfs["/tmp"], "noexec", "exec", 1) }), audit.RuleMounts},
		{"volume", cfg(func(c *container.Config) { c.Volumes = map[string]struct{}{"/data": {}} }), audit.RuleMounts},
		{"seccomp-unconfined", hc(func(h *container.HostConfig) { h.SecurityOpt = append(h.SecurityOpt, "seccomp=unconfined") }), audit.RuleSeccomp},
		{"seccomp-dockerd-default", hc(func(h *container.HostConfig) { h.SecurityOpt = h.SecurityOpt[:1] }), audit.RuleSeccomp},
		{"seccomp-io-uring", hc(func(h *container.HostConfig) {
			h.SecurityOpt[1] = strings.Replace(h.SecurityOpt[1], `"names":["accept"`, `"names":["io_uring_setup","accept"`, 1)
		}), audit.RuleSeccomp},
		{"apparmor-unconfined", hc(func(h *container.HostConfig) { h.SecurityOpt = append(h.SecurityOpt, "apparmor=unconfined") }), audit.RuleLSM},
		{"label-disable", hc(func(h *container.HostConfig) { h.SecurityOpt = append(h.SecurityOpt, "label=disable") }), audit.RuleLSM},
		{"label-disable-old-syntax", hc(func(h *container.HostConfig) { h.SecurityOpt = append(h.SecurityOpt, "label:disable") }), audit.RuleLSM},
		{"no-new-privileges-off", hc(func(h *container.HostConfig) { h.SecurityOpt[0] = "no-new-privileges:false" }), audit.RuleNoNewPrivileges},
		{"systempaths-unconfined", hc(func(h *container.HostConfig) { h.SecurityOpt = append(h.SecurityOpt, "systempaths=unconfined") }), audit.RuleMaskedPaths},
		{"network-host", hc(func(h *container.HostConfig) { h.NetworkMode = "host" }), audit.RuleNamespaces},
		{"network-enabled", cfg(func(c *container.Config) { c.NetworkDisabled = false }), audit.RuleNamespaces},
		{"pid-host", hc(func(h *container.HostConfig) { h.PidMode = "host" }), audit.RuleNamespaces},
		{"ipc-host", hc(func(h *container.HostConfig) { h.IpcMode = "host" }), audit.RuleNamespaces},
		{"uts-host", hc(func(h *container.HostConfig) { h.UTSMode = "host" }), audit.RuleNamespaces},
		{"cgroupns-host", hc(func(h *container.HostConfig) { h.CgroupnsMode = "host" }), audit.RuleNamespaces},
		{"userns-host", hc(func(h *container.HostConfig) { h.UsernsMode = "host" }), audit.RuleUserNamespace},
		{"runtime-nvidia", hc(func(h *container.HostConfig) { h.Runtime = "nvidia" }), RuleRuntime},
		{"runtime-daemon-default", hc(func(h *container.HostConfig) { h.Runtime = "" }), RuleRuntime},
		{"sysctls", hc(func(h *container.HostConfig) { h.Sysctls = map[string]string{"net.ipv4.ip_forward": "1"} }), audit.RuleSysctls},
		{"oom-score-lower", hc(func(h *container.HostConfig) { h.OomScoreAdj = -500 }), audit.RuleProcessLimits},
		{"ulimit-core-raised", hc(func(h *container.HostConfig) { h.Ulimits[1].Soft, h.Ulimits[1].Hard = -1, -1 }), audit.RuleProcessLimits},
		{"ulimit-missing", hc(func(h *container.HostConfig) { h.Ulimits = h.Ulimits[:len(h.Ulimits)-1] }), audit.RuleProcessLimits},
		{"masked-paths-shorter", hc(func(h *container.HostConfig) {
			h.MaskedPaths = slices.DeleteFunc(h.MaskedPaths, func(p string) bool { return p == "/proc/kcore" })
		}), audit.RuleMaskedPaths},
		{"masked-paths-none", hc(func(h *container.HostConfig) { h.MaskedPaths = nil }), audit.RuleMaskedPaths},
		{"readonly-paths-shorter", hc(func(h *container.HostConfig) { h.ReadonlyPaths = h.ReadonlyPaths[1:] }), audit.RuleMaskedPaths},
		{"readonly-rootfs-off", hc(func(h *container.HostConfig) { h.ReadonlyRootfs = false }), audit.RuleRoot},
		{"memory-above-policy", hc(func(h *container.HostConfig) { h.Memory, h.MemorySwap = 2*task.GiB, 2*task.GiB }), audit.RuleLimits},
		{"memory-unlimited", hc(func(h *container.HostConfig) { h.Memory, h.MemorySwap = 0, 0 }), audit.RuleResources},
		{"swap-unlimited", hc(func(h *container.HostConfig) { h.MemorySwap = -1 }), audit.RuleResources},
		{"oom-kill-disable", hc(func(h *container.HostConfig) { yes := true; h.OomKillDisable = &yes }), audit.RuleResources},
		{"cpu-realtime", hc(func(h *container.HostConfig) { h.CPURealtimeRuntime = 950000 }), audit.RuleResources},
		{"pids-unlimited", hc(func(h *container.HostConfig) { n := int64(-1); h.PidsLimit = &n }), audit.RuleLimits},
		{"cgroup-parent", hc(func(h *container.HostConfig) { h.CgroupParent = "/" }), audit.RuleCgroups},
		{"user-root", cfg(func(c *container.Config) { c.User = "0:0" }), audit.RuleUser},
		{"group-add", hc(func(h *container.HostConfig) { h.GroupAdd = []string{"0"} }), audit.RuleUser},
		{"hostname", cfg(func(c *container.Config) { c.Hostname = "other" }), audit.RuleShape},
		{"tty", cfg(func(c *container.Config) { c.Tty = true }), audit.RuleTerminal},
		{"nvidia-env", cfg(func(c *container.Config) { c.Env = append(c.Env, "NVIDIA_VISIBLE_DEVICES=all") }), audit.RuleEnv},
		{"state-dir-label-elsewhere", cfg(func(c *container.Config) { c.Labels[runtime.LabelStateDir] = "/etc" }), audit.RuleAnnotations},
		{"label-added", cfg(func(c *container.Config) { c.Labels["com.example"] = "x" }), audit.RuleAnnotations},
		{"healthcheck", cfg(func(c *container.Config) { c.Healthcheck = &container.HealthConfig{Test: []string{"CMD", "x"}} }), audit.RuleProcess},
		{"init-explicit-false", hc(func(h *container.HostConfig) { no := false; h.Init = &no }), audit.RuleProcess},
		{"log-driver", hc(func(h *container.HostConfig) { h.LogConfig.Type = "syslog" }), audit.RuleSpecOther},
	}
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := auditedRequest(t, auditTask(), auditPolicy, nil)
			c.mutate(&r)
			findings := AuditRequest(ctx, r, auditPolicy)
			if len(findings) == 0 {
				t.Fatalf("no finding, want %s", c.rule)
			}
			for _, f := range findings {
				if f.Rule != c.rule {
					t.Errorf("finding %s, want only rule %s", f, c.rule)
				}
			}
		})
	}
}

// TestAuditRequestStrictJSON: keys that are not the Engine API's, or that
// differ in case or repeat, are findings of the decoder; nsn-run never
// writes them.
func TestAuditRequestStrictJSON(t *testing.T) {
	r := auditedRequest(t, auditTask(), auditPolicy, nil)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for name, doc := range map[string]string{
		"unknown":   strings.Replace(s, `"Privileged":false`, `"Privileged":false,"Priviledged":true`, 1),
		"top-level": strings.Replace(s, `"name":`, `"platform":"linux","name":`, 1),
		"case":      strings.Replace(s, `"Privileged":false`, `"privileged":false`, 1),
		"duplicate": strings.Replace(s, `"Privileged":false`, `"Privileged":false,"Privileged":false`, 1),
	} {
		if doc == s {
			t.Fatalf("%s: mutation did not apply", name)
		}
		_, findings, err := DecodeRequest([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(findings) != 1 || findings[0].Rule != audit.RuleJSONStrict || strings.Contains(findings[0].Message, "runtime-spec") {
			t.Errorf("%s: findings %v, want one %s finding about the Engine API", name, findings, audit.RuleJSONStrict)
		}
	}
	if _, _, err := DecodeRequest([]byte(`{"name": 5}`)); err == nil {
		t.Error("a name that is not a string decoded")
	}
}

// TestAuditRequestKnobsOutOfBounds: a knob outside the task's bounds is one
// finding in its own words, not also a difference.
func TestAuditRequestKnobsOutOfBounds(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		mutate func(*Request)
		rule   string
		path   string
	}{
		{"bad name", func(r *Request) { r.Name = "../x" }, audit.RuleShape, "name"},
		{"pids beyond the kernel", func(r *Request) { n := int64(1 << 40); r.HostConfig.PidsLimit = &n }, audit.RuleLimits, "host_config.PidsLimit"},
		{"workdir in proc", func(r *Request) { r.Config.WorkingDir = "/proc/self/fd/3" }, audit.RuleProcess, "config.WorkingDir"},
		{"no command", func(r *Request) { r.Config.Entrypoint, r.Config.Cmd = nil, nil }, audit.RuleProcess, "config.Entrypoint"},
		{"no config", func(r *Request) { r.Config = nil }, audit.RuleShape, ""},
	} {
		r := auditedRequest(t, auditTask(), auditPolicy, nil)
		c.mutate(&r)
		f := AuditRequest(ctx, r, auditPolicy)
		if len(f) != 1 || f[0].Rule != c.rule || f[0].Path != c.path {
			t.Errorf("%s: findings %v, want one %s at %q", c.name, f, c.rule, c.path)
		}
	}
}

func TestRequestRuleFor(t *testing.T) {
	for shape, want := range map[string]string{
		"name":                           audit.RuleShape,
		"host_config.Mounts[].Source":    audit.RuleMounts,
		"host_config.Tmpfs./tmp":         audit.RuleMounts,
		"config.Labels.nsn.task-id":      audit.RuleAnnotations,
		"host_config.BlkioWeight":        audit.RuleResources,
		"host_config.Ulimits[].Hard":     audit.RuleProcessLimits,
		"host_config.DeviceRequests[]":   audit.RuleDevices,
		"host_config.CgroupParent":       audit.RuleCgroups,
		"host_config.SomethingNew":       audit.RuleSpecOther,
		"config.StopSignal":              audit.RuleProcess,
		"host_config.Runtime":            RuleRuntime,
		"config.ExposedPorts.80/tcp":     audit.RuleNamespaces,
		"host_config.UsernsMode":         audit.RuleUserNamespace,
		"host_config.SecurityOpt":        audit.RuleLSM,
		"host_config.DeviceCgroupRules":  audit.RuleDevices,
		"host_config.RestartPolicy.Name": audit.RuleSpecOther,
	} {
		if got := RequestRuleFor(shape); got != want {
			t.Errorf("RequestRuleFor(%q) = %s, want %s", shape, got, want)
		}
	}
}

// TestImageMergesVoided: what dockerd merges from an image into the
// container unless the request sets it (a sixteenth review): each VOLUME
// becomes an empty read-only tmpfs (not a writable volume on the host's
// disk), the health check is off and the stop signal SIGTERM, an NVIDIA
// device variable the image sets is sent empty (not merged back as the
// image's "all"), and labels in nsn-run's prefix refuse the image. The
// request passes the audit; more than those void entries does not.
func TestImageMergesVoided(t *testing.T) {
	ctx := context.Background()
	tk := task.Task{ID: "vol-1", Image: "docker.io/library/busybox:latest", Command: []string{"true"}}
	img := ocispec.ImageConfig{
		Volumes: map[string]struct{}{"/data": {}, "/tmp": {}, "/output": {}, "/var/lib/db": {}},
		Env:     []string{"PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_REQUIRE_CUDA=cuda>=12"},
	}
	r, err := CreateRequest(tk, img, RequestOptions{OutputDir: auditPolicy.OutputDir(tk.ID), ImageID: testImageID})
	if err != nil {
		t.Fatal(err)
	}
	h := r.HostConfig
	if h.Tmpfs["/data"] != VoidTmpfs || h.Tmpfs["/var/lib/db"] != VoidTmpfs || h.Tmpfs["/tmp"] == VoidTmpfs || h.Tmpfs["/output"] != "" || len(h.Tmpfs) != 3 {
		t.Errorf("tmpfs %v: want the void tmpfs over /data and /var/lib/db only", h.Tmpfs)
	}
	if hc := r.Config.Healthcheck; hc == nil || !slices.Equal(hc.Test, []string{"NONE"}) || r.Config.StopSignal != "SIGTERM" {
		t.Errorf("health check %+v stop signal %q", hc, r.Config.StopSignal)
	}
	if !slices.Contains(r.Config.Env, "NVIDIA_VISIBLE_DEVICES=") || !slices.Contains(r.Config.Env, "NVIDIA_REQUIRE_CUDA=") || slices.Contains(r.Config.Env, "NVIDIA_VISIBLE_DEVICES=all") {
		t.Errorf("env %v: want the image's NVIDIA variables empty", r.Config.Env)
	}
	policy := withImage(auditPolicy, img)
	if f := AuditRequest(ctx, r, policy); len(f) != 0 {
		t.Errorf("the request fails its audit: %v", f)
	}

	// A tmpfs of the task's own, a health check, an NVIDIA variable with a
	// value: each a finding.
	bad := r
	bad.HostConfig = ptrClone(r.HostConfig)
	bad.HostConfig.Tmpfs = map[string]string{"/tmp": r.HostConfig.Tmpfs["/tmp"], "/data": "rw,size=1g"}
	if f := AuditRequest(ctx, bad, policy); len(f) == 0 {
		t.Error("a writable tmpfs at an image volume passed the audit")
	}
	bad = r
	bad.Config = ptrClone(r.Config)
	bad.Config.Healthcheck = nil
	if f := AuditRequest(ctx, bad, policy); len(f) == 0 {
		t.Error("a request without the health check off passed the audit")
	}
	bad.Config = ptrClone(r.Config)
	bad.Config.Env = append(slices.Clone(r.Config.Env), "NVIDIA_VISIBLE_DEVICES=all")
	if f := AuditRequest(ctx, bad, policy); len(f) == 0 {
		t.Error("NVIDIA_VISIBLE_DEVICES=all passed the audit")
	}

	// What dockerd would merge, each guard dropped (a twenty-third
	// review: the tmpfs over a VOLUME dropped passed, and the task wrote
	// 100 MiB to dockerd's disk against its 16 MiB), or the image's
	// volumes judged against another image: each a finding on its own.
	one := func(name string, f []audit.Finding, rule, path string) {
		t.Helper()
		if len(f) != 1 || f[0].Rule != rule || f[0].Path != path {
			t.Errorf("%s: findings %v, want one %s at %s", name, f, rule, path)
		}
	}
	bad = r
	bad.HostConfig = ptrClone(r.HostConfig)
	bad.HostConfig.Tmpfs = maps.Clone(r.HostConfig.Tmpfs)
	delete(bad.HostConfig.Tmpfs, "/data")
	one("the tmpfs over an image volume dropped", AuditRequest(ctx, bad, policy), audit.RuleMounts, "host_config.Tmpfs./data")
	bad.HostConfig.Tmpfs = maps.Clone(r.HostConfig.Tmpfs)
	bad.HostConfig.Tmpfs["/proc"] = VoidTmpfs
	one("a void tmpfs over no image volume", AuditRequest(ctx, bad, policy), audit.RuleMounts, "host_config.Tmpfs./proc")
	bad = r
	bad.Config = ptrClone(r.Config)
	bad.Config.Env = slices.DeleteFunc(slices.Clone(r.Config.Env), func(kv string) bool { return kv == "NVIDIA_VISIBLE_DEVICES=" })
	one("the image's NVIDIA_VISIBLE_DEVICES not set empty", AuditRequest(ctx, bad, policy), audit.RuleEnv, "config.Env")
	plain := auditedRequest(t, tk, auditPolicy, nil)
	if f := AuditRequest(ctx, plain, policy); len(f) == 0 {
		t.Error("a request without the guards of its image's volumes passed the audit")
	}
	unknown := auditPolicy
	unknown.ResolveImage = nil
	one("no image config to judge by", AuditRequest(ctx, r, unknown), audit.RuleRoot, "config.Image")
	unknown.ResolveImage = func(context.Context, string) (string, ocispec.ImageConfig, error) {
		return "", ocispec.ImageConfig{}, errdefs.ErrUnavailable
	}
	one("the image config unreadable", AuditRequest(ctx, r, unknown), audit.RuleRoot, "config.Image")

	img.Labels = map[string]string{"nsn.gpus": "nvidia.com/gpu=0", "org.example": "x"}
	if _, err := CreateRequest(tk, img, RequestOptions{OutputDir: auditPolicy.OutputDir(tk.ID)}); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), `"nsn.gpus"`) {
		t.Errorf("an image labelled nsn.gpus: %v, want refused", err)
	}
	img.Labels = nil
	img.Volumes = map[string]struct{}{}
	for i := range MaxImageVolumes + 1 {
		img.Volumes[fmt.Sprintf("/v%d", i)] = struct{}{}
	}
	if _, err := CreateRequest(tk, img, RequestOptions{OutputDir: auditPolicy.OutputDir(tk.ID)}); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "129 volumes") {
		t.Errorf("an image with %d volumes: %v, want refused", MaxImageVolumes+1, err)
	}
	delete(img.Volumes, "/v0")
	if _, err := CreateRequest(tk, img, RequestOptions{OutputDir: auditPolicy.OutputDir(tk.ID)}); err != nil {
		t.Errorf("an image with %d volumes: %v", MaxImageVolumes, err)
	}
	img.Volumes = map[string]struct{}{"data": {}}
	if _, err := CreateRequest(tk, img, RequestOptions{OutputDir: auditPolicy.OutputDir(tk.ID)}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("a relative image volume: %v, want refused", err)
	}
}

func ptrClone[T any](p *T) *T {
	c := *p
	return &c
}

// TestAuditRequestStateDirID: a request's state-dir-id label must be the
// policy's state dir's id where it is known (the Docker backend takes a
// container with another state dir's id for that state dir's task); where
// it is not, any id of that shape.
func TestAuditRequestStateDirID(t *testing.T) {
	ctx := context.Background()
	mine, other := strings.Repeat("a", 32), strings.Repeat("b", 32)
	p := auditPolicy
	p.StateDirID = mine
	r := auditedRequest(t, auditTask(), p, nil)
	r.Config.Labels[runtime.LabelStateDirID] = mine
	if f := AuditRequest(ctx, r, p); len(f) != 0 {
		t.Errorf("the state dir's own id: %v", f)
	}
	r.Config.Labels[runtime.LabelStateDirID] = other
	if f := AuditRequest(ctx, r, p); len(f) != 1 || !strings.Contains(f[0].String(), runtime.LabelStateDirID) {
		t.Errorf("another state dir's id: %v; want one finding on the label", f)
	}
	if f := AuditRequest(ctx, r, auditPolicy); len(f) != 0 {
		t.Errorf("an id where the policy knows none: %v", f)
	}
}

// TestAuditRequestPinsImage: the request names its image by ID, its name
// in the nsn.image label, so that dockerd creates the container from the
// image the audit judged whatever the name names by then (a twenty-fourth
// review moved a tag after a clean audit); and what runs is the command
// the audit read (a null Entrypoint runs the image's).
func TestAuditRequestPinsImage(t *testing.T) {
	ctx := context.Background()
	r := auditedRequest(t, auditTask(), auditPolicy, nil)
	if r.Config.Image != testImageID || r.Config.Labels[runtime.LabelImage] != "docker.io/library/busybox:latest" {
		t.Fatalf("image %q, label %q: want the ID and the name", r.Config.Image, r.Config.Labels[runtime.LabelImage])
	}
	if f := AuditRequest(ctx, r, auditPolicy); len(f) != 0 {
		t.Fatalf("nsn-run's request: %v", f)
	}
	one := func(name string, f []audit.Finding, rule, path string) {
		t.Helper()
		if len(f) != 1 || f[0].Rule != rule || f[0].Path != path {
			t.Errorf("%s: findings %v, want one %s at %s", name, f, rule, path)
		}
	}
	edit := func(change func(c *container.Config)) Request {
		bad := r
		bad.Config = ptrClone(r.Config)
		bad.Config.Labels = maps.Clone(r.Config.Labels)
		change(bad.Config)
		return bad
	}
	unpinned := edit(func(c *container.Config) { c.Image = "busybox:latest"; delete(c.Labels, runtime.LabelImage) })
	if f := AuditRequest(ctx, unpinned, auditPolicy); len(f) == 0 || f[0].Path != "config.Image" {
		t.Errorf("the image by name: findings %v, want one at config.Image", f)
	}
	one("another image's ID", AuditRequest(ctx, edit(func(c *container.Config) {
		c.Image = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	}), auditPolicy), audit.RuleRoot, "config.Image")
	if f := AuditRequest(ctx, edit(func(c *container.Config) { c.Image = testImageID[:19] }), auditPolicy); len(f) == 0 || f[0].Path != "config.Image" {
		t.Errorf("an ID's prefix: findings %v, want one at config.Image first", f)
	}
	byID := auditTask()
	byID.Image = testImageID
	if f := AuditRequest(ctx, auditedRequest(t, byID, auditPolicy, nil), auditPolicy); len(f) != 0 {
		t.Errorf("a task naming its image by ID: %v", f)
	}
	one("no name label", AuditRequest(ctx, edit(func(c *container.Config) { delete(c.Labels, runtime.LabelImage) }), auditPolicy), audit.RuleRoot, "config.Labels."+runtime.LabelImage)
	one("a null Entrypoint", AuditRequest(ctx, edit(func(c *container.Config) {
		c.Cmd = append(slices.Clone(c.Entrypoint), c.Cmd...)
		c.Entrypoint = nil
	}), auditPolicy), audit.RuleProcess, "config.Entrypoint")
	one("an empty Entrypoint", AuditRequest(ctx, edit(func(c *container.Config) {
		c.Cmd = append(slices.Clone(c.Entrypoint), c.Cmd...)
		c.Entrypoint = []string{}
	}), auditPolicy), audit.RuleProcess, "config.Entrypoint")
}
