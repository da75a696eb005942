package docker

import (
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// seccompProfile is the part of moby's seccomp profile type
// (profiles/seccomp.Seccomp) that dockerd 20.10 and later turn into the
// container's OCI seccomp section. It has the OCI field names, so nsn-run's
// profile converts field for field; dockerd's own extensions (archMap,
// includes/excludes by capability, arch or kernel) are left out: the
// profile is already resolved for an empty capability set and one
// architecture.
type seccompProfile struct {
	DefaultAction specs.LinuxSeccompAction `json:"defaultAction"`
	Architectures []specs.Arch             `json:"architectures"`
	Syscalls      []seccompSyscall         `json:"syscalls"`
}

type seccompSyscall struct {
	Names    []string                 `json:"names"`
	Action   specs.LinuxSeccompAction `json:"action"`
	ErrnoRet *uint                    `json:"errnoRet,omitempty"`
	Args     []specs.LinuxSeccompArg  `json:"args,omitempty"`
}

// seccompSecurityOpt renders p as dockerd's "seccomp=<profile JSON>"
// security option. A profile field that the conversion would drop (a
// default errno, filter flags, a notification listener) is refused rather
// than lost: dockerd 20.10 decodes profiles leniently and would ignore it
// without a word, so the filter the task got would not be the one audited.
func seccompSecurityOpt(p *specs.LinuxSeccomp) (string, error) {
	if p == nil {
		return "", fmt.Errorf("%w: no seccomp profile", errdefs.ErrInvalidArgument)
	}
	if p.DefaultErrnoRet != nil || len(p.Flags) > 0 || p.ListenerPath != "" || p.ListenerMetadata != "" {
		return "", fmt.Errorf("%w: seccomp profile sets defaultErrnoRet, flags or a listener, which dockerd 20.10 ignores", errdefs.ErrNotImplemented)
	}
	out := seccompProfile{DefaultAction: p.DefaultAction, Architectures: p.Architectures, Syscalls: make([]seccompSyscall, 0, len(p.Syscalls))}
	for _, s := range p.Syscalls {
		out.Syscalls = append(out.Syscalls, seccompSyscall{Names: s.Names, Action: s.Action, ErrnoRet: s.ErrnoRet, Args: s.Args})
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", fmt.Errorf("encode seccomp profile: %w", err)
	}
	return "seccomp=" + string(b), nil
}
