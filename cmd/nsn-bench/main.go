// Command nsn-bench measures nsn-run against its peers in one run, on the
// same machine and the same busybox image: raw `runc run` on a prepared
// bundle, `ctr run --rm`, `docker run --rm`, the `nsn-run` CLI and the
// runtime package in-process, for a trivial task; throughput and latency at
// several concurrency levels (with a leak check after); host memory per
// idle task against docker's; and log throughput. It prints tables with
// ratios to raw runc: machines here are noisy, ratios travel. scripts/bench.sh
// (make bench) starts the daemons and runs it.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/internal/imagebuild"
	"github.com/nsn-run/nsn-run/internal/mountinfo"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/containerd"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/task"
)

// benchID starts every task and container id of this run: a run's ids
// are its own, so what a failed earlier run left behind outside the
// daemon's state (runc keeps its state under /run/containerd/runc) cannot
// collide with them.
var benchID = fmt.Sprintf("bench-%06x-", time.Now().UnixNano()&0xffffff)

type options struct {
	address, dockerHost, nsnRun, namespace, busybox, shimGroup string
	n, idle, tasks, shimGroupSize                              int
	runners                                                    map[string]bool
	levels                                                     []int
	phases                                                     map[string]bool
	logBytes                                                   int64
	// seed orders the trivial variants in each round.
	seed uint64
}

func main() {
	var o options
	var levels string
	flag.StringVar(&o.address, "address", "", "containerd socket (required)")
	flag.StringVar(&o.dockerHost, "docker-host", "", "dockerd address for the docker peer (empty: skip docker)")
	flag.StringVar(&o.nsnRun, "nsn-run", "bin/nsn-run", "nsn-run binary (the shim logger is nsn-logger beside it, else nsn-run itself; nsn-init and nsn-shim beside it serve the shim group)")
	flag.StringVar(&o.namespace, "namespace", "nsn-bench", "containerd namespace")
	flag.StringVar(&o.busybox, "busybox", "/bin/busybox", "static busybox for the runc bundle")
	flag.StringVar(&o.shimGroup, "shim-group", "bench", "the node-agent configuration's shim group (containerd.Config.ShimGroup; containerd 2.3 or later)")
	flag.IntVar(&o.shimGroupSize, "shim-group-size", 0, "tasks per shim group at most (containerd.Config.ShimGroupSize; 0: the default)")
	flag.IntVar(&o.n, "n", 20, "runs of each variant of the trivial task")
	flag.IntVar(&o.idle, "idle", 10, "idle tasks for the memory measurement")
	flag.StringVar(&levels, "concurrency", "1,4,16,64", "concurrency levels")
	flag.IntVar(&o.tasks, "tasks", 0, "tasks per concurrency level (0: four times the level, at least 8)")
	runners := flag.String("runners", "sync,agent,docker", "who runs the concurrency levels: sync (Manager.Run, defaults), background (release in the background alone), agent (the node-agent configuration: shim group, release in the background), docker")
	flag.DurationVar(&peerTimeout, "peer-timeout", 2*time.Minute, "bound on each peer command (runc, ctr, docker, the CLI); a docker stage past it is reported as hung and docker's later rows are skipped")
	flag.Int64Var(&o.logBytes, "log-bytes", 1<<30, "stdout bytes for the log throughput run")
	flag.Uint64Var(&o.seed, "seed", uint64(time.Now().UnixNano()), "seed of the trivial variants' order in each round (printed, to repeat a run's order)")
	phases := flag.String("phases", "trivial,concurrency,idle,logs", "which measurements to run, comma-separated")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of this process (the in-process manager's share) to this file")
	flag.Parse()
	o.phases = choices("-phases", *phases, "trivial", "concurrency", "idle", "logs")
	o.runners = choices("-runners", *runners, "sync", "background", "agent", "docker")
	for _, f := range strings.Split(levels, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			fail(fmt.Errorf("-concurrency %q", levels))
		}
		o.levels = append(o.levels, n)
	}
	if o.address == "" {
		fail(fmt.Errorf("-address is required"))
	}
	abs, err := filepath.Abs(o.nsnRun)
	if err != nil {
		fail(err)
	}
	o.nsnRun = abs
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			fail(err)
		}
		defer stop()
	}
	if err := run(context.Background(), o); err != nil {
		fail(err)
	}
}

// startCPUProfile profiles this process until the returned stop is
// called: where the manager's own CPU goes under load.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "nsn-bench: cpu profile:", err)
		}
	}, nil
}

