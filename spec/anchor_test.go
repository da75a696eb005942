package spec_test

import (
	"context"
	"slices"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsn-run/nsn-run/spec"
)

func TestAnchorIsConfined(t *testing.T) {
	if _, err := spec.AnchorOpts("a", "relative/nsn-init", ""); err == nil {
		t.Error("AnchorOpts accepted a relative nsn-init path")
	}
	opts, err := spec.AnchorOpts("nsn-anchor-g-1", "/usr/libexec/nsn-init", "nsn-run-default")
	if err != nil {
		t.Fatal(err)
	}
	ctx := namespaces.WithNamespace(context.Background(), "nsn")
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: "nsn-anchor-g-1"}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	p := s.Process
	if !slices.Equal(p.Args, []string{spec.InitPath, "--pause"}) || p.User.UID != 65534 || p.User.GID != 65534 || !p.NoNewPrivileges {
		t.Errorf("process %v uid %d gid %d nnp %v", p.Args, p.User.UID, p.User.GID, p.NoNewPrivileges)
	}
	if c := p.Capabilities; c == nil || len(c.Bounding)+len(c.Effective)+len(c.Permitted)+len(c.Inheritable)+len(c.Ambient) != 0 {
		t.Errorf("capabilities %+v, want none", c)
	}
	if p.ApparmorProfile != "nsn-run-default" || s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != specs.ActErrno {
		t.Errorf("apparmor %q, seccomp %v", p.ApparmorProfile, s.Linux.Seccomp)
	}
	if !s.Root.Readonly {
		t.Error("root is writable")
	}
	var types []specs.LinuxNamespaceType
	for _, ns := range s.Linux.Namespaces {
		types = append(types, ns.Type)
	}
	for _, want := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.NetworkNamespace, specs.MountNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.CgroupNamespace} {
		if !slices.Contains(types, want) {
			t.Errorf("namespaces %v lack %s", types, want)
		}
	}
	for _, m := range s.Mounts {
		if m.Type == "bind" && m.Source != "/usr/libexec/nsn-init" {
			t.Errorf("bind mount of %s: the anchor gets nsn-init only", m.Source)
		}
	}
	r := s.Linux.Resources
	if r.Pids == nil || r.Pids.Limit == nil || *r.Pids.Limit > 16 || r.Memory == nil || r.Memory.Limit == nil || *r.Memory.Limit > 16<<20 {
		t.Errorf("resources %+v: want tight pids and memory limits", r)
	}
}
