package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/idmap"
	"github.com/nsn-run/nsn-run/internal/imagebuild"
	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// hostUID is the real uid of host process pid, from /proc/PID/status.
func hostUID(t *testing.T, pid uint32) uint32 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			var uid uint32
			if _, err := fmt.Sscan(rest, &uid); err != nil {
				t.Fatal(err)
			}
			return uid
		}
	}
	t.Fatalf("no Uid line for pid %d", pid)
	return 0
}

// TestTasksHaveOwnHostIDs: two concurrent tasks run as different host
// uids, neither host root nor nobody, each inside the range its Result
// reports, and see a uid_map that is not the identity. With user
// namespaces off, both run as host uid 65534: the shared identity the
// control removes.
func TestTasksHaveOwnHostIDs(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []runtime.UserNSMode{runtime.UserNSOff, runtime.UserNSPreferred} {
		t.Run("userns="+string(mode), func(t *testing.T) {
			m, _ := testManagerUserNS(t, mode)
			var uids []uint32
			var ids []string
			for range 2 {
				id := uniqueID("ids")
				h, err := m.Spawn(ctx, seedTask(id, "sleep", "60"))
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
				uids = append(uids, hostUID(t, h.Pid))
			}
			for _, id := range ids {
				if err := m.Remove(ctx, id, true); err != nil {
					t.Fatal(err)
				}
			}
			res, err := m.Run(ctx, seedTask(uniqueID("map"), "cat", "/proc/self/uid_map", "/proc/sys/user/max_user_namespaces"), runtime.RunOptions{})
			if err != nil {
				t.Fatal(err)
			}
			uidMap := strings.Fields(res.Stdout)
			t.Logf("host uids %v; uid_map %v; identity %+v", uids, uidMap, res.Identity)
			if mode == runtime.UserNSOff {
				// No user namespace of its own: the task sees the map of
				// the test's (the host's) user namespace.
				host, err := os.ReadFile("/proc/self/uid_map")
				if err != nil {
					t.Fatal(err)
				}
				if hostMap := strings.Fields(string(host)); len(uidMap) < len(hostMap) || !slices.Equal(uidMap[:len(hostMap)], hostMap) {
					t.Errorf("without user namespaces: uid_map %v, want the host's %v", uidMap, hostMap)
				}
				if uids[0] != task.NobodyID || uids[1] != task.NobodyID {
					t.Errorf("without user namespaces: host uids %v, want both 65534", uids)
				}
				if res.Identity == nil || res.Identity.Level != task.IdentityShared || res.Identity.Range != nil {
					t.Errorf("identity %+v, want shared", res.Identity)
				}
				return
			}
			if uids[0] == uids[1] || uids[0] == 0 || uids[1] == 0 || uids[0] == task.NobodyID || uids[1] == task.NobodyID {
				t.Errorf("host uids %v: want two different ids, neither 0 nor 65534", uids)
			}
			if len(uidMap) != 4 || uidMap[0] != "0" || uidMap[1] == "0" || uidMap[2] != "65536" || uidMap[3] != "0" {
				t.Errorf("uid_map and max_user_namespaces %v: want 0 BASE 65536 with BASE not 0, then 0 nested user namespaces", uidMap)
			}
			if res.Identity == nil || (res.Identity.Level != task.IdentityUserNS && res.Identity.Level != task.IdentityIDMapped) || res.Identity.Range == nil ||
				fmt.Sprint(res.Identity.Range.HostID) != uidMap[1] {
				t.Errorf("identity %+v does not match the uid_map %v", res.Identity, uidMap)
			}
		})
	}
}

// TestInotifyPerTask: one task holding every inotify instance it may have
// leaves another task, and host root, able to create one. Without user
// namespaces the two tasks are one host uid, and the second gets EMFILE.
// (A user namespace alone would not do: runc creates it as host root, so
// without the per-namespace limit the task spends root's instances.)
func TestInotifyPerTask(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []runtime.UserNSMode{runtime.UserNSOff, runtime.UserNSPreferred} {
		t.Run("userns="+string(mode), func(t *testing.T) {
			m, _ := testManagerUserNS(t, mode)
			hog := uniqueID("hog")
			if _, err := m.Spawn(ctx, task.Task{ID: hog, Image: probeRef, Command: []string{"nsn-probe", "inotify-hold"}}); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = m.Remove(ctx, hog, true) }()
			held := waitForLine(t, m, hog, 30*time.Second)
			t.Logf("hog: %s", held)
			r, _ := runProbeTask(t, m, "nsn-probe", "inotify-one")
			t.Logf("second task: %+v", r)
			if mode == runtime.UserNSOff {
				if r.Errno != "EMFILE" {
					t.Errorf("without user namespaces the second task got %+v; want EMFILE (the shared uid's instances are spent)", r)
				}
				return
			}
			if r.Blocked {
				t.Errorf("with user namespaces the second task could not create an inotify instance: %+v", r)
			}
			if !strings.HasPrefix(held, "holding 16 ") {
				t.Errorf("hog: %s; want it held at its namespace's limit of 16", held)
			}
			fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
			if err != nil {
				t.Errorf("host root cannot create an inotify instance while the task holds its limit: %v", err)
			} else {
				unix.Close(fd)
			}
		})
	}
}