// choices reads a comma-separated flag value whose items must be among
// allowed; an unknown one ends the program.
func choices(flagName, value string, allowed ...string) map[string]bool {
	set := map[string]bool{}
	for _, item := range strings.Split(value, ",") {
		item = strings.TrimSpace(item)
		if !slices.Contains(allowed, item) {
			fail(fmt.Errorf("%s: unknown %q (%s)", flagName, item, strings.Join(allowed, ", ")))
		}
		set[item] = true
	}
	return set
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "nsn-bench:", err)
	os.Exit(1)
}

func run(ctx context.Context, o options) error {
	work, err := os.MkdirTemp("", "nsn-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	logger := o.nsnRun
	if small := filepath.Join(filepath.Dir(o.nsnRun), "nsn-logger"); fileExists(small) {
		logger = small
	}
	var initBinary string
	if bin := filepath.Join(filepath.Dir(o.nsnRun), "nsn-init"); fileExists(bin) {
		initBinary = bin // the shim group's anchor runs it
	}
	// nsn-shim beside nsn-run, as node.Open finds it: the defaults' tasks
	// run with it where containerd is 2.3 or later.
	var shimBinary string
	if bin := filepath.Join(filepath.Dir(o.nsnRun), "nsn-shim"); fileExists(bin) {
		shimBinary = bin
	}
	cfg := containerd.Config{Address: o.address, Namespace: o.namespace, LoggerBinary: logger, InitBinary: initBinary, ShimBinary: shimBinary}
	b, err := containerd.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	m, err := runtime.New(runtime.Config{Backend: b, StateDir: filepath.Join(work, "state")})
	if err != nil {
		return err
	}
	// The same without per-task user namespaces: their cost is the
	// difference (docs/performance.md).
	shared, err := runtime.New(runtime.Config{Backend: b, StateDir: filepath.Join(work, "state-shared"), UserNamespaces: runtime.UserNSOff})
	if err != nil {
		return err
	}
	// Release in the background alone: Run returns once the task has
	// exited and its logs and output are collected.
	background, err := runtime.New(runtime.Config{Backend: b, StateDir: filepath.Join(work, "state-background"), ReleaseInBackground: true})
	if err != nil {
		return err
	}
	defer background.Close()
	// The node-agent configuration: both levers, a shim group (where
	// containerd can) and the release in the background.
	agentName := "node-agent config: shim group, release in background"
	groupCfg := cfg
	groupCfg.ShimGroup = o.shimGroup
	groupCfg.ShimGroupSize = o.shimGroupSize
	agentBackend, err := containerd.New(ctx, groupCfg)
	if errdefs.IsNotImplemented(err) || errdefs.IsInvalidArgument(err) {
		fmt.Printf("no shim group: %v\n", err)
		agentName = "node-agent config: release in background, no shim group"
		agentBackend, err = containerd.New(ctx, cfg)
	}
	if err != nil {
		return err
	}
	agent, err := runtime.New(runtime.Config{Backend: agentBackend, StateDir: filepath.Join(work, "state-agent"), ReleaseInBackground: true})
	if err != nil {
		agentBackend.Close()
		return err
	}
	agentClosed := false
	defer func() {
		if !agentClosed {
			agent.Close()
		}
	}()
	runners := managers{m: m, shared: shared, background: background, agent: agent, agentName: agentName, containerdPID: containerdPID(o.address)}
	bundle, err := prepareBundle(ctx, o, work)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	fmt.Printf("nsn-bench on %s: %d CPUs, %s; %s\n", host, numCPU(), memTotal(), versions(o))
	fmt.Println()

	if o.phases["trivial"] {
		if err := trivial(ctx, o, runners, bundle, work); err != nil {
			return err
		}
	}
	if o.phases["concurrency"] {
		if err := concurrency(ctx, o, runners, b); err != nil {
			return err
		}
	}
	if o.phases["idle"] {
		if err := idleMemory(ctx, o, runners); err != nil {
			return err
		}
	}
	if o.phases["logs"] {
		if err := logThroughput(ctx, o, m); err != nil {
			return err
		}
	}
	// The agent's Close waits for its releases and removes its shim
	// group's anchor: after it, nothing of nsn-run's is left.
	agentClosed = true
	if err := agent.Close(); err != nil {
		return fmt.Errorf("close the node-agent manager: %w", err)
	}
	left, err := namespaceContainers(ctx, o.namespace, b)
	if err != nil {
		return err
	}
	fmt.Printf("After every manager's Close: %d containers in namespace %s.\n", left, o.namespace)
	return nil
}

// managers are the in-process configurations measured.
type managers struct {
	m, shared, background, agent *runtime.Manager
	agentName                    string
	// containerdPID is the containerd the managers use (0 where it was
	// not found): its growth counts with theirs, as docker's
	// containerd's does with docker's.
	containerdPID int
}

// containerdPID is the pid of a process named containerd that holds the
// listening unix socket at address (any version: found through the
// socket, not asked), and 0 if there is none.
func containerdPID(address string) int {
	path := strings.TrimPrefix(address, "unix://")
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return 0
	}
	// Num RefCount Protocol Flags Type St Inode Path; a listening
	// socket's flags are __SO_ACCEPTCON (00010000).
	var inode string
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) == 8 && f[3] == "00010000" && f[7] == path {
			inode = f[6]
		}
	}
	if inode == "" {
		return 0
	}
	target := "socket:[" + inode + "]"
	for _, p := range allPids() {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		for _, fd := range fds {
			if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p, fd.Name())); link == target && procField(p, "Name") == "containerd" {
				return p
			}
		}
	}
	return 0
}

