package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/runc"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	runcC "github.com/containerd/go-runc"
)

// stopBundle lays out what the shim's `delete` action finds: a bundle
// named after the task, whose runtime is a stand-in runc that writes its
// arguments to the returned file, and whose options put runc's root in
// the returned dir. It leaves the test in the bundle (containerd runs
// `delete` in one).
func stopBundle(t *testing.T, id string) (calls, runcRoot string) {
	t.Helper()
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundles", id)
	runcRoot = filepath.Join(dir, "runc")
	calls = filepath.Join(dir, "runc-calls")
	fakeRunc := filepath.Join(dir, "fake-runc")
	if err := os.WriteFile(fakeRunc, []byte("#!/bin/sh\necho \"$@\" >> "+calls+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "runtime"), []byte(fakeRunc), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := runc.WriteOptions(bundle, &options.Options{Root: runcRoot}); err != nil {
		t.Fatal(err)
	}
	t.Chdir(bundle)
	return calls, runcRoot
}

// runcCalls returns what the stand-in runc was called with, and forgets it.
func runcCalls(t *testing.T, calls string) string {
	t.Helper()
	b, err := os.ReadFile(calls)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	_ = os.Remove(calls)
	return string(b)
}

// TestStopAsContainerd: after a clean delete (runc keeps no state for the
// container) nsn-shim's `delete` action reports what containerd's reports,
// without running runc; when runc still knows the container, it runs
// containerd's, runc's forced delete included.
func TestStopAsContainerd(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), "ns1")
	upstream := manager.NewShimManager("io.containerd.runc.v2")
	ours := &patientShim{Shim: upstream}

	t.Run("recorded exit", func(t *testing.T) {
		calls, _ := stopBundle(t, "task1")
		exitedAt := time.Date(2026, 11, 30, 5, 0, 0, 0, time.UTC)
		if err := runc.WriteExitStatus(".", runcC.Exit{Pid: 42, Status: 3, Timestamp: exitedAt}); err != nil {
			t.Fatal(err)
		}
		want, err := upstream.Stop(ctx, "task1")
		if err != nil {
			t.Fatal(err)
		}
		if c := runcCalls(t, calls); !strings.Contains(c, "delete --force task1") {
			t.Fatalf("containerd's Stop ran runc with %q; the stand-in runc no longer sees what it does", c)
		}
		got, err := ours.Stop(ctx, "task1")
		if err != nil {
			t.Fatal(err)
		}
		if c := runcCalls(t, calls); c != "" {
			t.Errorf("runc has no state for the container, and nsn-shim's Stop still ran it: %q", c)
		}
		if got != want || got.Pid != 42 || got.ExitStatus != 3 || !got.ExitedAt.Equal(exitedAt) {
			t.Errorf("nsn-shim's Stop = %+v, containerd's = %+v, recorded pid 42 status 3 at %s", got, want, exitedAt)
		}
	})

	t.Run("no exit recorded", func(t *testing.T) {
		calls, _ := stopBundle(t, "task2")
		if err := os.WriteFile("init.pid", []byte("77"), 0o600); err != nil {
			t.Fatal(err)
		}
		want, err := upstream.Stop(ctx, "task2")
		if err != nil {
			t.Fatal(err)
		}
		runcCalls(t, calls)
		got, err := ours.Stop(ctx, "task2")
		if err != nil {
			t.Fatal(err)
		}
		if c := runcCalls(t, calls); c != "" {
			t.Errorf("nsn-shim's Stop ran runc: %q", c)
		}
		if got.Pid != want.Pid || got.ExitStatus != want.ExitStatus || got.Pid != 77 || got.ExitStatus != 137 {
			t.Errorf("nsn-shim's Stop = %+v, containerd's = %+v, want pid 77 status 137", got, want)
		}
	})

	t.Run("runc knows the container", func(t *testing.T) {
		calls, runcRoot := stopBundle(t, "task3")
		if err := os.MkdirAll(filepath.Join(runcRoot, "ns1", "task3"), 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := ours.Stop(ctx, "task3"); err != nil {
			t.Fatal(err)
		}
		if c := runcCalls(t, calls); !strings.Contains(c, "delete --force task3") {
			t.Errorf("runc still has state for the container, and nsn-shim's Stop did not force its delete: runc calls %q", c)
		}
	})
}