// TestUserNSLimitsWithOlderRunc: with a runc older than 1.4 (Debian's
// 1.1.5, as Config.RuncBinary) the spec cannot carry the user namespace's
// limits. On containerd 2.3 and later the backend first puts them in the
// spec; runc refuses the create, the backend recognises the refusal, starts
// the task again without them and sets them itself (there, the first task
// starts only through that path). Either way the task
// stops at 16 inotify instances, and the spec containerd keeps for it has
// no sysctls; and the first task's result has its own output, complete.
func TestUserNSLimitsWithOlderRunc(t *testing.T) {
	const debianRunc = "/usr/sbin/runc"
	out, err := exec.Command(debianRunc, "--version").Output()
	need(t, err == nil, "Debian's runc at %s: %v", debianRunc, err)
	var major, minor int
	_, err = fmt.Sscanf(string(out), "runc version %d.%d", &major, &minor)
	need(t, err == nil && major == 1 && minor < 4, "%s is %q, not a runc older than 1.4", debianRunc, out)
	ctx := context.Background()
	older := func(b *containerd.Config) { b.RuncBinary = debianRunc }

	// A Backend's first task, with the release in the background: the
	// result waits for the logger of the task that ran, not for the one
	// of the refused create.
	bg, _ := testManagerBackend(t, older, func(cfg *runtime.Config) { cfg.ReleaseInBackground = true })
	res, err := bg.Run(ctx, seedTask(uniqueID("retried"), "sh", "-c", "echo out; echo err >&2"), runtime.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || res.Stdout != "out\n" || res.Stderr != "err\n" || res.StdoutTruncated || res.StderrTruncated {
		t.Errorf("the retried task's result: exit %d, stdout %q, stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}

	m, c := testManagerBackend(t, older, func(*runtime.Config) {})
	for i := range 2 { // the second task finds the backend switched already
		hog := uniqueID("hog")
		if _, err := m.Spawn(ctx, task.Task{ID: hog, Image: probeRef, Command: []string{"nsn-probe", "inotify-hold"}}); err != nil {
			t.Fatalf("task %d: %v", i, err)
		}
		held := waitForLine(t, m, hog, 30*time.Second)
		// The refused create's logger finished its (empty) capture: its
		// meta file must not stand for the running task's.
		for _, name := range []string{logs.StdoutFile, logs.StderrFile} {
			if _, err := os.Stat(filepath.Join(taskDir(m, hog), name+".meta")); err == nil {
				t.Errorf("task %d: %s.meta exists while the task runs", i, name)
			}
		}
		ctr, err := c.LoadContainer(namespaces.WithNamespace(ctx, testNamespace), hog)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ctr.Spec(namespaces.WithNamespace(ctx, testNamespace))
		if err != nil {
			t.Fatal(err)
		}
		info, err := ctr.Info(namespaces.WithNamespace(ctx, testNamespace))
		if err != nil {
			t.Fatal(err)
		}
		_ = m.Remove(ctx, hog, true)
		if !strings.HasPrefix(held, "holding 16 ") {
			t.Errorf("task %d: %s; want it held at its namespace's limit of 16", i, held)
		}
		if len(s.Linux.Sysctl) != 0 {
			t.Errorf("task %d ran with sysctls %v: runc %d.%d cannot", i, s.Linux.Sysctl, major, minor)
		}
		t.Logf("task %d: %s; runtime %s; sysctls %v", i, held, info.Runtime.Name, s.Linux.Sysctl)
	}
}

// waitForLine follows task id's stdout until its first line appears: the
// task's own signal that it is ready.
func waitForLine(t *testing.T, m *runtime.Manager, id string, limit time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	stdout := filepath.Join(taskDir(m, id), logs.StdoutFile)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if f, err := os.Open(stdout); err == nil {
			line, rerr := bufio.NewReader(f).ReadString('\n')
			f.Close()
			if rerr == nil {
				var r probeReport
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Fatalf("task %s printed %q", id, line)
				}
				return r.Detail
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("task %s printed nothing in %s", id, limit)
		case <-tick.C:
		}
	}
}

// TestNoHostUevents: a task listening on a kobject uevent socket while the
// host emits uevents hears none. Without user namespaces its network
// namespace belongs to the host's user namespace, and the kernel sends it
// the host's uevents.
func TestNoHostUevents(t *testing.T) {
	for _, mode := range []runtime.UserNSMode{runtime.UserNSOff, runtime.UserNSPreferred} {
		t.Run("userns="+string(mode), func(t *testing.T) {
			m, _ := testManagerUserNS(t, mode)
			// Emit uevents for as long as the task listens (bounded).
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				tick := time.NewTicker(50 * time.Millisecond)
				defer tick.Stop()
				for range 1200 {
					select {
					case <-stop:
						return
					case <-tick.C:
						_ = os.WriteFile("/sys/devices/virtual/mem/null/uevent", []byte("change"), 0)
					}
				}
			}()
			r, _ := runProbeTask(t, m, "nsn-probe", "uevents", "2")
			close(stop)
			<-done
			t.Logf("%+v", r)
			if mode == runtime.UserNSOff {
				if r.Blocked {
					t.Errorf("without user namespaces the task heard no uevent: the host emitted them? %+v", r)
				}
				return
			}
			if !r.Blocked {
				t.Errorf("a task in its own user namespace heard host uevents: %s", r.Detail)
			}
		})
	}
}

// TestUserNSRequiredRefusesDocker: dockerd has no per-container id range:
// with user namespaces required the Docker backend's task is refused (and
// nothing is left); preferred, it runs with shared ids and says so.
func TestUserNSRequiredRefusesDocker(t *testing.T) {
	ctx := context.Background()
	c := dockerClient(t)
	loadDockerImages(t, c)
	for _, mode := range []runtime.UserNSMode{runtime.UserNSRequired, runtime.UserNSPreferred} {
		m := dockerManagerUserNS(t, mode)
		res, err := m.Run(ctx, seedTask(uniqueID("dns"), "id", "-u"), runtime.RunOptions{})
		if mode == runtime.UserNSRequired {
			if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "own user namespace") {
				t.Errorf("required on docker: %v", err)
			}
		} else if err != nil || res.Identity == nil || res.Identity.Level != task.IdentityShared {
			t.Errorf("preferred on docker: %+v %v; want it to run with a shared identity", res.Identity, err)
		}
	}
	if l := dockerLeftovers(t); l != "" {
		t.Errorf("left behind: %s", l)
	}
}

