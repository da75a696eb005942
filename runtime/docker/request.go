// Package docker is nsn-run's backend over the Docker Engine API ("the
// Docker shim"), for hosts that only run dockerd. It gives the same Manager,
// CLI and Result as the containerd backend; docs/security-model.md says what
// the Engine API cannot express.
package docker

import (
	"fmt"
	"path/filepath"
	"strconv"

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

// jsonLogMax bounds dockerd's own copy of a task's logs on disk; nsn-run
// keeps its capped head and tail from the logs API.
const jsonLogMax = "16m"

// Request is the container create request the backend sends.
// `nsn-run spec --backend docker` prints it.
type Request struct {
	Name       string                `json:"name"`
	Config     *container.Config     `json:"config"`
	HostConfig *container.HostConfig `json:"host_config"`
}

func labelsFor(id string) map[string]string {
	return map[string]string{runtime.LabelTaskID: id, runtime.LabelManager: runtime.ManagerName}
}

// CreateRequest maps a task and its image config to the Engine API create
// request, with every default of nsn-run's that the API can express: the
// same user, env, args and working dir rules as the OCI spec (spec.ProcessFor),
// no capabilities, no-new-privileges, Docker's default seccomp profile, a
// read-only root, no network, private namespaces, memory with swap equal to
// it, CPU quota, pids, rlimits, /tmp as a sized tmpfs, labels. /output is
// a bind of outputDir, the task's host tmpfs that the Manager mounted with
// the output caps: a tmpfs docker volume would be unmounted, and emptied,
// when the container stops, before its files could be collected. Pure: no
// daemon call.
//
// gpus are the task's CDI device names, resolved and allocated (cdi
// package): they go to dockerd as a CDI device request, never to the
// legacy NVIDIA hook.
func CreateRequest(t task.Task, img ocispec.ImageConfig, outputDir string, gpus []string) (Request, error) {
	t = t.WithDefaults()
	if err := t.Validate(); err != nil {
		return Request{}, err
	}
	if req, _ := t.GPURequest(); !req.Empty() && len(gpus) == 0 {
		return Request{}, fmt.Errorf("%w: task asks for GPUs %q but no CDI device was resolved for it", errdefs.ErrFailedPrecondition, t.GPUs)
	}
	p, err := spec.ProcessFor(t, img)
	if err != nil {
		return Request{}, err
	}
	l := t.Limits
	pids := l.Pids
	quota := int64(l.CPUs*cfsPeriod + 0.5)
	if !filepath.IsAbs(outputDir) || filepath.Clean(outputDir) != outputDir {
		return Request{}, fmt.Errorf("%w: output dir %q: must be an absolute, clean host path", errdefs.ErrInvalidArgument, outputDir)
	}
	cfg := &container.Config{
		Hostname:   t.ID,
		User:       fmt.Sprintf("%d:%d", p.UID, p.GID),
		Env:        p.Env,
		Entrypoint: p.Args[:1],
		Cmd:        p.Args[1:],
		WorkingDir: p.Cwd,
		Image:      t.Image,
		Labels:     labelsFor(t.ID),
		// No network, so nothing to expose, and no stdin.
		NetworkDisabled: true,
	}
	host := &container.HostConfig{
		NetworkMode:    network.NetworkNone,
		ReadonlyRootfs: true,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges:true"},
		IpcMode:        container.IPCModePrivate,
		CgroupnsMode:   container.CgroupnsModePrivate,
		Privileged:     false,
		LogConfig: container.LogConfig{Type: "json-file", Config: map[string]string{
			"max-size": jsonLogMax, "max-file": "1",
		}},
		Resources: container.Resources{
			Memory:         l.MemoryBytes,
			MemorySwap:     l.MemoryBytes, // memory+swap equal to memory: no swap
			CPUPeriod:      cfsPeriod,
			CPUQuota:       max(quota, 1000),
			PidsLimit:      &pids,
			DeviceRequests: deviceRequests(gpus),
			Ulimits: []*container.Ulimit{
				{Name: "nofile", Soft: l.OpenFiles, Hard: l.OpenFiles},
				{Name: "core", Soft: 0, Hard: 0},
			},
		},
		Tmpfs: map[string]string{
			spec.TmpPath: "rw,nosuid,nodev,noexec,mode=1777,size=" + strconv.FormatInt(l.TmpBytes, 10) +
				",nr_inodes=" + strconv.FormatInt(l.TmpInodes, 10),
		},
		Mounts: []mount.Mount{{
			Type:        mount.TypeBind,
			Source:      outputDir,
			Target:      spec.OutputPath,
			BindOptions: &mount.BindOptions{Propagation: mount.PropagationRPrivate, NonRecursive: true},
		}},
	}
	return Request{Name: t.ID, Config: cfg, HostConfig: host}, nil
}

// deviceRequests asks dockerd's CDI driver (Docker 25+) for exactly these
// CDI devices.
func deviceRequests(gpus []string) []container.DeviceRequest {
	if len(gpus) == 0 {
		return nil
	}
	return []container.DeviceRequest{{Driver: "cdi", DeviceIDs: gpus}}
}
