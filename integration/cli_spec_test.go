package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/gpu/gputest"
	"github.com/nsn-run/nsn-run/gpu/nvmlusage"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/task"
)

// TestCLISpecAudit is the foundation issue's acceptance check through the
// real binary and a real containerd: `nsn-run spec` prints a spec for a
// local image that `nsn-run audit` accepts, the same every time, and a copy
// weakened five ways gets a finding for each.
func TestCLISpecAudit(t *testing.T) {
	c, addr := containerdClient(t)
	importBusybox(t, c, addr)
	global := []string{"--address", addr, "--namespace", testNamespace, "--state-dir", "/var/lib/nsn-run"}
	specArgs := slices.Concat([]string{"spec"}, global, []string{"--id", "cli-spec", "--memory", "256m", "--cpus", "0.5", "--pids", "64", "busybox:latest", "--", "echo", "hi"})

	res := runCLI(t, nil, specArgs...)
	if res.code != 0 {
		t.Fatalf("nsn-run spec: exit %d, stderr %q", res.code, res.stderr)
	}
	var s specs.Spec
	if err := json.Unmarshal([]byte(res.stdout), &s); err != nil {
		t.Fatalf("spec output is not JSON: %v", err)
	}
	r := s.Linux.Resources
	if *r.Memory.Limit != 256<<20 || *r.Memory.Swap != 256<<20 || *r.CPU.Quota != 50000 || *r.CPU.Period != 100000 || *r.Pids.Limit != 64 {
		t.Errorf("limits: memory %d swap %d quota %d/%d pids %d", *r.Memory.Limit, *r.Memory.Swap, *r.CPU.Quota, *r.CPU.Period, *r.Pids.Limit)
	}
	if got := strings.Join(s.Process.Args, " "); got != "echo hi" {
		t.Errorf("args = %q", got)
	}
	// The image config our builder wrote says PATH=/bin: it must reach the
	// spec, proving the config was read from containerd.
	if !slices.Contains(s.Process.Env, "PATH=/bin") {
		t.Errorf("env %v lacks the image's PATH=/bin", s.Process.Env)
	}
	if s.Linux.CgroupsPath != "/"+testNamespace+"/cli-spec" {
		t.Errorf("cgroupsPath = %q", s.Linux.CgroupsPath)
	}

	if again := runCLI(t, nil, specArgs...); again.stdout != res.stdout {
		t.Error("two runs of the same spec command printed different bytes")
	}

	// The auditor rebuilds the spec for the same namespace and state dir.
	auditArgs := slices.Concat(global, []string{"audit"})
	if a := runCLI(t, []byte(res.stdout), append(auditArgs, "-")...); a.code != 0 || a.stdout != "" {
		t.Fatalf("audit of nsn-run's own spec: exit %d, findings:\n%s%s", a.code, a.stdout, a.stderr)
	}

	// Weaken five ways and audit the copy from a file.
	s.Root.Readonly = false
	s.Process.NoNewPrivileges = false
	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: []string{"CAP_SYS_ADMIN"}, Effective: []string{"CAP_SYS_ADMIN"}, Permitted: []string{"CAP_SYS_ADMIN"}}
	s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.NetworkNamespace })
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/host", Type: "bind", Source: "/", Options: []string{"rbind", "rw"}})
	weak, err := json.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "weak.json")
	if err := os.WriteFile(file, weak, 0o600); err != nil {
		t.Fatal(err)
	}
	a := runCLI(t, nil, append(auditArgs, file)...)
	if a.code != 1 {
		t.Fatalf("audit of weakened spec: exit %d, want 1; stdout %q stderr %q", a.code, a.stdout, a.stderr)
	}
	for _, want := range []string{
		"root root.readonly: missing: nsn-run generates true",
		"no-new-privileges process.noNewPrivileges: missing: nsn-run generates true",
		`capabilities process.capabilities.bounding: not allowed: nsn-run generates nothing here, the spec has ["CAP_SYS_ADMIN"]`,
		`namespaces linux.namespaces[network]: missing: nsn-run generates {"type":"network"}`,
		`mounts mounts[/host]: not allowed: nsn-run generates nothing here, the spec has {"destination":"/host"`,
	} {
		if !strings.Contains(a.stdout, want) {
			t.Errorf("audit output lacks %q:\n%s", want, a.stdout)
		}
	}
}