// namespaceContainers counts every container in the namespace: tasks and
// shim group anchors alike.
func namespaceContainers(ctx context.Context, namespace string, b *containerd.Backend) (int, error) {
	cs, err := b.Client().Containers(namespaces.WithNamespace(ctx, namespace))
	return len(cs), err
}

// prepareBundle lays out a runc bundle of the busybox rootfs with the very
// spec nsn-run generates, so raw runc runs the same isolation.
func prepareBundle(ctx context.Context, o options, work string) (string, error) {
	bundle := filepath.Join(work, "bundle")
	if err := imagebuild.BusyboxRootfs(filepath.Join(bundle, "rootfs"), o.busybox); err != nil {
		return "", err
	}
	out := filepath.Join(work, "runc-output")
	if err := os.Mkdir(out, 0o755); err != nil {
		return "", err
	}
	s, err := spec.Generate(namespaces.WithNamespace(ctx, o.namespace),
		task.Task{ID: benchID + "runc", Image: "busybox", Command: []string{"/bin/true"}},
		ocispec.ImageConfig{Env: []string{"PATH=/bin"}}, spec.Options{OutputDir: out})
	if err != nil {
		return "", err
	}
	data, err := spec.Marshal(s)
	if err != nil {
		return "", err
	}
	return bundle, os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600)
}

type variant struct {
	name string
	run  func(i int) error
	// settle, if set, runs after the timed run: what the variant left to
	// finish in the background, so that it does not slow the next one.
	settle func() error
}

