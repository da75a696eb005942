// Package docker is nsn-run's backend over the Docker Engine API ("the
// Docker shim"), for hosts that only run dockerd. It gives the same Manager,
// CLI and Result as the containerd backend; docs/security-model.md says what
// the Engine API cannot express.
package docker

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/task"
)

// cfsPeriod is the CFS period in microseconds, as in the OCI spec.
const cfsPeriod = 100000

// jsonLogMax bounds dockerd's own copy of a task's logs on disk (its
// "local" driver, which keeps the bytes as written; json-file stores lines
// as JSON strings, bytes that are not UTF-8 replaced); nsn-run keeps its
// capped head and tail from the attach stream, and reads this copy only
// for a task whose manager died.
const jsonLogMax = "16m"

// Request is the container create request the backend sends.
// `nsn-run spec --backend docker` prints it.
type Request struct {
	Name       string                `json:"name"`
	Config     *container.Config     `json:"config"`
	HostConfig *container.HostConfig `json:"host_config"`
}

// RequestOptions are what CreateRequest needs from the host side of a task.
type RequestOptions struct {
	// OutputDir is the task's host output directory, bound at /output: an
	// absolute, clean path.
	OutputDir string
	// GPUs are the task's CDI device names, resolved and allocated (cdi
	// package); they go to dockerd as a CDI device request, never to the
	// legacy NVIDIA hook.
	GPUs []string
	// OOMScoreAdj is the task's oom_score_adj; 0 means
	// spec.DefaultOOMScoreAdj, and the operator may set
	// spec.MinOOMScoreAdj..spec.MaxOOMScoreAdj, as for the containerd
	// backend.
	OOMScoreAdj int
	// ImageID is the ID (sha256:...) of the image the request is built
	// for: Config.Image names it, and the nsn.image label the task's image
	// name, so that dockerd creates the container from that image whatever
	// the name names by then (a twenty-fourth review moved a tag between
	// an audit and the create, and an audited request ran another image,
	// with a VOLUME on dockerd's disk). Empty: Config.Image is the name.
	ImageID string
}

// dockerRuntime is the dockerd runtime every task runs under: runc, named
// explicitly, so that a dockerd whose default runtime is another (nvidia's,
// whose legacy hook hands an image that sets NVIDIA_VISIBLE_DEVICES=all
// every GPU) does not choose it.
const dockerRuntime = "runc"

// netSysctls are the kernel's defaults for the two network sysctls dockerd
// (20.10 and later) changes in every container with a network namespace of
// its own: ICMP echo sockets for every group, and ports below 1024 for every
// user. A containerd task has no sysctls, so the kernel's defaults; setting
// them explicitly gives a docker task no more than that.
var netSysctls = map[string]string{
	"net.ipv4.ping_group_range":           "1 0",
	"net.ipv4.ip_unprivileged_port_start": "1024",
}

// dockerRuntimeFor maps a task's containerd runtime name to dockerd's. Only
// runc's shim (task.DefaultRuntime) has a counterpart that is known to be
// the same runtime: dockerd's runtime names are its daemon.json's, and any
// other could be anything there.
func dockerRuntimeFor(name string) (string, error) {
	if name != task.DefaultRuntime {
		return "", fmt.Errorf("%w: runtime %q: the docker backend runs tasks only under runc (%s)", errdefs.ErrInvalidArgument, name, task.DefaultRuntime)
	}
	return dockerRuntime, nil
}

