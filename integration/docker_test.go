package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/internal/imagebuild"
	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/docker"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// TestDockerContainerInspected: a task's container, as dockerd reports it,
// has NetworkMode none, a read-only rootfs, no-new-privileges, CapDrop ALL,
// a non-root user and the limits; and from inside, the probe sees a
// non-root, capability-less, no_new_privs, seccomp-filtered process.
func TestDockerContainerInspected(t *testing.T) {
	m := dockerManager(t)
	c := dockerClient(t)
	ctx := context.Background()
	id := uniqueID("insp")
	tk := seedTask(id, "sleep", "60")
	tk.Limits = task.Limits{MemoryBytes: 128 * task.MiB, CPUs: 0.5, Pids: 64}
	if _, err := m.Spawn(ctx, tk); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Cleanup(ctx, id) })
	info, err := c.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, cfg := info.Container.HostConfig, info.Container.Config
	if string(h.NetworkMode) != "none" || !h.ReadonlyRootfs || !slices.Contains(h.SecurityOpt, "no-new-privileges:true") ||
		!slices.Equal(h.CapDrop, []string{"ALL"}) || cfg.User != "65534:65534" || h.Privileged {
		t.Errorf("isolation as inspected: network %q readonly %v secopt %v capdrop %v user %q privileged %v",
			h.NetworkMode, h.ReadonlyRootfs, h.SecurityOpt, h.CapDrop, cfg.User, h.Privileged)
	}
	if h.Memory != 128<<20 || h.MemorySwap != 128<<20 || h.CPUQuota != 50000 || h.PidsLimit == nil || *h.PidsLimit != 64 {
		t.Errorf("limits as inspected: memory %d swap %d quota %d pids %v", h.Memory, h.MemorySwap, h.CPUQuota, h.PidsLimit)
	}
	// The controls dockerd would otherwise fill from its own defaults.
	var ulimits []string
	for _, u := range h.Ulimits {
		ulimits = append(ulimits, fmt.Sprintf("%s=%d:%d", u.Name, u.Soft, u.Hard))
	}
	wantUlimits := []string{"nofile=1024:1024", "core=0:0", "rtprio=0:0", "nice=0:0", "memlock=65536:65536", "msgqueue=0:0", "sigpending=256:256"}
	if h.Runtime != "runc" || h.OomScoreAdj != 1000 || !slices.Contains(h.MaskedPaths, "/proc/interrupts") ||
		!slices.ContainsFunc(h.SecurityOpt, func(o string) bool { return strings.HasPrefix(o, "seccomp={") }) || !slices.Equal(ulimits, wantUlimits) {
		t.Errorf("as inspected: runtime %q oom score %d masked %v ulimits %v seccomp option given %v",
			h.Runtime, h.OomScoreAdj, h.MaskedPaths, ulimits, slices.ContainsFunc(h.SecurityOpt, func(o string) bool { return strings.HasPrefix(o, "seccomp=") }))
	}
	if err := m.Remove(ctx, id, true); err != nil {
		t.Fatal(err)
	}

	// From inside: the score, a seccomp filter (mode 2) and the kernel's
	// network sysctls (not dockerd's) are in force.
	self, err := m.Run(ctx, seedTask(uniqueID("self"), "sh", "-c",
		"cat /proc/self/oom_score_adj; grep '^Seccomp:' /proc/self/status; cat /proc/sys/net/ipv4/ping_group_range /proc/sys/net/ipv4/ip_unprivileged_port_start"), runtime.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(self.Stdout); len(f) != 6 || f[0] != "1000" || f[2] != "2" || f[3] != "1" || f[4] != "0" || f[5] != "1024" {
		t.Errorf("inside a docker task: %q, want oom_score_adj 1000, Seccomp: 2, ping_group_range 1 0, ip_unprivileged_port_start 1024", self.Stdout)
	}

	res, err := m.Run(ctx, task.Task{ID: uniqueID("did"), Image: probeRef, Command: []string{"nsn-probe", "identity"}}, runtime.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var r probeReport
	if err := json.Unmarshal([]byte(res.Stdout), &r); err != nil || !r.Blocked {
		t.Errorf("identity inside a docker task: %+v %v (stdout %q)", r, err, res.Stdout)
	}
	if l := dockerLeftovers(t); l != "" {
		t.Errorf("left behind: %s", l)
	}
}

// TestDockerCLI: with NSN_BACKEND=docker, `nsn-run run --json alpine:latest
// -- echo hello` gives exit 0 and "hello"; `nsn-run spec --backend docker`
// prints the create request.
func TestDockerCLI(t *testing.T) {
	dockerManager(t) // loads the images
	nsnRun(t)
	host := os.Getenv(envDockerHost)
	state := t.TempDir()
	env := append(os.Environ(), "NSN_BACKEND=docker", "DOCKER_HOST="+host, "NSN_STATE_DIR="+state)

	r := runCLIEnv(t, env, "run", "--json", "alpine:latest", "--", "echo", "hello")
	var res task.Result
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil || res.ExitCode != 0 || res.Stdout != "hello\n" {
		t.Errorf("run --json: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	checkResultSchema(t, r.stdout) // identity shared, from the Docker backend
	s := runCLIEnv(t, env, "spec", "--backend", "docker", "--id", "spec1", "--memory", "256m", "busybox", "--", "true")
	if s.code != 0 || !strings.Contains(s.stdout, `"NetworkMode": "none"`) || !strings.Contains(s.stdout, `"ReadonlyRootfs": true`) ||
		!strings.Contains(s.stdout, `"Memory": 268435456`) {
		t.Errorf("spec --backend docker: exit %d stderr %q\n%s", s.code, s.stderr, s.stdout)
	}
	if l := dockerLeftovers(t); l != "" {
		t.Errorf("docker ps -a / docker volume ls not empty: %s", l)
	}
}

// TestDockerStartAudits: Backend.Start audits the create request before it
// is sent: under a policy whose memory maximum the task exceeds, the spawn
// is refused as a failed precondition and nothing reaches dockerd.
func TestDockerStartAudits(t *testing.T) {
	loadDockerImages(t, dockerClient(t))
	ctx := context.Background()
	b, err := docker.New(ctx, docker.Config{Host: os.Getenv(envDockerHost), AuditPolicy: audit.Policy{Max: task.Limits{MemoryBytes: 64 * task.MiB}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	m, err := runtime.New(runtime.Config{Backend: b, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	tk := seedTask(uniqueID("aud"), "true")
	tk.Limits.MemoryBytes = 128 * task.MiB
	if _, err := m.Spawn(ctx, tk); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "limits host_config.Memory") {
		t.Errorf("Spawn over the policy's memory maximum: %v, want a failed precondition naming the limits finding", err)
	}
	if l := dockerLeftovers(t); l != "" {
		t.Errorf("left behind: %s", l)
	}
	tk.ID, tk.Limits.MemoryBytes = uniqueID("aud"), 32*task.MiB
	res, err := m.Run(ctx, tk, runtime.RunOptions{})
	if err != nil || res.ExitCode != 0 {
		t.Errorf("within the policy: %+v %v", res, err)
	}
}

// TestDockerImageCommands: `image import` and `image ls` follow --backend:
// with docker, the tarball goes into dockerd (docker load) and ls lists
// dockerd's images, where before both went to containerd whatever the flag.
func TestDockerImageCommands(t *testing.T) {
	c := dockerClient(t)
	nsnRun(t)
	name := "nsn-image-cmd-" + strings.ToLower(uniqueID("i")) + ":v1"
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := imagebuild.BusyboxRootfs(rootfs, busyboxPath(t)); err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(tarball)
	if err != nil {
		t.Fatal(err)
	}
	if err := imagebuild.WriteOCILayout(f, imagebuild.Image{Name: name, RootfsDir: rootfs}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { _, _ = c.ImageRemove(context.Background(), name, client.ImageRemoveOptions{Force: true}) })
	env := append(os.Environ(), "DOCKER_HOST="+os.Getenv(envDockerHost), "NSN_STATE_DIR="+t.TempDir())

	imp := runCLIEnv(t, env, "--backend", "docker", "image", "import", tarball)
	if want := "docker.io/library/" + name + "\n"; imp.code != 0 || imp.stdout != want {
		t.Fatalf("image import: exit %d stdout %q (want %q) stderr %q", imp.code, imp.stdout, want, imp.stderr)
	}
	if _, err := c.ImageInspect(context.Background(), name); err != nil {
		t.Errorf("dockerd does not have the imported image: %v", err)
	}
	ls := runCLIEnv(t, env, "--backend", "docker", "image", "ls")
	if ls.code != 0 || !strings.Contains(ls.stdout, "docker.io/library/"+name+"  ") {
		t.Errorf("image ls: exit %d stdout %q stderr %q", ls.code, ls.stdout, ls.stderr)
	}
	// And containerd's store was not touched: its ls does not list it.
	_, addr := containerdClient(t)
	ctr := runCLIEnv(t, env, "--address", addr, "--namespace", testNamespace, "image", "ls")
	if ctr.code != 0 || strings.Contains(ctr.stdout, name) {
		t.Errorf("containerd's image ls: exit %d, lists the docker import: %q %s", ctr.code, ctr.stdout, ctr.stderr)
	}
}

// TestDockerImportRefusesReplace: dockerd's load moves a tag to the
// loaded image whatever it named before; without --replace the docker
// backend moves it back and refuses the import (TestImportRefusesReplace
// is the containerd backend's).
func TestDockerImportRefusesReplace(t *testing.T) {
	c := dockerClient(t)
	nsnRun(t)
	name := "docker.io/library/" + strings.ToLower(uniqueID("nsn-docker-replace")) + ":v1"
	t.Cleanup(func() { _, _ = c.ImageRemove(context.Background(), name, client.ImageRemoveOptions{Force: true}) })
	env := append(os.Environ(), "DOCKER_HOST="+os.Getenv(envDockerHost), "NSN_STATE_DIR="+t.TempDir())
	original, hostile := markerImage(t, name, "original"), markerImage(t, name, "hostile")
	if r := runCLIEnv(t, env, "--backend", "docker", "image", "import", original); r.code != 0 {
		t.Fatalf("import: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	before, err := c.ImageInspect(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	r := runCLIEnv(t, env, "--backend", "docker", "image", "import", hostile)
	if r.code != 125 || !strings.Contains(r.stderr, "exists") || !strings.Contains(r.stderr, "--replace") {
		t.Errorf("import of other content under the name: exit %d stderr %q, want 125 and the refusal", r.code, r.stderr)
	}
	// All or nothing: the archive's other, new name goes too.
	other := "docker.io/library/" + strings.ToLower(uniqueID("nsn-docker-other")) + ":v1"
	t.Cleanup(func() { _, _ = c.ImageRemove(context.Background(), other, client.ImageRemoveOptions{Force: true}) })
	if r := runCLIEnv(t, env, "--backend", "docker", "image", "import", markerImage(t, name, "hostile2", other)); r.code != 125 {
		t.Errorf("import of an archive naming %s and %s: exit %d stderr %q, want refused", name, other, r.code, r.stderr)
	}
	if _, err := c.ImageInspect(context.Background(), other); err == nil {
		t.Errorf("the refused archive's other name %s is in dockerd", other)
	}
	if now, err := c.ImageInspect(context.Background(), name); err != nil || now.ID != before.ID {
		t.Errorf("the name is now %s (%v), was %s", now.ID, err, before.ID)
	}
	if r := runCLIEnv(t, env, "--backend", "docker", "image", "import", "--replace", hostile); r.code != 0 {
		t.Fatalf("import --replace: exit %d stderr %q", r.code, r.stderr)
	}
	if now, err := c.ImageInspect(context.Background(), name); err != nil || now.ID == before.ID {
		t.Errorf("after --replace the name is still %s (%v)", now.ID, err)
	}
}

// TestDockerFinalSpec: what dockerd 20.10 makes of the create request, the
// OCI spec its runc runs (the bundle's config.json under dockerd's exec
// root), carries the controls docs/security-model.md says are equal to the
// containerd backend's: nsn-run's seccomp rules exactly (native
// architecture only, clone3 ENOSYS), no capabilities, no_new_privs, the
// non-root user, OOM score 1000, nsn-run's rlimits, at least its masked and
// read-only paths, the six namespaces, a read-only root, a noexec /tmp and
// the two network sysctls. The request is audited before it is sent; this
// checks dockerd kept it.
func TestDockerFinalSpec(t *testing.T) {
	m := dockerManager(t)
	ctx := context.Background()
	id := uniqueID("final")
	tk := seedTask(id, "sleep", "60")
	if _, err := m.Spawn(ctx, tk); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Remove(ctx, id, true) }()
	c := dockerClient(t)
	info, err := c.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sock, ok := strings.CutPrefix(os.Getenv(envDockerHost), "unix://")
	need(t, ok, "%s is not a unix socket: the bundle is looked for beside it", envDockerHost)
	var bundle string
	_ = filepath.WalkDir(filepath.Dir(sock), func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "config.json" && filepath.Base(filepath.Dir(path)) == info.Container.ID {
			bundle = path
			return fs.SkipAll
		}
		return nil
	})
	if bundle == "" {
		t.Fatalf("no bundle config.json of container %s under %s (dockerd's exec root)", info.Container.ID, filepath.Dir(sock))
	}
	raw, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}

	if got, want := seccompRules(s.Linux.Seccomp), seccompRules(spec.SeccompProfile()); !maps.EqualFunc(got, want, slices.Equal) {
		for name, w := range want {
			if !slices.Equal(got[name], w) {
				t.Errorf("seccomp %s: dockerd's %v, nsn-run's %v", name, got[name], w)
			}
		}
		for name, g := range got {
			if _, ok := want[name]; !ok {
				t.Errorf("seccomp %s: dockerd's %v, not in nsn-run's", name, g)
			}
		}
	}
	if sc := s.Linux.Seccomp; sc == nil || sc.DefaultAction != specs.ActErrno || !slices.Equal(sc.Architectures, spec.SeccompProfile().Architectures) {
		t.Errorf("seccomp default action and architectures: %+v", sc)
	}
	if !slices.Contains(seccompRules(s.Linux.Seccomp)["clone3"], "SCMP_ACT_ERRNO errno=38 args=null") {
		t.Errorf("clone3: %v; want ENOSYS", seccompRules(s.Linux.Seccomp)["clone3"])
	}
	p := s.Process
	if caps := p.Capabilities; caps != nil && len(caps.Bounding)+len(caps.Effective)+len(caps.Permitted)+len(caps.Inheritable)+len(caps.Ambient) != 0 {
		t.Errorf("capabilities: %+v; want none", caps)
	}
	if !p.NoNewPrivileges || p.User.UID != 65534 || p.User.GID != 65534 || p.OOMScoreAdj == nil || *p.OOMScoreAdj != spec.DefaultOOMScoreAdj {
		t.Errorf("process: no_new_privs %v, user %+v, oom score %v", p.NoNewPrivileges, p.User, p.OOMScoreAdj)
	}
	limits := tk.WithDefaults().Limits
	if want := spec.Rlimits(limits, false); !sameElements(p.Rlimits, want) {
		t.Errorf("rlimits: %+v; want %+v", p.Rlimits, want)
	}
	masked, err := spec.MaskedPaths()
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range masked {
		if !slices.Contains(s.Linux.MaskedPaths, path) {
			t.Errorf("masked path %s missing: %v", path, s.Linux.MaskedPaths)
		}
	}
	for _, path := range spec.RequiredReadonlyPaths() {
		if !slices.Contains(s.Linux.ReadonlyPaths, path) {
			t.Errorf("read-only path %s missing: %v", path, s.Linux.ReadonlyPaths)
		}
	}
	for _, ns := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace, specs.NetworkNamespace, specs.CgroupNamespace} {
		if !slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == ns && n.Path == "" }) {
			t.Errorf("namespace %s: not a new one in %+v", ns, s.Linux.Namespaces)
		}
	}
	if s.Root == nil || !s.Root.Readonly {
		t.Errorf("root: %+v; want read-only", s.Root)
	}
	tmp := slices.IndexFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == spec.TmpPath })
	if tmp < 0 || !slices.Contains(s.Mounts[tmp].Options, "noexec") || !slices.Contains(s.Mounts[tmp].Options, "nosuid") || !slices.Contains(s.Mounts[tmp].Options, "nodev") {
		t.Errorf("/tmp: %+v", s.Mounts)
	}
	if want := map[string]string{"net.ipv4.ping_group_range": "1 0", "net.ipv4.ip_unprivileged_port_start": "1024"}; !maps.Equal(s.Linux.Sysctl, want) {
		t.Errorf("sysctls: %v; want %v", s.Linux.Sysctl, want)
	}
}

// seccompRules is a profile's rules by syscall name, each rule as its
// action, errno and arguments, sorted: two profiles that allow and refuse
// the same calls the same way compare equal whatever their rule order.
func seccompRules(p *specs.LinuxSeccomp) map[string][]string {
	rules := map[string][]string{}
	if p == nil {
		return rules
	}
	for _, r := range p.Syscalls {
		args := []byte("null") // no arguments, however spelled
		if len(r.Args) > 0 {
			args, _ = json.Marshal(r.Args)
		}
		errno := "none"
		if r.ErrnoRet != nil {
			errno = strconv.Itoa(int(*r.ErrnoRet))
		}
		for _, name := range r.Names {
			rules[name] = append(rules[name], fmt.Sprintf("%s errno=%s args=%s", r.Action, errno, args))
		}
	}
	for name := range rules {
		slices.Sort(rules[name])
	}
	return rules
}

// sameElements reports whether a and b hold the same elements, in any
// order.
func sameElements[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// TestDockerFollowKeepsTheCapture: a second process's `logs -f` of a
// detached task (here a second Manager over the same state dir) waits for
// the capture of the process that started the task, and leaves it whole.
// An outside review's follow had the second process take the logs again
// from dockerd's copy, over the first's capture: 384,618 of 1,000,003
// bytes were left, `truncated: false`, in 4 runs of 4.
func TestDockerFollowKeepsTheCapture(t *testing.T) {
	state := t.TempDir()
	supervisor := dockerManagerAt(t, state, runtime.UserNSPreferred)
	follower := dockerManagerAt(t, state, runtime.UserNSPreferred)
	ctx := context.Background()
	id := uniqueID("follow")
	if _, err := supervisor.Spawn(ctx, seedTask(id, "sh", "-c", "sleep 1; yes '' | head -n 1000000; printf END")); err != nil {
		t.Fatal(err)
	}
	var followed strings.Builder
	if err := follower.Logs(ctx, id, runtime.LogOptions{Follow: true, Stdout: &followed}); err != nil {
		t.Fatal(err)
	}
	res, err := supervisor.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := supervisor.CollectOutput(ctx, id, "", &res); err != nil {
		t.Fatal(err)
	}
	const want = 1000003
	if len(res.Stdout) != want || !strings.HasSuffix(res.Stdout, "\nEND") || res.StdoutTruncated || followed.Len() != want {
		t.Errorf("after a second process's follow: the Result's stdout %d bytes (truncated %v), the follow %d; want %d, whole, in both",
			len(res.Stdout), res.StdoutTruncated, followed.Len(), want)
	}
	if err := supervisor.Cleanup(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// TestDockerLogsOutliveTheirProcess: the process that started a detached
// Docker task dies (its Backend closes) before the task writes 1,000,003
// bytes of short lines; another process waits on the task and takes its
// logs. With the capture in the dead process's own (Config.LoggerBinary
// empty, as before 2026-12-01) they come from dockerd's copy, which keeps
// 16 MiB stored and has lost the start: an outside review saw 384,618
// bytes, `truncated: false`. With the attach logger, a process of its own
// that the dead one started, they are whole.
func TestDockerLogsOutliveTheirProcess(t *testing.T) {
	c := dockerClient(t)
	loadDockerImages(t, c)
	ctx := context.Background()
	const want = 1000003
	run := func(logger string) task.Result {
		t.Helper()
		state := t.TempDir()
		b, err := docker.New(ctx, docker.Config{Host: os.Getenv(envDockerHost), LoggerBinary: logger})
		if err != nil {
			t.Fatal(err)
		}
		first, err := runtime.New(runtime.Config{Backend: b, StateDir: state})
		if err != nil {
			t.Fatal(err)
		}
		id := uniqueID("outlive")
		if _, err := first.Spawn(ctx, seedTask(id, "sh", "-c", "sleep 1; yes '' | head -n 1000000; printf END")); err != nil {
			t.Fatal(err)
		}
		b.Close() // the process that started it is gone
		second := dockerManagerAt(t, state, runtime.UserNSPreferred)
		res, err := second.Wait(ctx, id)
		if err == nil {
			err = second.CollectOutput(ctx, id, "", &res)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := second.Cleanup(ctx, id); err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := run("")
	if len(res.Stdout) >= want || res.StdoutTruncated {
		t.Fatalf("bypass (the capture in the dead process): stdout %d bytes (truncated %v); want dockerd's shorter copy, as the review saw", len(res.Stdout), res.StdoutTruncated)
	}
	t.Logf("bypass (the capture in the dead process): stdout %d of %d bytes, truncated %v", len(res.Stdout), want, res.StdoutTruncated)
	res = run(nsnLogger(t))
	if len(res.Stdout) != want || !strings.HasSuffix(res.Stdout, "\nEND") || res.StdoutTruncated {
		t.Errorf("with the attach logger: stdout %d bytes (truncated %v); want %d, whole", len(res.Stdout), res.StdoutTruncated, want)
	}
}

// TestDockerLogsWhenTheLoggerDies: the attach logger is killed (the host's
// OOM killer, an operator) before the task writes, while the process that
// started the task lives on and waits. The capture never completes, so
// the logs are taken from dockerd's copy once the container has stopped.
// An outside review's kill -9 of the logger left the Result's stdout and
// stderr empty, truncated false, and dockerd's copy gone with the
// container.
func TestDockerLogsWhenTheLoggerDies(t *testing.T) {
	m := dockerManager(t)
	ctx := context.Background()
	id := uniqueID("loggerdies")
	if _, err := m.Spawn(ctx, seedTask(id, "sh", "-c", "sleep 2; echo hello; echo E >&2")); err != nil {
		t.Fatal(err)
	}
	logger := attachLoggerOf(t, filepath.Join(m.StateDir(), "tasks", id))
	if err := unix.Kill(logger, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	res, err := m.Wait(ctx, id)
	if err == nil {
		err = m.CollectOutput(ctx, id, "", &res)
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Stdout != "hello\n" || res.Stderr != "E\n" {
		t.Errorf("logs after the attach logger was killed: stdout %q stderr %q; want hello and E from dockerd's copy", res.Stdout, res.Stderr)
	}
	if err := m.Cleanup(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// attachLoggerOf finds the pid of the attach logger of the task whose
// state dir is dir (its command line names it).
func attachLoggerOf(t *testing.T, dir string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if bytes.Contains(cmdline, []byte(logs.AttachLoggerCommand)) && bytes.Contains(cmdline, []byte(url.QueryEscape(dir))) {
			return pid
		}
	}
	t.Fatalf("no attach logger for %s", dir)
	return 0
}