// trivial runs /bin/true end to end with each variant, interleaved round
// by round so that drift in the machine's load hits all of them alike.
func trivial(ctx context.Context, o options, mgrs managers, bundle, work string) error {
	m, shared, background, agent := mgrs.m, mgrs.shared, mgrs.background, mgrs.agent
	runcRoot := filepath.Join(work, "runc-root")
	stateDir := filepath.Join(work, "cli-state")
	variants := []variant{
		{"runc run (prepared bundle)", func(i int) error {
			return command("runc", "--root", runcRoot, "run", "--bundle", bundle, fmt.Sprintf(benchID+"runc-%d", i))
		}, nil},
		{"ctr run --rm", func(i int) error {
			return command("ctr", "-a", o.address, "-n", o.namespace, "run", "--rm", "docker.io/library/busybox:latest", fmt.Sprintf(benchID+"ctr-%d", i), "/bin/true")
		}, nil},
	}
	if o.dockerHost != "" {
		variants = append(variants, variant{"docker run --rm", func(int) error {
			return command("docker", "-H", o.dockerHost, "run", "--rm", "--network", "none", "busybox:latest", "/bin/true")
		}, nil})
	}
	variants = append(variants,
		variant{"nsn-run run (CLI)", func(i int) error {
			return command(o.nsnRun, "--address", o.address, "--namespace", o.namespace, "--state-dir", stateDir,
				"run", "--id", fmt.Sprintf(benchID+"cli-%d", i), "busybox:latest", "--", "/bin/true")
		}, nil},
		variant{"runtime.Manager.Run (in-process)", func(i int) error {
			_, err := m.Run(ctx, task.Task{ID: fmt.Sprintf(benchID+"lib-%d", i), Image: "busybox:latest", Command: []string{"/bin/true"}}, runtime.RunOptions{})
			return err
		}, nil},
		variant{"runtime.Manager.Run (in-process, user namespaces off)", func(i int) error {
			_, err := shared.Run(ctx, task.Task{ID: fmt.Sprintf(benchID+"shared-%d", i), Image: "busybox:latest", Command: []string{"/bin/true"}}, runtime.RunOptions{})
			return err
		}, nil},
		variant{"runtime.Manager.Run (in-process, release in background)", func(i int) error {
			_, err := background.Run(ctx, task.Task{ID: fmt.Sprintf(benchID+"bg-%d", i), Image: "busybox:latest", Command: []string{"/bin/true"}}, runtime.RunOptions{})
			return err
		}, func() error { return background.Drain(ctx) }},
		variant{"runtime.Manager.Run (in-process, " + mgrs.agentName + ")", func(i int) error {
			_, err := agent.Run(ctx, task.Task{ID: fmt.Sprintf(benchID+"agent-%d", i), Image: "busybox:latest", Command: []string{"/bin/true"}}, runtime.RunOptions{})
			return err
		}, func() error { return agent.Drain(ctx) }},
	)
	times := make([][]time.Duration, len(variants))
	// Each round runs the variants in an order of its own, drawn at
	// random, so that no variant mostly follows the same one: what a
	// variant leaves running after it returns (docker's removal of its
	// container, say) slows each of the others alike.
	order := rand.New(rand.NewPCG(o.seed, 0))
	for i := -1; i < o.n; i++ { // round -1 warms caches and is not counted
		for _, v := range order.Perm(len(variants)) {
			vr := variants[v]
			start := time.Now()
			if err := vr.run(i + 1); err != nil {
				return fmt.Errorf("%s: %w", vr.name, err)
			}
			if i >= 0 {
				times[v] = append(times[v], time.Since(start))
			}
			if vr.settle != nil {
				if err := vr.settle(); err != nil {
					return fmt.Errorf("%s: %w", vr.name, err)
				}
			}
		}
	}
	base := median(times[0])
	fmt.Printf("## Trivial task (/bin/true), %d runs each, interleaved\n\nEach round in its own random order (-seed %d).\n\n", o.n, o.seed)
	fmt.Println("| variant | median | p99 | median / runc |")
	fmt.Println("| --- | --- | --- | --- |")
	for v, vr := range variants {
		med := median(times[v])
		fmt.Printf("| %s | %s | %s | %.2fx |\n", vr.name, ms(med), ms(percentile(times[v], 99)), float64(med)/float64(base))
	}

	// Where the in-process time goes: defaults, then the node-agent
	// configuration (its Run's phases; the release runs after it).
	for _, traced := range []struct {
		name string
		m    *runtime.Manager
	}{{"defaults", m}, {mgrs.agentName, agent}} {
		phases := map[string][]time.Duration{}
		var mu sync.Mutex
		pctx := runtime.WithPhaseObserver(ctx, func(phase string, d time.Duration) {
			mu.Lock()
			phases[phase] = append(phases[phase], d)
			mu.Unlock()
		})
		for i := range o.n {
			if _, err := traced.m.Run(pctx, task.Task{ID: fmt.Sprintf(benchID+"trace-%d", i), Image: "busybox:latest", Command: []string{"/bin/true"}}, runtime.RunOptions{}); err != nil {
				return err
			}
			if err := traced.m.Drain(ctx); err != nil {
				return err
			}
		}
		mu.Lock()
		names := make([]string, 0, len(phases))
		for p := range phases {
			names = append(names, p)
		}
		slices.Sort(names)
		fmt.Printf("\n## Where the in-process time goes (%s, median of %d runs)\n\n", traced.name, o.n)
		fmt.Println("| phase | median |")
		fmt.Println("| --- | --- |")
		for _, p := range names {
			fmt.Printf("| %s | %s |\n", p, ms(median(phases[p])))
		}
		mu.Unlock()
	}
	fmt.Println()
	return nil
}