// TestCLIIdentity: `run --json` and `ps --json` show each task's host id
// range; --user-namespaces off shows the shared level; the Docker backend
// with --user-namespaces required exits 125 and leaves nothing.
func TestCLIIdentity(t *testing.T) {
	g := cliEnv(t)
	r := cli(t, g, "run", "--json", "busybox", "--", "true")
	var res task.Result
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 0 {
		t.Fatalf("run --json: exit %d %v %s", r.code, err, r.stderr)
	}
	checkResultSchema(t, r.stdout) // identity with a range
	if res.Identity == nil || (res.Identity.Level != task.IdentityUserNS && res.Identity.Level != task.IdentityIDMapped) || res.Identity.Range == nil || res.Identity.Range.Size != task.IDRangeSize {
		t.Errorf("Result identity %+v", res.Identity)
	}
	id := uniqueID("psid")
	if r := cli(t, g, "run", "-d", "--id", id, "busybox", "--", "sleep", "60"); r.code != 0 {
		t.Fatalf("run -d: %s", r.stderr)
	}
	r = cli(t, g, "ps", "--json")
	var list []runtime.Status
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, st := range list {
		if st.ID == id {
			found = true
			if st.Identity == nil || st.Identity.Range == nil || st.Identity.Range.HostID < 1<<20 {
				t.Errorf("ps --json identity of %s: %+v", id, st.Identity)
			}
		}
	}
	if !found {
		t.Errorf("ps --json lacks %s", id)
	}
	if r := cli(t, g, "rm", "-f", id); r.code != 0 {
		t.Fatal(r.stderr)
	}
	off := append(slices.Clone(g), "--user-namespaces", "off")
	r = cli(t, off, "run", "--json", "busybox", "--", "true")
	res = task.Result{}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Identity == nil || res.Identity.Level != task.IdentityShared {
		t.Errorf("--user-namespaces off: %+v %v %s", res.Identity, err, r.stderr)
	}
	checkResultSchema(t, r.stdout) // identity shared, no range

	loadDockerImages(t, dockerClient(t))
	env := append(os.Environ(), "NSN_BACKEND=docker", "DOCKER_HOST="+os.Getenv(envDockerHost), "NSN_STATE_DIR="+t.TempDir(), "NSN_USER_NAMESPACES=required")
	d := runCLIEnv(t, env, "run", "busybox", "--", "true")
	if d.code != 125 || !strings.Contains(d.stderr, "own user namespace") || strings.Count(d.stderr, "\n") != 1 {
		t.Errorf("docker with user namespaces required: exit %d stderr %q", d.code, d.stderr)
	}
	if l := dockerLeftovers(t); l != "" {
		t.Errorf("left on dockerd: %s", l)
	}
}

