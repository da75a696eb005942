package integration

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/nsn-run/nsn-run/runtime"
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
	if err := m.Remove(ctx, id, true); err != nil {
		t.Fatal(err)
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
	s := runCLIEnv(t, env, "spec", "--backend", "docker", "--id", "spec1", "--memory", "256m", "busybox", "--", "true")
	if s.code != 0 || !strings.Contains(s.stdout, `"NetworkMode": "none"`) || !strings.Contains(s.stdout, `"ReadonlyRootfs": true`) ||
		!strings.Contains(s.stdout, `"Memory": 268435456`) {
		t.Errorf("spec --backend docker: exit %d stderr %q\n%s", s.code, s.stderr, s.stdout)
	}
	if l := dockerLeftovers(t); l != "" {
		t.Errorf("docker ps -a / docker volume ls not empty: %s", l)
	}
}