// concurrency runs batches of /bin/true at each level through each
// runner and checks nothing is left behind. A level's time runs until the
// last task is gone: for the node-agent Manager, until Drain.
func concurrency(ctx context.Context, o options, mgrs managers, b *containerd.Backend) error {
	m, agent, background := mgrs.m, mgrs.agent, mgrs.background
	type runner struct {
		name  string
		run   func(id string) error
		drain func() error
		mgr   *runtime.Manager
	}
	inProcess := func(mgr *runtime.Manager) func(string) error {
		return func(id string) error {
			_, err := mgr.Run(ctx, task.Task{ID: id, Image: "busybox:latest", Command: []string{"/bin/true"}}, runtime.RunOptions{})
			return err
		}
	}
	var runners []runner
	if o.runners["sync"] {
		runners = append(runners, runner{"Manager.Run", inProcess(m), nil, m})
	}
	if o.runners["background"] {
		runners = append(runners, runner{"Manager.Run, release in background", inProcess(background), func() error { return background.Drain(ctx) }, background})
	}
	if o.runners["agent"] {
		runners = append(runners, runner{"Manager.Run, " + mgrs.agentName, inProcess(agent), func() error { return agent.Drain(ctx) }, agent})
	}
	if o.dockerHost != "" && o.runners["docker"] {
		runners = append(runners, runner{"docker run --rm", func(string) error {
			return command("docker", "-H", o.dockerHost, "run", "--rm", "--network", "none", "busybox:latest", "/bin/true")
		}, nil, nil})
	}
	fmt.Println("## Concurrency (/bin/true)")
	fmt.Println()
	fmt.Println("| runner | concurrent | tasks | tasks/s | p50 | p99 | left behind |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- |")
	// rates[level][runner]: tasks/s, for the ratios to docker's below.
	rates := map[int][]float64{}
	for _, c := range o.levels {
		rates[c] = make([]float64, len(runners))
		for ri, r := range runners {
			if r.mgr == nil && dockerHung.Load() {
				fmt.Printf("| %s | %d | - | skipped: docker hung earlier in this run | | | |\n", r.name, c)
				continue
			}
			total := max(4*c, 8)
			if o.tasks > 0 {
				total = o.tasks
			}
			jobs := make(chan int)
			var mu sync.Mutex
			var lat []time.Duration
			var firstErr error
			var wg sync.WaitGroup
			start := time.Now()
			for range c {
				wg.Go(func() {
					for i := range jobs {
						t0 := time.Now()
						err := r.run(fmt.Sprintf(benchID+"c%d-r%d-%d", c, ri, i))
						mu.Lock()
						lat = append(lat, time.Since(t0))
						if err != nil && firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
					}
				})
			}
			for i := range total {
				jobs <- i
			}
			close(jobs)
			wg.Wait()
			if r.drain != nil && firstErr == nil {
				firstErr = r.drain()
			}
			wall := time.Since(start)
			if r.mgr == nil && errors.Is(firstErr, errPeerHung) {
				fmt.Printf("| %s | %d | %d | hung: %v | | | (docker's own) |\n", r.name, c, total, firstErr)
				continue
			}
			if firstErr != nil {
				return fmt.Errorf("%s, concurrency %d: %w", r.name, c, firstErr)
			}
			left := "(docker's own)"
			if r.mgr != nil {
				var err error
				if left, err = leftCount(ctx, o.namespace, b, r.mgr); err != nil {
					return err
				}
			}
			rates[c][ri] = float64(total) / wall.Seconds()
			fmt.Printf("| %s | %d | %d | %.2f | %s | %s | %s |\n", r.name, c, total, rates[c][ri], ms(median(lat)), ms(percentile(lat, 99)), left)
		}
	}
	fmt.Println()
	if last := len(runners) - 1; last > 0 && runners[last].mgr == nil { // docker ran: the peer
		fmt.Println("Throughput / docker's, same level, same run:")
		fmt.Println()
		fmt.Println("| runner | concurrent | / docker |")
		fmt.Println("| --- | --- | --- |")
		for _, c := range o.levels {
			for ri, r := range runners[:last] {
				if rates[c][last] == 0 {
					fmt.Printf("| %s | %d | no ratio: docker's runs hung |\n", r.name, c)
					continue
				}
				fmt.Printf("| %s | %d | %.2fx |\n", r.name, c, rates[c][ri]/rates[c][last])
			}
		}
		fmt.Println()
	}
	return nil
}

// leftCount counts containers, snapshots beyond the image's, output
// mounts and state dir entries that remain.
func leftCount(ctx context.Context, namespace string, b *containerd.Backend, m *runtime.Manager) (string, error) {
	list, err := m.List(ctx)
	if err != nil {
		return "", err
	}
	c := b.Client()
	nctx := namespaces.WithNamespace(ctx, namespace)
	var active int
	if err := c.SnapshotService(containerd.DefaultSnapshotter).Walk(nctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind != snapshots.KindCommitted {
			active++
		}
		return nil
	}); err != nil {
		return "", err
	}
	// This Manager's output mounts only: another run's on the host are
	// not this one's leftovers.
	mounts, err := mountinfo.Read(mountinfo.Self)
	if err != nil {
		return "", err
	}
	n := 0
	for _, mt := range mounts {
		if mt.Source == "nsn-output" && strings.HasPrefix(mt.MountPoint, m.StateDir()+"/") {
			n++
		}
	}
	// Task state and the marks of tasks in flight (busy, spawning,
	// waiting): a finished task leaves none.
	files := 0
	for _, dir := range []string{"tasks", "busy", "spawning", "waiting"} {
		entries, err := os.ReadDir(filepath.Join(m.StateDir(), dir))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		files += len(entries)
	}
	return fmt.Sprintf("%d containers, %d snapshots, %d mounts, %d state files", len(list), active, n, files), nil
}