// TestImageOwnersInUserNamespace: an image's program only its non-root
// owner (uid 1000, mode 0700) may run. Idmapped (containerd 2.x), the
// image's files keep their owners inside the task's range and the owner
// runs it; in the plain user namespace level (containerd 1.6) the file's
// host owner is outside the range, shows as the overflow id, and the exec
// is refused (126) — the level's stated limit; with shared host ids it
// runs.
func TestImageOwnersInUserNamespace(t *testing.T) {
	ctx := context.Background()
	c, addr := containerdClient(t)
	importBusybox(t, c, addr)
	rootfs := t.TempDir()
	if err := imagebuild.BusyboxRootfs(rootfs, busyboxPath(t)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "owned"), []byte("#!/bin/sh\necho owned-ran\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	const ref = "docker.io/library/nsn-owned:latest"
	if err := importImage(c, imagebuild.Image{Name: ref, RootfsDir: rootfs, Config: ocispec.ImageConfig{Env: []string{"PATH=/bin"}},
		Owners: map[string][2]int{"bin/owned": {1000, 1000}}}); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []runtime.UserNSMode{runtime.UserNSOff, runtime.UserNSPreferred} {
		t.Run("userns="+string(mode), func(t *testing.T) {
			m, _ := testManagerUserNS(t, mode)
			tk := task.Task{ID: uniqueID("owned"), Image: ref, Command: []string{"/bin/owned"}, User: "1000:1000"}
			res, err := m.Run(ctx, tk, runtime.RunOptions{})
			// A refused start has no Result: the level is the backend's.
			level, lerr := m.Identity(ctx)
			if lerr != nil {
				t.Fatal(lerr)
			}
			var ce *runtime.CommandError
			t.Logf("level %s: %q %v", level, res.Stdout, err)
			switch {
			case mode == runtime.UserNSOff || level == task.IdentityIDMapped:
				if err != nil || res.Stdout != "owned-ran\n" {
					t.Errorf("level %q: the owner could not run its 0700 program: %+v %v", level, res, err)
				}
			case errors.As(err, &ce) && ce.ExitCode() == 126:
				// userns: the stated limit of the level
			default:
				t.Errorf("level %q: %+v %v; want the exec refused (126) in a user namespace without idmapped mounts", level, res, err)
			}
		})
	}
}

// TestScratchOwnedByTask: /tmp, /dev/shm and /output belong to the task's
// own user inside its namespace (host ids in its range), with and without
// the namespace.
func TestScratchOwnedByTask(t *testing.T) {
	for _, mode := range []runtime.UserNSMode{runtime.UserNSOff, runtime.UserNSPreferred} {
		t.Run("userns="+string(mode), func(t *testing.T) {
			m, _ := testManagerUserNS(t, mode)
			res, err := m.Run(context.Background(), seedTask(uniqueID("own"), "stat", "-c", "%u:%g", "/tmp", "/dev/shm", "/output"), runtime.RunOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Fields(res.Stdout); len(got) != 3 || got[0] != "65534:65534" || got[1] != "65534:65534" || got[2] != "65534:65534" {
				t.Errorf("owners of /tmp, /dev/shm, /output: %q, want 65534:65534 each", res.Stdout)
			}
		})
	}
}

// TestAuditRangeOfALiveTask: a spec whose host id range is another live
// task's passed the audit (a thirteenth review), and under runc its task
// ran as that task's host identity, beside it. First the attack, with runc
// directly: a bundle's task, its mapping moved to a running task's range,
// runs as the running task's host uid. Then `nsn-run audit` (the node's
// allocations) finds the spec, while the spec `nsn-run spec` gave passes,
// and Start refuses a SpecOpt that moves the mapping off the granted range.
func TestAuditRangeOfALiveTask(t *testing.T) {
	ctx := context.Background()
	m, _ := testManagerUserNS(t, runtime.UserNSPreferred)
	victim := uniqueID("victim")
	h, err := m.Spawn(ctx, seedTask(victim, "sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Remove(context.Background(), victim, true) })
	st, err := m.Inspect(ctx, victim)
	if err != nil || st.Identity == nil || st.Identity.Range == nil {
		t.Fatalf("the running task's identity: %+v, %v", st, err)
	}
	held := *st.Identity.Range
	victimUID := hostUID(t, h.Pid)
	toVictim := func(s *specs.Spec) {
		m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: held.HostID, Size: held.Size}}
		s.Linux.UIDMappings, s.Linux.GIDMappings = m, m
	}

	b := newBundle(t, "cat /proc/self/uid_map; id -u")
	free := idmap.DefaultSpan.RangeAt(idmap.DefaultCount - 3)
	s, err := spec.Generate(namespaces.WithNamespace(ctx, testNamespace), task.Task{ID: b.id, Image: busyboxRef, Command: b.spec.Process.Args},
		ocispec.ImageConfig{Env: []string{"PATH=/bin"}}, spec.Options{OutputDir: b.outDir, UserNS: &free, UserNSSysctls: true})
	if err != nil {
		t.Fatal(err)
	}
	b.spec, b.userNS = s, true
	without := b.mutated(t, func(s *specs.Spec) { toVictim(s); s.Linux.Sysctl = nil }) // runc before 1.4 refuses user.* sysctls
	out, errOut, err := b.run(t, without)
	f := strings.Fields(out)
	if err != nil || len(f) != 4 || f[1] != strconv.FormatUint(uint64(held.HostID), 10) {
		t.Fatalf("bypass: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	inside, _ := strconv.ParseUint(f[3], 10, 32)
	if uint32(inside)+held.HostID != victimUID {
		t.Fatalf("bypass: the bundle's task ran as host uid %d, the running task as %d; want the same (the attack)", uint32(inside)+held.HostID, victimUID)
	}
	t.Logf("bypass: the bundle's task and task %s both ran as host uid %d", victim, victimUID)

	// The spec the CLI shows for a new task passes; moved onto the
	// running task's range, it is found.
	g := cliEnv(t)
	r := cli(t, g, "spec", "--id", uniqueID("attacker"), "busybox:latest", "--", "true")
	if r.code != 0 {
		t.Fatalf("nsn-run spec: exit %d: %s", r.code, r.stderr)
	}
	if a := runCLI(t, []byte(r.stdout), slices.Concat([]string{"audit"}, g, []string{"-"})...); a.code != 0 {
		t.Fatalf("nsn-run audit of nsn-run's own spec: exit %d: %s%s", a.code, a.stdout, a.stderr)
	}
	var shown specs.Spec
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil {
		t.Fatal(err)
	}
	toVictim(&shown)
	moved, err := spec.Marshal(&shown)
	if err != nil {
		t.Fatal(err)
	}
	a := runCLI(t, moved, slices.Concat([]string{"audit"}, g, []string{"-"})...)
	if a.code != 1 || !strings.Contains(a.stdout+a.stderr, "held by live task "+victim) {
		t.Errorf("nsn-run audit of a spec on task %s's range: exit %d: %s%s; want a finding naming it", victim, a.code, a.stdout, a.stderr)
	}
	// A live task's own spec passes; the same spec for another namespace
	// is a second copy of it (a fourteenth review ran one with runc and
	// wrote into the task's /output as its host uid).
	twin := uniqueID("twin")
	if r := cli(t, g, "run", "-d", "--id", twin, "busybox:latest", "--", "sleep", "60"); r.code != 0 {
		t.Fatalf("nsn-run run -d: exit %d: %s", r.code, r.stderr)
	}
	t.Cleanup(func() { runCLI(t, nil, slices.Concat([]string{"rm"}, g, []string{"-f", twin})...) })
	// `spec --id` of the live task is refused (its spec is its
	// container's); that one, as containerd keeps it, passes.
	if r := cli(t, g, "spec", "--id", twin, "busybox:latest", "--", "sleep", "60"); r.code != 125 || !strings.Contains(r.stderr, "exists") {
		t.Errorf("nsn-run spec of the live task: exit %d: %s; want refused", r.code, r.stderr)
	}
	c, _ := containerdClient(t)
	ctr, err := c.LoadContainer(namespaces.WithNamespace(ctx, testNamespace), twin)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := ctr.Spec(namespaces.WithNamespace(ctx, testNamespace))
	if err != nil {
		t.Fatal(err)
	}
	ownSpec, err := spec.Marshal(stored)
	if err != nil {
		t.Fatal(err)
	}
	own := cliResult{stdout: string(ownSpec)}
	if a := runCLI(t, []byte(own.stdout), slices.Concat([]string{"audit"}, g, []string{"-"})...); a.code != 0 {
		t.Errorf("nsn-run audit of a live task's own spec: exit %d: %s%s", a.code, a.stdout, a.stderr)
	}
	var copied specs.Spec
	if err := json.Unmarshal([]byte(own.stdout), &copied); err != nil {
		t.Fatal(err)
	}
	copied.Linux.CgroupsPath = "/other-ns/" + twin
	other, err := spec.Marshal(&copied)
	if err != nil {
		t.Fatal(err)
	}
	otherNS := slices.Clone(g)
	otherNS[slices.Index(otherNS, "--namespace")+1] = "other-ns"
	if a := runCLI(t, other, slices.Concat([]string{"audit"}, otherNS, []string{"-"})...); a.code != 1 || !strings.Contains(a.stdout+a.stderr, "held by live task "+twin+" in containerd namespace") {
		t.Errorf("nsn-run audit of the live task's spec for another namespace: exit %d: %s%s; want a finding naming its namespace", a.code, a.stdout, a.stderr)
	}

	// The same spec audited for another containerd (here one that does
	// not answer): its range's record names the live task's containerd.
	elsewhere := slices.Clone(g)
	elsewhere[slices.Index(elsewhere, "--address")+1] = filepath.Join(t.TempDir(), "no-containerd.sock")
	if a := runCLI(t, []byte(own.stdout), slices.Concat([]string{"audit"}, elsewhere, []string{"-"})...); a.code != 1 || !strings.Contains(a.stdout+a.stderr, "held by live task "+twin+" of containerd") {
		t.Errorf("nsn-run audit of the live task's spec for another containerd: exit %d: %s%s; want a finding naming its containerd", a.code, a.stdout, a.stderr)
	}

	// Start audits what it sends against the range it was granted: a
	// SpecOpt that moves the mapping to another range is refused
	// (startRefuses checks nothing is left: the running task goes first,
	// and its range may then be the one granted, so another is used).
	if err := m.Remove(ctx, victim, true); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, g, "rm", "-f", twin); r.code != 0 {
		t.Fatalf("nsn-run rm -f: exit %d: %s", r.code, r.stderr)
	}
	far := idmap.DefaultSpan.RangeAt(idmap.DefaultCount - 4)
	startRefuses(t, audit.RuleUserNamespace, func(s *specs.Spec) {
		m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: far.HostID, Size: far.Size}}
		s.Linux.UIDMappings, s.Linux.GIDMappings = m, m
	})
}

// TestGCFreesRangesOfRemovedStateDirs: a state dir removed while its task
// ran (rm -rf, a container's volume gone) left the task's host id range
// held until reboot: its Manager, the only one that releases it, is gone.
// First the leak: the state dir is removed and its task then removed with
// containerd's client, and the range is still held. Another state dir's gc
// keeps it while a process runs in it, and while the allocation is young
// (a spawn may be between allocating and starting); then frees it.
func TestGCFreesRangesOfRemovedStateDirs(t *testing.T) {
	ctx := context.Background()
	stateDir := filepath.Join(t.TempDir(), "removed")
	first, c := testManagerWith(t, func(cfg *runtime.Config) { cfg.StateDir = stateDir })
	second, _ := testManagerUserNS(t, runtime.UserNSPreferred)
	id := uniqueID("orphan")
	h, err := first.Spawn(ctx, seedTask(id, "sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := first.Inspect(ctx, id)
	if err != nil || st.Identity == nil || st.Identity.Range == nil {
		t.Fatalf("the task's identity: %+v, %v", st, err)
	}
	r := *st.Identity.Range
	// The task's output tmpfs is mounted in it.
	_ = unix.Unmount(filepath.Join(stateDir, "tasks", id, "output"), unix.MNT_DETACH)
	if err := os.RemoveAll(stateDir); err != nil {
		t.Fatal(err)
	}
	holder := func() (idmap.Holder, bool) {
		t.Helper()
		hd, held, err := idmap.HolderOf(idmap.DefaultDir, idmap.DefaultSpan, r)
		if err != nil {
			t.Fatal(err)
		}
		return hd, held
	}
	age := func() {
		t.Helper()
		i, _ := idmap.DefaultSpan.IndexOf(r)
		at := time.Now().Add(-time.Hour)
		if err := os.Chtimes(filepath.Join(idmap.DefaultDir, fmt.Sprintf("r%d", i)), at, at); err != nil {
			t.Fatal(err)
		}
	}
	age()
	if _, err := second.CleanupOrphans(ctx, false); err != nil {
		t.Fatal(err)
	}
	if hd, held := holder(); !held || hd.Task != id {
		t.Fatalf("range of the running task of a removed state dir after gc: %+v %v; want it kept (a process runs in it, host uid %d)", hd, held, hostUID(t, h.Pid))
	}

	nc := namespaces.WithNamespace(ctx, testNamespace)
	cont, err := c.LoadContainer(nc, id)
	if err != nil {
		t.Fatal(err)
	}
	if tk, err := cont.Task(nc, nil); err == nil {
		if _, err := tk.Delete(nc, client.WithProcessKill); err != nil {
			t.Fatal(err)
		}
	}
	if err := cont.Delete(nc, client.WithSnapshotCleanup); err != nil {
		t.Fatal(err)
	}
	if hd, held := holder(); !held || hd.Task != id {
		t.Fatalf("after its task was removed: %+v %v; want the range still held (the leak)", hd, held)
	}
	i, _ := idmap.DefaultSpan.IndexOf(r)
	now := time.Now()
	if err := os.Chtimes(filepath.Join(idmap.DefaultDir, fmt.Sprintf("r%d", i)), now, now); err != nil {
		t.Fatal(err)
	}
	if _, err := second.CleanupOrphans(ctx, false); err != nil {
		t.Fatal(err)
	}
	if _, held := holder(); !held {
		t.Fatal("a young allocation of a removed state dir was freed: a spawn may be between allocating and starting")
	}
	age()
	removed, err := second.CleanupOrphans(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, held := holder(); held || !mentions(removed, "task "+id+" of removed state dir") {
		t.Errorf("gc of another state dir: removed %v; the range held %v; want it freed (processes with ids in it: %v)", removed, held, processesInRange(r))
	}
}

// processesInRange describes the processes whose uids or gids (real,
// effective, saved or filesystem) lie in r: what keeps gc from freeing it.
func processesInRange(r task.IDRange) []string {
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/status")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var name, state, ids string
		in := false
		for line := range strings.Lines(string(b)) {
			key, value, _ := strings.Cut(strings.TrimSpace(line), ":")
			value = strings.TrimSpace(value)
			switch key {
			case "Name":
				name = value
			case "State":
				state = value
			case "Uid", "Gid":
				ids += key + " " + value + " "
				for _, f := range strings.Fields(value) {
					var n uint32
					if _, err := fmt.Sscan(f, &n); err == nil && n >= r.HostID && n-r.HostID < r.Size {
						in = true
					}
				}
			}
		}
		if in {
			found = append(found, fmt.Sprintf("%s %s (%s) %s", filepath.Base(filepath.Dir(p)), name, state, strings.TrimSpace(ids)))
		}
	}
	return found
}

// TestAuditSpecUnderAnotherTasksID: a spec under a task's own id, host id
// range and /output, but not that task's spec, is a finding (a sixteenth
// review's passed the audit: its range was "held by the spec's own
// task"). First the attack, with runc directly: after the task ended,
// another command under its identity reads its result and forges it.
func TestAuditSpecUnderAnotherTasksID(t *testing.T) {
	g := cliEnv(t)
	victim, victimOut := endedTask(t, g)
	ins := cli(t, g, "inspect", victim)
	var st runtime.Status
	if err := json.Unmarshal([]byte(ins.stdout), &st); err != nil || st.Identity == nil || st.Identity.Range == nil {
		t.Fatalf("inspect: %v %s", err, ins.stdout)
	}
	held := *st.Identity.Range

	// A spec nsn-run shows for a new task, moved under the ended task's
	// id, cgroup, /output and range, with a command of the attacker's.
	intruder, _ := intruderSpec(t, g, victim, victimOut)
	m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: held.HostID, Size: held.Size}}
	intruder.Linux.UIDMappings, intruder.Linux.GIDMappings = m, m

	data := forgeWith(t, intruder, victim, victimOut)
	a := runCLI(t, data, slices.Concat([]string{"audit"}, g, []string{"-"})...)
	if a.code != 1 || !strings.Contains(a.stdout+a.stderr, "held by task "+victim) {
		t.Errorf("audit of the spec under task %s's id: exit %d: %s%s; want a finding", victim, a.code, a.stdout, a.stderr)
	}

	// The task's exact spec, as its container holds it, once its process
	// has exited and before its release (a seventeenth review killed the
	// supervisor): its root is relative, so run from another bundle it
	// runs that bundle's /bin/sh as the task's identity, with its /output.
	ctx := context.Background()
	mgr, c := testManagerUserNS(t, runtime.UserNSPreferred)
	stopped := uniqueID("stopped")
	if _, err := mgr.Spawn(ctx, seedTask(stopped, "sh", "-c", "echo real > /output/result")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Remove(context.Background(), stopped, true) })
	nctx := namespaces.WithNamespace(ctx, testNamespace)
	ctr, err := c.LoadContainer(nctx, stopped)
	if err != nil {
		t.Fatal(err)
	}
	stoppedOut := filepath.Join(taskOutput(t, mgr.StateDir(), stopped), "result")
	tk, err := ctr.Task(nctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	exited, err := tk.Wait(nctx)
	if err != nil {
		t.Fatal(err)
	}
	<-exited // its process is gone, its container stays: nobody waits on it
	if got, _ := os.ReadFile(stoppedOut); string(got) != "real\n" {
		t.Fatalf("the task's result is %q", got)
	}
	stored, err := ctr.Spec(nctx)
	if err != nil {
		t.Fatal(err)
	}
	dup := newBundle(t, "true")
	sh := filepath.Join(dup.dir, spec.RootfsPath, "bin", "sh")
	_ = os.Remove(sh)
	if err := os.WriteFile(sh, []byte("#!/bin/busybox sh\necho forged > /output/result\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyRun := *stored
	copyRun.Linux = ptrTo(*stored.Linux)
	copyRun.Linux.Sysctl = nil // runc before 1.4 refuses user.* sysctls
	copyRun.Process = ptrTo(*stored.Process)
	copyRun.Process.ApparmorProfile = ""
	if out, errOut, err := dup.run(t, &copyRun); err != nil {
		t.Fatalf("bypass: the stopped task's spec from another bundle: %v\n%s%s", err, out, errOut)
	}
	if got, _ := os.ReadFile(stoppedOut); string(got) != "forged\n" {
		t.Fatalf("bypass: the task's result is %q, want forged", got)
	}
	t.Logf("bypass: task %s's own spec, run from another bundle, forged its result", stopped)
	storedJSON, err := spec.Marshal(stored)
	if err != nil {
		t.Fatal(err)
	}
	gm := slices.Clone(g)
	gm[slices.Index(gm, "--state-dir")+1] = mgr.StateDir()
	if a := runCLI(t, storedJSON, slices.Concat([]string{"audit"}, gm, []string{"-"})...); a.code != 1 || !strings.Contains(a.stdout+a.stderr, "not running") {
		t.Errorf("audit of stopped task %s's own spec: exit %d: %s%s; want a finding", stopped, a.code, a.stdout, a.stderr)
	}
}

func ptrTo[T any](v T) *T { return &v }

// endedTask runs a task that writes "genuine" to /output/answer and
// waits for it: it ends, and its record and /output stay until rm.
func endedTask(t *testing.T, g []string) (id, output string) {
	t.Helper()
	id = uniqueID("victim")
	t.Cleanup(func() { cli(t, g, "rm", "-f", id) })
	if r := cli(t, g, "run", "-d", "--id", id, "busybox:latest", "--", "sh", "-c", "echo genuine > /output/answer"); r.code != 0 {
		t.Fatalf("run -d: exit %d: %s", r.code, r.stderr)
	}
	if r := cli(t, g, "wait", id); r.code != 0 {
		t.Fatalf("wait: exit %d: %s", r.code, r.stderr)
	}
	return id, taskOutput(t, g[slices.Index(g, "--state-dir")+1], id)
}

// intruderSpec is the spec nsn-run shows for a new task that reads the
// answer in /output and forges it, moved under task victim's id, cgroup
// and /output; also the id it was shown for.
func intruderSpec(t *testing.T, g []string, victim, victimOut string) (intruder specs.Spec, ownID string) {
	t.Helper()
	r := cli(t, g, "spec", "--id", uniqueID("intruder"), "busybox:latest", "--", "sh", "-c", "cat /output/answer; echo forged > /output/answer")
	if r.code != 0 {
		t.Fatalf("spec: exit %d: %s", r.code, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), &intruder); err != nil {
		t.Fatal(err)
	}
	ownID = intruder.Hostname
	intruder.Hostname = victim
	intruder.Linux.CgroupsPath = strings.ReplaceAll(intruder.Linux.CgroupsPath, ownID, victim)
	for i := range intruder.Mounts {
		if intruder.Mounts[i].Destination == spec.OutputPath {
			intruder.Mounts[i].Source = victimOut
		}
	}
	return intruder, ownID
}

// forgeWith is the attack: intruder run with runc directly reads task
// victim's answer (another task's result) and tries to forge it, which
// the seal of an ended task's output refuses (EROFS; before 2026-12-01 it
// was forged, and `wait --output-dir` handed the forgery over). It returns
// the spec as JSON, to audit.
func forgeWith(t *testing.T, intruder specs.Spec, victim, victimOut string) []byte {
	t.Helper()
	b := newBundle(t, "true")
	run := intruder
	run.Linux = ptrTo(*intruder.Linux)
	run.Linux.Sysctl = nil // runc before 1.4 refuses user.* sysctls
	run.Process = ptrTo(*intruder.Process)
	run.Process.ApparmorProfile = ""
	out, errOut, err := b.run(t, &run)
	refused := "Read-only file system"
	if err != nil && strings.Contains(errOut, "cannot clear locked flags MS_RDONLY") {
		// runc 1.2+ in a user namespace cannot bind the sealed output
		// read-write at all: the seal stops the read too.
		t.Logf("bypass: runc refused to bind task %s's sealed /output read-write: %v", victim, err)
		refused = "cannot clear locked flags MS_RDONLY"
	} else if out != "genuine\n" {
		t.Fatalf("bypass: %v; stdout %q stderr %q; want task %s's result read", err, out, errOut, victim)
	}
	answer, _ := os.ReadFile(filepath.Join(victimOut, "answer"))
	if string(answer) != "genuine\n" || !strings.Contains(errOut, refused) {
		t.Errorf("the sealed output: the task's answer now %q, the intruder's stderr %q; want it unchanged and EROFS", answer, errOut)
	}
	t.Logf("bypass: the intruder read %q from task %s's /output; its forgery: %q", out, victim, strings.TrimSpace(errOut))
	// (Before the seal, 2026-12-01, it read the result and forged it.)
	data, err := spec.Marshal(&intruder)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestSpecAuditedBeforeItsTask: nsn-run's own spec for a free task id,
// here for another containerd namespace over the same state dir (so runc's
// refusal of a second container in the task's cgroup does not apply),
// audited clean, then run with runc while a task of that id runs, bound
// that task's /output and forged its result (a twenty-sixth review; the
// spec's host id range is the one the next task gets). The task's
// container now binds a directory named by a key the task draws at its
// start: the audited spec names a directory that does not exist, and
// runc fails. The attack, run with the key filled in: it forges the running
// task's result. After the task ended, the seal refuses the write.
func TestSpecAuditedBeforeItsTask(t *testing.T) {
	g := cliEnv(t)
	other := slices.Clone(g)
	other[slices.Index(other, "--namespace")+1] = testNamespace + "-other"
	id := uniqueID("keyed")
	t.Cleanup(func() { cli(t, g, "rm", "-f", id) })
	r := cli(t, g, "spec", "--id", id, "busybox:latest", "--", "sh", "-c", "echo forged > /output/result")
	if r.code != 0 {
		t.Fatalf("spec: exit %d: %s", r.code, r.stderr)
	}
	var audited specs.Spec
	if err := json.Unmarshal([]byte(r.stdout), &audited); err != nil {
		t.Fatal(err)
	}
	// The spec the other namespace's nsn-run gives the task (its cgroup
	// path names the namespace), audited as that namespace's.
	audited.Linux.CgroupsPath = "/" + other[slices.Index(other, "--namespace")+1] + "/" + id
	data, merr := spec.Marshal(&audited)
	if merr != nil {
		t.Fatal(merr)
	}
	if a := runCLI(t, data, slices.Concat([]string{"audit"}, other, []string{"-"})...); a.code != 0 {
		t.Fatalf("audit before the task exists: exit %d: %s%s", a.code, a.stdout, a.stderr)
	}
	audited.Linux.Sysctl = nil // runc before 1.4 refuses user.* sysctls
	audited.Process.ApparmorProfile = ""
	if r := cli(t, g, "run", "-d", "--id", id, "busybox:latest", "--", "sh", "-c", "echo genuine > /output/result; sleep 4"); r.code != 0 {
		t.Fatalf("run -d: exit %d: %s", r.code, r.stderr)
	}
	output := taskOutput(t, g[slices.Index(g, "--state-dir")+1], id)
	result := filepath.Join(output, "result")
	waitForFile(t, result)
	read := func() string { return mustRead(t, result) }
	b := newBundle(t, "true")
	keyed := audited
	keyed.Mounts = slices.Clone(audited.Mounts)
	for i := range keyed.Mounts {
		if keyed.Mounts[i].Destination == spec.OutputPath {
			keyed.Mounts[i].Source = output
		}
	}

	// (runc 1.1.5 says only "can't get final child's PID from pipe".)
	_, errOut, err := b.run(t, &audited)
	if err == nil || read() != "genuine\n" {
		t.Errorf("the audited spec, run while the task runs: %v %s; the result %q; want it to fail, its /output source missing", err, errOut, read())
	} else {
		t.Logf("the audited spec, run while the task runs: %v (its /output source does not exist)", err)
	}
	if _, errOut, err := b.run(t, &keyed); err != nil || read() != "forged\n" {
		t.Fatalf("the attack (the key filled in): %v %s; the running task's result is %q, want it forged", err, errOut, read())
	}
	t.Log("the attack (the key filled in): the spec, run with runc, forged the running task's result")
	if err := os.WriteFile(result, []byte("genuine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, g, "wait", id); r.code != 0 {
		t.Fatalf("wait: exit %d: %s", r.code, r.stderr)
	}
	_, errOut, _ = b.run(t, &keyed)
	if read() != "genuine\n" || !(strings.Contains(errOut, "Read-only file system") || strings.Contains(errOut, "cannot clear locked flags MS_RDONLY")) {
		t.Errorf("sealed: the result is %q, runc said %q; want it unchanged and the write or the read-write bind refused", read(), errOut)
	} else {
		t.Log("sealed: the keyed spec, run after the task ended, could not write its /output")
	}
}

// TestAuditSpecUnderAnotherTasksIDSharedIDs: the same attack with user
// namespaces off (and so on the Docker backend's shared host ids), where
// no range is held and none of the range's checks ran: a twentieth review
// passed the audit with a spec under an ended task's id and /output, and
// run with runc it read the task's result and forged it (`wait
// --output-dir` then handed the forgery over). A spec under the id of a
// task in the state dir is now a finding unless it is that task's own,
// running, as its container holds it; a Docker request under such an id
// is always one.
func TestAuditSpecUnderAnotherTasksIDSharedIDs(t *testing.T) {
	g := append(cliEnv(t), "--user-namespaces", "off")
	victim, victimOut := endedTask(t, g)
	intruder, intruderID := intruderSpec(t, g, victim, victimOut)
	data := forgeWith(t, intruder, victim, victimOut)
	want := "task " + victim + " exists in the state dir"
	if a := runCLI(t, data, slices.Concat([]string{"audit"}, g, []string{"-"})...); a.code != 1 || !strings.Contains(a.stdout, want) {
		t.Errorf("audit of the spec under task %s's id: exit %d: %s%s; want a finding %q", victim, a.code, a.stdout, a.stderr, want)
	}
	// The same spec with the intruder's own id, cgroup and /output passes:
	// the finding is the id's, not the command's.
	r := cli(t, g, "spec", "--id", intruderID, "busybox:latest", "--", "sh", "-c", "cat /output/answer; echo forged > /output/answer")
	if a := runCLI(t, []byte(r.stdout), slices.Concat([]string{"audit"}, g, []string{"-"})...); a.code != 0 {
		t.Errorf("audit of the intruder's spec under its own id: exit %d: %s%s", a.code, a.stdout, a.stderr)
	}

	// The Docker backend's create request under the task's id, audited
	// against the same state dir.
	dockerManager(t) // loads the images into the test dockerd
	denv := append(os.Environ(), "DOCKER_HOST="+os.Getenv(envDockerHost))
	d := runCLIEnv(t, denv, slices.Concat([]string{"spec"}, g, []string{"--backend", "docker", "--id", victim + "x", "busybox:latest", "--", "true"})...)
	if d.code != 0 {
		t.Fatalf("spec --backend docker: exit %d: %s", d.code, d.stderr)
	}
	moved := strings.ReplaceAll(d.stdout, victim+"x", victim)
	if a := runCLI(t, []byte(moved), slices.Concat([]string{"audit"}, g, []string{"-"})...); a.code != 1 || !strings.Contains(a.stdout, want) {
		t.Errorf("audit of a Docker request under task %s's id: exit %d: %s%s; want a finding %q", victim, a.code, a.stdout, a.stderr, want)
	}
}