// TestCLIErrors checks nsn-run's own failures: one line on stderr, exit 125
// (audit: 2 for unreadable input), nothing on stdout.
func TestCLIErrors(t *testing.T) {
	c, addr := containerdClient(t)
	importBusybox(t, c, addr)
	global := []string{"--address", addr, "--namespace", testNamespace}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown image", slices.Concat([]string{"spec"}, global, []string{"nosuchimage:1", "--", "true"}), 125, "image docker.io/library/nosuchimage:1 not found"},
		{"bad id", slices.Concat([]string{"spec"}, global, []string{"--id", "Bad/Id", "busybox", "--", "true"}), 125, `task id "Bad/Id"`},
		{"bad memory", slices.Concat([]string{"spec"}, global, []string{"--memory", "lots", "busybox", "--", "true"}), 125, "--memory"},
		{"root user", slices.Concat([]string{"spec"}, global, []string{"--user", "0", "busybox", "--", "true"}), 125, "not allowed"},
		{"daemon down", []string{"spec", "--address", filepath.Join(t.TempDir(), "none.sock"), "busybox", "--", "true"}, 125, "containerd is not running"},
		{"audit missing file", []string{"audit", filepath.Join(t.TempDir(), "nope.json")}, 2, "no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runCLI(t, nil, c.args...)
			if r.code != c.code {
				t.Errorf("exit %d, want %d (stderr %q)", r.code, c.code, r.stderr)
			}
			if !strings.Contains(r.stderr, c.want) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("stderr %q: want one line saying %q", r.stderr, c.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
	if r := runCLI(t, []byte("{not json"), "audit", "-"); r.code != 2 {
		t.Errorf("audit of garbage: exit %d, want 2", r.code)
	}
	if r := runCLI(t, []byte("{} {}"), "audit", "-"); r.code != 2 {
		t.Errorf("audit of two documents: exit %d, want 2", r.code)
	}
}

// TestCLISpecAuditEveryFlag: what `nsn-run spec` prints passes `nsn-run
// audit` for every task flag the CLI accepts, alone and together, GPUs from
// the stand-in CDI spec included, on both backends (an OCI spec on
// containerd, an Engine create request on docker).
func TestCLISpecAuditEveryFlag(t *testing.T) {
	c, addr := containerdClient(t)
	importBusybox(t, c, addr)
	loadDockerImages(t, dockerClient(t))
	specDir, _, err := standInGPUs(t)
	if err != nil {
		t.Fatal(err)
	}
	global := []string{"--address", addr, "--namespace", testNamespace, "--state-dir", t.TempDir(), "--cdi-spec-dir", specDir}
	flags := [][]string{
		{},
		{"--id", "flags-1"},
		{"--memory", "1g"},
		{"--cpus", "2.5"},
		{"--cpus", "0.01"},
		{"--pids", "77"},
		{"--open-files", "4096"},
		{"--tmpfs-size", "8m"},
		{"--tmpfs-inodes", "99"},
		{"--output-size", "1m"},
		{"--output-files", "10"},
		{"--timeout", "5s", "--grace", "1s"},
		{"--cpu-time", "3s"},
		{"--gpus", "all"},
		{"--gpus", "1"},
		{"--gpus", "device=1"},
		{"--gpus", "0,1"},
		{"--gpus", gputest.UUID0},
		{"--gpus", "device=0", "--gpu-shared"},
		{"-e", "A=1", "-e", "B=two words"},
		{"-w", "/srv"},
		{"--user", "4242"},
		{"--user", "4242:4343"},
		{"--runtime", task.DefaultRuntime},
		{"--init"},
		{"--output-dir", t.TempDir()},
	}
	var all []string
	for _, f := range flags {
		if len(f) > 0 && f[0] != "--gpus" && f[0] != "--gpu-memory" && f[0] != "--id" {
			all = append(all, f...)
		}
	}
	flags = append(flags, slices.Concat(all, []string{"--gpus", "device=1", "--gpu-shared"}))
	// --gpu-memory is enforced from NVML's samples: where NVML does not
	// load (no driver: these GPUs are stand-ins), the CLI has no sampler
	// and a task with the limit is refused, spec included, rather than
	// run with a limit nothing checks.
	gpuMemory := []string{"--gpu-memory", "1g", "--gpus", "device=0"}
	if s, err := nvmlusage.Open(); err == nil {
		_ = s.Close()
		flags = append(flags, gpuMemory)
	} else {
		for _, backend := range []string{"containerd", "docker"} {
			env := append(os.Environ(), "NSN_BACKEND="+backend, "DOCKER_HOST="+os.Getenv(envDockerHost))
			r := runCLIWith(t, env, nil, slices.Concat([]string{"spec"}, global, gpuMemory, []string{"busybox:latest", "--", "true"})...)
			if r.code != 125 || !strings.Contains(r.stderr, "GPU memory limit cannot be enforced") || r.stdout != "" {
				t.Errorf("%s: spec %v without NVML (%v): exit %d stdout %q stderr %q; want 125 and the reason", backend, gpuMemory, err, r.code, r.stdout, r.stderr)
			}
		}
	}
	for _, backend := range []string{"containerd", "docker"} {
		env := append(os.Environ(), "NSN_BACKEND="+backend, "DOCKER_HOST="+os.Getenv(envDockerHost))
		for _, f := range flags {
			name := backend + " " + strings.Join(f, " ")
			args := slices.Concat([]string{"spec"}, global, f, []string{"busybox:latest", "--", "sh", "-c", "echo hi"})
			res := runCLIWith(t, env, nil, args...)
			if res.code != 0 {
				t.Errorf("%s: spec exit %d: %s", name, res.code, res.stderr)
				continue
			}
			a := runCLIWith(t, env, []byte(res.stdout), slices.Concat(global, []string{"audit", "-"})...)
			if a.code != 0 || a.stdout != "" {
				t.Errorf("%s: audit exit %d:\n%s%s", name, a.code, a.stdout, a.stderr)
			}
		}
	}
}

// TestCLIAuditNodeRunc: whether `nsn-run audit` lets a spec with a user
// namespace go without that namespace's per-user limits is the node's to
// say (its containerd, and the runc containerd's shim runs), never the
// runc on the auditor's own PATH. An outside review passed a spec stripped
// of the limits with Debian's runc 1.1.5 first on the auditor's PATH while
// the node ran runc 1.5.3; under runc that spec let a task hold 40 inotify
// instances where nsn-run's own stops it at 16 (TestEscapeUserNSLimits
// runs that attack).
func TestCLIAuditNodeRunc(t *testing.T) {
	c, addr := containerdClient(t)
	importBusybox(t, c, addr)
	global := []string{"--address", addr, "--namespace", testNamespace, "--state-dir", "/var/lib/nsn-run"}
	res := runCLI(t, nil, slices.Concat([]string{"spec"}, global, []string{"--id", "cli-node-runc", "busybox:latest", "--", "true"})...)
	if res.code != 0 {
		t.Fatalf("nsn-run spec: exit %d, stderr %q", res.code, res.stderr)
	}
	var s specs.Spec
	if err := json.Unmarshal([]byte(res.stdout), &s); err != nil {
		t.Fatalf("spec output is not JSON: %v", err)
	}
	// An auditor's PATH whose runc says it is older than 1.4.
	fake := t.TempDir()
	if err := os.WriteFile(filepath.Join(fake, "runc"), []byte("#!/bin/sh\necho 'runc version 1.1.5'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "PATH=") }),
		"PATH="+fake+string(os.PathListSeparator)+os.Getenv("PATH"))
	auditArgs := slices.Concat(global, []string{"audit", "-"})

	v, err := c.Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !containerd.UserNSLimitsInSpec(v.Version) {
		// Before 2.3 nsn-run sets the limits itself between create and
		// start: its spec has none, and passes.
		if len(s.Linux.Sysctl) != 0 {
			t.Errorf("containerd %s: the spec has sysctls %v", v.Version, s.Linux.Sysctl)
		}
		if a := runCLIWith(t, env, []byte(res.stdout), auditArgs...); a.code != 0 {
			t.Errorf("containerd %s: audit of nsn-run's own spec: exit %d\n%s%s", v.Version, a.code, a.stdout, a.stderr)
		}
		return
	}
	if len(s.Linux.Sysctl) == 0 {
		t.Fatalf("containerd %s: the spec has no user.max_* sysctls", v.Version)
	}
	if a := runCLIWith(t, env, []byte(res.stdout), auditArgs...); a.code != 0 {
		t.Fatalf("audit of nsn-run's own spec: exit %d\n%s%s", a.code, a.stdout, a.stderr)
	}
	s.Linux.Sysctl = nil
	stripped, err := json.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	a := runCLIWith(t, env, stripped, auditArgs...)
	if a.code != 1 || !strings.Contains(a.stdout, "sysctls linux.sysctl: missing: nsn-run generates {\"user.max_") {
		t.Errorf("audit of the spec without its limits, an old runc on the auditor's PATH: exit %d, want 1 and the missing limits\n%s%s", a.code, a.stdout, a.stderr)
	}
}

// TestCLISpecAuditThroughSymlink: a state dir given through a symlink.
// `spec` shows the resolved path (the Manager resolves it); `audit` with
// the same flags refused it, the /output source differing (an outside
// review), and must pass it.
func TestCLISpecAuditThroughSymlink(t *testing.T) {
	c, addr := containerdClient(t)
	importBusybox(t, c, addr)
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "state-link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	global := []string{"--address", addr, "--namespace", testNamespace, "--state-dir", link}
	res := runCLI(t, nil, slices.Concat([]string{"spec"}, global, []string{"--id", uniqueID("link"), "busybox:latest", "--", "true"})...)
	if res.code != 0 {
		t.Fatalf("nsn-run spec: exit %d, stderr %q", res.code, res.stderr)
	}
	if a := runCLI(t, []byte(res.stdout), slices.Concat([]string{"audit"}, global, []string{"-"})...); a.code != 0 {
		t.Errorf("nsn-run audit through the same symlink: exit %d: %s%s", a.code, a.stdout, a.stderr)
	}
}
