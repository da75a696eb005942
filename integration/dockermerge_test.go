package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/internal/imagebuild"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/docker"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/task"
)

// mergeScript writes 8 MiB to the image's volume, says where /data is
// mounted from, and prints the NVIDIA variable the image sets.
const mergeScript = `dd if=/dev/zero of=/data/blob bs=1M count=8 2>/dev/null && echo wrote; ` +
	`grep " /data " /proc/self/mountinfo | sed 's/.* - //' | cut -d' ' -f1; echo "gpus=$NVIDIA_VISIBLE_DEVICES"`

// TestDockerImageVolumeAndEnvVoided: dockerd merges an image's VOLUMEs and
// env into the container whatever the create request says (a sixteenth
// review). First the attack: the request nsn-run sends without the void
// tmpfs and the empty NVIDIA variable, created on dockerd directly, gives
// the task a writable volume on the host's disk (8 MiB written past every
// cap) and NVIDIA_VISIBLE_DEVICES=all. Then nsn-run's: /data is an empty
// read-only tmpfs, the variable empty, the health check off; and an image
// labelled in nsn-run's prefix is refused.
func TestDockerImageVolumeAndEnvVoided(t *testing.T) {
	c := dockerClient(t)
	m := dockerManager(t)
	ctx := context.Background()
	name := "docker.io/library/" + strings.ToLower(uniqueID("nsn-volimg")) + ":v1"
	rootfs, img := mergeImage(t, c, m, name)

	// The attack, on dockerd directly.
	id := task.NewID()
	tk := task.Task{ID: id, Image: name, Command: []string{"sh", "-c", mergeScript}, Limits: task.Limits{MemoryBytes: 16 * task.MiB}}
	r, err := docker.CreateRequest(tk, img, docker.RequestOptions{OutputDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	delete(r.HostConfig.Tmpfs, "/data")
	r.Config.Env = slicesWithout(r.Config.Env, "NVIDIA_VISIBLE_DEVICES=")
	out := runOnDockerd(t, c, r)
	if !strings.Contains(out, "wrote\n") || strings.Contains(out, "tmpfs") || !strings.Contains(out, "gpus=all") {
		t.Fatalf("without the controls the task should write 8 MiB to a volume on the host's disk and see gpus=all; it printed %q", out)
	}

	// The audit of that request (a twenty-third review: `nsn-run audit`
	// passed nsn-run's request with the /data tmpfs dropped, and its task
	// wrote 100 MiB to dockerd's disk against 16 MiB): the guards are
	// judged against the image as the node's dockerd holds it.
	auditDropped(t, name)

	// nsn-run's.
	res, err := m.Run(ctx, tk, runtime.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(res.Stdout, "wrote") || !strings.Contains(res.Stdout, "tmpfs\n") || !strings.Contains(res.Stdout, "gpus=\n") {
		t.Errorf("nsn-run's task: stdout %q stderr %q, want no write, a tmpfs at /data, gpus empty", res.Stdout, res.Stderr)
	}

	labelled := "docker.io/library/" + strings.ToLower(uniqueID("nsn-labelimg")) + ":v1"
	var buf bytes.Buffer
	img.Labels = map[string]string{"nsn.gpus": "nvidia.com/gpu=0"}
	if err := imagebuild.WriteOCILayout(&buf, imagebuild.Image{Name: labelled, RootfsDir: rootfs, Config: img}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ImportImage(ctx, &buf, runtime.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.ImageRemove(context.Background(), labelled, client.ImageRemoveOptions{Force: true}) })
	if _, err := m.Run(ctx, task.Task{ID: task.NewID(), Image: labelled, Command: []string{"true"}}, runtime.RunOptions{}); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), `"nsn.gpus"`) {
		t.Errorf("an image labelled nsn.gpus: %v, want refused", err)
	}
}

// mergeImage imports into dockerd, as name, a busybox image with a VOLUME
// at /data (world-writable) and NVIDIA_VISIBLE_DEVICES=all, and returns
// its rootfs and config.
func mergeImage(t *testing.T, c *client.Client, m *runtime.Manager, name string) (string, ocispec.ImageConfig) {
	t.Helper()
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := imagebuild.BusyboxRootfs(rootfs, busyboxPath(t)); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(rootfs, "data")
	if err := os.Mkdir(data, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o1777); err != nil {
		t.Fatal(err)
	}
	img := ocispec.ImageConfig{Env: []string{"PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all"}, Volumes: map[string]struct{}{"/data": {}}}
	var buf bytes.Buffer
	if err := imagebuild.WriteOCILayout(&buf, imagebuild.Image{Name: name, RootfsDir: rootfs, Config: img}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ImportImage(context.Background(), &buf, runtime.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.ImageRemove(context.Background(), name, client.ImageRemoveOptions{Force: true}) })
	return rootfs, img
}

// TestDockerAuditedRequestPinsImage: a clean audit of a create request
// holds for the image it judged only if the request names that image by
// ID: dockerd resolves a name again at create time (a twenty-fourth
// review moved a tag after a clean audit, and the request ran an image
// with a VOLUME, written on dockerd's disk). The attack first: the request
// naming its image by name, as nsn-run sent it until 2026-12-01, created
// after the tag moved to the volume image, writes to a volume; the audit
// refuses that form. nsn-run's request, audited clean while the tag named
// busybox, created after the move: busybox runs, no /data, no volume.
func TestDockerAuditedRequestPinsImage(t *testing.T) {
	c := dockerClient(t)
	m := dockerManager(t)
	ctx := context.Background()
	volume := "docker.io/library/" + strings.ToLower(uniqueID("nsn-volimg")) + ":v1"
	mergeImage(t, c, m, volume)
	tag := "docker.io/library/" + strings.ToLower(uniqueID("nsn-moving")) + ":latest"
	if _, err := c.ImageTag(ctx, client.ImageTagOptions{Source: busyboxRef, Target: tag}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.ImageRemove(context.Background(), tag, client.ImageRemoveOptions{Force: true}) })

	env := append(os.Environ(), "NSN_BACKEND=docker", "DOCKER_HOST="+os.Getenv(envDockerHost))
	stateDir := t.TempDir()
	global := []string{"--state-dir", stateDir}
	id := uniqueID("pin")
	res := runCLIWith(t, env, nil, slices.Concat([]string{"spec"}, global, []string{"--id", id, "--memory", "16m", tag, "--", "sh", "-c", mergeScript})...)
	if res.code != 0 {
		t.Fatalf("spec --backend docker: exit %d: %s", res.code, res.stderr)
	}
	var pinned docker.Request
	if err := json.Unmarshal([]byte(res.stdout), &pinned); err != nil {
		t.Fatal(err)
	}
	if !docker.IsImageID(pinned.Config.Image) || pinned.Config.Labels[runtime.LabelImage] != tag {
		t.Fatalf("the request names image %q, label %q: want the ID and %s", pinned.Config.Image, pinned.Config.Labels[runtime.LabelImage], tag)
	}
	audit := func(r docker.Request) cliResult {
		t.Helper()
		data, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return runCLIWith(t, env, data, slices.Concat(global, []string{"audit", "-"})...)
	}
	if a := audit(pinned); a.code != 0 {
		t.Fatalf("audit of nsn-run's request: exit %d\n%s%s", a.code, a.stdout, a.stderr)
	}
	unpinned := pinned
	unpinned.Config = ptrTo(*pinned.Config)
	unpinned.Config.Labels = maps.Clone(pinned.Config.Labels)
	unpinned.Config.Image = tag
	delete(unpinned.Config.Labels, runtime.LabelImage)
	if a := audit(unpinned); a.code != 1 || !strings.Contains(a.stdout, "config.Image: is \""+tag+"\", nsn-run generates \"sha256:") {
		t.Errorf("audit of the request naming its image by name: exit %d, want 1 and a config.Image finding\n%s%s", a.code, a.stdout, a.stderr)
	}

	// The tag moves; the audited requests are created afterwards.
	if _, err := c.ImageTag(ctx, client.ImageTagOptions{Source: volume, Target: tag}); err != nil {
		t.Fatal(err)
	}
	output := outputSourceOf(pinned)
	if err := os.MkdirAll(output, 0o777); err != nil {
		t.Fatal(err)
	}
	unpinned.Name = uniqueID("pin-attack")
	if out := runOnDockerd(t, c, unpinned); !strings.Contains(out, "wrote\n") || !strings.Contains(out, "gpus=all") {
		t.Fatalf("the attack: the request by name, created after the tag moved, should write to the new image's volume and see gpus=all; it printed %q", out)
	} else {
		t.Logf("the attack: created after the tag moved, the request by name printed %q", out)
	}
	pinned.Name = uniqueID("pin-audited")
	if out := runOnDockerd(t, c, pinned); strings.Contains(out, "wrote") || strings.Contains(out, "gpus=all") {
		t.Errorf("nsn-run's request, created after the tag moved: it printed %q; want busybox's task (no /data, no gpus)", out)
	} else {
		t.Logf("nsn-run's request, created after the tag moved: %q", out)
	}
}

