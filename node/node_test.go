package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/task"
)

func TestOpenRefusesBadOptions(t *testing.T) {
	ctx := context.Background()
	state := t.TempDir()
	for name, o := range map[string]Options{
		"backend":         {Backend: "podman", StateDir: state, CDISpecDirs: []string{t.TempDir()}},
		"user namespaces": {UserNamespaces: "sometimes", StateDir: state, CDISpecDirs: []string{t.TempDir()}},
	} {
		if _, err := Open(ctx, o); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

func TestLoggerBinary(t *testing.T) {
	if got, err := loggerBinary("/opt/nsn/nsn-logger"); err != nil || got != "/opt/nsn/nsn-logger" {
		t.Errorf("a named logger: %q %v", got, err)
	}
	t.Setenv("PATH", t.TempDir()) // no nsn-logger there, nor beside the test binary
	if _, err := loggerBinary(""); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("no logger anywhere: %v, want FailedPrecondition", err)
	}
}

func TestShimBinary(t *testing.T) {
	if got, err := shimBinary(context.Background(), Options{ShimGroup: "g", ShimBinary: "/opt/nsn/nsn-shim"}); err != nil || got != "/opt/nsn/nsn-shim" {
		t.Errorf("a named shim: %q %v", got, err)
	}
	path := t.TempDir()
	t.Setenv("PATH", path) // no nsn-shim there, nor beside the test binary
	if got, err := shimBinary(context.Background(), Options{}); err != nil || got != "" {
		t.Errorf("no nsn-shim anywhere, no shim group: %q %v, want none (containerd's shim)", got, err)
	}
	if _, err := shimBinary(context.Background(), Options{ShimGroup: "g"}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("a shim group and no nsn-shim anywhere: %v, want FailedPrecondition", err)
	}
	onPath := filepath.Join(path, ShimName)
	if err := os.WriteFile(onPath, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		return // the rest needs root's files
	}
	// Without the nsn-shimd it runs beside it, it is passed over.
	if got, err := shimBinary(context.Background(), Options{}); err != nil || got != "" {
		t.Errorf("nsn-shim on PATH without nsn-shimd: %q %v, want none (containerd's shim)", got, err)
	}
	if err := os.WriteFile(filepath.Join(path, "nsn-shimd"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := shimBinary(context.Background(), Options{}); err != nil || got != onPath {
		t.Errorf("nsn-shim on PATH, no shim group: %q %v, want %s", got, err, onPath)
	}
	// One that containerd must not run as root is passed over, unless a
	// shim group needs it (the backend then refuses it, saying why).
	if err := os.Chown(onPath, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if got, err := shimBinary(context.Background(), Options{}); err != nil || got != "" {
		t.Errorf("nobody's nsn-shim on PATH, no shim group: %q %v, want none (containerd's shim)", got, err)
	}
	if got, err := shimBinary(context.Background(), Options{ShimGroup: "g"}); err != nil || got != onPath {
		t.Errorf("nobody's nsn-shim on PATH, a shim group: %q %v, want it (for the backend to refuse)", got, err)
	}
}

// TestAuditPolicyAndAudit: the policy follows the options (tasks dir under
// the state dir, host identity with user namespaces off); a spec nsn-run
// generates for this node passes Audit, garbage is ErrUnreadable.
func TestAuditPolicyAndAudit(t *testing.T) {
	state := t.TempDir()
	o := Options{StateDir: state, CDISpecDirs: []string{t.TempDir()}, UserNamespaces: "off", Namespace: "agent"}
	p, err := AuditPolicy(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if p.TasksDir != filepath.Join(state, "tasks") || !p.HostIdentity || p.Namespace != "agent" || p.ResolveSource == nil {
		t.Errorf("policy %+v", p)
	}
	tk := task.Task{ID: "a1", Image: "busybox", Command: []string{"true"}}.WithDefaults()
	s, err := spec.Generate(namespaces.WithNamespace(context.Background(), "agent"), tk, ocispec.ImageConfig{}, spec.Options{OutputDir: p.OutputDir("a1"), AppArmorProfile: p.AppArmorProfile})
	if err != nil {
		t.Fatal(err)
	}
	data, err := spec.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if f, err := Audit(context.Background(), o, data); err != nil || len(f) != 0 {
		t.Errorf("the node's own spec: %v %v", f, err)
	}
	if _, err := Audit(context.Background(), o, []byte("not json")); !errors.Is(err, ErrUnreadable) {
		t.Errorf("garbage: %v, want ErrUnreadable", err)
	}
}