// CreateRequest maps a task and its image config to the Engine API create
// request, setting explicitly every control of nsn-run's that the API can
// express rather than leaving any to dockerd's defaults (which differ by
// version and daemon.json): the same user, env, args and working dir rules
// as the OCI spec (spec.ProcessFor); runtime runc (the only one the task
// may name is runc's shim, task.DefaultRuntime); no capabilities;
// no-new-privileges; nsn-run's own seccomp profile (spec.SeccompProfile),
// not dockerd's; the spec's masked and read-only paths; its oom_score_adj
// and rlimits; the kernel's defaults for the network sysctls dockerd
// changes; a read-only root; no network; private namespaces; memory
// with swap equal to it, CPU quota, pids; /tmp as a sized tmpfs; labels.
// /output is a bind of o.OutputDir, the task's host tmpfs that the Manager
// mounted with the output caps: a tmpfs docker volume would be unmounted,
// and emptied, when the container stops, before its files could be
// collected. Pure: no daemon call.
func CreateRequest(t task.Task, img ocispec.ImageConfig, o RequestOptions) (Request, error) {
	t = t.WithDefaults()
	if err := t.Validate(); err != nil {
		return Request{}, err
	}
	if req, _ := t.GPURequest(); !req.Empty() && len(o.GPUs) == 0 {
		return Request{}, fmt.Errorf("%w: task asks for GPUs %q but no CDI device was resolved for it", errdefs.ErrFailedPrecondition, t.GPUs)
	}
	if !filepath.IsAbs(o.OutputDir) || filepath.Clean(o.OutputDir) != o.OutputDir {
		return Request{}, fmt.Errorf("%w: output dir %q: must be an absolute, clean host path", errdefs.ErrInvalidArgument, o.OutputDir)
	}
	runtimeName, err := dockerRuntimeFor(t.Runtime)
	if err != nil {
		return Request{}, err
	}
	oomScore, err := spec.OOMScoreAdj(o.OOMScoreAdj)
	if err != nil {
		return Request{}, err
	}
	p, err := spec.ProcessFor(t, img)
	if err != nil {
		return Request{}, err
	}
	if err := spec.CheckSharedIdentity(p.UID, p.GID); err != nil {
		return Request{}, err // dockerd's tasks share host ids
	}
	seccompOpt, err := seccompSecurityOpt(spec.SeccompProfile())
	if err != nil {
		return Request{}, err
	}
	masked, err := spec.MaskedPaths()
	if err != nil {
		return Request{}, err
	}
	readonly, err := spec.ReadonlyPaths()
	if err != nil {
		return Request{}, err
	}
	if err := refuseReservedLabels(img); err != nil {
		return Request{}, err
	}
	l := t.Limits
	pids := l.Pids
	quota := int64(l.CPUs*cfsPeriod + 0.5)
	cfg := &container.Config{
		Hostname: t.ID,
		User:     fmt.Sprintf("%d:%d", p.UID, p.GID),
		Env:      append(p.Env, voidImageDeviceVars(img, p.Env)...),
		// dockerd merges the image's health check and stop signal into
		// the container unless the request sets them: a review's image
		// ran a 1 ms check, about nine runc execs a second on the host
		// for a task capped at 0.1 CPU.
		Healthcheck: &container.HealthConfig{Test: []string{"NONE"}},
		StopSignal:  "SIGTERM",
		Entrypoint:  p.Args[:1],
		Cmd:         p.Args[1:],
		WorkingDir:  p.Cwd,
		Image:       t.Image,
		Labels:      runtime.Labels(t.ID, runtime.Owner{}),
		// No network, so nothing to expose, and no stdin.
		NetworkDisabled: true,
	}
	if o.ImageID != "" {
		if !IsImageID(o.ImageID) {
			return Request{}, fmt.Errorf("%w: image id %q: want sha256: and 64 hex digits", errdefs.ErrInvalidArgument, o.ImageID)
		}
		name := t.Image // a task may name its image by ID itself
		if !IsImageID(name) {
			var err error
			if name, err = task.NormalizeImage(t.Image); err != nil {
				return Request{}, err
			}
		}
		cfg.Image, cfg.Labels[runtime.LabelImage] = o.ImageID, name
	}
	host := &container.HostConfig{
		Runtime:        runtimeName,
		NetworkMode:    network.NetworkNone,
		ReadonlyRootfs: true,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges:true", seccompOpt},
		IpcMode:        container.IPCModePrivate,
		CgroupnsMode:   container.CgroupnsModePrivate,
		Privileged:     false,
		OomScoreAdj:    oomScore,
		MaskedPaths:    masked,
		ReadonlyPaths:  readonly,
		Sysctls:        maps.Clone(netSysctls),
		LogConfig: container.LogConfig{Type: "local", Config: map[string]string{
			"max-size": jsonLogMax, "max-file": "1", "compress": "false",
		}},
		Resources: container.Resources{
			Memory:         l.MemoryBytes,
			MemorySwap:     l.MemoryBytes, // memory+swap equal to memory: no swap
			CPUPeriod:      cfsPeriod,
			CPUQuota:       max(quota, 1000),
			PidsLimit:      &pids,
			DeviceRequests: deviceRequests(o.GPUs),
			Ulimits:        ulimits(l),
		},
		// --init: dockerd's own init (docker-init, tini) as pid 1.
		Init: initFlag(t.Init),
		Tmpfs: map[string]string{
			spec.TmpPath: "rw,nosuid,nodev,noexec,mode=1777,size=" + strconv.FormatInt(l.TmpBytes, 10) +
				",nr_inodes=" + strconv.FormatInt(l.TmpInodes, 10),
		},
		Mounts: []mount.Mount{{
			Type:        mount.TypeBind,
			Source:      o.OutputDir,
			Target:      spec.OutputPath,
			BindOptions: &mount.BindOptions{Propagation: mount.PropagationRPrivate, NonRecursive: true},
		}},
	}
	if err := voidImageVolumes(img, host.Tmpfs); err != nil {
		return Request{}, err
	}
	return Request{Name: t.ID, Config: cfg, HostConfig: host}, nil
}