// idleMemory starts idle tasks and sums the memory they cost the host:
// each task's shim and logger (a shim group's shim once, with its
// anchor), plus the growth of the manager and its containerd; docker's
// peer is its shims plus dockerd's and its containerd's growth. A daemon
// that shrank counts as grown by nothing (growth): its collector gave
// back memory it held before the tasks. Until run 39 the sums took such
// drops off the tasks' memory (the bench's manager, fresh from 256 tasks
// at 64, gave back 27 MiB while the defaults' 10 idle tasks started, and
// they read 2.8 MiB a task less than their shims and loggers hold), and
// left nsn-run's containerd out (containerdPID finds it by its socket).
// The manager returns its free memory to the kernel before its first
// reading, so that earlier phases' garbage is not given back during the
// measure; the garbage of the tasks' starts counts, in the manager as in
// docker's daemons, which nothing here can make collect. Two measures:
// resident memory
// (RSS: pages a process maps, counted in full in each, pages of a binary
// shared by every shim that runs it too), the goal's measure, and the
// proportional share (PSS: each shared page divided among the processes
// that map it), what the host pays for the tasks beside what it already
// paid.
func idleMemory(ctx context.Context, o options, mgrs managers) error {
	fmt.Printf("## Host memory per idle task (%d tasks running sleep)\n\n", o.idle)
	fmt.Println("| runner | resident memory per task (RSS) | proportional share per task (PSS) |")
	fmt.Println("| --- | --- | --- |")
	perTask := func(kib int) float64 { return float64(kib) / 1024 / float64(o.idle) }
	var growths []string
	for _, r := range []struct {
		name, short string
		m           *runtime.Manager
	}{{"nsn-run, defaults (shim + shim logger + manager and containerd growth)", "defaults", mgrs.m}, {"nsn-run, " + mgrs.agentName + " (shared shim + anchor + shim loggers + manager and containerd growth)", "node-agent", mgrs.agent}} {
		mem, grew, err := idleKiB(ctx, o, r.m, mgrs.containerdPID)
		if err != nil {
			return err
		}
		fmt.Printf("| %s | %.1f MiB | %.1f MiB |\n", r.name, perTask(mem.rss), perTask(mem.pss))
		containerdGrew := "unknown (its process not found)"
		if mgrs.containerdPID > 0 {
			containerdGrew = fmt.Sprintf("%+.1f MiB", kibMiB(grew[1].rss))
		}
		growths = append(growths, fmt.Sprintf("%s: manager %+.1f MiB, containerd %s", r.short, kibMiB(grew[0].rss), containerdGrew))
	}
	if o.dockerHost != "" {
		const name = "docker (shim + dockerd and its containerd growth)"
		if dockerHung.Load() {
			fmt.Printf("| %s | skipped: docker hung earlier in this run | |\n", name)
		} else if mem, grew, err := dockerIdle(o, mgrs.containerdPID); errors.Is(err, errPeerHung) {
			fmt.Printf("| %s | hung: %v | |\n", name, err)
		} else if err != nil {
			return err
		} else {
			fmt.Printf("| %s | %.1f MiB | %.1f MiB |\n", name, perTask(mem.rss), perTask(mem.pss))
			var each []string
			for _, g := range grew {
				each = append(each, fmt.Sprintf("%+.1f", kibMiB(g.rss)))
			}
			others := ""
			if mgrs.containerdPID == 0 {
				others = " (nsn-run's containerd not found: among these if it runs)"
			}
			growths = append(growths, fmt.Sprintf("docker: every dockerd and containerd but nsn-run's%s %s MiB", others, strings.Join(each, ", ")))
		}
	}
	fmt.Printf("\nWhat the daemons grew by over the %d tasks, as read (below zero counts as none): %s.\n\n", o.idle, strings.Join(growths, "; "))
	return nil
}

func kibMiB(kib int) float64 { return float64(kib) / 1024 }

// growth is what a process grew by from before to after, each measure at
// least zero: a drop is its collector returning memory it held before the
// tasks, not memory the tasks gave back.
func growth(before, after memKiB) memKiB {
	d := after.minus(before)
	return memKiB{max(d.rss, 0), max(d.pss, 0)}
}