// TestDockerRequestAuditedBeforeItsTask: a create request audited clean
// before its task id was in use, created on dockerd while a task of that
// id runs or after it ended (its record and /output kept until rm), bound
// that task's /output: reviews 25 and 26 overwrote the task's result, and
// `wait --output-dir` handed the forgery over. The container now binds a
// directory of the output tmpfs named by a key the task draws at its
// start, which a request audited before cannot name: created while the
// task runs, or after it ended, dockerd refuses it (its bind source does
// not exist). The attack, run with the key filled in (as if the path were
// still predictable): it forges the running task's result. After the task
// ended, even with the key, the write gets EROFS (the output is sealed)
// and `wait --output-dir` gives the task's own result; with the seal
// undone, it forges it.
func TestDockerRequestAuditedBeforeItsTask(t *testing.T) {
	dockerManager(t) // loads the images into the test dockerd
	c := dockerClient(t)
	env := append(os.Environ(), "NSN_BACKEND=docker", "DOCKER_HOST="+os.Getenv(envDockerHost))
	stateDir := t.TempDir()
	global := []string{"--state-dir", stateDir}
	nsn := func(args ...string) cliResult {
		t.Helper()
		return runCLIWith(t, env, nil, slices.Concat(args[:1], global, args[1:])...)
	}
	id := uniqueID("keyed")
	t.Cleanup(func() { nsn("rm", "-f", id) })
	req := nsn("spec", "--id", id, "busybox:latest", "--", "sh", "-c", "echo forged > /output/result")
	if req.code != 0 {
		t.Fatalf("spec: exit %d: %s", req.code, req.stderr)
	}
	if a := runCLIWith(t, env, []byte(req.stdout), slices.Concat(global, []string{"audit", "-"})...); a.code != 0 {
		t.Fatalf("audit before the task exists: exit %d: %s%s", a.code, a.stdout, a.stderr)
	}
	var audited docker.Request
	if err := json.Unmarshal([]byte(req.stdout), &audited); err != nil {
		t.Fatal(err)
	}
	if r := nsn("run", "-d", "--id", id, "busybox:latest", "--", "sh", "-c", "echo genuine > /output/result; sleep 4"); r.code != 0 {
		t.Fatalf("run -d: exit %d: %s", r.code, r.stderr)
	}
	output := taskOutput(t, stateDir, id)
	result := filepath.Join(output, "result")
	waitForFile(t, result)
	read := func() string { return mustRead(t, result) }
	keyed := withOutputSource(audited, output)

	// While the task runs.
	audited.Name = uniqueID("audited")
	if err := createOnDockerd(c, audited); err == nil || !strings.Contains(err.Error(), outputSourceOf(audited)) {
		t.Errorf("the audited request, created while the task runs: %v; want its bind source refused as missing", err)
	} else {
		t.Logf("the audited request, created while the task runs: %v", err)
	}
	keyed.Name = uniqueID("keyed-running")
	runOnDockerd(t, c, keyed)
	if got := read(); got != "forged\n" {
		t.Fatalf("the attack (the key filled in): the running task's result is %q; want it forged", got)
	}
	t.Log("the attack (the key filled in): the request forged the running task's result")
	if err := os.WriteFile(result, []byte("genuine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := nsn("wait", id); r.code != 0 {
		t.Fatalf("wait: exit %d: %s", r.code, r.stderr)
	}

	// After the task ended.
	audited.Name = uniqueID("audited")
	if err := createOnDockerd(c, audited); err == nil {
		t.Errorf("the audited request, created after the task ended: created; want its bind source refused as missing")
	}
	keyed.Name = uniqueID("keyed-ended")
	out := runOnDockerd(t, c, keyed)
	if got := read(); got != "genuine\n" || !strings.Contains(out, "Read-only file system") {
		t.Errorf("sealed: the result is %q, the request's task printed %q; want it unchanged and EROFS", got, out)
	}
	dest := filepath.Join(t.TempDir(), "out")
	if w := nsn("wait", "--output-dir", dest, id); w.code != 0 {
		t.Fatalf("wait --output-dir: exit %d: %s", w.code, w.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dest, "result")); err != nil || string(b) != "genuine\n" {
		t.Errorf("wait --output-dir handed over %q, %v; want the task's own result", b, err)
	} else {
		t.Logf("sealed: the keyed request's task printed %q; wait --output-dir handed over the task's own result", strings.TrimSpace(out))
	}

	// The seal undone.
	if err := unix.Mount("", filepath.Dir(output), "", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		t.Fatal(err)
	}
	keyed.Name = uniqueID("keyed-unsealed")
	out = runOnDockerd(t, c, keyed)
	if got := read(); got != "forged\n" {
		t.Fatalf("the attack (output read-write): the task's result is %q after the keyed request ran (%q); want it forged", got, out)
	}
	t.Log("the attack (output read-write): the keyed request, created after the task ended, forged its result")
}

// outputSourceOf is the source of r's /output bind.
func outputSourceOf(r docker.Request) string {
	for _, m := range r.HostConfig.Mounts {
		if m.Target == spec.OutputPath {
			return m.Source
		}
	}
	return ""
}

// withOutputSource is a copy of r binding source at /output.
func withOutputSource(r docker.Request, source string) docker.Request {
	r.HostConfig = ptrTo(*r.HostConfig)
	r.HostConfig.Mounts = slices.Clone(r.HostConfig.Mounts)
	for i := range r.HostConfig.Mounts {
		if r.HostConfig.Mounts[i].Target == spec.OutputPath {
			r.HostConfig.Mounts[i].Source = source
		}
	}
	return r
}

// createOnDockerd creates the container r describes on dockerd directly
// and removes it again; it returns the create's error.
func createOnDockerd(c *client.Client, r docker.Request) error {
	ctx := context.Background()
	_, err := c.ContainerCreate(ctx, client.ContainerCreateOptions{Name: r.Name, Config: r.Config, HostConfig: r.HostConfig})
	if err == nil {
		_, _ = c.ContainerRemove(ctx, r.Name, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	}
	return err
}

// auditDropped audits, with the CLI, nsn-run's create request for a task
// of image (one with a VOLUME at /data and NVIDIA_VISIBLE_DEVICES=all):
// as printed it passes; with the tmpfs over /data or the empty NVIDIA
// variable taken out, and with another image named, each is a finding.
func auditDropped(t *testing.T, image string) {
	t.Helper()
	env := append(os.Environ(), "NSN_BACKEND=docker", "DOCKER_HOST="+os.Getenv(envDockerHost))
	global := []string{"--state-dir", t.TempDir()}
	id := uniqueID("merge-audit")
	request := func(image string) string {
		t.Helper()
		res := runCLIWith(t, env, nil, slices.Concat([]string{"spec"}, global, []string{"--id", id, "--memory", "16m", image, "--", "sh", "-c", mergeScript})...)
		if res.code != 0 {
			t.Fatalf("spec --backend docker %s: exit %d: %s", image, res.code, res.stderr)
		}
		return res.stdout
	}
	own, plain := request(image), request("busybox:latest")
	audit := func(name string, base string, edit func(*docker.Request), want string) {
		t.Helper()
		var r docker.Request
		if err := json.Unmarshal([]byte(base), &r); err != nil {
			t.Fatal(err)
		}
		edit(&r)
		data, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		a := runCLIWith(t, env, data, slices.Concat(global, []string{"audit", "-"})...)
		switch {
		case want == "" && (a.code != 0 || a.stdout != ""):
			t.Errorf("%s: audit exit %d, want no findings:\n%s%s", name, a.code, a.stdout, a.stderr)
		case want != "" && (a.code != 1 || !strings.Contains(a.stdout, want)):
			t.Errorf("%s: audit exit %d, want 1 and %q:\n%s%s", name, a.code, want, a.stdout, a.stderr)
		default:
			t.Logf("audit, %s: exit %d %s", name, a.code, strings.TrimSpace(a.stdout))
		}
	}
	audit("nsn-run's request", own, func(*docker.Request) {}, "")
	audit("the tmpfs over /data dropped", own, func(r *docker.Request) { delete(r.HostConfig.Tmpfs, "/data") }, "mounts host_config.Tmpfs./data: missing")
	audit("the empty NVIDIA_VISIBLE_DEVICES dropped", own, func(r *docker.Request) {
		r.Config.Env = slicesWithout(r.Config.Env, "NVIDIA_VISIBLE_DEVICES=")
	}, "env config.Env: the image sets NVIDIA_VISIBLE_DEVICES, which")
	audit("busybox's request naming this image", plain, func(r *docker.Request) { r.Config.Image = image }, "mounts host_config.Tmpfs./data: missing")
}

// runOnDockerd creates, starts and waits for the container r describes on
// dockerd directly, removes it, and returns its stdout and stderr.
func runOnDockerd(t *testing.T, c *client.Client, r docker.Request) string {
	t.Helper()
	ctx := context.Background()
	if _, err := c.ContainerCreate(ctx, client.ContainerCreateOptions{Name: r.Name, Config: r.Config, HostConfig: r.HostConfig}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_, _ = c.ContainerRemove(context.Background(), r.Name, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	}()
	wait := c.ContainerWait(ctx, r.Name, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	if _, err := c.ContainerStart(ctx, r.Name, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wait.Result:
	case err := <-wait.Error:
		t.Fatal(err)
	}
	logs, err := c.ContainerLogs(ctx, r.Name, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, logs); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func slicesWithout(s []string, v string) []string {
	var out []string
	for _, e := range s {
		if e != v {
			out = append(out, e)
		}
	}
	return out
}

// TestDockerRequestOverridesDefaults: what dockerd 20.10 gives a container
// by default, and nsn-run's create request overrides, run attack first.
// Each case sends nsn-run's request for a probe task to dockerd directly
// with one of its settings taken out, so that dockerd's default applies:
// its own seccomp profile (which allows io_uring), its OOM score (0: the
// task's memory is not the first the kernel reclaims by killing), and its
// network sysctls (ping_group_range open to every group: ICMP sockets for
// any user, a raw path into the kernel's ICMP code). Then the same task
// through the Docker backend: refused, 1000, closed.
func TestDockerRequestOverridesDefaults(t *testing.T) {
	c := dockerClient(t)
	loadDockerImages(t, c)
	m := dockerManager(t)
	ctx := context.Background()
	cases := []struct {
		name    string
		args    []string
		without func(*docker.Request)
		attack  func(out string) bool // what dockerd's default let the task do
	}{
		{"seccomp", []string{"nsn-probe", "io-uring-setup"},
			func(r *docker.Request) {
				r.HostConfig.SecurityOpt = slices.DeleteFunc(r.HostConfig.SecurityOpt, func(o string) bool { return strings.HasPrefix(o, "seccomp=") })
			},
			func(out string) bool { return strings.Contains(out, `"blocked":false`) }},
		{"oom-score", []string{"cat", "/proc/self/oom_score_adj"},
			func(r *docker.Request) { r.HostConfig.OomScoreAdj = 0 },
			func(out string) bool { return out == "0\n" }},
		{"sysctls", []string{"cat", "/proc/sys/net/ipv4/ping_group_range"},
			func(r *docker.Request) { r.HostConfig.Sysctls = nil },
			func(out string) bool { return out != "1\t0\n" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tk := task.Task{ID: uniqueID("dflt"), Image: probeRef, Command: tc.args}
			img, err := docker.InspectImage(ctx, c, probeRef)
			if err != nil {
				t.Fatal(err)
			}
			r, err := docker.CreateRequest(tk.WithDefaults(), spec.SharedIdentityImage(img.Config, spec.HostIdentityTaken), docker.RequestOptions{OutputDir: t.TempDir(), ImageID: img.ID})
			if err != nil {
				t.Fatal(err)
			}
			tc.without(&r)
			out := runOnDockerd(t, c, r)
			if !tc.attack(out) {
				t.Fatalf("bypass: with dockerd's default the task printed %q", out)
			}
			t.Logf("bypass (dockerd's default): %s", strings.TrimSpace(out))
			res, err := m.Run(ctx, tk, runtime.RunOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.attack(res.Stdout) {
				t.Errorf("nsn-run's request: the task printed %q (stderr %q)", res.Stdout, res.Stderr)
			}
			t.Logf("nsn-run's request: %s", strings.TrimSpace(res.Stdout))
		})
	}
}