// VoidTmpfs is the tmpfs a request mounts over each of the image's
// volumes: empty and read-only. dockerd merges an image's VOLUMEs into the
// container at create (the request cannot clear them) and makes each an
// anonymous volume on the host's disk, writable, unbounded by any of the
// task's limits, its owner and mode the image's: a sixteenth review's task
// limited to 64 MiB wrote 200 MB to the host's root filesystem so. dockerd
// makes no volume where the container already has a mount. A containerd
// task sees those paths as part of its read-only root, with the image's
// files; a docker task sees them empty.
const VoidTmpfs = "ro,nosuid,nodev,noexec,size=4k,nr_inodes=2"

// MaxImageVolumes bounds the VOLUMEs of a Docker task's image: each gets a
// tmpfs mount, made before the task's memory limit applies (an outside
// review's image with 3,000 failed its start past a 16 MiB limit), and
// dockerd checks each volume against every tmpfs, in time quadratic in
// their number.
const MaxImageVolumes = 128

// voidImageVolumes puts VoidTmpfs over each of img's volumes that has no
// mount of nsn-run's already (/tmp, /output), and refuses a volume path
// that is not absolute and clean.
func voidImageVolumes(img ocispec.ImageConfig, tmpfs map[string]string) error {
	if len(img.Volumes) > MaxImageVolumes {
		return fmt.Errorf("%w: the image declares %d volumes: the docker backend mounts a tmpfs over each, and takes at most %d", errdefs.ErrFailedPrecondition, len(img.Volumes), MaxImageVolumes)
	}
	for path := range img.Volumes {
		if !filepath.IsAbs(path) || filepath.Clean(path) != path || path == "/" || strings.ContainsAny(path, ",:\x00") {
			return fmt.Errorf("%w: image volume %q: the docker backend mounts an empty read-only tmpfs over each image volume, and cannot over this path", errdefs.ErrFailedPrecondition, path)
		}
		if path == spec.OutputPath || tmpfs[path] != "" {
			continue
		}
		tmpfs[path] = VoidTmpfs
	}
	return nil
}

// voidImageDeviceVars are the NVIDIA device variables img sets and the
// task's env (spec.ProcessFor dropped them from the image's) does not,
// each set empty: dockerd merges every image env key the request lacks
// back into the container, so a dropped NVIDIA_VISIBLE_DEVICES=all came
// back (a sixteenth review); empty selects no devices.
func voidImageDeviceVars(img ocispec.ImageConfig, env []string) []string {
	have := map[string]bool{}
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		have[k] = true
	}
	var out []string
	for _, kv := range img.Env {
		if k, _, _ := strings.Cut(kv, "="); task.IsNVIDIADeviceVar(k) && !have[k] {
			out = append(out, k+"=")
			have[k] = true
		}
	}
	return out
}

// refuseReservedLabels refuses an image with labels in nsn-run's own
// prefix: dockerd merges an image's labels into its container's, where
// nsn-run keeps what a task's container is (its id, state dir, GPUs).
func refuseReservedLabels(img ocispec.ImageConfig) error {
	var reserved []string
	for k := range img.Labels {
		if strings.HasPrefix(k, runtime.LabelPrefix) {
			reserved = append(reserved, strconv.Quote(k))
		}
	}
	if len(reserved) > 0 {
		slices.Sort(reserved)
		return fmt.Errorf("%w: the image has labels in nsn-run's own prefix %q (%s), which dockerd would merge into the task's container: refused on the docker backend",
			errdefs.ErrFailedPrecondition, runtime.LabelPrefix, strings.Join(reserved, ", "))
	}
	return nil
}

// ulimits are spec.Rlimits in dockerd's names (RLIMIT_NOFILE is "nofile"),
// so a docker task gets exactly the rlimits a containerd task without its
// own user namespace does (dockerd has no per-container id range, so
// RLIMIT_NPROC would count every task's processes together).
func ulimits(l task.Limits) []*container.Ulimit {
	rl := spec.Rlimits(l, false)
	out := make([]*container.Ulimit, 0, len(rl))
	for _, r := range rl {
		out = append(out, &container.Ulimit{
			Name: strings.ToLower(strings.TrimPrefix(r.Type, "RLIMIT_")),
			Soft: int64(r.Soft),
			Hard: int64(r.Hard),
		})
	}
	return out
}

// deviceRequests asks dockerd's CDI driver (Docker 25+) for exactly these
// CDI devices.
func deviceRequests(gpus []string) []container.DeviceRequest {
	if len(gpus) == 0 {
		return nil
	}
	return []container.DeviceRequest{{Driver: "cdi", DeviceIDs: gpus}}
}

// initFlag is HostConfig.Init for a task: set only when it asks for an
// init, so a request without one says nothing (dockerd's default, none).
func initFlag(init bool) *bool {
	if !init {
		return nil
	}
	return &init
}