// managerMem is the bench's own memory once its free memory is returned
// to the kernel: what it holds, not what its collector would give back
// during the measure.
func managerMem() memKiB {
	debug.FreeOSMemory()
	return memOf(os.Getpid())
}

// memKiB is memory in KiB, resident and proportional.
type memKiB struct{ rss, pss int }

func (m memKiB) plus(n memKiB) memKiB  { return memKiB{m.rss + n.rss, m.pss + n.pss} }
func (m memKiB) minus(n memKiB) memKiB { return memKiB{m.rss - n.rss, m.pss - n.pss} }

// memOf is a process's resident and proportional memory.
func memOf(pid int) memKiB { return memKiB{rss(pid), pss(pid)} }

// idleKiB is the memory o.idle idle tasks of m cost: their shims and
// loggers, and the growth of the manager and of its containerd
// (containerdPID, where known); grew is those two growths as read.
func idleKiB(ctx context.Context, o options, m *runtime.Manager, containerdPID int) (mem memKiB, grew [2]memKiB, err error) {
	before := managerMem()
	var containerdBefore memKiB
	if containerdPID > 0 {
		containerdBefore = memOf(containerdPID)
	}
	var ids []string
	defer func() {
		for _, id := range ids {
			_ = m.Remove(ctx, id, true)
		}
	}()
	for i := range o.idle {
		id := fmt.Sprintf(benchID+"idle-%d", i)
		if _, err := m.Spawn(ctx, task.Task{ID: id, Image: "busybox:latest", Command: []string{"sleep", "300"}}); err != nil {
			return memKiB{}, grew, err
		}
		ids = append(ids, id)
	}
	var shims []int
	for _, id := range ids {
		st, err := m.Inspect(ctx, id)
		if err != nil {
			return memKiB{}, grew, err
		}
		shims = append(shims, ppid(int(st.Pid)))
	}
	after := memOf(os.Getpid())
	grew[0] = after.minus(before)
	mem = growth(before, after)
	if containerdPID > 0 {
		containerdAfter := memOf(containerdPID)
		grew[1] = containerdAfter.minus(containerdBefore)
		mem = mem.plus(growth(containerdBefore, containerdAfter))
	}
	for _, shim := range uniq(shims) {
		mem = mem.plus(memOf(shim))
		for _, child := range children(shim) {
			if c := cmdline(child); strings.Contains(c, "shim-logger") || strings.Contains(c, "nsn-init --pause") {
				mem = mem.plus(memOf(child))
			}
		}
	}
	return mem, grew, nil
}

// dockerIdle is the memory o.idle idle `docker run -d` containers cost:
// their shims and the growth of dockerd and its containerd (every
// process of those names but nsn-run's containerd, notPID); grew is each
// daemon's growth as read.
func dockerIdle(o options, notPID int) (mem memKiB, grew []memKiB, err error) {
	var daemons []int
	for _, p := range pidsNamed("dockerd", "containerd") {
		if p != notPID {
			daemons = append(daemons, p)
		}
	}
	before := make([]memKiB, len(daemons))
	for i, p := range daemons {
		before[i] = memOf(p)
	}
	var ids []string
	for range o.idle {
		out, err := commandOutput("docker", "-H", o.dockerHost, "run", "-d", "--network", "none", "busybox:latest", "sleep", "300")
		if err != nil {
			return memKiB{}, nil, err
		}
		ids = append(ids, strings.TrimSpace(out))
	}
	for i, p := range daemons {
		after := memOf(p)
		grew = append(grew, after.minus(before[i]))
		mem = mem.plus(growth(before[i], after))
	}
	var shims []int
	for _, id := range ids {
		out, err := commandOutput("docker", "-H", o.dockerHost, "inspect", "-f", "{{.State.Pid}}", id)
		if err != nil {
			return memKiB{}, nil, err
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(out))
		shims = append(shims, ppid(pid))
	}
	for _, s := range uniq(shims) {
		mem = mem.plus(memOf(s))
	}
	args := append([]string{"-H", o.dockerHost, "rm", "-f"}, ids...)
	if err := command("docker", args...); err != nil {
		return memKiB{}, nil, err
	}
	return mem, grew, nil
}

func logThroughput(ctx context.Context, o options, m *runtime.Manager) error {
	script := fmt.Sprintf("head -c %d /dev/zero", o.logBytes)
	start := time.Now()
	res, err := m.Run(ctx, task.Task{ID: benchID + "logs", Image: "busybox:latest", Command: []string{"sh", "-c", script},
		Limits: task.Limits{Timeout: 10 * time.Minute}}, runtime.RunOptions{})
	if err != nil {
		return err
	}
	nsn := time.Since(start)
	mib := float64(o.logBytes) / (1 << 20)
	fmt.Printf("## Log throughput (%.0f MiB of stdout)\n\n", mib)
	fmt.Println("| runner | time | MiB/s |")
	fmt.Println("| --- | --- | --- |")
	fmt.Printf("| nsn-run (shim logger, capped capture; Result stdout %d bytes) | %s | %.0f |\n", len(res.Stdout), ms(nsn), mib/nsn.Seconds())
	if o.dockerHost != "" {
		const name = "docker run (attached stdout, read and discarded)"
		if dockerHung.Load() {
			fmt.Printf("| %s | skipped: docker hung earlier in this run | |\n", name)
			fmt.Println()
			return nil
		}
		start = time.Now()
		err := runPeer(nil, "docker", "-H", o.dockerHost, "run", "--rm", "--network", "none", "busybox:latest", "sh", "-c", script)
		switch d := time.Since(start); {
		case errors.Is(err, errPeerHung):
			fmt.Printf("| %s | hung: %v | |\n", name, err)
		case err != nil:
			return err
		default:
			fmt.Printf("| %s | %s | %.0f |\n", name, ms(d), mib/d.Seconds())
		}
	}
	fmt.Println()
	return nil
}

// errPeerHung is a peer command that ran past -peer-timeout.
var errPeerHung = errors.New("ran past -peer-timeout")

// dockerHung is set once a docker command of the run hung: dockerd 20.10
// has been seen to stall every `docker run` at 64 concurrent ones (run 24
// in docs/performance.md), and a wedged daemon answers nothing after, so
// docker's later rows are skipped with a note rather than waited on.
var dockerHung atomic.Bool

// command runs a peer's command line, bounded by the peer timeout (the
// package's, set from -peer-timeout).
func command(name string, args ...string) error {
	return runPeer(nil, name, args...)
}

// commandOutput is command that returns what the command printed.
func commandOutput(name string, args ...string) (string, error) {
	var stdout bytes.Buffer
	err := runPeer(&stdout, name, args...)
	return stdout.String(), err
}

// peerTimeout (-peer-timeout) bounds each command of a peer (runc, ctr,
// docker, the CLI): a docker that hangs ends its stage with a note, not
// the run.
var peerTimeout = 2 * time.Minute

// runPeer runs a peer's command line with its stdout to stdout (nil:
// discarded), bounded by peerTimeout.
func runPeer(stdout io.Writer, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	// A hung docker CLI's children (none today) must not hold Wait.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		if name == "docker" {
			dockerHung.Store(true)
		}
		return fmt.Errorf("%s %s: %w (%s)", name, strings.Join(args, " "), errPeerHung, peerTimeout)
	}
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func median(d []time.Duration) time.Duration { return percentile(d, 50) }

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// procField reads "Key:" from /proc/pid/status.
func procField(pid int, key string) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// rss is a process's resident memory in KiB.
func rss(pid int) int {
	n, _ := strconv.Atoi(strings.TrimSuffix(procField(pid, "VmRSS"), " kB"))
	return n
}

// pss is a process's proportional set size in KiB (smaps_rollup): each
// page it maps counted as its share among the processes that map it.
func pss(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

func ppid(pid int) int {
	n, _ := strconv.Atoi(procField(pid, "PPid"))
	return n
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(string(b), "\x00", " ")
}

func allPids() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

func children(parent int) []int {
	var out []int
	for _, p := range allPids() {
		if ppid(p) == parent {
			out = append(out, p)
		}
	}
	return out
}

func pidsNamed(names ...string) []int {
	var out []int
	for _, p := range allPids() {
		if slices.Contains(names, procField(p, "Name")) {
			out = append(out, p)
		}
	}
	return out
}

func uniq(s []int) []int {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func memTotal() string {
	return procMeminfo("MemTotal")
}

func procMeminfo(key string) string {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == key {
			return strings.TrimSpace(v) + " memory"
		}
	}
	return ""
}

func versions(o options) string {
	var parts []string
	for _, c := range [][]string{{"runc", "--version"}, {"containerd", "--version"}, {"ctr", "--version"}} {
		out, err := exec.Command(c[0], c[1:]...).Output()
		if err == nil {
			parts = append(parts, strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0])
		}
	}
	if o.dockerHost != "" {
		if out, err := exec.Command("docker", "-H", o.dockerHost, "version", "-f", "dockerd {{.Server.Version}}").Output(); err == nil {
			parts = append(parts, strings.TrimSpace(string(out)))
		}
	}
	return strings.Join(parts, "; ")
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
